/* tests/unit/test-task_io.c: a thread's count of read calls, as fs/read_path.c relies on it:
 * it moves when a read call returns, and belongs to the thread, not its process. */

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "fs/task_io.h"
#include "tap.h"

static pid_t gettid_(void)
{
	return (pid_t)syscall(SYS_gettid);
}

static void *read_twice(void *userdata)
{
	int fd = open("/dev/zero", O_RDONLY | O_CLOEXEC);
	char buf[16];

	(void)userdata;
	if (fd >= 0) {
		(void)!read(fd, buf, sizeof(buf));
		(void)!read(fd, buf, sizeof(buf));
		close(fd);
	}
	return NULL;
}

/* The thread's count now; a call costs the thread read calls of its own (the file's). */
static uint64_t count(void)
{
	uint64_t n = 0;

	return task_io_read_syscalls(gettid_(), &n) == 0 ? n : 0;
}

int main(void)
{
	uint64_t a, b, own, c, d;
	char buf[16];
	pthread_t t;
	int fd, r;

	r = task_io_read_syscalls(gettid_(), &a);
	if (r == -ENOENT || r == -EACCES) {
		printf("1..0 # SKIP no /proc/TID/task/TID/io here (%d)\n", r);
		return 0;
	}
	check(r == 0, "the count of this thread can be read");
	b = count();
	own = b - a;
	fd = open("/dev/zero", O_RDONLY | O_CLOEXEC);
	check(fd >= 0 && read(fd, buf, sizeof(buf)) == sizeof(buf), "one read call");
	c = count();
	check(c - b == own + 1, "it is counted once it returned (%llu -> %llu, %llu a look)",
	      (unsigned long long)b, (unsigned long long)c, (unsigned long long)own);
	check(pthread_create(&t, NULL, read_twice, NULL) == 0 && pthread_join(t, NULL) == 0,
	      "another thread reads twice");
	d = count();
	check(d - c == own, "another thread's reads are not this thread's (%llu -> %llu)",
	      (unsigned long long)c, (unsigned long long)d);
	check(task_io_read_syscalls(0, &a) == -EINVAL, "no thread 0");
	if (fd >= 0)
		close(fd);
	return tap_done();
}
