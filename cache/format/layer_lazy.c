/*
 * cache/format/layer_lazy.c: eStargz and zstd:chunked layers.  layer_lazy_index() fetches a layer's
 * footer and TOC through a range reader, verifies the TOC against the manifest's annotations
 * and indexes its entries with their chunks; chunk_decompress() turns one chunk's compressed
 * bytes into its data on the read path (cache/fetch.c).  Nothing read from the blob is
 * trusted: every offset is checked against the blob size, every buffer has a ceiling.
 */
#include "layer_lazy.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <string.h>

#include <jansson.h>

#include <zlib.h>
#include <zstd.h>
#include <zstd_errors.h>

#include "cache/base/base64.h"
#include "cache/base/digest.h"
#include "cache/base/error.h"
#include "cache/base/util.h"

#define ANN_STARGZ_TOC_DIGEST "containerd.io/snapshot/stargz/toc.digest"
#define ANN_ZSTD_POSITION "io.github.containers.zstd-chunked.manifest-position"
#define ANN_ZSTD_CHECKSUM "io.github.containers.zstd-chunked.manifest-checksum"
#define ANN_ZSTD_POSITION_OLD "io.containers.zstd-chunked.manifest-position"
#define ANN_ZSTD_CHECKSUM_OLD "io.containers.zstd-chunked.manifest-checksum"

const char *layer_format_to_string(enum layer_format f)
{
	switch (f) {
	case LAYER_FORMAT_TAR:
		return "tar";
	case LAYER_FORMAT_ESTARGZ:
		return "estargz";
	case LAYER_FORMAT_ZSTD_CHUNKED:
		return "zstd:chunked";
	}
	return "unknown";
}

static const char *zstd_annotation(const struct layer_desc *l, const char *key, const char *old)
{
	const char *v = layer_desc_annotation(l, key);

	return v ? v : layer_desc_annotation(l, old);
}

enum layer_format layer_format_detect(const struct layer_desc *l)
{
	/* ctr-remote's zstd:chunked layers carry the stargz toc.digest too: the compression
	 * decides which reading applies. */
	if (l->compression == LAYER_COMPRESSION_ZSTD &&
	    zstd_annotation(l, ANN_ZSTD_POSITION, ANN_ZSTD_POSITION_OLD) &&
	    zstd_annotation(l, ANN_ZSTD_CHECKSUM, ANN_ZSTD_CHECKSUM_OLD))
		return LAYER_FORMAT_ZSTD_CHUNKED;
	if (l->compression == LAYER_COMPRESSION_GZIP &&
	    layer_desc_annotation(l, ANN_STARGZ_TOC_DIGEST))
		return LAYER_FORMAT_ESTARGZ;
	return LAYER_FORMAT_TAR;
}

/* ---- decompression ---------------------------------------------------------------------- */

/* Inflates gzip members back to back until @size bytes are out.  eStargz ends a chunk's
 * range at the next member, and one range can hold several members (a file's header and
 * data). */
static int gunzip_exact(const void *in, size_t in_len, void *out, size_t size)
{
	z_stream zs = {};
	size_t produced = 0;
	int r = 0, zr;

	if (size == 0)
		return 0;
	if (inflateInit2(&zs, 15 + 16) != Z_OK)
		return -ENOMEM;

	zs.next_in = (Bytef *)in;
	zs.next_out = out;
	while (produced < size) {
		/* zlib counts in uInt: feed and drain in pieces that fit. */
		size_t in_left = in_len - (size_t)((const Bytef *)zs.next_in - (const Bytef *)in);
		size_t out_left = size - produced;

		zs.avail_in = in_left > UINT_MAX ? UINT_MAX : (uInt)in_left;
		zs.avail_out = out_left > UINT_MAX ? UINT_MAX : (uInt)out_left;
		zr = inflate(&zs, Z_NO_FLUSH);
		produced = (size_t)((Bytef *)zs.next_out - (Bytef *)out);
		if (zr == Z_STREAM_END) {
			if (produced >= size)
				break;
			/* Next member, if any input is left. */
			if (zs.next_in == (const Bytef *)in + in_len) {
				r = -EBADMSG;
				break;
			}
			if (inflateReset(&zs) != Z_OK) {
				r = -EBADMSG;
				break;
			}
			continue;
		}
		if (zr == Z_BUF_ERROR) {
			/* No progress possible: input exhausted before @size bytes. */
			if (produced < size) {
				r = -EBADMSG;
				break;
			}
			continue;
		}
		if (zr != Z_OK) {
			r = zr == Z_MEM_ERROR ? -ENOMEM : -EBADMSG;
			break;
		}
	}
	(void)inflateEnd(&zs);
	return r;
}

/* Decompresses zstd frames back to back until @size bytes are out; skippable frames (the
 * zstd:chunked TOC, tar-split) are stepped over by libzstd's streaming decoder. */
