/* tests/fuzz/fuzz-lazy-toc.c: the lazy-layer TOC readers of cache/format/layer_lazy.c, built twice:
 * fuzz-estargz-toc (-DFUZZ_ZSTD_CHUNKED=0) and fuzz-zstdchunked-toc (=1).
 *
 * A TOC is only parsed after its digest matched the manifest's annotation, which a mutated
 * input never would: so the first byte picks a mode.  Odd: the rest is a TOC JSON, which this
 * harness wraps into a well-formed layer (compressed the format's way, with the footer or the
 * position annotation and the right digests) after 64 KiB of payload, so the fuzzer works on
 * the JSON parser with real chunk offsets.  Even: the rest is the whole blob as it came from
 * the registry (footer, gzip members, tar headers / position, zstd frame), checked against a
 * digest that does not match. */
#include "cache/format/layer_lazy.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

#include "cache/base/digest.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define PAYLOAD_SIZE (64 * 1024)
#define JSON_MAX (1 << 20)

struct blob {
	uint8_t *buf;
	size_t len, allocated;
};

static void blob_append(struct blob *b, const void *p, size_t n)
{
	if (b->len + n > b->allocated) {
		size_t a = (b->len + n) * 2;
		uint8_t *nb = realloc(b->buf, a);

		if (!nb)
			abort();
		b->buf = nb;
		b->allocated = a;
	}
	if (n > 0)
		memcpy(b->buf + b->len, p, n);
	b->len += n;
}

static int blob_read(void *userdata, uint64_t offset, size_t len, void *buf)
{
	const struct blob *b = userdata;

	/* layer_lazy.c checks ranges against the descriptor's size, which is the blob's */
	if (offset > b->len || len > b->len - offset)
		abort();
	if (len > 0)  /* an empty blob has no buffer at all */
		memcpy(buf, b->buf + offset, len);
	return 0;
}

static int count_entry(void *userdata, const struct entry *e)
{
	size_t *n = userdata;

	if (!e->path)
		abort();
	(*n)++;
	return 0;
}

