/* cache/base/sanitizer.h: hooks for sanitizer builds (meson -Db_sanitize=address,...); nothing in
 * a normal build. */
#pragma once

#if defined(__SANITIZE_ADDRESS__)
#define LAZYROOT_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define LAZYROOT_ASAN 1
#endif
#endif

#ifdef LAZYROOT_ASAN
#include <sanitizer/lsan_interface.h>
#endif

/* LeakSanitizer looks for leaks at exit(), which a forked daemon never calls: it ends with
 * _exit() so as not to run the parent's atexit handlers or flush its stdio twice.  Call this
 * right before such an _exit(): a leak then aborts the process with a report. */
static inline void sanitizer_leak_check(void)
{
#ifdef LAZYROOT_ASAN
	__lsan_do_leak_check();
#endif
}