static int unzstd_exact(const void *in, size_t in_len, void *out, size_t size)
{
	ZSTD_DStream *ds;
	ZSTD_inBuffer ib = { .src = in, .size = in_len, .pos = 0 };
	ZSTD_outBuffer ob = { .dst = out, .size = size, .pos = 0 };
	int r = 0;

	if (size == 0)
		return 0;
	ds = ZSTD_createDStream();
	if (!ds)
		return -ENOMEM;
	/* Frames may declare large windows; chunk sizes are bounded by the caller anyway. */
	(void)ZSTD_DCtx_setParameter(ds, ZSTD_d_windowLogMax, 31);

	while (ob.pos < size) {
		size_t before_in = ib.pos, before_out = ob.pos;
		size_t z = ZSTD_decompressStream(ds, &ob, &ib);

		if (ZSTD_isError(z)) {
			r = ZSTD_getErrorCode(z) == ZSTD_error_memory_allocation ? -ENOMEM : -EBADMSG;
			break;
		}
		if (ob.pos >= size)
			break;
		if (ib.pos == ib.size && ib.pos == before_in && ob.pos == before_out) {
			/* Input exhausted, no more output: the range was too short. */
			r = -EBADMSG;
			break;
		}
	}
	ZSTD_freeDStream(ds);
	return r;
}

int chunk_decompress(enum layer_compression compression, const void *in, size_t in_len,
		     void *out, size_t size)
{
	switch (compression) {
	case LAYER_COMPRESSION_GZIP:
		return gunzip_exact(in, in_len, out, size);
	case LAYER_COMPRESSION_ZSTD:
		return unzstd_exact(in, in_len, out, size);
	case LAYER_COMPRESSION_NONE:
		if (in_len < size)
			return -EBADMSG;
		memcpy(out, in, size);
		return 0;
	}
	return -EINVAL;
}

/* ---- fetching and verifying the TOC -------------------------------------------------------- */

#define ESTARGZ_FOOTER_SIZE 51
#define STARGZ_LEGACY_FOOTER_SIZE 47
/* The mount reads an eStargz layer's footer and TOC with one request when the TOC lies in the
 * blob's last size/64 bytes, 64 KiB to 512 KiB (one more request, for the rest of the TOC
 * only, when it does not): it saves one round trip per layer on the mount's critical path.
 * The compressed TOC is 25-60 bytes per entry: 0.6% of an eStargz layer of
 * /usr/lib/python3.11 (1507 entries, 16 MB), 1.5% of /usr/share/perl, 4.6% of /etc (small
 * files); so 1/64 covers the TOC of a layer of common files, the bytes read beyond it stay
 * under 1.6% of the layer, and 64 KiB (a TOC of ~1000-2500 entries) costs less than a round
 * trip on links from 20 Mbit/s with 40 ms up (docs/benchmarks.md, issue 17). */
#define ESTARGZ_TAIL_MIN (64ULL << 10)
#define ESTARGZ_TAIL_MAX (512ULL << 10)
#define ESTARGZ_TAIL_FRACTION 64
#define ZSTD_SKIPPABLE_HEADER_SIZE 8
#define TOC_COMPRESSED_MAX (256ULL << 20)
#define TOC_JSON_MAX (512ULL << 20)
#define TOC_ENTRIES_MAX 2000000
#define TOC_NAME_MAX 4096
#define TOC_CHUNKS_PER_FILE_MAX (1U << 20)
#define TOC_XATTRS_MAX 1024
#define TOC_XATTR_VALUE_MAX (64U << 10)
/* jansson spends ~40-70 bytes per value; "0," is two bytes of JSON.  A real TOC has about 10-20
 * values per entry, so this admits TOC_ENTRIES_MAX entries and stops a TOC of mostly tiny
 * values (under a key nobody reads) from costing ~30 times its size in memory. */
#define TOC_VALUES_MAX (16ULL * TOC_ENTRIES_MAX)

static int range_read(const struct blob_range_reader *rd, uint64_t blob_size, uint64_t offset,
		      uint64_t len, uint64_t max, void **ret)
{
	_cleanup_free_ void *buf = NULL;
	int r;

	if (offset > blob_size || len > blob_size - offset)
		return -EBADMSG;
	if (len > max || len > SIZE_MAX - 1)
		return -EFBIG;
	buf = malloc(len + 1);
	if (!buf)
		return -ENOMEM;
	r = rd->read(rd->userdata, offset, len, buf);
	if (r < 0)
		return r;
	*ret = TAKE_PTR(buf);
	return 0;
}

static int parse_hex16(const uint8_t *p, uint64_t *ret)
{
	uint64_t v = 0;

	for (size_t i = 0; i < 16; i++) {
		int d;

		if (p[i] >= '0' && p[i] <= '9')
			d = p[i] - '0';
		else if (p[i] >= 'a' && p[i] <= 'f')
			d = p[i] - 'a' + 10;
		else if (p[i] >= 'A' && p[i] <= 'F')
			d = p[i] - 'A' + 10;
		else
			return -EPROTO;
		v = v << 4 | (uint64_t)d;
	}
	*ret = v;
	return 0;
}

/* The eStargz footer is an empty gzip member whose FEXTRA field holds the TOC offset: a
 * subfield 'S''G' of 22 bytes (51-byte footer), or in the legacy stargz footer the 22 bytes
 * directly (47 bytes).  Both carry 16 hex digits followed by "STARGZ". */
static int estargz_footer_parse(const uint8_t *f, size_t size, uint64_t *ret_toc_offset)
{
	const uint8_t *payload;

	if (f[0] != 0x1f || f[1] != 0x8b || f[2] != 8 || !(f[3] & 4))
		return -EPROTO;
	if (size == ESTARGZ_FOOTER_SIZE) {
		if (f[10] != 26 || f[11] != 0 || f[12] != 'S' || f[13] != 'G' || f[14] != 22 ||
		    f[15] != 0)
			return -EPROTO;
		payload = f + 16;
	} else {
		if (f[10] != 22 || f[11] != 0)
			return -EPROTO;
		payload = f + 12;
	}
	if (memcmp(payload + 16, "STARGZ", 6) != 0)
		return -EPROTO;
	return parse_hex16(payload, ret_toc_offset);
}

