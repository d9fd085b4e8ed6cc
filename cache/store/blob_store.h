/* cache/store/blob_store.h: immutable content blobs on local disk, named by their SHA-256.
 * Layout: DIR/blobs/sha256/ab/abcdef… (the full hex), temporaries in DIR/tmp/.
 * A blob under its final name is always whole and verified: it is written to a temporary file,
 * hashed while written, fsynced, then renamed into place. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "cache/base/digest.h"

struct blob_store;
struct blob_txn;

/* What a blob file costs the cache's disk: zeros are stored as holes (docs/security.md,
 * "Bombs"), so st_size, the blob's length, can be thousands of times more.  gc's max-size and
 * the bytes `images` shows count this; digests and descriptors check st_size. */
static inline uint64_t blob_disk_bytes(const struct stat *st)
{
	return (uint64_t)st->st_blocks * 512;
}

/* Opens (creating if needed, mode 0700) the store under @cache_dir. */
int blob_store_open(const char *cache_dir, struct blob_store **ret);
/* For a cache directory that cannot be written: creates nothing; blob_txn_begin*() then fail
 * with -EROFS. */
int blob_store_open_readonly(const char *cache_dir, struct blob_store **ret);
struct blob_store *blob_store_free(struct blob_store *bs);  /* NULL-safe */
static inline void blob_store_freep(struct blob_store **bs)
{
	*bs = blob_store_free(*bs);
}

/* -ENOENT if the blob isn't stored, -EBADMSG if @digest is malformed. fd is O_RDONLY|O_CLOEXEC. */
int blob_store_open_blob(struct blob_store *bs, const char *digest, int *ret_fd);
/* As blob_store_open_blob(), but a blob that is not @size bytes is -ENOENT: a chunk stored
 * without fsync (BLOB_TXN_NO_SYNC) that a power loss left short is missing, and fetching it
 * again replaces it. */
int blob_store_open_blob_sized(struct blob_store *bs, const char *digest, uint64_t size,
			       int *ret_fd);
/* 1 if present, 0 if not, -errno. */
int blob_store_has(struct blob_store *bs, const char *digest);
/* As blob_store_has(), but a blob of another size than @size counts as absent: after a power
 * loss, a blob committed with BLOB_TXN_NO_SYNC may be short (see blob_store.c), and what is
 * short must be fetched again, not served.  The next commit of that digest replaces it. */
int blob_store_has_size(struct blob_store *bs, const char *digest, uint64_t size);
/* -ENOENT if absent. */
int blob_store_remove(struct blob_store *bs, const char *digest);

/* Starts writing a blob whose digest is computed as it is written. */
int blob_txn_begin(struct blob_store *bs, struct blob_txn **ret);
/* BLOB_TXN_NO_SYNC: commit does not fsync the blob; the caller calls blob_store_sync() before
 * anything durable (the index) names it.  For importers that store thousands of blobs: one
 * syncfs instead of one fsync each.  A blob left short by a power loss before the sync is
 * replaced by the next writer of the same digest (its size gives it away). */
#define BLOB_TXN_NO_SYNC 1u
int blob_txn_begin_flags(struct blob_store *bs, unsigned flags, struct blob_txn **ret);
/* Sets *ret to the bytes free for new blobs on the store's file system (statvfs). */
int blob_store_free_bytes(struct blob_store *bs, uint64_t *ret);
/* Makes every blob written so far durable (syncfs of the store's file system). */
int blob_store_sync(struct blob_store *bs);
int blob_txn_write(struct blob_txn *t, const void *buf, size_t n);
/* Finishes the blob: if @expected is non-NULL and differs, -EBADMSG and nothing is kept.
 * On success writes the digest into @ret_digest (may be NULL) and sets *ret_created (may be
 * NULL) to true when this call stored the blob, false when it was already there.
 * Always frees @t. */
int blob_txn_commit(struct blob_txn *t, const char *expected, char ret_digest[DIGEST_STRING_MAX],
		    bool *ret_created);
void blob_txn_abort(struct blob_txn *t);  /* NULL-safe, frees t, removes the temporary */
static inline void blob_txn_abortp(struct blob_txn **t)
{
	blob_txn_abort(*t);
}
