/* cache/format/layer_tar.h: one streaming pass over a tar layer (uncompressed, gzip or zstd; the
 * compression is detected from the bytes) that indexes every entry and stores every regular
 * file's content in the blob store. */
#pragma once

#include <stdint.h>

#include "cache/store/blob_store.h"
#include "cache/store/index_db.h"

/* What one layer may expand to (docs/security.md, "Bombs"): the tar stream plus the holes of
 * sparse entries, counted as they are read.  The config file can change both (config.h). */
struct layer_limits {
	uint64_t max_expanded;  /* bytes in all; 0 for no limit */
	uint64_t max_ratio;     /* bytes per compressed byte once LAYER_EXPAND_FREE are out */
	const char *source;     /* where they were set, named in a refusal; may be NULL */
};
#define LAYER_MAX_EXPANDED_DEFAULT (64ULL << 30)
#define LAYER_MAX_RATIO_DEFAULT 2048
#define LAYER_EXPAND_FREE (256ULL << 20)
#define LAYER_LIMITS_DEFAULT \
	((struct layer_limits) { LAYER_MAX_EXPANDED_DEFAULT, LAYER_MAX_RATIO_DEFAULT, NULL })

/* Reads the layer from @fd (gzip, zstd or plain, see layer_unpack.h), then reads @fd to EOF
 * (bytes after the end-of-archive blocks must still reach the writer that hashes the blob,
 * and the uncompressed ones the diff_id); on success @ret_diff_id is the sha256 of the whole
 * uncompressed stream.  Each entry goes to @w; each regular file's
 * content becomes a blob.  Digests of blobs this call newly created are appended to
 * *@created (a strv), so that the caller can remove them if the layer as a whole fails
 * verification.  Returns -EBADMSG for a corrupt or hostile archive (e.g. a path with "..", a
 * gzip member whose CRC32 or ISIZE is wrong; error.h's message says which when known),
 * -EFBIG over @limits (NULL: the defaults) or the fixed limits on entries (the message,
 * error.h, says which limit and its config key), -EIO for read errors. */
int layer_tar_index(int fd, struct blob_store *bs, const struct layer_limits *limits,
		    struct layer_writer *w, char ***created, char ret_diff_id[DIGEST_STRING_MAX]);

struct seek_builder;
/* layer_tar_index() that also feeds @seek (may be NULL), the seek index of the layer
 * (cache/format/seek_index.h), and returns the uncompressed length in *@ret_tar_size (may be
 * NULL).  With @bs NULL, file contents are hashed but not stored; with @w NULL, entries are
 * not indexed: a pass that only builds a seek index. */
int layer_tar_index_seek(int fd, struct blob_store *bs, const struct layer_limits *limits,
			 struct layer_writer *w, char ***created, struct seek_builder *seek,
			 char ret_diff_id[DIGEST_STRING_MAX], uint64_t *ret_tar_size);