/* Inflates all gzip members of @in, at most @max bytes of output (-EFBIG beyond). */
static int gunzip_all(const void *in, size_t in_len, size_t max, uint8_t **ret, size_t *ret_len)
{
	_cleanup_free_ uint8_t *out = NULL;
	z_stream zs = {};
	size_t allocated = 0, produced = 0;
	int r = 0, zr;

	if (in_len > UINT_MAX)
		return -EFBIG;
	if (inflateInit2(&zs, 15 + 16) != Z_OK)
		return -ENOMEM;
	zs.next_in = (Bytef *)in;
	zs.avail_in = (uInt)in_len;
	for (;;) {
		if (produced == allocated) {
			size_t n = allocated ? allocated * 2 : 64 * 1024;
			uint8_t *p;

			if (allocated >= max + 1) {
				r = -EFBIG;
				break;
			}
			if (n > max + 1)
				n = max + 1;
			p = realloc(out, n);
			if (!p) {
				r = -ENOMEM;
				break;
			}
			out = p;
			allocated = n;
		}
		zs.next_out = out + produced;
		zs.avail_out = (uInt)(allocated - produced > UINT_MAX ? UINT_MAX : allocated - produced);
		zr = inflate(&zs, Z_NO_FLUSH);
		produced = (size_t)(zs.next_out - out);
		if (produced > max) {
			r = -EFBIG;
			break;
		}
		if (zr == Z_STREAM_END) {
			if (zs.avail_in == 0)
				break;
			if (inflateReset(&zs) != Z_OK) {
				r = -EBADMSG;
				break;
			}
			continue;
		}
		if (zr == Z_BUF_ERROR && zs.avail_out != 0) {
			r = -EBADMSG;     /* truncated */
			break;
		}
		if (zr != Z_OK && zr != Z_BUF_ERROR) {
			r = zr == Z_MEM_ERROR ? -ENOMEM : -EBADMSG;
			break;
		}
	}
	(void)inflateEnd(&zs);
	if (r < 0)
		return r;
	*ret = TAKE_PTR(out);
	*ret_len = produced;
	return 0;
}

static int tar_octal(const uint8_t *p, size_t n, uint64_t *ret)
{
	uint64_t v = 0;
	size_t i = 0;

	while (i < n && p[i] == ' ')
		i++;
	for (; i < n && p[i] >= '0' && p[i] <= '7'; i++) {
		if (v > (UINT64_MAX >> 3))
			return -EBADMSG;
		v = v << 3 | (uint64_t)(p[i] - '0');
	}
	if (i < n && p[i] != ' ' && p[i] != '\0')
		return -EBADMSG;
	*ret = v;
	return 0;
}

/* Finds the content of stargz.index.json in the small tar stream that ends an eStargz blob.
 * PAX extended headers before it are stepped over. */
static int estargz_toc_from_tar(const uint8_t *tar, size_t len, const uint8_t **ret,
				size_t *ret_len)
{
	size_t pos = 0;

	while (pos + 512 <= len) {
		const uint8_t *h = tar + pos;
		uint64_t size;
		int r;

		if (h[0] == '\0')
			break;
		r = tar_octal(h + 124, 12, &size);
		if (r < 0)
			return r;
		if (size > len - pos - 512)
			return -EBADMSG;
		if ((h[156] == '0' || h[156] == '\0') && strnlen((const char *)h, 100) == 17 &&
		    memcmp(h, "stargz.index.json", 17) == 0) {
			*ret = h + 512;
			*ret_len = size;
			return 0;
		}
		if (h[156] != 'x' && h[156] != 'g')
			return -EBADMSG;
		pos += 512 + (size + 511) / 512 * 512;
	}
	return -EBADMSG;
}

/* -EBADMSG, saying what @what hashes to and what the layer's annotation says it must. */
static int toc_mismatch(const char *what, const void *buf, size_t len, const char *want)
{
	char got[DIGEST_STRING_MAX] = "?";

	(void)digest_buffer(buf, len, got);
	return error_set(-EBADMSG, "%s failed verification: it hashes to %s, the annotation "
			 "says %.80s", what, got, want);
}

/* How much of the end of an eStargz blob of @size bytes the first request reads. */
static uint64_t estargz_tail_size(uint64_t size)
{
	uint64_t t = size / ESTARGZ_TAIL_FRACTION;

	t = t < ESTARGZ_TAIL_MIN ? ESTARGZ_TAIL_MIN : t > ESTARGZ_TAIL_MAX ? ESTARGZ_TAIL_MAX : t;
	return t < size ? t : size;
}

/* The footer at the end of @tail (@tail_len bytes): the TOC offset and the footer's size. */
static int estargz_tail_footer(const uint8_t *tail, uint64_t tail_len, uint64_t *ret_toc_offset,
			       uint64_t *ret_footer_size)
{
	static const size_t footer_sizes[] = { ESTARGZ_FOOTER_SIZE, STARGZ_LEGACY_FOOTER_SIZE };

	/* The newer footer first: the legacy one is a suffix-sized window of the same bytes. */
	for (size_t i = 0; i < ELEMENTSOF(footer_sizes); i++) {
		if (tail_len < footer_sizes[i])
			continue;
		if (estargz_footer_parse(tail + tail_len - footer_sizes[i], footer_sizes[i],
					 ret_toc_offset) >= 0) {
			*ret_footer_size = footer_sizes[i];
			return 0;
		}
	}
	return error_set(-EPROTO, "no eStargz footer in the last %d bytes",
			 tail_len < ESTARGZ_FOOTER_SIZE ? (int)tail_len : ESTARGZ_FOOTER_SIZE);
}

