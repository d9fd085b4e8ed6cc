/* cache/format/layer_unpack.h: the uncompressed stream of a layer read whole, from a file
 * descriptor: gzip (every member's CRC32 and ISIZE checked), zstd (frame checksums checked when
 * a frame has one) or plain, told apart by the first bytes as docker and containerd do.  What
 * comes out is hashed: its sha256 is the layer's diff_id. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "cache/base/digest.h"
#include "cache/base/util.h"

struct layer_unpack;

int layer_unpack_new(int fd, struct layer_unpack **ret);
struct layer_unpack *layer_unpack_free(struct layer_unpack *u);  /* NULL-safe */
DEFINE_CLEANUP_FUNC(struct layer_unpack *, layer_unpack_free);

struct seek_builder;
/* Reports checkpoints and progress of a gzip layer to @b (not owned), which is told to refuse
 * when the layer is not gzip.  Call before the first read. */
void layer_unpack_set_seek_builder(struct layer_unpack *u, struct seek_builder *b);

/* The next piece of the uncompressed stream, valid until the next call; *ret_n is 0 at its
 * end.  -EBADMSG (with error.h's message) for a corrupt stream: a gzip member whose trailer
 * does not match its data, a member or frame cut short, bytes after the last gzip member
 * that are not another member; -EIO if reading @fd failed.  A failure is sticky. */
int layer_unpack_read(struct layer_unpack *u, const void **ret_buf, size_t *ret_n);
/* The failure layer_unpack_read() returned, or 0. */
int layer_unpack_error(const struct layer_unpack *u);
/* Bytes read from the fd and bytes handed out so far. */
void layer_unpack_counts(const struct layer_unpack *u, uint64_t *ret_in, uint64_t *ret_out);
/* The sha256 of the whole uncompressed stream: -EBUSY until layer_unpack_read() reached
 * its end. */
int layer_unpack_diff_id(struct layer_unpack *u, char ret[DIGEST_STRING_MAX]);
