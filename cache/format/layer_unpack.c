/*
 * cache/format/layer_unpack.c: decompresses a layer read whole, for layer_tar.c, and hashes
 * what comes out (the diff_id the image's config promises).
 *
 * Why not libarchive's filters: its gzip reader inflates raw deflate and skips the member
 * trailer unchecked (3.6: "XXX TODO: Verify the length and CRC"), and it does not hand out
 * the uncompressed bytes to hash.  zlib in gzip mode checks each member's CRC32 and ISIZE;
 * members follow one another (eStargz layers are hundreds of them), and whatever follows the
 * last must be another member, as Go's gzip reader (docker, containerd) insists.
 *
 * Load: one pass over up to a few GiB, 128 KiB in and out at a time.
 */
#include "layer_unpack.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>
#include <zstd_errors.h>

#include "cache/base/error.h"
#include "cache/base/util.h"
#include "cache/format/seek_index.h"

#define BUF_SIZE (128 * 1024)

enum unpack_kind { UNPACK_UNKNOWN, UNPACK_PLAIN, UNPACK_GZIP, UNPACK_ZSTD };

struct layer_unpack {
	int fd;                  /* not owned */
	enum unpack_kind kind;
	z_stream zs;
	bool zs_ready;
	bool member_ended;       /* gzip: the last member ended, its trailer checked */
	unsigned member;         /* gzip: 1-based number of the member being inflated */
	ZSTD_DStream *zd;
	size_t zstd_hint;        /* 0: the last frame is complete */
	bool out_full;           /* the decoder filled u->out: it may hold more without input */
	uint8_t in[BUF_SIZE];
	size_t in_pos, in_len;
	bool in_eof;
	uint8_t in_last;         /* the last byte of the previous buffer */
	uint8_t out[BUF_SIZE];
	struct digest_ctx *hash;
	uint64_t bytes_in, bytes_out;
	bool done;
	int error;
	struct seek_builder *seek;  /* not owned; NULL: no checkpoints */
};

static void layer_unpack_done(struct layer_unpack *u)
{
	if (u->zs_ready)
		(void)inflateEnd(&u->zs);
	ZSTD_freeDStream(u->zd);
	digest_ctx_free(u->hash);
}
DEFINE_FREE_FUNC(struct layer_unpack, layer_unpack_free, layer_unpack_done);

int layer_unpack_new(int fd, struct layer_unpack **ret)
{
	_cleanup_(layer_unpack_freep) struct layer_unpack *u = NULL;
	int r;

	u = calloc(1, sizeof(*u));
	if (!u)
		return -ENOMEM;
	u->fd = fd;
	r = digest_ctx_new(&u->hash);
	if (r < 0)
		return r;
	*ret = TAKE_PTR(u);
	return 0;
}

/* Refills the input buffer when it is empty; sets in_eof at the end of the fd. */
/* Fills the input buffer whole (less only at the end): zlib's position after each call, which
 * the seek builder records, then depends on the layer's bytes alone, not on how they arrived
 * (a pipe's, a socket's pieces), so that one layer always gives the same index, byte for byte:
 * an index is content-addressed, and hosts that index the same layer share it. */
static int fill(struct layer_unpack *u)
{
	ssize_t n;

	if (u->in_pos < u->in_len || u->in_eof)
		return 0;
	if (u->in_len > 0)
		u->in_last = u->in[u->in_len - 1];
	n = read_full(u->fd, u->in, sizeof(u->in));
	if (n < 0)
		return -EIO;
	u->in_pos = 0;
	u->in_len = (size_t)n;
	u->in_eof = n == 0;
	u->bytes_in += (uint64_t)n;
	return 0;
}

