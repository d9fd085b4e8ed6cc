/* cache/prewarm.h: fetches every chunk of an image's lazy layers (eStargz, zstd:chunked) into
 * the blob store ahead of any read, through a fetcher (cache/fetch.h), so that a later mount
 * needs no registry.  Chunks are stored one by one as they are verified: an interrupted
 * prewarm loses at most the batches in flight, and the next one fetches only what is missing.
 * Whole tar layers are not handled here: image_pull() imports them whole. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "cache/store/blob_store.h"
#include "cache/fetch.h"
#include "cache/store/index_db.h"
#include "cache/format/manifest.h"
#include "cache/base/util.h"

struct prewarm_plan;

/* Lists the chunks of @m's lazy layers that are not in @bs yet: runs of zeros never, each
 * digest once (the first occurrence), in blob order per layer; fetch_chunk.layer is the
 * layer's index in @m->layers, as the fetcher must be built.  Every lazy layer must be indexed
 * (image_pull()): -ENOENT otherwise. */
int prewarm_plan_new(struct index_db *db, struct blob_store *bs, const struct manifest *m,
		     struct prewarm_plan **ret);
struct prewarm_plan *prewarm_plan_free(struct prewarm_plan *p);  /* NULL-safe */
DEFINE_CLEANUP_FUNC(struct prewarm_plan *, prewarm_plan_free);

/* What the plan will fetch: chunks, and their compressed bytes. */
void prewarm_plan_size(const struct prewarm_plan *p, size_t *ret_chunks, uint64_t *ret_bytes);

/* Of those, the compressed bytes of layer @layer (its index in the manifest). */
uint64_t prewarm_plan_layer_bytes(const struct prewarm_plan *p, unsigned layer);

/* The largest batch prewarm_run() makes: the fetcher's fetcher_options.request_max. */
#define PREWARM_BATCH_LIMIT (64ULL * 1024 * 1024)

struct prewarm_options {
	unsigned jobs;         /* threads calling fetcher_ensure() at once; 0: 4 */
	/* Compressed bytes per fetcher_ensure() call at most; 0: 64 MiB.  Batches start at
	 * 8 MiB (or this, if less) and follow the rate each worker sees (prewarm.c). */
	uint64_t batch_max;
	/* Called after each batch with its compressed bytes (fetched or found stored meanwhile),
	 * from a worker thread, one call at a time; may be NULL. */
	void (*progress)(void *userdata, uint64_t bytes);
	void *userdata;
};

/* Fetches every chunk of @p through @f, in batches of adjacent chunks (one Range request
 * each, as the fetcher merges them) taken in blob order by @o->jobs threads.  After the first
 * failed batch no new batch starts.  Returns 0 when every chunk is stored; -EIO if chunks
 * could not be fetched or verified (what was verified stays stored); -ENOSPC when the fetcher
 * verified chunks the store had no room for (fetcher_ensure()); the blob store's error
 * (-ENOSPC, -EROFS, -EACCES…) when a failure left the store unwritable; -ENOMEM.
 * @ret_failed (may be NULL) is set to the number of chunks not stored in every case.
 * The blob store is synced before it returns, so @f may store with defer_sync. */
int prewarm_run(const struct prewarm_plan *p, struct fetcher *f, struct blob_store *bs,
		const struct prewarm_options *o, size_t *ret_failed);
