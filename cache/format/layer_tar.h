/* cache/format/layer_tar.h: one streaming pass over a tar layer (uncompressed, gzip or zstd; the
 * compression is detected from the bytes) that indexes every entry and stores every regular
 * file's content in the blob store. */
#pragma once

#include "cache/store/blob_store.h"
#include "cache/store/index_db.h"

/* What -EFBIG means, for the user: the limits of layer_tar.c in words. */
#define LAYER_TAR_LIMITS \
	"it expands to more than 2048 times its compressed size (beyond 256 MiB), " \
	"or has more than 4000000 entries or 1 GiB of names, link targets and xattrs"

/* Reads the layer from @fd (gzip, zstd or plain, see layer_unpack.h), then reads @fd to EOF
 * (bytes after the end-of-archive blocks must still reach the writer that hashes the blob,
 * and the uncompressed ones the diff_id); on success @ret_diff_id is the sha256 of the whole
 * uncompressed stream.  Each entry goes to @w; each regular file's
 * content becomes a blob.  Digests of blobs this call newly created are appended to
 * *@created (a strv), so that the caller can remove them if the layer as a whole fails
 * verification.  Returns -EBADMSG for a corrupt or hostile archive (e.g. a path with "..", a
 * gzip member whose CRC32 or ISIZE is wrong; error.h's message says which when known),
 * -EFBIG for one over the limits LAYER_TAR_LIMITS describes, -EIO for read errors. */
int layer_tar_index(int fd, struct blob_store *bs, struct layer_writer *w, char ***created,
		    char ret_diff_id[DIGEST_STRING_MAX]);
