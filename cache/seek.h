/* cache/seek.h: seek indexes in the cache (cache/format/seek_index.h): kept as blobs of the
 * store under their own digest, named per layer in the index (index_db_seek_*), and what a
 * pull does with them: a tar+gzip layer with an index is indexed lazily from it, its files'
 * chunks read later by the fetcher, instead of being read whole. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cache/store/cache.h"
#include "cache/format/manifest.h"
#include "cache/format/seek_index.h"

#define LAYER_FORMAT_GZIP_INDEX "gzip-index"  /* the layers table's format of such layers */

/* Seek indexes published for an image: one artifact per image manifest, one blob per tar+gzip
 * layer, annotated with the layer's digest (docs/formats.md, "Seek index artifacts"). */
#define SEEK_INDEX_ARTIFACT_TYPE "application/vnd.lazyroot.seek-index.v1"
#define SEEK_INDEX_MEDIA_TYPE "application/vnd.lazyroot.seek-index.v1+binary"
#define SEEK_INDEX_LAYER_ANNOTATION "org.lazyroot.layer.digest"

/* Whether a layer can have a seek index: a gzip tar layer that is neither eStargz nor
 * zstd:chunked. */
bool seek_layer_eligible(const struct layer_desc *l);

/* Keeps an index built here from the verified layer @layer_digest: trusted. */
int seek_store_built(struct cache *c, const char *layer_digest, const void *buf, size_t len,
		     char ret_digest[DIGEST_STRING_MAX]);

/* After seek_store_built() replaced the index of @l: a layer indexed from the index it
 * replaced is indexed again from the new one (the old one may have lied about names). */
int seek_layer_reindex(struct cache *c, const struct layer_desc *l);

/* Keeps an index that came from elsewhere (a registry, a file) for layer @layer_digest of
 * @layer_size compressed bytes, after seek_index_parse() accepted it: untrusted, so its chunks
 * are checked on every read and a mismatch drops it (docs/security.md, "Seek indexes").
 * -EBADMSG/-EFBIG (error.h's message says what) for an index that does not parse or is not
 * this layer's; nothing is kept then. */
int seek_index_import(struct cache *c, const void *buf, size_t len, const char *layer_digest,
		      uint64_t layer_size, char ret_digest[DIGEST_STRING_MAX]);

/* The bytes of the index kept for layer @layer_digest, verified against their digest (not
 * parsed), its digest and whether it was built here (both may be NULL).  -ENOENT when none is
 * kept. */
int seek_index_read(struct cache *c, const char *layer_digest, char **ret_buf, size_t *ret_len,
		    char **ret_digest, bool *ret_trusted);

/* The index kept for @l, parsed (and checked again: the store may have been tampered with).
 * -ENOENT when none is kept. */
int seek_load(struct cache *c, const struct layer_desc *l, struct seek_index **ret,
	      bool *ret_trusted);

/* Forgets the index of @layer_digest (a chunk it named failed its digest): the layer is read
 * whole from then on.  The layer's entries indexed from it go too. */
int seek_drop(struct cache *c, const char *layer_digest);

/* Indexes layer @l from its kept seek index (format LAYER_FORMAT_GZIP_INDEX): 1 when it did,
 * 0 when there is no usable index (the layer is then read whole), -errno. */
int seek_layer_import(struct cache *c, const struct layer_desc *l);

/* Whether layer @l is indexed from its seek index (format LAYER_FORMAT_GZIP_INDEX), by @db. */
bool seek_layer_is_lazy(struct index_db *db, const struct layer_desc *l);

/* How layer @l of a pulled image is served: "eager" (read whole), "estargz", "zstd:chunked"
 * or "gzip-index" (read lazily through its seek index); a static string. */
const char *seek_layer_served(struct cache *c, const struct layer_desc *l);

/* fetcher_options.seek_failed for cache directory @cache_dir: opens the cache anew (a mount
 * daemon holds no connection) and drops the layer's seek index (seek_drop()). */
void seek_failed_drop(void *cache_dir, const char *layer_digest);

/* The chunks a seek_builder cuts, stored in the blob store as the layer streams by
 * (seek_builder_set_sink()): prewarm verifies a layer and fills the store in one read of it.
 * A full store (ENOSPC, EDQUOT) stops the storing, not the stream: the chunks left out are
 * fetched later like any missing chunk.  Blobs are committed unsynced (the caller syncs). */
struct seek_chunk_store {
	struct seek_chunk_sink sink;
	struct blob_store *bs;
	struct blob_txn *txn;   /* of the chunk coming, once its first byte came */
	char **created;         /* blobs this store added (a failed stream removes them) */
	uint64_t stored;        /* chunks stored or found stored */
	bool full;
};
void seek_chunk_store_init(struct seek_chunk_store *s, struct blob_store *bs);
void seek_chunk_store_done(struct seek_chunk_store *s);  /* aborts a chunk half written */

struct fetcher;
/* 1 if a layer of @m is indexed from its seek index (format LAYER_FORMAT_GZIP_INDEX), 0 if
 * none is, -errno. */
int seek_image_is_lazy(struct cache *c, const struct manifest *m);
/* Hands the fetcher of @m's lazy layers the seek index of each layer indexed from one. */
int seek_fetcher_attach(struct cache *c, const struct manifest *m, struct fetcher *f);
