/* tests/unit/tap.h: the smallest TAP producer: check(expr, "behaviour") prints "ok N - …" or
 * "not ok N - … (file:line: expr)"; tap_done() prints the plan and returns the exit status. */
#pragma once

#include <stdio.h>

static int tap_n, tap_failed;

#define check(expr, ...)                                                              \
	do {                                                                          \
		int _ok = !!(expr);                                                   \
		tap_n++;                                                              \
		printf("%sok %d - ", _ok ? "" : "not ", tap_n);                       \
		printf(__VA_ARGS__);                                                  \
		if (!_ok) {                                                           \
			tap_failed++;                                                 \
			printf(" (%s:%d: %s)", __FILE__, __LINE__, #expr);            \
		}                                                                     \
		printf("\n");                                                         \
	} while (0)

static inline int tap_done(void)
{
	printf("1..%d\n", tap_n);
	return tap_failed ? 1 : 0;
}
