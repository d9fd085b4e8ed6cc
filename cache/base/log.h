/* cache/base/log.h: one logging sink for the whole program, safe to call from any thread. */
#pragma once

#include <stdarg.h>
#include <stdlib.h>

enum log_level { LOG_LEVEL_ERROR, LOG_LEVEL_WARNING, LOG_LEVEL_INFO, LOG_LEVEL_DEBUG };

void log_set_level(enum log_level level);
enum log_level log_get_level(void);
/* Send messages to syslog (the journal) instead of stderr; for the detached mount daemon. */
void log_use_syslog(const char *ident);

/* Logs at @level; if @error is non-zero, errno is set to -error for "%m". Returns @error
 * (always <= 0), so callers can write `return log_error_errno(r, ...)`. */
int log_internal(enum log_level level, int error, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#define log_debug(...) log_internal(LOG_LEVEL_DEBUG, 0, __VA_ARGS__)
#define log_info(...) log_internal(LOG_LEVEL_INFO, 0, __VA_ARGS__)
#define log_warning(...) log_internal(LOG_LEVEL_WARNING, 0, __VA_ARGS__)
#define log_error(...) log_internal(LOG_LEVEL_ERROR, 0, __VA_ARGS__)
#define log_debug_errno(e, ...) log_internal(LOG_LEVEL_DEBUG, -abs(e), __VA_ARGS__)
#define log_warning_errno(e, ...) log_internal(LOG_LEVEL_WARNING, -abs(e), __VA_ARGS__)
#define log_error_errno(e, ...) log_internal(LOG_LEVEL_ERROR, -abs(e), __VA_ARGS__)
