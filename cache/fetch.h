/*
 * cache/fetch.h: turns missing chunks of lazy layers into verified local blobs, on demand.
 * Used by the mount daemon from many FUSE threads at once:
 * - a chunk already in the blob store costs nothing here (callers check the store first);
 * - concurrent requests for the same missing chunk cause one fetch: later callers wait for the
 *   first (single flight, keyed by the chunk's digest);
 * - adjacent missing chunks of one layer are fetched with one Range request;
 * - fetched bytes are decompressed, verified against the chunk's digest, and only then stored
 *   (blob_txn_commit with the expected digest): bytes that fail are never stored or returned;
 * - a slow fetch blocks only the readers that need it.
 * Prefetch work runs on a background thread and always yields to reads.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cache/store/blob_store.h"
#include "cache/base/digest.h"
#include "cache/format/layer_lazy.h"
#include "cache/format/seek_index.h"
#include "cache/format/manifest.h"
#include "cache/registry/range_source.h"
#include "cache/registry/source.h"

struct fetcher;

/* One lazy layer of the mounted image, as fetch_chunk.layer indexes them. */
struct fetch_layer {
	const char *digest;                 /* the layer blob, for Range requests */
	enum layer_compression compression; /* gzip (eStargz) or zstd (zstd:chunked) */
	uint64_t size;                      /* blob size: no range may pass it */
	/* A tar+gzip layer read through its seek index (cache/seek.h): chunks are inflated from
	 * the index's checkpoints.  Owned by the fetcher (fetcher_set_seek_index()). */
	struct seek_index *seek;
	bool seek_failed;   /* internal: a chunk of @seek failed, the layer is read no more */
};

struct fetch_chunk {
	unsigned layer;          /* index into the fetcher's layers */
	uint64_t blob_offset;
	uint64_t blob_length;
	uint64_t size;           /* uncompressed */
	char digest[DIGEST_STRING_MAX];
	/* Fetched along with the others, in the same requests, but not waited for: the call
	 * returns once the chunks it needs are in, and its result ignores this one (read-around:
	 * a read's fetch-ahead and neighbours).  Runs holding needed chunks go first. */
	bool ahead;
	/* Fetched even when stored: the first chunk of a file of an untrusted seek index, which
	 * must be inflated (its tar records checked) before any chunk of the file is served. */
	bool refetch;
};

struct fetch_stats {
	uint64_t bytes_fetched;        /* compressed bytes received from the registry */
	uint64_t requests;             /* Range requests sent (counted when answered) */
	uint64_t requests_running;     /* Range requests being sent or answered now */
	uint64_t chunks_fetched;       /* chunks fetched, verified and stored */
	uint64_t chunks_cached;        /* chunk reads served from the blob store (fetch_note_hit) */
	uint64_t chunks_failed;        /* chunks that could not be fetched or failed verification */
	uint64_t chunks_refetched;     /* chunks asked for again after wrong or short bytes */
	uint64_t chunks_no_space;      /* chunks fetched and verified that the store had no room
					* for (ENOSPC, EDQUOT): served from memory, not stored */
	uint64_t prefetch_total;       /* chunks queued for prefetch */
	uint64_t prefetch_done;        /* of those, now in the store (fetched or found) */
	bool prefetch_running;
};

struct fetcher_options {
	/* Store chunks without an fsync each; the caller calls blob_store_sync() when it is
	 * done (prewarm: hundreds of chunks a second, where one fsync each would stall the
	 * receiving connection).  A mount's reads keep one fsync per chunk. */
	bool defer_sync;
	/* Bound of one fetcher_ensure() call, waits and retries included (and, for
	 * fetcher_new_for_image(), of each request in it); 0: 60 s per call and 30 s per request
	 * (a mount's --timeout sets it). */
	long timeout_ms;
	/* Largest Range request a fetcher_ensure() call merges its chunks into; 0: 16 MiB, at
	 * most 64 MiB.  Runs are streamed (memory: one chunk), so what bounds it is that a
	 * request must end within the per-request timeout: prewarm, which sizes its calls by
	 * the rate it sees, raises it. */
	uint64_t request_max;
	/* Called (from a fetching thread, one call at a time) when storing a chunk of @need bytes
	 * failed for lack of space: returns 1 if it freed room (then the chunk is stored again,
	 * once), 0 if not, -errno.  NULL: nothing to evict. */
	int (*make_room)(void *userdata, uint64_t need);
	void *make_room_userdata;
	/* Called (from a fetching thread, once per layer) when a chunk of a layer read through
	 * its seek index does not inflate to its digest: the index lied (or the bytes were
	 * wrong), so the caller forgets it and the layer is read whole from the next pull.  The
	 * fetcher fails every later chunk of that layer.  NULL: nothing to do. */
	void (*seek_failed)(void *userdata, const char *layer_digest);
	void *seek_failed_userdata;
	/* The cache directory, for the message a full store logs; copied.  May be NULL. */
	const char *cache_dir;
	/* Prewarm: a chunk the store has no room for only fails its call with -ENOSPC; it is
	 * neither kept in memory (nobody reads it) nor logged (the caller says the cache is
	 * full).  A mount serves such chunks from memory. */
	bool store_only;
};

/* Reads chunks through @src, which it takes (freed by fetcher_free(), or at once on failure);
 * copies @layers and @o.  Makes no request yet. */
int fetcher_new(struct range_source *src, const struct fetcher_options *o, struct blob_store *bs,
		const struct fetch_layer *layers, size_t n_layers, struct fetcher **ret);
