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

/* Timing checks bound the algorithm (nothing quadratic, no serialised waits), not the machine:
 * under AddressSanitizer every instrumented load and store costs several times more, so such a
 * bound is multiplied by TAP_TIME_SCALE there rather than dropped. */
#if defined(__SANITIZE_ADDRESS__)
#define TAP_TIME_SCALE 4.0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TAP_TIME_SCALE 4.0
#endif
#endif
#ifndef TAP_TIME_SCALE
#define TAP_TIME_SCALE 1.0
#endif
