/* cache/base/trace.c: JSON lines of what a mount does, see trace.h. */
#include "trace.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int trace_fd_ = -1;
static uint64_t trace_next_op = 1;                /* atomic */
static _Thread_local uint64_t trace_op;
static _Thread_local uint64_t trace_call;

int trace_init(void)
{
	const char *path = getenv("LAZYROOT_TRACE");
	int fd;

	if (!path || !*path || trace_fd_ >= 0)
		return 0;
	fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	trace_fd_ = fd;
	return 0;
}

int64_t trace_now_us(void)
{
	struct timespec ts;

	(void)clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void trace_emit(const char *ev, const char *fmt, ...)
{
	char line[2048];
	va_list ap;
	int n, m;

	if (!trace_enabled())
		return;
	n = snprintf(line, sizeof(line), "{\"ev\":\"%s\",\"pid\":%d,\"tid\":%ld,", ev,
		     (int)getpid(), (long)syscall(SYS_gettid));
	if (n < 0 || (size_t)n >= sizeof(line) - 2)
		return;
	va_start(ap, fmt);
	m = vsnprintf(line + n, sizeof(line) - (size_t)n - 2, fmt, ap);
	va_end(ap);
	/* A line cut short is no JSON: drop it rather than break the reader. */
	if (m < 0 || (size_t)(n + m) >= sizeof(line) - 2)
		return;
	n += m;
	line[n++] = '}';
	line[n++] = '\n';
	(void)!write(trace_fd_, line, (size_t)n);
}

void trace_mark_cpu(const char *what)
{
	struct rusage ru;

	if (!trace_enabled() || getrusage(RUSAGE_SELF, &ru) < 0)
		return;
	trace_emit("mark", "\"what\":\"%s\",\"t\":%lld,\"utime_us\":%lld,\"stime_us\":%lld",
		   what, (long long)trace_now_us(),
		   (long long)ru.ru_utime.tv_sec * 1000000 + ru.ru_utime.tv_usec,
		   (long long)ru.ru_stime.tv_sec * 1000000 + ru.ru_stime.tv_usec);
}

void trace_step(const char *what, const char *object, int64_t t0, uint64_t n)
{
	char obj[128];

	if (!trace_enabled())
		return;
	trace_emit("step", "\"what\":\"%s\",\"object\":\"%s\",\"t0\":%lld,\"t1\":%lld,\"n\":%llu",
		   what, trace_json_str(object ?: "", obj, sizeof(obj)), (long long)t0,
		   (long long)trace_now_us(), (unsigned long long)n);
}

const char *trace_json_str(const char *s, char *buf, size_t size)
{
	size_t k = 0;

	for (; s && *s && k + 7 < size; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\') {
			buf[k++] = '\\';
			buf[k++] = (char)c;
		} else if (c < 0x20) {
			k += (size_t)snprintf(buf + k, size - k, "\\u%04x", c);
		} else {
			buf[k++] = (char)c;
		}
	}
	buf[k] = '\0';
	return buf;
}

uint64_t trace_op_begin(void)
{
	if (!trace_enabled())
		return 0;
	trace_op = __atomic_fetch_add(&trace_next_op, 1, __ATOMIC_RELAXED);
	return trace_op;
}

void trace_op_end(void)
{
	trace_op = 0;
}

uint64_t trace_op_current(void)
{
	return trace_op;
}

void trace_call_set(uint64_t call)
{
	trace_call = call;
}

uint64_t trace_call_current(void)
{
	return trace_call;
}