/* The compressed TOC, [toc_offset, size - footer_size): from the tail read already (@tail, the
 * blob's last @tail_len bytes), plus one request for what lies before the tail. */
static int estargz_toc_bytes(const struct layer_desc *l, const struct blob_range_reader *rd,
			     const uint8_t *tail, uint64_t tail_len, uint64_t toc_offset,
			     uint64_t footer_size, uint8_t **ret)
{
	uint64_t tail_start = l->size - tail_len, len = l->size - footer_size - toc_offset;
	_cleanup_free_ uint8_t *buf = NULL;
	void *head = NULL;
	int r;

	if (len > TOC_COMPRESSED_MAX)
		return -EFBIG;
	buf = malloc(len + 1);
	if (!buf)
		return -ENOMEM;
	if (toc_offset >= tail_start) {
		memcpy(buf, tail + (toc_offset - tail_start), len);
	} else {
		r = range_read(rd, l->size, toc_offset, tail_start - toc_offset, TOC_COMPRESSED_MAX,
			       &head);
		if (r < 0)
			return r;
		memcpy(buf, head, tail_start - toc_offset);
		memcpy(buf + (tail_start - toc_offset), tail, len - (tail_start - toc_offset));
		free(head);
	}
	*ret = TAKE_PTR(buf);
	return 0;
}

static int estargz_fetch_toc(const struct layer_desc *l, const struct blob_range_reader *rd,
			     char **ret_json, size_t *ret_len, uint64_t *ret_data_end)
{
	_cleanup_free_ uint8_t *tail = NULL, *compressed = NULL, *tar = NULL;
	const char *want = layer_desc_annotation(l, ANN_STARGZ_TOC_DIGEST);
	uint64_t toc_offset = 0, footer_size = 0, tail_len;
	const uint8_t *json;
	size_t tar_len, json_len;
	char *copy;
	int r;

	if (!want)
		return error_set(-EBADMSG, "no %s annotation", ANN_STARGZ_TOC_DIGEST);
	tail_len = estargz_tail_size(l->size);
	r = range_read(rd, l->size, l->size - tail_len, tail_len, ESTARGZ_TAIL_MAX, (void **)&tail);
	if (r < 0)
		return r;
	r = estargz_tail_footer(tail, tail_len, &toc_offset, &footer_size);
	if (r < 0)
		return r;
	if (toc_offset >= l->size - footer_size)
		return error_set(-EBADMSG, "the footer puts the TOC at %llu, past the blob's %llu "
				 "bytes", (unsigned long long)toc_offset,
				 (unsigned long long)l->size);

	r = estargz_toc_bytes(l, rd, tail, tail_len, toc_offset, footer_size, &compressed);
	if (r < 0)
		return r;
	r = gunzip_all(compressed, l->size - footer_size - toc_offset, TOC_JSON_MAX + 64 * 1024,
		       &tar, &tar_len);
	if (r < 0)
		return r;
	r = estargz_toc_from_tar(tar, tar_len, &json, &json_len);
	if (r < 0)
		return r;
	if (json_len > TOC_JSON_MAX)
		return -EFBIG;
	r = digest_verify_buffer(json, json_len, want);
	if (r < 0)
		return toc_mismatch("TOC", json, json_len, want);

	copy = malloc(json_len + 1);
	if (!copy)
		return -ENOMEM;
	memcpy(copy, json, json_len);
	copy[json_len] = '\0';
	*ret_json = copy;
	*ret_len = json_len;
	*ret_data_end = toc_offset;
	return 0;
}

static int parse_u64_field(const char **p, char sep, uint64_t *ret)
{
	const char *s = *p;
	uint64_t v = 0;

	if (*s < '0' || *s > '9')
		return -EBADMSG;
	for (; *s >= '0' && *s <= '9'; s++) {
		if (v > (UINT64_MAX - 9) / 10)
			return -EBADMSG;
		v = v * 10 + (uint64_t)(*s - '0');
	}
	if (*s != sep)
		return -EBADMSG;
	*p = sep ? s + 1 : s;
	*ret = v;
	return 0;
}

