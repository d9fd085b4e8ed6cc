/* cache/format/seek_index.h: the seek index of a tar+gzip layer (docs/formats.md, "Seek
 * indexes"): every tar entry with the offset of its data in the uncompressed stream, deflate
 * checkpoints (where inflating can start: compressed offset, bit offset, the 32 KiB window)
 * every span of uncompressed bytes, and the sha256 of every chunk (a file's bytes between two
 * checkpoints), so that a lazy read inflates from the nearest checkpoint and every byte it
 * serves is checked against the index.
 *
 * Built while a layer is read whole (layer_unpack.c reports checkpoints, layer_tar.c entries
 * and file data), kept in the blob store under its own digest.  An index that comes from
 * elsewhere is parsed by seek_index_parse(), which refuses anything out of bounds before the
 * rest of lazyroot sees it (docs/security.md, "Seek indexes"). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cache/base/digest.h"
#include "cache/base/util.h"
#include "cache/store/entry.h"

#define SEEK_INDEX_VERSION 2     /* written; 1 (whole windows only) is read too */
#define SEEK_SPAN_DEFAULT (512ULL << 10)  /* chosen by measurement: docs/formats.md */
#define SEEK_SPAN_MAX (64ULL << 20)     /* most an indexed read may inflate before its chunk */
#define SEEK_WINDOW_SIZE 32768
#define SEEK_INDEX_MAX (512ULL << 20)   /* of an index, uncompressed */

/* ---- Building, fed by one pass over the layer ------------------------------------------ */

struct seek_builder;

int seek_builder_new(uint64_t span, struct seek_builder **ret);
struct seek_builder *seek_builder_free(struct seek_builder *b);  /* NULL-safe */
DEFINE_CLEANUP_FUNC(struct seek_builder *, seek_builder_free);

/* From the gzip decoder.  A checkpoint is wanted once @span uncompressed bytes followed the
 * last one; the decoder offers block boundaries (@window: the last up to 32 KiB of output, of
 * this member; inflating resumes @bits bits into @prime_byte, the compressed byte before
 * @coff) and member starts (@member_start: inflating starts at a gzip header, no window,
 * @bits 0).  Progress reports say "after @coff compressed bytes, @uoff came out". */
bool seek_builder_wants_checkpoint(const struct seek_builder *b, uint64_t uoff);
int seek_builder_checkpoint(struct seek_builder *b, uint64_t coff, uint64_t uoff, unsigned bits,
			    uint8_t prime_byte, bool member_start, const void *window,
			    size_t window_len);
int seek_builder_progress(struct seek_builder *b, uint64_t coff, uint64_t uoff);
/* Every compressed byte the decoder takes, in order, from the first checkpoint on: the
 * builder learns from the stream after a checkpoint which bytes of its window it refers to
 * and keeps only those (docs/formats.md, "Seek indexes"; window_probe.h). */
int seek_builder_input(struct seek_builder *b, const void *in, size_t n);
/* Windows kept whole (version 1's way) instead: for measuring what sparse ones save. */
void seek_builder_set_sparse(struct seek_builder *b, bool sparse);
/* The layer cannot be indexed (not gzip, a sparse entry): seek_builder_finish() says why. */
void seek_builder_refuse(struct seek_builder *b, const char *why);

/* From the tar reader, in archive order: a regular file's data starts at @data_off of the
 * uncompressed stream and comes through seek_builder_data(); then its entry.  Entries of other
 * types come alone. */
int seek_builder_file_begin(struct seek_builder *b, uint64_t data_off);
int seek_builder_data(struct seek_builder *b, const void *buf, size_t n);
int seek_builder_entry(struct seek_builder *b, const struct entry *e);

/* Where the bytes of every chunk the builder cuts go as well (prewarm stores them while it
 * verifies a layer, cache/seek.c): @write gets a chunk's bytes in order, @end its sha256 once
 * it is complete.  A chunk of no bytes gets neither.  An error of either stops the build. */
struct seek_chunk_sink {
	int (*write)(void *userdata, const void *buf, size_t n);
	int (*end)(void *userdata, const char *digest);
	void *userdata;
};
void seek_builder_set_sink(struct seek_builder *b, const struct seek_chunk_sink *sink);

/* The index of layer @layer_digest (@blob_size compressed bytes, @tar_size uncompressed):
 * serialized, in a new buffer.  -EOPNOTSUPP (error.h's message says why) when the layer
 * could not be indexed. */
int seek_builder_finish(struct seek_builder *b, const char *layer_digest, uint64_t blob_size,
			uint64_t tar_size, void **ret, size_t *ret_len);

/* ---- Reading --------------------------------------------------------------------------- */

struct seek_index;

/* Parses and validates @buf (docs/formats.md): the version, bounds of every table, offsets
 * monotonic and inside the layer, checkpoints at most SEEK_SPAN_MAX apart, chunks tiling each
 * file and each inside one span, paths normalised (no "..", no escapes), counts limited.  When
 * @layer_digest is not NULL the index must name that layer, and when @blob_size is not 0 that
 * size.  -EBADMSG (error.h's message says what) for anything else, -EFBIG over a limit. */
int seek_index_parse(const void *buf, size_t len, const char *layer_digest, uint64_t blob_size,
		     struct seek_index **ret);
struct seek_index *seek_index_free(struct seek_index *si);  /* NULL-safe */
DEFINE_CLEANUP_FUNC(struct seek_index *, seek_index_free);

struct seek_index_info {
	char layer_digest[DIGEST_STRING_MAX];
	uint64_t blob_size, tar_size, span;
	size_t n_entries, n_chunks, n_checkpoints;
};
void seek_index_get_info(const struct seek_index *si, struct seek_index_info *ret);