/* Reads the first buffer (or to the end) and picks the decoder from its first bytes. */
static int detect(struct layer_unpack *u)
{
	static const uint8_t gzip_magic[] = { 0x1f, 0x8b }, zstd_magic[] = { 0x28, 0xb5, 0x2f, 0xfd };
	int r;

	/* A whole buffer, as fill() reads: see there. */
	while (u->in_len < sizeof(u->in) && !u->in_eof) {
		ssize_t n = read_full(u->fd, u->in + u->in_len, sizeof(u->in) - u->in_len);

		if (n < 0)
			return -EIO;
		u->in_eof = n == 0;
		u->in_len += (size_t)n;
		u->bytes_in += (uint64_t)n;
	}
	if (u->in_len >= 2 && memcmp(u->in, gzip_magic, 2) == 0) {
		if (inflateInit2(&u->zs, 15 + 16) != Z_OK)
			return -ENOMEM;
		u->zs_ready = true;
		u->member = 1;
		u->kind = UNPACK_GZIP;
	} else if (u->in_len >= 4 && memcmp(u->in, zstd_magic, 4) == 0) {
		u->zd = ZSTD_createDStream();
		if (!u->zd)
			return -ENOMEM;
		/* As libarchive allowed: windows up to 2 GiB (zstd --long=31). */
		r = ZSTD_isError(ZSTD_DCtx_setParameter(u->zd, ZSTD_d_windowLogMax, 31)) ? -EINVAL : 0;
		if (r < 0)
			return r;
		u->kind = UNPACK_ZSTD;
	} else {
		u->kind = UNPACK_PLAIN;
	}
	if (u->seek && u->kind != UNPACK_GZIP)
		seek_builder_refuse(u->seek, "the layer is not gzip-compressed");
	return 0;
}

void layer_unpack_set_seek_builder(struct layer_unpack *u, struct seek_builder *b)
{
	u->seek = b;
}

/* The compressed offset of the next byte zlib will take. */
static uint64_t gzip_coff(const struct layer_unpack *u)
{
	return u->bytes_in - (u->in_len - u->in_pos);
}

/* After an inflate() call that left @produced bytes in u->out: where the stream is, and a
 * checkpoint if this is a block boundary the builder wants (zran.c's test: data_type 128 is
 * "at a block boundary", 64 "the last block", the low bits unused bits of the last byte). */
static int gzip_seek_note(struct layer_unpack *u, size_t produced)
{
	uint64_t uoff = u->bytes_out + produced, coff = gzip_coff(u);
	uint8_t window[32768];
	uInt wlen = sizeof(window);
	int r = 0;

	if (produced > 0)
		r = seek_builder_progress(u->seek, coff, uoff);
	/* The end of a member's last block (Z_BLOCK stops there too): the next member's header,
	 * if one follows the 8-byte trailer, is a place to start with no window.  Noted now,
	 * before this output reaches the tar reader, whose files are cut into chunks at
	 * checkpoints; one past the end of the blob is dropped by the builder. */
	if (r >= 0 && (u->zs.data_type & 128) && (u->zs.data_type & 64) &&
	    seek_builder_wants_checkpoint(u->seek, uoff))
		return seek_builder_checkpoint(u->seek, coff + 8, uoff, 0, 0, true, NULL, 0);
	if (r < 0 || !(u->zs.data_type & 128) || (u->zs.data_type & 64) ||
	    !seek_builder_wants_checkpoint(u->seek, uoff))
		return r;
	if (inflateGetDictionary(&u->zs, window, &wlen) != Z_OK)
		return -ENOMEM;
	return seek_builder_checkpoint(u->seek, coff, uoff, u->zs.data_type & 7,
				       u->in_pos > 0 ? u->in[u->in_pos - 1] : u->in_last, false,
				       window, wlen);
}

static const char *zlib_reason(const z_stream *zs)
{
	if (zs->msg && streq(zs->msg, "incorrect data check"))
		return "the CRC32 in its trailer does not match its data";
	if (zs->msg && streq(zs->msg, "incorrect length check"))
		return "the length (ISIZE) in its trailer does not match its data";
	return zs->msg ?: "corrupt data";
}

