/* fs/blob_fds.h: a fixed-size cache of open blob fds keyed by the blob's raw sha256, so that
 * reading a file whose blob was opened before costs no open() (nor fstat()).  Blobs are
 * immutable and named by their content, so a cached fd never goes stale: a blob that gc or
 * fsck removes meanwhile stays readable through it, with the same bytes. */
#pragma once

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>

struct blob_fds;

/* A borrowed fd: valid until blob_fds_put(). */
struct blob_fd {
	int fd;                 /* -EBADF: none */
	struct blob_fds *owner;
	unsigned slot;
	bool cached;    /* false: the fd is the handle's own, put closes it */
};

/* @n_slots > 0 is the most fds kept open at once. */
int blob_fds_new(unsigned n_slots, struct blob_fds **ret);
struct blob_fds *blob_fds_free(struct blob_fds *c);  /* NULL-safe; closes every cached fd */

/* The fd for @digest: a cached one, or one @open_fn opens (returning 0 or -errno, which is
 * returned as is), cached if its slot is free.  Safe from many threads at once. */
int blob_fds_get(struct blob_fds *c, const uint8_t digest[32],
		 int (*open_fn)(void *userdata, int *ret_fd), void *userdata, struct blob_fd *ret);
/* Whether @digest's fd is in the cache now (a hint: it may be replaced right after). */
bool blob_fds_cached(struct blob_fds *c, const uint8_t digest[32]);
/* Gives the fd back; NULL-safe, idempotent (sets h->fd to -EBADF). */
void blob_fds_put(struct blob_fd *h);
#define BLOB_FD_NONE ((struct blob_fd) { .fd = -EBADF })
#define _cleanup_blob_fd_ __attribute__((cleanup(blob_fds_put)))
