/* cache/format/layer_lazy.h: layers that can be read without downloading them: eStargz and
 * zstd:chunked.  At mount only the footer and the TOC are fetched (Range requests), the TOC is
 * verified against the digest the manifest's annotations give, and its entries — with their
 * chunks — are indexed.  Contents are fetched later, chunk by chunk (cache/fetch.h). */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "cache/store/index_db.h"
#include "cache/format/manifest.h"

enum layer_format {
	LAYER_FORMAT_TAR,           /* read whole, once (cache/format/layer_tar.h) */
	LAYER_FORMAT_ESTARGZ,
	LAYER_FORMAT_ZSTD_CHUNKED,
};

const char *layer_format_to_string(enum layer_format f);  /* "tar", "estargz", "zstd:chunked" */

/* From the descriptor alone: zstd:chunked when a zstd layer carries the
 * io.github.containers.zstd-chunked.manifest-position/-checksum annotations (or the older
 * io.containers.zstd-chunked.* names); eStargz when a gzip layer carries
 * containerd.io/snapshot/stargz/toc.digest; otherwise tar. */
enum layer_format layer_format_detect(const struct layer_desc *l);

/* Reads [offset, offset+len) of the layer blob into @buf, exactly @len bytes or -errno. */
struct blob_range_reader {
	int (*read)(void *userdata, uint64_t offset, size_t len, void *buf);
	void *userdata;
};

/* Fetches the footer and TOC of a lazy layer through @rd, verifies the TOC (eStargz: sha256 of
 * the TOC JSON == toc.digest annotation; zstd:chunked: sha256 of the compressed TOC ==
 * manifest-checksum, and toc.digest too when present), and adds every entry with its chunks
 * to @w, in TOC order.  The formats' own entries (stargz.index.json, .prefetch.landmark,
 * .no.prefetch.landmark) are not added; entries before .prefetch.landmark get prefetch=true.
 * Returns -EBADMSG when verification fails or the TOC is malformed or points outside the
 * blob, -EPROTO for a footer that is not the format's. */
int layer_lazy_index(const struct layer_desc *l, enum layer_format format,
		     const struct blob_range_reader *rd, struct layer_writer *w);

/* layer_lazy_index() without the database: each entry goes to @add, in TOC order; its pointers
 * are valid only during the call, and a negative return from @add stops and is returned. */
int layer_lazy_parse(const struct layer_desc *l, enum layer_format format,
		     const struct blob_range_reader *rd,
		     int (*add)(void *userdata, const struct entry *e), void *userdata);

/* Decompresses a chunk's compressed bytes (one or more gzip members / zstd frames starting at
 * the chunk) and writes exactly @size bytes to @out: the chunk's data.  -EBADMSG if the data
 * does not decompress to at least @size bytes. */
int chunk_decompress(enum layer_compression compression, const void *in, size_t in_len,
		     void *out, size_t size);