/* Inflates into u->out; *ret_n 0 only at the end of the last member. */
static int gzip_step(struct layer_unpack *u, size_t *ret_n)
{
	for (;;) {
		const uint8_t *taken;
		int r = fill(u), zr;

		if (r < 0)
			return r;
		if (u->in_pos == u->in_len && !u->out_full) {
			if (!u->member_ended)
				return error_set(-EBADMSG, "gzip member %u is cut short", u->member);
			*ret_n = 0;
			return 0;
		}
		if (u->member_ended) {
			/* More bytes: they must be the next member (zlib checks its header). */
			if (inflateReset(&u->zs) != Z_OK)
				return -ENOMEM;

			u->member_ended = false;
			u->member++;
		}
		u->zs.next_in = u->in + u->in_pos;
		u->zs.avail_in = (uInt)(u->in_len - u->in_pos);
		u->zs.next_out = u->out;
		u->zs.avail_out = sizeof(u->out);
		zr = inflate(&u->zs, u->seek ? Z_BLOCK : Z_NO_FLUSH);
		taken = u->in + u->in_pos;
		u->in_pos = u->in_len - u->zs.avail_in;
		/* What this call took follows the checkpoints before, not one it may add now. */
		if (u->seek && (zr == Z_OK || zr == Z_STREAM_END)) {
			r = seek_builder_input(u->seek, taken, (size_t)(u->in + u->in_pos - taken));
			if (r >= 0)
				r = gzip_seek_note(u, sizeof(u->out) - u->zs.avail_out);
			if (r < 0)
				return r;
		}
		if (zr == Z_STREAM_END)
			u->member_ended = true;
		else if (zr == Z_MEM_ERROR)
			return -ENOMEM;
		else if (zr != Z_OK && zr != Z_BUF_ERROR && u->member > 1 && u->zs.total_in < 10)
			return error_set(-EBADMSG, "the bytes after gzip member %u are not a gzip "
					 "member (%s)", u->member - 1, zlib_reason(&u->zs));
		else if (zr != Z_OK && zr != Z_BUF_ERROR)
			return error_set(-EBADMSG, "gzip member %u is corrupt: %s", u->member,
					 zlib_reason(&u->zs));
		*ret_n = sizeof(u->out) - u->zs.avail_out;
		u->out_full = zr != Z_STREAM_END && u->zs.avail_out == 0;
		if (*ret_n > 0)
			return 0;
	}
}

static int zstd_step(struct layer_unpack *u, size_t *ret_n)
{
	for (;;) {
		ZSTD_inBuffer ib;
		ZSTD_outBuffer ob = { .dst = u->out, .size = sizeof(u->out) };
		int r = fill(u);
		size_t z;

		if (r < 0)
			return r;
		if (u->in_pos == u->in_len && !u->out_full) {
			if (u->zstd_hint != 0)
				return error_set(-EBADMSG, "the zstd stream is cut short");
			*ret_n = 0;
			return 0;
		}
		ib = (ZSTD_inBuffer) { .src = u->in, .size = u->in_len, .pos = u->in_pos };
		z = ZSTD_decompressStream(u->zd, &ob, &ib);
		u->in_pos = ib.pos;
		if (ZSTD_isError(z)) {
			if (ZSTD_getErrorCode(z) == ZSTD_error_memory_allocation)
				return -ENOMEM;
			return error_set(-EBADMSG, "the zstd stream is corrupt: %s",
					 ZSTD_getErrorName(z));
		}
		u->zstd_hint = z;
		u->out_full = ob.pos == ob.size;
		*ret_n = ob.pos;
		if (*ret_n > 0)
			return 0;
	}
}

static int plain_step(struct layer_unpack *u, const void **ret_buf, size_t *ret_n)
{
	int r = fill(u);

	if (r < 0)
		return r;
	*ret_buf = u->in + u->in_pos;
	*ret_n = u->in_len - u->in_pos;
	u->in_pos = u->in_len;
	return 0;
}

int layer_unpack_read(struct layer_unpack *u, const void **ret_buf, size_t *ret_n)
{
	const void *buf = u->out;
	size_t n = 0;
	int r;

	if (u->error < 0)
		return u->error;
	if (u->done) {
		*ret_buf = u->out;
		*ret_n = 0;
		return 0;
	}
	r = u->kind == UNPACK_UNKNOWN ? detect(u) : 0;
	if (r >= 0) {
		if (u->kind == UNPACK_GZIP)
			r = gzip_step(u, &n);
		else if (u->kind == UNPACK_ZSTD)
			r = zstd_step(u, &n);
		else
			r = plain_step(u, &buf, &n);
	}
	if (r < 0)
		return (u->error = r);
	digest_ctx_update(u->hash, buf, n);
	u->bytes_out += n;
	u->done = n == 0;
	*ret_buf = buf;
	*ret_n = n;
	return 0;
}

int layer_unpack_error(const struct layer_unpack *u)
{
	return u->error;
}

void layer_unpack_counts(const struct layer_unpack *u, uint64_t *ret_in, uint64_t *ret_out)
{
	*ret_in = u->bytes_in;
	*ret_out = u->bytes_out;
}

int layer_unpack_diff_id(struct layer_unpack *u, char ret[DIGEST_STRING_MAX])
{
	if (!u->done || u->error < 0)
		return -EBUSY;
	digest_ctx_final(u->hash, ret);
	u->done = false;        /* the context is final: no second call */
	return 0;
}
