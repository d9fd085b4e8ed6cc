/* cache/base/error.h: the message that goes with an -errno, one channel for all of lazyroot.
 *
 * The errno says the class of a failure (STYLE.md 4: -EPROTO protocol violation, -EBADMSG
 * failed verification...); the message says the object and the reason in words ("layer
 * sha256:…: unsupported media type application/x"), recorded once where the fact is known:
 *
 *	return error_set(-EPROTO, "layer %s: unsupported media type %s", digest, type);
 *
 * Each thread holds at most one message.  A caller that knows more (the image, the layer)
 * prefixes it with error_wrap(); the one place that reports (the CLI's error line, a log line
 * of the daemon) takes it with error_take(), which clears it.  A top-level operation clears
 * it when it starts, so that a failure that was handled earlier (a mirror that missed, a HEAD
 * that fell back to GET) is never reported for a later one.  A message set on a worker thread
 * reaches the reporting thread through error_save() / error_restore(), next to the result the
 * worker hands over.
 *
 * Messages are one line, at most ERROR_MESSAGE_MAX - 1 bytes (longer ones are cut), and never
 * hold a secret (a token, a password). */
#pragma once

#include <stdarg.h>
#include <stdbool.h>

#define ERROR_MESSAGE_MAX 1024

/* Records this thread's message, replacing any earlier one; returns @r.  "%m" is -@r's text. */
int error_set(int r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int error_setv(int r, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
/* Prefixes this thread's message: "FMT: earlier message", or FMT alone when there is none;
 * returns @r.  The arguments may point into error_message(). */
int error_wrap(int r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* This thread's message, or NULL when none was set since the last clear.  Valid until the
 * next call of this module on this thread. */
const char *error_message(void);
void error_clear(void);

/* For the one place that reports the failure @r: "CLASS: MESSAGE" (e.g. "Protocol error:
 * layer sha256:…: unsupported media type application/x"), or the class alone when no message
 * was set; clears the message.  Valid until the next call of this module on this thread. */
const char *error_take(int r);

/* A message on its way from the thread that set it to the thread that reports. */
struct error_carry {
	bool set;
	char message[ERROR_MESSAGE_MAX];
};
/* Moves this thread's message (or its absence) into @ret. */
void error_save(struct error_carry *ret);
/* Makes @c this thread's message (clears it when @c holds none); returns @r. */
int error_restore(int r, const struct error_carry *c);