static int zstd_chunked_fetch_toc(const struct layer_desc *l, const struct blob_range_reader *rd,
				  char **ret_json, size_t *ret_len, uint64_t *ret_data_end)
{
	const char *pos = zstd_annotation(l, ANN_ZSTD_POSITION, ANN_ZSTD_POSITION_OLD);
	const char *checksum = zstd_annotation(l, ANN_ZSTD_CHECKSUM, ANN_ZSTD_CHECKSUM_OLD);
	const char *toc_digest = layer_desc_annotation(l, ANN_STARGZ_TOC_DIGEST);
	_cleanup_free_ void *compressed = NULL;
	_cleanup_free_ char *json = NULL;
	uint64_t offset, clen, ulen, type;
	size_t n;
	int r;

	if (!pos || !checksum)
		return -EBADMSG;
	/* offset:compressedLength:uncompressedLength:type */
	if (parse_u64_field(&pos, ':', &offset) < 0 || parse_u64_field(&pos, ':', &clen) < 0 ||
	    parse_u64_field(&pos, ':', &ulen) < 0 || parse_u64_field(&pos, '\0', &type) < 0)
		return -EBADMSG;
	if (type != 1)
		return -EPROTO;
	if (offset > l->size || clen > l->size - offset || clen == 0)
		return -EBADMSG;
	if (ulen > TOC_JSON_MAX || clen > TOC_COMPRESSED_MAX)
		return -EFBIG;

	r = range_read(rd, l->size, offset, clen, TOC_COMPRESSED_MAX, &compressed);
	if (r < 0)
		return r;
	if (digest_verify_buffer(compressed, clen, checksum) < 0)
		return toc_mismatch("compressed TOC", compressed, clen, checksum);

	json = malloc(ulen + 1);
	if (!json)
		return -ENOMEM;
	n = ZSTD_decompress(json, ulen, compressed, clen);
	if (ZSTD_isError(n) || n != ulen)
		return -EBADMSG;
	json[ulen] = '\0';
	if (toc_digest && digest_verify_buffer(json, ulen, toc_digest) < 0)
		return toc_mismatch("TOC", json, ulen, toc_digest);

	*ret_json = TAKE_PTR(json);
	*ret_len = ulen;
	/* Payloads end where the skippable frame that wraps the TOC begins. */
	*ret_data_end = offset >= ZSTD_SKIPPABLE_HEADER_SIZE ? offset - ZSTD_SKIPPABLE_HEADER_SIZE :
							       offset;
	return 0;
}

/* ---- TOC JSON -> entries ---------------------------------------------------------------- */

/* Optional unsigned integer member; absent -> 0.  -EBADMSG if not an integer in [0, max]. */
static int json_u64(json_t *o, const char *key, uint64_t max, uint64_t *ret)
{
	json_t *v = json_object_get(o, key);
	json_int_t i;

	if (!v || json_is_null(v)) {
		*ret = 0;
		return 0;
	}
	if (!json_is_integer(v))
		return -EBADMSG;
	i = json_integer_value(v);
	if (i < 0 || (uint64_t)i > max)
		return -EBADMSG;
	*ret = (uint64_t)i;
	return 0;
}

/* Optional string member; absent -> NULL. */
static int json_str(json_t *o, const char *key, const char **ret)
{
	json_t *v = json_object_get(o, key);

	if (!v || json_is_null(v)) {
		*ret = NULL;
		return 0;
	}
	if (!json_is_string(v))
		return -EBADMSG;
	*ret = json_string_value(v);
	return 0;
}

static int parse_digits(const char **p, size_t n, int64_t *ret)
{
	int64_t v = 0;

	for (size_t i = 0; i < n; i++) {
		char c = (*p)[i];

		if (c < '0' || c > '9')
			return -EBADMSG;
		v = v * 10 + (c - '0');
	}
	*p += n;
	*ret = v;
	return 0;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil). */
static int64_t days_from_civil(int64_t y, int64_t m, int64_t d)
{
	int64_t era, yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = y - era * 400;
	doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

/* RFC 3339 as Go's time.Time marshals it: "2006-01-02T15:04:05[.999999999](Z|±07:00)". */
static int parse_rfc3339(const char *s, int64_t *ret_sec, uint32_t *ret_nsec)
{
	int64_t y, mo, d, h, mi, sec, off = 0;
	uint32_t nsec = 0;
	const char *p = s;

	if (parse_digits(&p, 4, &y) < 0 || *p++ != '-' || parse_digits(&p, 2, &mo) < 0 ||
	    *p++ != '-' || parse_digits(&p, 2, &d) < 0 || (*p != 'T' && *p != 't' && *p != ' '))
		return -EBADMSG;
	p++;
	if (parse_digits(&p, 2, &h) < 0 || *p++ != ':' || parse_digits(&p, 2, &mi) < 0 ||
	    *p++ != ':' || parse_digits(&p, 2, &sec) < 0)
		return -EBADMSG;
	if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60)
		return -EBADMSG;
	if (*p == '.') {
		uint32_t scale = 100000000;

		p++;
		if (*p < '0' || *p > '9')
			return -EBADMSG;
		for (; *p >= '0' && *p <= '9'; p++) {
			nsec += (uint32_t)(*p - '0') * scale;
			scale /= 10;
		}
	}
	if (*p == 'Z' || *p == 'z') {
		p++;
	} else if (*p == '+' || *p == '-') {
		int sign = *p == '-' ? -1 : 1;
		int64_t oh, om;

		p++;
		if (parse_digits(&p, 2, &oh) < 0 || *p++ != ':' || parse_digits(&p, 2, &om) < 0)
			return -EBADMSG;
		off = sign * (oh * 3600 + om * 60);
	} else {
		return -EBADMSG;
	}
	if (*p)
		return -EBADMSG;

	*ret_sec = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - off;
	*ret_nsec = nsec;
	return 0;
}

struct chunk_extra {
	uint64_t size_given;            /* the TOC's chunkSize, 0 if absent */
	bool zeros;
};

/* One entry being assembled: a "reg" collects its "chunk" entries until the next non-chunk. */
struct toc_pending {
	bool active;
	struct entry e;
	char *path;
	char *link_target;
	struct xattr *xattrs;
	size_t n_xattrs;
	struct chunk *chunks;
	size_t n_chunks, allocated_chunks, allocated_extra;
	struct chunk_extra *extra;      /* parallel to chunks */
	uint64_t end_offset;            /* c/storage "endOffset" of the whole file, 0 if absent */
};

