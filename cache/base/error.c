/*
 * cache/base/error.c: see error.h.  The message lives in thread-local storage of fixed size,
 * so that setting one never allocates (it is often set on the way out of an -ENOMEM) and a
 * thread that exits leaves nothing to free.  Formatting goes through a buffer on the stack:
 * arguments may point into the message being replaced.
 */
#include "error.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static _Thread_local struct error_carry current;
static _Thread_local char taken[ERROR_MESSAGE_MAX + 64];

int error_setv(int r, const char *fmt, va_list ap)
{
	char buf[ERROR_MESSAGE_MAX];

	if (r < 0)
		errno = -r;  /* for "%m" */
	(void)vsnprintf(buf, sizeof(buf), fmt, ap);
	memcpy(current.message, buf, sizeof(buf));
	current.set = true;
	return r;
}

int error_set(int r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	(void)error_setv(r, fmt, ap);
	va_end(ap);
	return r;
}

int error_wrap(int r, const char *fmt, ...)
{
	char prefix[ERROR_MESSAGE_MAX];
	va_list ap;

	if (r < 0)
		errno = -r;
	va_start(ap, fmt);
	(void)vsnprintf(prefix, sizeof(prefix), fmt, ap);
	va_end(ap);
	if (!current.set)
		return error_set(r, "%s", prefix);
	return error_set(r, "%s: %s", prefix, current.message);
}

const char *error_message(void)
{
	return current.set ? current.message : NULL;
}

void error_clear(void)
{
	current.set = false;
	current.message[0] = 0;
}

const char *error_take(int r)
{
	const char *class = strerror(r < 0 ? -r : r);

	if (current.set)
		(void)snprintf(taken, sizeof(taken), "%s: %s", class, current.message);
	else
		(void)snprintf(taken, sizeof(taken), "%s", class);
	error_clear();
	return taken;
}

void error_save(struct error_carry *ret)
{
	*ret = current;
	error_clear();
}

int error_restore(int r, const struct error_carry *c)
{
	if (!c->set) {
		error_clear();
		return r;
	}
	return error_set(r, "%s", c->message);
}
