/* Unit test of cache/base/trace.c: off without $LAZYROOT_TRACE, one JSON line per event when
 * on, strings escaped, lines too long dropped whole, the thread's request and call ids. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cache/base/trace.h"
#include "tap.h"

static char *slurp(const char *path)
{
	static char buf[65536];
	int fd = open(path, O_RDONLY);
	ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof(buf) - 1);

	if (fd >= 0)
		close(fd);
	buf[n < 0 ? 0 : n] = '\0';
	return buf;
}

int main(void)
{
	char path[] = "/tmp/test-trace-XXXXXX", esc[64], big[4096];
	int fd = mkstemp(path);

	check(fd >= 0, "a temporary file");
	close(fd);
	unsetenv("LAZYROOT_TRACE");
	check(trace_init() == 0 && !trace_enabled(), "off without $LAZYROOT_TRACE");
	trace_emit("x", "\"a\":%d", 1);
	check(trace_op_begin() == 0, "no request ids while off");

	setenv("LAZYROOT_TRACE", path, 1);
	check(trace_init() == 0 && trace_enabled(), "on with $LAZYROOT_TRACE");
	trace_emit("x", "\"a\":%d", 1);
	check(strstr(slurp(path), "{\"ev\":\"x\",\"pid\":") == slurp(path) &&
	      strstr(slurp(path), ",\"a\":1}\n") != NULL, "one line, an object");

	check(strcmp(trace_json_str("a\"b\\c\nd", esc, sizeof(esc)), "a\\\"b\\\\c\\u000ad") == 0,
	      "quotes, backslashes and control characters are escaped");
	memset(big, 'y', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	check(strlen(trace_json_str(big, esc, sizeof(esc))) < sizeof(esc), "escaping cuts to fit");
	trace_emit("long", "\"s\":\"%s\"", big);
	check(strstr(slurp(path), "long") == NULL, "a line too long is dropped, not cut");

	check(trace_op_begin() > 0 && trace_op_current() > 0, "a request gets an id");
	trace_op_end();
	check(trace_op_current() == 0, "and loses it at its end");
	trace_call_set(7);
	check(trace_call_current() == 7, "the thread's fetch call");
	unlink(path);
	return tap_done();
}