static void toc_pending_done(struct toc_pending *p)
{
	for (size_t i = 0; i < p->n_xattrs; i++)
		free((void *)p->xattrs[i].value);
	free_many(p->xattrs, p->path, p->link_target, p->chunks, p->extra);
	*p = (struct toc_pending) {};
}

struct toc_ctx {
	const uint64_t *offsets;        /* sorted, unique payload offsets */
	size_t n_offsets;
	uint64_t data_end;              /* payloads lie before this: the TOC or its frame */
	int (*add)(void *userdata, const struct entry *e);
	void *userdata;
};

/* Smallest payload offset greater than @offset, or the end of the payload area. */
static uint64_t toc_next_offset(const struct toc_ctx *c, uint64_t offset)
{
	size_t lo = 0, hi = c->n_offsets;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (c->offsets[mid] <= offset)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < c->n_offsets ? c->offsets[lo] : c->data_end;
}

static int normalized_copy(const char *name, char **ret)
{
	_cleanup_free_ char *p = NULL;

	if (strnlen(name, TOC_NAME_MAX + 1) > TOC_NAME_MAX)
		return -EBADMSG;
	p = strdup(name);
	if (!p)
		return -ENOMEM;
	if (entry_path_normalize(p) < 0)
		return -EBADMSG;
	*ret = TAKE_PTR(p);
	return 0;
}

static bool is_bookkeeping(const char *path)
{
	return streq(path, "stargz.index.json") || streq(path, ".prefetch.landmark") ||
	       streq(path, ".no.prefetch.landmark");
}

/* Adds one chunk from a "reg" or "chunk" TOC record to @p. */
static int toc_pending_add_chunk(struct toc_pending *p, const struct toc_ctx *c, json_t *o,
				 bool first)
{
	uint64_t chunk_offset, chunk_size, offset, end_offset;
	const char *digest, *chunk_type;
	struct chunk *ch;
	int r;

	if ((r = json_u64(o, "chunkOffset", UINT64_MAX >> 1, &chunk_offset)) < 0 ||
	    (r = json_u64(o, "chunkSize", UINT64_MAX >> 1, &chunk_size)) < 0 ||
	    (r = json_u64(o, "offset", UINT64_MAX >> 1, &offset)) < 0 ||
	    (r = json_u64(o, "endOffset", UINT64_MAX >> 1, &end_offset)) < 0 ||
	    (r = json_str(o, "chunkDigest", &digest)) < 0 ||
	    (r = json_str(o, "chunkType", &chunk_type)) < 0)
		return r;
	if (first && chunk_offset != 0)
		return -EBADMSG;
	if (p->n_chunks >= TOC_CHUNKS_PER_FILE_MAX)
		return -EFBIG;
	if (p->n_chunks > 0 && chunk_offset <= p->chunks[p->n_chunks - 1].file_offset)
		return -EBADMSG;
	if (chunk_offset >= p->e.size)
		return -EBADMSG;

	if (GREEDY_REALLOC(p->chunks, p->allocated_chunks, p->n_chunks + 1) < 0 ||
	    GREEDY_REALLOC(p->extra, p->allocated_extra, p->n_chunks + 1) < 0)
		return -ENOMEM;
	ch = &p->chunks[p->n_chunks];
	*ch = (struct chunk) { .file_offset = chunk_offset };
	p->extra[p->n_chunks] = (struct chunk_extra) { .size_given = chunk_size };

	if (chunk_type && streq(chunk_type, "zeros")) {
		p->extra[p->n_chunks].zeros = true;     /* a hole: never fetched, no digest */
	} else if (chunk_type && !streq(chunk_type, "data")) {
		return -EBADMSG;
	} else {
		uint64_t end;

		if (digest && digest_validate(digest) < 0)
			return -EBADMSG;
		ch->digest = digest;   /* NULL: the file's digest if it is one chunk (flush) */
		if (offset >= c->data_end)
			return -EBADMSG;
		/* The payload's compressed bytes run to the next payload (eStargz cuts a member,
		 * ctr-remote a frame, at every payload start), or to the record's endOffset
		 * (c/storage: the reg entry's endOffset ends the whole file, so it bounds its
		 * last chunk). */
		end = toc_next_offset(c, offset);
		if (end_offset == 0 && !first)
			end_offset = p->end_offset;
		if (end_offset > offset && end_offset < end)
			end = end_offset;
		if (end > c->data_end)
			return -EBADMSG;
		ch->blob_offset = offset;
		ch->blob_length = end - offset;
	}
	p->n_chunks++;
	return 0;
}

static int toc_pending_flush(struct toc_pending *p, const struct toc_ctx *c)
{
	int r;

	if (!p->active) {
		toc_pending_done(p);
		return 0;
	}
	if (p->e.type == ENTRY_REG && p->e.size > 0) {
		for (size_t i = 0; i < p->n_chunks; i++) {
			struct chunk *ch = &p->chunks[i];
			uint64_t end = i + 1 < p->n_chunks ? p->chunks[i + 1].file_offset : p->e.size;

			ch->size = end - ch->file_offset;
			if (p->extra[i].size_given != 0 && p->extra[i].size_given != ch->size)
				return -EBADMSG;
			if (!p->extra[i].zeros && !ch->digest) {
				/* A data chunk without chunkDigest: only a single-chunk file can
				 * borrow the whole file's digest. */
				if (p->n_chunks != 1 || !p->e.digest)
					return -EBADMSG;
				ch->digest = p->e.digest;
			}
		}
		p->e.chunks = p->chunks;
		p->e.n_chunks = p->n_chunks;
	}
	if (entry_check_whiteout(p->e.path, p->e.type) < 0)
		return error_set(-EBADMSG, "entry '%s' is not a valid whiteout", p->e.path);
	r = c->add(c->userdata, &p->e);
	toc_pending_done(p);
	return r;
}

