/* Unit test of cache/base/error.c: one message per thread, set, wrapped, taken once, and
 * carried from a worker thread to the one that reports. */
#include <errno.h>
#include <pthread.h>
#include <string.h>

#include "cache/base/error.h"
#include "tap.h"

static void *worker(void *userdata)
{
	struct error_carry *out = userdata;

	check(error_message() == NULL, "a new thread starts without a message");
	(void)error_set(-EPROTO, "layer %s: unsupported media type %s", "sha256:ab", "x/y");
	error_save(out);
	check(error_message() == NULL, "saving moves the message out of the worker");
	return NULL;
}

int main(void)
{
	struct error_carry carry;
	char longer[3 * ERROR_MESSAGE_MAX];
	pthread_t t;

	check(error_message() == NULL, "no message before one is set");
	check(error_set(-EBADMSG, "blob %s: %d bytes", "sha256:cd", 3) == -EBADMSG,
	      "error_set returns its errno");
	check(strcmp(error_message(), "blob sha256:cd: 3 bytes") == 0, "the message is formatted");
	check(error_wrap(-EBADMSG, "image %s", "x:latest") == -EBADMSG, "error_wrap returns r");
	check(strcmp(error_message(), "image x:latest: blob sha256:cd: 3 bytes") == 0,
	      "a caller that knows more prefixes the message");
	check(error_set(-EIO, "again: %s", error_message()) == -EIO &&
	      strcmp(error_message(), "again: image x:latest: blob sha256:cd: 3 bytes") == 0,
	      "the message may be an argument of its replacement");
	check(strcmp(error_take(-EIO),
		     "Input/output error: again: image x:latest: blob sha256:cd: 3 bytes") == 0,
	      "the report says the class, then the message");
	check(error_message() == NULL, "taking the message clears it");
	check(strcmp(error_take(-EPROTO), "Protocol error") == 0,
	      "without a message the report is the class alone");
	(void)error_wrap(-ENOENT, "layer %s", "sha256:ef");
	check(strcmp(error_message(), "layer sha256:ef") == 0, "wrapping nothing sets the prefix");
	error_clear();
	check(error_message() == NULL, "error_clear forgets the message");

	memset(longer, 'x', sizeof(longer) - 1);
	longer[sizeof(longer) - 1] = 0;
	(void)error_set(-EINVAL, "%s", longer);
	check(strlen(error_message()) == ERROR_MESSAGE_MAX - 1, "a long message is cut, not overrun");
	(void)error_wrap(-EINVAL, "%s", longer);
	check(strlen(error_message()) == ERROR_MESSAGE_MAX - 1, "so is a long prefix");

	(void)error_set(-EIO, "the reporting thread's own");
	check(pthread_create(&t, NULL, worker, &carry) == 0, "worker started");
	(void)pthread_join(t, NULL);
	check(strcmp(error_message(), "the reporting thread's own") == 0,
	      "a worker's message does not leak into another thread");
	check(error_restore(-EPROTO, &carry) == -EPROTO &&
	      strcmp(error_message(), "layer sha256:ab: unsupported media type x/y") == 0,
	      "the worker's message reaches the thread that reports");
	carry.set = false;
	(void)error_restore(0, &carry);
	check(error_message() == NULL, "restoring no message clears");
	return tap_done();
}
