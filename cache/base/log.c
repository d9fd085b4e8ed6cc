/* cache/base/log.c: formats messages as "lazyroot: text" on stderr, or to syslog for the daemon.
 * The level and sink are set once at start-up and read by any thread: guarded by log_lock. */
#include "log.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <syslog.h>

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static enum log_level log_max_level = LOG_LEVEL_INFO;  /* guarded by log_lock */
static bool log_to_syslog;                             /* guarded by log_lock */

void log_set_level(enum log_level level)
{
	pthread_mutex_lock(&log_lock);
	log_max_level = level;
	pthread_mutex_unlock(&log_lock);
}

enum log_level log_get_level(void)
{
	enum log_level l;

	pthread_mutex_lock(&log_lock);
	l = log_max_level;
	pthread_mutex_unlock(&log_lock);
	return l;
}

void log_use_syslog(const char *ident)
{
	pthread_mutex_lock(&log_lock);
	openlog(ident, LOG_PID | LOG_NDELAY, LOG_DAEMON);
	log_to_syslog = true;
	pthread_mutex_unlock(&log_lock);
}

int log_internal(enum log_level level, int error, const char *fmt, ...)
{
	static const int prio[] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG };
	va_list ap;

	pthread_mutex_lock(&log_lock);
	if (level <= log_max_level) {
		int saved = errno;

		if (error != 0)
			errno = -error;
		va_start(ap, fmt);
		if (log_to_syslog) {
			vsyslog(prio[level], fmt, ap);
		} else {
			fputs("lazyroot: ", stderr);
			vfprintf(stderr, fmt, ap);
			fputc('\n', stderr);
		}
		va_end(ap);
		errno = saved;
	}
	pthread_mutex_unlock(&log_lock);
	return error;
}