/* The fetcher of an image's lazy layers, as the mount daemon and prewarm build it: the layers
 * of @m (fetch_chunk.layer indexes @m->layers), read through source_range_new(@ref, @ro) (the
 * image's registry, mirrors first, or its local layout or archive; @ro copied once), each
 * request bounded by @o's timeout. */
int fetcher_new_for_image(const struct reference *ref, const struct manifest *m,
			  const struct registry_options *ro, const struct fetcher_options *o,
			  struct blob_store *bs, struct fetcher **ret);
struct fetcher *fetcher_free(struct fetcher *f);  /* NULL-safe; stops prefetch first */
DEFINE_CLEANUP_FUNC(struct fetcher *, fetcher_free);

/* Makes sure each of @chunks (any order, any layers) is in the blob store, fetching what is
 * missing, within the fetcher's timeout.  Returns 0 when all are stored, -EIO if any could not
 * be fetched or verified (the others may still have been stored), -ETIMEDOUT instead when the
 * call failed at the end of its timeout (the registry did not answer in time), -ENOSPC instead
 * when the store is full (chunks verified but not stored: fetcher_read_unstored()).
 * While the store is full, chunks marked ahead and prefetch are not fetched (retried every few
 * seconds, and at once after a chunk was stored).  Fetches on the
 * calling thread: the call cannot be interrupted, and it waits for chunks marked ahead too
 * (their failure still does not count). */
int fetcher_ensure(struct fetcher *f, const struct fetch_chunk *chunks, size_t n);

/* Lets a waiting fetcher_ensure_interruptible() return early, e.g. when the process whose read
 * needs the chunks got a signal.  Zero-initialise it; set it only with fetcher_interrupt(). */
struct fetch_interrupt {
	bool interrupted;   /* guarded by the fetcher's lock */
};

/* As fetcher_ensure(), but the chunks this call fetches are fetched on a thread of their own,
 * so that fetcher_interrupt(@intr) (from any thread, before or during the call) makes the call
 * return -EINTR at once, and so that the call returns as soon as the chunks not marked ahead
 * are in (the thread goes on with the rest).  The fetch goes on then: other callers waiting for the same chunks
 * get them, and they are stored for later reads.  (If no thread can be started, the call
 * fetches itself and an interrupt ends only its waits for other calls' fetches.) */
int fetcher_ensure_interruptible(struct fetcher *f, const struct fetch_chunk *chunks, size_t n,
				 struct fetch_interrupt *intr);
void fetcher_interrupt(struct fetcher *f, struct fetch_interrupt *intr);

/* How many bytes beyond what a read waits for its requests should carry: what the link moved
 * in one round trip, as this fetcher's requests measured it (cache/link_estimate.h), at most
 * @max; @max before anything is measured; 0 on a link too slow for it to pay. */
uint64_t fetcher_read_around_bytes(struct fetcher *f, uint64_t max);
/* @max for a layer read through its seek index: a miss there inflates its span in sequence and
 * the inflate cursor is kept (cache/format/seek_cursor_pool.h), so a later miss in the span
 * asks only for the bytes after the last request; what comes along saves a round trip only to
 * a read that falls inside it.  Of 0, 32 and 128 KiB, 32 KiB fetched 0.8 MB less than 128 KiB
 * before the benchmark's python3 start exited with one request more (docs/benchmarks.md,
 * "Lazy gzip"). */
#define FETCH_SEEK_AHEAD_MAX (32U * 1024)

/* Copies @n bytes at @off of chunk @digest to @dst if the chunk was fetched and verified but
 * could not be stored (the cache file system was full) and is still held in memory (up to
 * 64 MiB of such chunks, the oldest forgotten first).  -ENOENT if it is not held and the store
 * has room, -ENOSPC if it is not held and the store was full at its last write. */
int fetcher_read_unstored(struct fetcher *f, const char *digest, uint64_t off, size_t n,
			  void *dst);

/* Counts a chunk served from the store, for the stats. */
void fetcher_note_hit(struct fetcher *f);

/* Queues @chunks for background fetching (taking a copy) and starts the prefetch thread if it
 * is not running.  Prefetch pauses while any fetcher_ensure() is in progress. */
int fetcher_prefetch(struct fetcher *f, const struct fetch_chunk *chunks, size_t n);

void fetcher_get_stats(struct fetcher *f, struct fetch_stats *ret);

/* Layer @layer's chunks are cut from the blob by @si (taken: freed with the fetcher, or at
 * once on failure).  Call before the first fetch.  -EINVAL for a layer out of range. */
int fetcher_set_seek_index(struct fetcher *f, unsigned layer, struct seek_index *si);
/* Whether layer @layer is read through a seek index: its chunks of one span all start at the
 * span's checkpoint, and a request for one brings every chunk of the span before it. */
bool fetcher_layer_is_seek(struct fetcher *f, unsigned layer);
/* Whether chunk (@blob_offset, @digest, @size) of layer @layer may be served from the blob store
 * without a fetcher call: false only for a file of a layer read through an untrusted seek index
 * whose tar records were not checked in this mount yet (seek_index_chunk_proven()); such a
 * read asks fetcher_ensure() for its chunks with refetch set, which checks them or fails. */
bool fetcher_chunk_proven(struct fetcher *f, unsigned layer, uint64_t blob_offset,
			  const uint8_t digest[32], uint64_t size);
