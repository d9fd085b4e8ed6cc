/* fs/local_readahead.h: reads ahead of a reader walking the tree (tar, cp, rsync): when a file
 * is read, a few worker threads open the stored blobs of the files that follow it in tree order
 * (depth first, readdir order, as those tools walk it), ask the kernel to read them into the
 * page cache and leave the open fds in the blob fd cache.  A cold walk then finds its next files
 * on their way from disk instead of reading one blob after the other.  Only blobs already in the
 * store are touched: read-ahead never fetches. */
#pragma once

#include <stdint.h>

#include "fs/tree.h"

struct blob_fds;
struct blob_store;
struct local_ra;

/* Borrows @tree (frozen), @bs and @fds, which must outlive the read-ahead; keeps at most a
 * quarter of @fds_slots files open ahead of the reader.  Allocates nothing else and starts no
 * thread until the first local_ra_note_read(): safe to create before fork(). */
int local_ra_new(const struct fs_tree *tree, struct blob_store *bs, struct blob_fds *fds,
		 unsigned fds_slots, struct local_ra **ret);
/* NULL-safe; stops the workers and waits for them. */
struct local_ra *local_ra_free(struct local_ra *ra);

/* A read of @ino: moves the window to the files after @ino.  Cheap (a lock, no I/O); never
 * fails: without memory or threads there is simply no read-ahead. */
void local_ra_note_read(struct local_ra *ra, fs_ino_t ino);

/* Blobs opened ahead of readers so far (for tests and stats). */
uint64_t local_ra_opened(struct local_ra *ra);