#if !FUZZ_ZSTD_CHUNKED
/* gzip(tar with one member stargz.index.json) + the 51-byte eStargz footer */
static void wrap_estargz(struct blob *b, const uint8_t *json, size_t len)
{
	uint8_t header[512] = {}, footer[51] = {};
	unsigned sum = 0;
	size_t tar_len, toc_offset = b->len;
	uint8_t *tar, *gz;
	uLongf gz_cap;
	z_stream zs = {};

	memcpy(header, "stargz.index.json", 17);
	memcpy(header + 100, "0000644", 7);
	snprintf((char *)header + 124, 12, "%011zo", len);
	memcpy(header + 136, "00000000000", 11);
	header[156] = '0';
	memcpy(header + 257, "ustar\0" "00", 8);
	memset(header + 148, ' ', 8);
	for (size_t i = 0; i < sizeof(header); i++)
		sum += header[i];
	snprintf((char *)header + 148, 8, "%06o", sum);

	tar_len = 512 + (len + 511) / 512 * 512 + 1024;
	tar = calloc(1, tar_len);
	if (!tar)
		abort();
	memcpy(tar, header, 512);
	memcpy(tar + 512, json, len);

	gz_cap = compressBound(tar_len) + 64;
	gz = malloc(gz_cap);
	if (!gz || deflateInit2(&zs, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
		abort();
	zs.next_in = tar;
	zs.avail_in = tar_len;
	zs.next_out = gz;
	zs.avail_out = gz_cap;
	if (deflate(&zs, Z_FINISH) != Z_STREAM_END)
		abort();
	blob_append(b, gz, zs.total_out);
	deflateEnd(&zs);
	free(gz);
	free(tar);

	/* an empty gzip member whose FEXTRA subfield 'S''G' holds the TOC offset */
	memcpy(footer, "\x1f\x8b\x08\x04\0\0\0\0\0\xff", 10);
	footer[10] = 26;
	footer[12] = 'S', footer[13] = 'G', footer[14] = 22;
	snprintf((char *)footer + 16, 23, "%016zxSTARGZ", toc_offset);
	memcpy(footer + 38, "\x01\x00\x00\xff\xff", 5);
	blob_append(b, footer, sizeof(footer));
}
#else
/* a skippable frame holding the zstd-compressed TOC; returns the position annotation */
static void wrap_zstd_chunked(struct blob *b, const uint8_t *json, size_t len, char *pos,
			      size_t pos_size, char checksum[DIGEST_STRING_MAX])
{
	size_t cap = ZSTD_compressBound(len), n;
	uint8_t *z = malloc(cap), frame[8];
	size_t offset;

	if (!z)
		abort();
	n = ZSTD_compress(z, cap, json, len, 3);
	if (ZSTD_isError(n))
		abort();
	frame[0] = 0x50, frame[1] = 0x2a, frame[2] = 0x4d, frame[3] = 0x18;
	frame[4] = n & 0xff, frame[5] = n >> 8 & 0xff, frame[6] = n >> 16 & 0xff;
	frame[7] = n >> 24 & 0xff;
	blob_append(b, frame, sizeof(frame));
	offset = b->len;
	blob_append(b, z, n);
	snprintf(pos, pos_size, "%zu:%zu:%zu:1", offset, n, len);
	if (digest_buffer(z, n, checksum) < 0)
		abort();
	free(z);
}
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char digest[DIGEST_STRING_MAX], toc_digest[DIGEST_STRING_MAX];
	char checksum[DIGEST_STRING_MAX] = "", pos[128] = "";
	struct annotation ann[3];
	struct layer_desc l = {};
	struct blob b = {};
	struct blob_range_reader rd = { .read = blob_read, .userdata = &b };
	enum layer_format format;
	size_t n_entries = 0;
	bool wrap;

	if (size < 1 || size > JSON_MAX)
		return 0;
	wrap = data[0] & 1;
	data++, size--;
	if (digest_buffer(data, size, toc_digest) < 0)
		abort();

	if (wrap) {
		b.buf = calloc(1, PAYLOAD_SIZE);
		if (!b.buf)
			abort();
		b.len = b.allocated = PAYLOAD_SIZE;
#if !FUZZ_ZSTD_CHUNKED
		wrap_estargz(&b, data, size);
#else
		wrap_zstd_chunked(&b, data, size, pos, sizeof(pos), checksum);
#endif
	} else {
		blob_append(&b, data, size);
#if FUZZ_ZSTD_CHUNKED
		/* the last 40 bytes of the blob, as the skippable frame would hold the TOC */
		size_t clen = size < 40 ? size : 40;
		snprintf(pos, sizeof(pos), "%zu:%zu:%zu:1", size - clen, clen, (size_t)4096);
		if (digest_buffer(data + size - clen, clen, checksum) < 0)
			abort();
#endif
	}
	if (digest_buffer(b.buf, b.len, digest) < 0)
		abort();

	l.digest = digest;
	l.size = b.len;
	l.annotations = ann;
#if !FUZZ_ZSTD_CHUNKED
	format = LAYER_FORMAT_ESTARGZ;
	(void)pos, (void)checksum;  /* zstd:chunked only */
	l.media_type = (char *)"application/vnd.oci.image.layer.v1.tar+gzip";
	l.compression = LAYER_COMPRESSION_GZIP;
	ann[l.n_annotations++] = (struct annotation) {
		(char *)"containerd.io/snapshot/stargz/toc.digest", toc_digest };
#else
	format = LAYER_FORMAT_ZSTD_CHUNKED;
	l.media_type = (char *)"application/vnd.oci.image.layer.v1.tar+zstd";
	l.compression = LAYER_COMPRESSION_ZSTD;
	ann[l.n_annotations++] = (struct annotation) {
		(char *)"io.github.containers.zstd-chunked.manifest-position", pos };
	ann[l.n_annotations++] = (struct annotation) {
		(char *)"io.github.containers.zstd-chunked.manifest-checksum", checksum };
	/* half the wrapped inputs also carry the TOC digest ctr-remote adds */
	if (size > 0 && data[size - 1] & 1)
		ann[l.n_annotations++] = (struct annotation) {
			(char *)"containerd.io/snapshot/stargz/toc.digest", toc_digest };
#endif
	if (layer_format_detect(&l) != format)
		abort();
	(void)layer_lazy_parse(&l, format, &rd, count_entry, &n_entries);
	free(b.buf);
	return 0;
}
