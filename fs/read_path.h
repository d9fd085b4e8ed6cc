/*
 * fs/read_path.h: what a read of a file does, from (inode, offset, size) to the bytes.  Chunks
 * in the blob store are served from their open blobs (fs/blob_fds.h); the chunks a read misses
 * are fetched in one fetcher call together with the chunks that follow in the file (fetch-ahead)
 * and, when the whole file is coming, its neighbours in the layer's blob (fs/read_around.h);
 * every read moves the tree-order read-ahead window (fs/local_readahead.h); hits and misses go
 * to the fetcher's stats.  The FUSE handler asks once and replies with what it gets.
 *
 * Safe from many threads at once: the tree is immutable, and the blob fd cache, read-around
 * index, read-ahead and fetcher have their own locks.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "cache/fetch.h"
#include "fs/blob_fds.h"
#include "fs/exec_ahead.h"
#include "fs/tree.h"

struct blob_store;
struct read_path;

/* Borrows @tree (frozen), @bs and @fetcher (NULL when the image has no lazy layer), which must
 * outlive the result.  Keeps up to @fds_slots blobs open. */
int read_path_new(const struct fs_tree *tree, struct blob_store *bs, struct fetcher *fetcher,
		  unsigned fds_slots, struct read_path **ret);
/* Tells @profile (borrowed; NULL: none) which chunks each read touches (fs/profile.h).  Call
 * before the first read. */
struct fs_profile;
void read_path_set_profile(struct read_path *rp, struct fs_profile *profile);
/* What the fetcher is asked for to have chunk @c (fetchable: not zeros, blob_length > 0). */
void fetch_chunk_from_ref(const struct fs_chunk_ref *c, bool ahead, struct fetch_chunk *ret);
/* Stops the workers that fetch on their own (fs/exec_ahead.h) and waits for them: before the
 * fetcher is freed.  NULL-safe. */
void read_path_stop_fetching(struct read_path *rp);
/* fs/exec_ahead.h's counters (zeros for an image without lazy layers). */
void read_path_get_exec_ahead_stats(struct read_path *rp, struct exec_ahead_stats *ret);
/* NULL-safe; stops the read-ahead workers first. */
struct read_path *read_path_free(struct read_path *rp);
DEFINE_CLEANUP_FUNC(struct read_path *, read_path_free);

/* What a read gives: @len bytes, assembled in @buf (malloc'd), or, with @buf NULL and @len > 0,
 * the bytes at @pos of the open blob @fd (a read inside one chunk: spliced when the caller
 * can).  @len 0: end of file. */
struct read_reply {
	char *buf;
	struct blob_fd fd;
	off_t pos;
	size_t len;
};
#define READ_REPLY_NONE ((struct read_reply) { .fd = BLOB_FD_NONE })
/* Frees the buffer and gives the blob back (blob_fds_put()); idempotent. */
void read_reply_done(struct read_reply *rr);

/* How a read that waits for the network is cut short: @begin is called before the wait with
 * the interrupt to raise (fetcher_interrupt(@f, @intr), from any thread, makes the wait end with
 * -EINTR while the fetch goes on for others), @end after it, once any call to
 * fetcher_interrupt() through @begin's arrangement is over.  Either may be NULL. */
struct read_waiter {
	void (*begin)(void *userdata, struct fetcher *f, struct fetch_interrupt *intr);
	void (*end)(void *userdata);
	void *userdata;
	pid_t pid;           /* the reading thread, 0 if unknown: tells the kernel's retry of a
			      * read that timed out from other reads (read_path.c) */
};

/* Reads up to @size bytes of regular file @ino at @off (clamped to the file's size: a short
 * blob shows as a short read, not as extra bytes).  -ENOENT for a bad inode, -EINVAL for a
 * negative offset, -EINTR when @w's interrupt ended the wait for a fetch, -EIO when bytes
 * cannot be had (not in the store and not fetched or verified within the fetcher's timeout,
 * or @ino has no content), -ENOMEM.  On success the caller owns *ret (read_reply_done()). */
int read_path_read(struct read_path *rp, fs_ino_t ino, off_t off, size_t size,
		   const struct read_waiter *w, struct read_reply *ret);
