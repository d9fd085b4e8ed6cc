/* cache/format/seek_cursor_pool.h: inflate cursors (seek_index.h) kept between requests.  A
 * read of a gzip layer through its seek index fetches its span only up to the chunks it needs
 * (and a little more); the cursor that inflated them is parked here, so that the next read in
 * the same span asks the registry for the bytes after it, instead of the span's whole prefix
 * again.  A request claims its span while it runs: a second request for the span waits for
 * it (reads come one after another faster than a request ends) and then goes on from its
 * cursor.  A fetcher has one pool. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "cache/base/util.h"
#include "cache/format/seek_index.h"

#define SEEK_CURSOR_POOL_SIZE 64   /* ~90 KiB each (windows, zlib's state, a discard buffer) */
#define SEEK_CURSOR_CLAIMS_MAX 32  /* spans being fetched at once; past that, nobody waits */

struct seek_cursor_pool;

/* A span a request is fetching (seek_cursor_pool_take()); released by seek_cursor_pool_put(). */
struct seek_span_claim {
	const struct seek_index *si;
	uint64_t blob_offset;
	bool held;
};

int seek_cursor_pool_new(struct seek_cursor_pool **ret);
struct seek_cursor_pool *seek_cursor_pool_free(struct seek_cursor_pool *p);  /* NULL-safe */
DEFINE_CLEANUP_FUNC(struct seek_cursor_pool *, seek_cursor_pool_free);

/* Claims @si's span at @blob_offset for a request, after waiting (until @deadline_ms,
 * CLOCK_MONOTONIC) for another request that has it claimed.  Returns a parked cursor of the
 * span that can inflate chunk (@digest, @size) next (seek_cursor_resume_at()), removed from
 * the pool, with the blob offset its input goes on from in *ret_offset; NULL when there is
 * none.  *claim is set either way (not held after a timeout or with every claim in use). */
struct seek_cursor *seek_cursor_pool_take(struct seek_cursor_pool *p, const struct seek_index *si,
					  uint64_t blob_offset, const char *digest, uint64_t size,
					  int64_t deadline_ms, uint64_t *ret_offset,
					  struct seek_span_claim *claim);

/* Claims @si's span at @blob_offset as seek_cursor_pool_take() does, taking no cursor: a
 * request that goes on into the spans after its first holds them too, so that a request for
 * one of those waits for it and goes on from its cursor instead of fetching that span's start
 * again.  Claims are taken in blob order (no two requests wait for each other).  Released by
 * seek_cursor_pool_put() with no cursor. */
void seek_cursor_pool_claim(struct seek_cursor_pool *p, const struct seek_index *si,
			    uint64_t blob_offset, int64_t deadline_ms,
			    struct seek_span_claim *claim);

/* Releases @claim and parks @cur (may be NULL; the pool owns it from now on): it replaces one
 * parked in the same span, else the least recently parked when the pool is full.  A cursor
 * that stopped on a failure is freed. */
void seek_cursor_pool_put(struct seek_cursor_pool *p, struct seek_span_claim *claim,
			  struct seek_cursor *cur);

/* Frees the cursors of @si (before the index is freed or replaced). */
void seek_cursor_pool_forget(struct seek_cursor_pool *p, const struct seek_index *si);