static int toc_parse_xattrs(struct toc_pending *p, json_t *o)
{
	json_t *x = json_object_get(o, "xattrs"), *v;
	const char *key;
	size_t n;

	if (!x || json_is_null(x))
		return 0;
	if (!json_is_object(x))
		return -EBADMSG;
	n = json_object_size(x);
	if (n == 0)
		return 0;
	if (n > TOC_XATTRS_MAX)
		return -EFBIG;
	p->xattrs = calloc(n, sizeof(*p->xattrs));
	if (!p->xattrs)
		return -ENOMEM;
	json_object_foreach(x, key, v) {
		char *value;
		size_t size;
		int r;

		if (!json_is_string(v) || strlen(key) == 0 || strlen(key) > 255)
			return -EBADMSG;
		if (json_string_length(v) > TOC_XATTR_VALUE_MAX * 4 / 3 + 4)
			return -EFBIG;
		r = base64_decode(json_string_value(v), json_string_length(v), &value, &size);
		if (r < 0)
			return r;
		p->xattrs[p->n_xattrs++] = (struct xattr) { .name = key, .value = value, .size = size };
	}
	p->e.xattrs = p->xattrs;
	p->e.n_xattrs = p->n_xattrs;
	return 0;
}

static const char EMPTY_DIGEST[] =
	"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/* The entry type a TOC record's "type" names; -EBADMSG for one no TOC writer uses. */
static int toc_entry_type(const char *type, enum entry_type *ret)
{
	static const struct {
		const char *name;
		enum entry_type type;
	} types[] = {
		{ "reg", ENTRY_REG }, { "dir", ENTRY_DIR }, { "symlink", ENTRY_SYMLINK },
		{ "hardlink", ENTRY_HARDLINK }, { "char", ENTRY_CHR }, { "block", ENTRY_BLK },
		{ "fifo", ENTRY_FIFO },
	};

	for (size_t i = 0; i < ELEMENTSOF(types); i++)
		if (streq(type, types[i].name)) {
			*ret = types[i].type;
			return 0;
		}
	return -EBADMSG;
}

/* Starts a pending entry from a non-chunk TOC record. */
static int toc_pending_start(struct toc_pending *p, const struct toc_ctx *c, json_t *o,
			     const char *type, char *path, bool prefetch)
{
	uint64_t size, mode, uid, gid, major, minor;
	const char *modtime, *link, *digest;
	int r;

	p->active = true;
	p->path = path;
	p->e.path = path;
	p->e.prefetch = prefetch;

	r = toc_entry_type(type, &p->e.type);
	if (r < 0)
		return r;

	if ((r = json_u64(o, "size", INT64_MAX, &size)) < 0 ||
	    (r = json_u64(o, "mode", UINT32_MAX, &mode)) < 0 ||
	    (r = json_u64(o, "uid", UINT32_MAX, &uid)) < 0 ||
	    (r = json_u64(o, "gid", UINT32_MAX, &gid)) < 0 ||
	    (r = json_u64(o, "devMajor", UINT32_MAX, &major)) < 0 ||
	    (r = json_u64(o, "devMinor", UINT32_MAX, &minor)) < 0 ||
	    (r = json_u64(o, "endOffset", UINT64_MAX >> 1, &p->end_offset)) < 0 ||
	    (r = json_str(o, "modtime", &modtime)) < 0 ||
	    (r = json_str(o, "linkName", &link)) < 0 ||
	    (r = json_str(o, "digest", &digest)) < 0)
		return r;

	/* Go writes tar's mode, which may carry the type bits (c_ISREG...): keep permissions. */
	p->e.mode = (uint32_t)mode & 07777;
	p->e.uid = (uint32_t)uid;
	p->e.gid = (uint32_t)gid;
	if (modtime) {
		r = parse_rfc3339(modtime, &p->e.mtime_sec, &p->e.mtime_nsec);
		if (r < 0)
			return r;
	}
	if (p->e.type == ENTRY_CHR || p->e.type == ENTRY_BLK) {
		p->e.dev_major = (uint32_t)major;
		p->e.dev_minor = (uint32_t)minor;
	}
	if (p->e.type == ENTRY_SYMLINK) {
		if (!link || !*link || strlen(link) > TOC_NAME_MAX)
			return -EBADMSG;
		p->e.link_target = link;      /* verbatim */
	} else if (p->e.type == ENTRY_HARDLINK) {
		if (!link)
			return -EBADMSG;
		r = normalized_copy(link, &p->link_target);
		if (r < 0)
			return r;
		if (!*p->link_target)
			return -EBADMSG;
		p->e.link_target = p->link_target;
	}
	if (p->e.type == ENTRY_REG) {
		p->e.size = size;
		if (digest && digest_validate(digest) < 0)
			return -EBADMSG;
		if (size == 0) {
			p->e.digest = digest ? digest : EMPTY_DIGEST;
		} else {
			if (!digest)
				return -EBADMSG;
			p->e.digest = digest;
			r = toc_pending_add_chunk(p, c, o, true);
			if (r < 0)
				return r;
		}
	}
	return toc_parse_xattrs(p, o);
}