/* Calls @cb for each entry in archive order, regular files with their chunks (blob_offset:
 * where the checkpoint's compressed bytes start; blob_length: up to where the chunk is
 * sure to have come out).  The entry's pointers are valid only during the call. */
int seek_index_foreach(const struct seek_index *si,
		       int (*cb)(void *userdata, const struct entry *e), void *userdata);

/* The index came from elsewhere (docs/security.md, "Seek indexes"): from now on every file's
 * tar records are inflated and compared with its entry before its data, and every checkpoint
 * inflating reaches is checked against the span before it (seek_trust.c); a lie makes
 * seek_index_chunk_decode() fail with -EBADMSG.  Call before seek_index_foreach(): the first
 * chunk of a file is then inflated from the checkpoint before its tar records. */
int seek_index_set_untrusted(struct seek_index *si);

/* A chunk as the fetcher asks for it. */
struct seek_chunk_ref {
	uint64_t blob_offset, blob_length, size;
	char digest[DIGEST_STRING_MAX];
};
/* 1 when the chunk (@blob_offset, @digest, @size) of an untrusted index belongs to a file
 * whose tar records were not checked yet and is not its first chunk: *@ret is that first
 * chunk, whose inflate checks them (this one inflates either way, but its file is not
 * proven, seek_index_chunk_proven(), until then).  0 otherwise. */
int seek_index_chunk_first(const struct seek_index *si, uint64_t blob_offset, const char *digest,
			   uint64_t size, struct seek_chunk_ref *ret);

/* Whether seek_index_set_untrusted() was called. */
bool seek_index_untrusted(const struct seek_index *si);
/* Whether the file that chunk (@blob_offset, @digest, @size) belongs to may be served from the
 * blob store as it is: true for a trusted index, and for an untrusted one once that file's tar
 * records were checked in this index (seek_index_chunk_decode() of its first chunk).  A stored
 * chunk proves nothing about this layer (the store is keyed by digest: the bytes may come from
 * any layer), so until then the file's reads go through the fetcher.  False for a chunk the
 * index does not have. */
bool seek_index_chunk_proven(const struct seek_index *si, uint64_t blob_offset,
			     const uint8_t digest[32], uint64_t size);

/* Calls @cb for each chunk of the span whose checkpoint's compressed bytes start at
 * @blob_offset (a chunk's blob_offset, as seek_index_foreach() gave it), in offset order, with
 * its digest, size and blob_length as seek_index_foreach() gave them: what one request from
 * that checkpoint can yield.  -ENOENT when no checkpoint starts there; a negative return of
 * @cb ends the walk and is returned. */
int seek_index_span_foreach(const struct seek_index *si, uint64_t blob_offset,
			    int (*cb)(void *userdata, const char *digest, uint64_t size,
				      uint64_t blob_length),
			    void *userdata);

/* In *ret, where the compressed bytes of the span after the one at @blob_offset (a chunk's
 * blob_offset) start.  -ENOENT when none follows, or no checkpoint starts at @blob_offset. */
int seek_index_span_next(const struct seek_index *si, uint64_t blob_offset, uint64_t *ret);

/* Inflates the chunk named by (@blob_offset, @digest, @size), as seek_index_foreach() gave it,
 * from @in (the blob's bytes [blob_offset, +@in_len)) into @out (@size bytes).  -ENOENT if the
 * index has no such chunk, -EBADMSG if the bytes do not inflate that far.  The caller checks
 * the digest of what comes out. */
int seek_index_chunk_decode(const struct seek_index *si, uint64_t blob_offset, const char *digest,
			    uint64_t size, const void *in, size_t in_len, void *out);

/* Where the last inflate from a checkpoint stopped, so that the next chunk of the same span,
 * further on, continues from there instead of inflating from the checkpoint again: reading the
 * files of a span one after another costs one pass over it, not one per file.  One per thread;
 * the @in of successive calls must hold the same bytes from the same blob offset. */
struct seek_cursor;
int seek_cursor_new(struct seek_cursor **ret);
struct seek_cursor *seek_cursor_free(struct seek_cursor *cur);  /* NULL-safe */
DEFINE_CLEANUP_FUNC(struct seek_cursor *, seek_cursor_free);
/* seek_index_chunk_decode() through @cur (may be NULL). */
int seek_index_chunk_decode_at(const struct seek_index *si, struct seek_cursor *cur,
			       uint64_t blob_offset, const char *digest, uint64_t size,
			       const void *in, size_t in_len, void *out);
/* The same with @in holding the blob's bytes from @in_offset (>= @blob_offset, the span's
 * start) on, @in_len of them: a cursor kept from an earlier request of the same span goes on
 * where it stopped with only the bytes after it (seek_cursor_resume_at()).  -ENODATA when
 * @cur is not at or before the chunk with at least @in_offset consumed (no lie: the caller
 * asked for a start it cannot have). */
int seek_index_chunk_decode_from(const struct seek_index *si, struct seek_cursor *cur,
				 uint64_t blob_offset, const char *digest, uint64_t size,
				 const void *in, uint64_t in_offset, size_t in_len, void *out);
/* 1 and in *ret_offset the blob offset the input must go on from, when @cur stopped in the
 * span at @blob_offset at or before chunk (@digest, @size), ready to inflate it (its file's
 * tar records included, for an untrusted index); 0 otherwise. */
int seek_cursor_resume_at(const struct seek_cursor *cur, const struct seek_index *si,
			  uint64_t blob_offset, const char *digest, uint64_t size,
			  uint64_t *ret_offset);
