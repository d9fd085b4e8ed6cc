/* cache/gc.h: what the cache may forget, and forgetting it.  An image's blobs are the blobs its
 * layers' entries (whole-file contents of tar layers) and chunks (lazy layers) name, and the
 * seek indexes of its gzip layers (cache/seek.h); a blob no indexed layer or seek index names
 * is an orphan, and a seek index of a layer no image uses goes like the layer.  Images are evicted least recently used first
 * (images.last_used, set at every pull/mount), never one a live mount of this cache is pinned to
 * (cache/store/mount_records.h).
 *
 * Concurrency: everything that deletes (gc, rm, fsck) holds CACHE/locks/gc.lock exclusively;
 * image_pull() holds it shared while it imports, so nothing a pull is writing (blobs of a layer
 * not yet committed look like orphans) is ever deleted under it. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>

#include "cache/store/cache.h"

#define GC_TMP_MIN_AGE_SEC 3600  /* a temporary file younger than this may still be written */

/* flock(@operation: LOCK_SH or LOCK_EX) on CACHE/locks/gc.lock, waiting; closing the returned fd
 * releases it. */
int cache_lock(struct cache *c, int operation, int *ret_fd);

/* Calls @cb for each file under CACHE/blobs/sha256/: @rel is "xx/NAME" relative to @dir_fd
 * (blobs/sha256), @digest "sha256:NAME" when NAME is a well-formed digest in its right
 * directory, else NULL.  A negative return from @cb stops and is returned. */
int cache_blob_foreach(struct cache *c,
		       int (*cb)(void *userdata, int dir_fd, const char *rel, const char *digest,
				 const struct stat *st),
		       void *userdata);

struct gc_options {
	uint64_t max_size;      /* evict images while blobs take more disk; 0: evict nothing */
	bool keep_most_recent;  /* never evict the most recently used image (the caller's own) */
	int64_t tmp_min_age;    /* seconds: older files in CACHE/tmp are removed */
	bool no_wait;           /* -EWOULDBLOCK instead of waiting for a pull or another gc */
};

struct gc_result {
	uint64_t orphans, orphan_bytes;  /* blobs no layer named */
	uint64_t tmp_files;
	uint64_t layers_dropped;         /* indexed layers no image used */
	uint64_t seek_indexes_dropped;   /* seek indexes of layers no image used */
	char **evicted;                  /* manifest digests, in eviction order */
	uint64_t evicted_bytes;
	uint64_t n_blobs, blob_bytes;    /* what is left */
};  /* bytes are disk space (blob_disk_bytes()), holes not counted */
void gc_result_done(struct gc_result *r);

/* Takes the cache lock, drops layers and seek indexes no image uses, removes orphan blobs and old temporaries,
 * then evicts as @o says.  -ENOSPC (with *ret filled) if the cache is still larger than
 * max_size when nothing evictable is left. */
int cache_gc(struct cache *c, const struct gc_options *o, struct gc_result *ret);

/* The gc that `mount` and `prewarm` run after a pull: with the configuration file's max-size
 * (see config.h), nothing if it has none.  Keeps the most recently used image, which is the one
 * the caller just pulled.  Returns 1 if it ran, 0 if not configured, -errno (-EINVAL: bad
 * configuration file). */
int cache_gc_auto(struct cache *c);

/* Forgets image @digest: every ref to it, its row, the layers no other image uses (entries and
 * chunks with them, and their seek indexes) and the blobs no remaining layer names.  The caller holds the cache lock
 * exclusively and has checked that no mount is pinned to it.  Adds the bytes of the removed blob
 * files to *ret_freed (may be NULL). */
int cache_image_remove(struct cache *c, const char *digest, uint64_t *ret_freed);