static int u64_cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* An upper bound of the number of values in @json (each ',', '[', '{' outside strings starts
 * at most one more), counted before jansson allocates any. */
static uint64_t json_count_values(const char *json, size_t len)
{
	uint64_t n = 1;
	bool in_string = false;

	for (size_t i = 0; i < len; i++) {
		char c = json[i];

		if (in_string) {
			if (c == '\\')
				i++;
			else if (c == '"')
				in_string = false;
		} else if (c == '"') {
			in_string = true;
		} else if (c == ',' || c == '[' || c == '{') {
			n++;
		}
	}
	return n;
}

static int toc_parse(const char *json, size_t len, uint64_t data_end,
		     int (*add)(void *userdata, const struct entry *e), void *userdata)
{
	_cleanup_free_ uint64_t *offsets = NULL;
	_cleanup_free_ char *skipping = NULL;
	struct toc_pending p = {};
	struct toc_ctx c = { .data_end = data_end, .add = add, .userdata = userdata };
	json_t *root, *entries, *o;
	json_error_t err;
	size_t n, n_offsets = 0, landmark = SIZE_MAX, i;
	int r = 0;

	if (json_count_values(json, len) > TOC_VALUES_MAX)
		return -EFBIG;
	root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &err);
	if (!root)
		return -EBADMSG;
	entries = json_object_get(root, "entries");
	if (!json_is_object(root) || !json_is_array(entries)) {
		r = -EBADMSG;
		goto finish;
	}
	n = json_array_size(entries);
	if (n > TOC_ENTRIES_MAX) {
		r = -EFBIG;
		goto finish;
	}

	/* First pass: where payloads start (every compressed range ends at the next one), and
	 * where the prefetch landmark is. */
	offsets = calloc(n + 1, sizeof(*offsets));
	if (!offsets) {
		r = -ENOMEM;
		goto finish;
	}
	json_array_foreach(entries, i, o) {
		const char *name, *type;
		uint64_t offset;

		if (!json_is_object(o) || json_str(o, "name", &name) < 0 || !name ||
		    json_str(o, "type", &type) < 0 || !type ||
		    json_u64(o, "offset", UINT64_MAX >> 1, &offset) < 0) {
			r = -EBADMSG;
			goto finish;
		}
		if (offset > 0 && (streq(type, "reg") || streq(type, "chunk")))
			offsets[n_offsets++] = offset;
		if (landmark == SIZE_MAX && !streq(type, "chunk")) {
			_cleanup_free_ char *path = NULL;

			r = normalized_copy(name, &path);
			if (r < 0)
				goto finish;
			if (streq(path, ".prefetch.landmark"))
				landmark = i;
		}
	}
	qsort(offsets, n_offsets, sizeof(*offsets), u64_cmp);
	c.offsets = offsets;
	c.n_offsets = n_offsets;

	json_array_foreach(entries, i, o) {
		const char *name = json_string_value(json_object_get(o, "name"));
		const char *type = json_string_value(json_object_get(o, "type"));
		char *path = NULL;

		r = normalized_copy(name, &path);
		if (r < 0)
			goto finish;

		if (streq(type, "chunk")) {
			bool same = p.active && p.e.type == ENTRY_REG && streq(path, p.path);

			if (!same) {
				/* Chunks of a skipped bookkeeping file are not ours either. */
				r = skipping && streq(path, skipping) ? 0 : -EBADMSG;
				free(path);
				if (r < 0)
					goto finish;
				continue;
			}
			free(path);
			r = toc_pending_add_chunk(&p, &c, o, false);
			if (r < 0)
				goto finish;
			continue;
		}

		r = toc_pending_flush(&p, &c);
		if (r < 0) {
			free(path);
			goto finish;
		}
		free(skipping);
		skipping = NULL;
		if (is_bookkeeping(path)) {
			skipping = path;  /* remembered so that its chunks are skipped too */
			continue;
		}
		r = toc_pending_start(&p, &c, o, type, path, landmark != SIZE_MAX && i < landmark);
		if (r < 0)
			goto finish;
	}
	r = toc_pending_flush(&p, &c);

finish:
	toc_pending_done(&p);
	json_decref(root);
	return r;
}

/* ---- entry points ----------------------------------------------------------------------- */

int layer_lazy_parse(const struct layer_desc *l, enum layer_format format,
		     const struct blob_range_reader *rd,
		     int (*add)(void *userdata, const struct entry *e), void *userdata)
{
	_cleanup_free_ char *json = NULL;
	uint64_t data_end = 0;
	size_t len = 0;
	int r;

	switch (format) {
	case LAYER_FORMAT_ESTARGZ:
		if (l->compression != LAYER_COMPRESSION_GZIP)
			return -EPROTO;
		r = estargz_fetch_toc(l, rd, &json, &len, &data_end);
		break;
	case LAYER_FORMAT_ZSTD_CHUNKED:
		if (l->compression != LAYER_COMPRESSION_ZSTD)
			return -EPROTO;
		r = zstd_chunked_fetch_toc(l, rd, &json, &len, &data_end);
		break;
	default:
		return -EINVAL;
	}
	if (r < 0)
		return r;
	return toc_parse(json, len, data_end, add, userdata);
}

static int writer_add(void *userdata, const struct entry *e)
{
	return layer_writer_add(userdata, e);
}

int layer_lazy_index(const struct layer_desc *l, enum layer_format format,
		     const struct blob_range_reader *rd, struct layer_writer *w)
{
	return layer_lazy_parse(l, format, rd, writer_add, w);
}
