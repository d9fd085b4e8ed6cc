/* cache/fsck.h: checks that a cache directory is what lazyroot wrote: every blob hashes to its
 * name, every file content an indexed tar layer names is stored (chunks of lazy layers may be
 * missing: not fetched yet), every seek index named is stored and parses as its layer's, every
 * layer indexed from a seek index has one, no blob is unreferenced, no old temporary is left,
 * and SQLite's integrity_check passes.  With repair, what can be fixed is: bad and orphan blobs
 * and old temporaries are deleted, a tar layer missing contents or a layer without its seek
 * index is dropped from the index so that the next pull imports it again, and a seek index that
 * is missing or does not parse is forgotten (with a layer indexed from it). */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "cache/store/cache.h"

struct fsck_options {
	bool repair;
	unsigned threads;   /* for hashing; 0: one per CPU, at most 8 */
};

struct fsck_result {
	uint64_t n_blobs, blob_bytes;  /* blob files seen */
	unsigned problems, repaired;
};

/* Runs the checks under the cache lock (exclusive).  @problem is called once per problem with
 * one line of text and whether it was repaired.  Returns 0 when the checks ran (look at
 * *ret), -errno when the cache could not be read. */
int cache_fsck(struct cache *c, const struct fsck_options *o,
	       void (*problem)(void *userdata, const char *line, bool repaired), void *userdata,
	       struct fsck_result *ret);
