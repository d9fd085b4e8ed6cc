/* tests/unit/test-toc_hostile.c: hostile zstd:chunked TOCs (docs/security.md, "Hostile
 * manifests and TOCs").  Each case builds a blob in memory — one zstd frame of payload, the
 * skippable-frame header, the zstd-compressed TOC — with correct position and checksum
 * annotations, so only the TOC's content is hostile, and checks layer_lazy_parse()'s answer:
 * -EBADMSG for what is malformed or points outside the blob, -EFBIG over a ceiling, never a
 * crash.  The fixture-based tampering (footers, digests) lives in test-layer_lazy.c. */
#include "cache/format/layer_lazy.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "cache/base/digest.h"
#include "cache/base/util.h"
#include "tap.h"

#define PAYLOAD "hello, world\n"

struct blob {
	uint8_t *p;
	size_t len;
	size_t payload_len;     /* the payload frame is at offset 0 */
	char position[128];
	char checksum[DIGEST_STRING_MAX];
	char payload_digest[DIGEST_STRING_MAX];
};

static int mem_read(void *userdata, uint64_t offset, size_t len, void *buf)
{
	const struct blob *b = userdata;

	if (offset > b->len || len > b->len - offset)
		return -EIO;
	memcpy(buf, b->p + offset, len);
	return 0;
}

static size_t zstd_into(uint8_t *out, size_t cap, const void *in, size_t n)
{
	size_t r = ZSTD_compress(out, cap, in, n, 3);

	if (ZSTD_isError(r))
		abort();
	return r;
}

/* The blob for @json; @ulen_delta skews the uncompressed length the position annotation
 * declares. */
static void blob_build(struct blob *b, const char *json, size_t json_len, long ulen_delta)
{
	size_t cap = ZSTD_compressBound(json_len) + ZSTD_compressBound(sizeof(PAYLOAD)) + 64;
	size_t off, clen;

	*b = (struct blob) {};
	b->p = malloc(cap);
	if (!b->p)
		abort();
	b->payload_len = zstd_into(b->p, cap, PAYLOAD, strlen(PAYLOAD));
	off = b->payload_len;
	/* Skippable frame header: magic 0x184D2A50 (little endian) and the frame size. */
	memcpy(b->p + off, "\x50\x2a\x4d\x18", 4);
	off += 8;
	clen = zstd_into(b->p + off, cap - off, json, json_len);
	memcpy(b->p + off - 4, &(uint32_t) { (uint32_t)clen }, 4);
	snprintf(b->position, sizeof(b->position), "%zu:%zu:%zu:1", off, clen,
		 (size_t)((long)json_len + ulen_delta));
	digest_buffer(b->p + off, clen, b->checksum);
	digest_buffer(PAYLOAD, strlen(PAYLOAD), b->payload_digest);
	b->len = off + clen;
}

static int discard(void *userdata, const struct entry *e)
{
	(void)e;
	(*(size_t *)userdata)++;
	return 0;
}

/* Parses @json as the TOC of a zstd:chunked layer; *ret_n counts the entries handed out. */
static int parse_json(const char *json, size_t len, long ulen_delta, size_t *ret_n)
{
	struct blob b;
	struct annotation ann[2];
	struct layer_desc l;
	struct blob_range_reader rd = { .read = mem_read, .userdata = &b };
	size_t n = 0;
	int r;

	blob_build(&b, json, len, ulen_delta);
	ann[0] = (struct annotation) {
		.key = (char *)"io.github.containers.zstd-chunked.manifest-position",
		.value = b.position };
	ann[1] = (struct annotation) {
		.key = (char *)"io.github.containers.zstd-chunked.manifest-checksum",
		.value = b.checksum };
	l = (struct layer_desc) { .digest = (char *)"sha256:0", .size = b.len,
				  .compression = LAYER_COMPRESSION_ZSTD, .annotations = ann,
				  .n_annotations = 2 };
	r = layer_lazy_parse(&l, LAYER_FORMAT_ZSTD_CHUNKED, &rd, discard, &n);
	free(b.p);
	if (ret_n)
		*ret_n = n;
	return r;
}

static int parse(const char *json, size_t *ret_n)
{
	return parse_json(json, strlen(json), 0, ret_n);
}

/* A TOC with one file "a" whose one chunk is the payload frame, after @extra entries. */
static char *toc_a(const char *fields, const char *extra)
{
	char d[DIGEST_STRING_MAX], *s = NULL;

	digest_buffer(PAYLOAD, strlen(PAYLOAD), d);
	if (asprintf(&s, "{\"version\":1,\"entries\":[%s{\"name\":\"a\",\"type\":\"reg\",\"size\":%zu,"
		     "\"digest\":\"%s\",\"chunkDigest\":\"%s\"%s}]}", extra, strlen(PAYLOAD), d, d,
		     fields) < 0)
		abort();
	return s;
}

static void test_structure(void)
{
	_cleanup_free_ char *ok = toc_a(",\"offset\":0", "");
	size_t n;
	int r;

	r = parse(ok, &n);
	check(r == 0 && n == 1, "the well-formed TOC parses (%d, %zu entries)", r, n);
	check(parse("{\"entries\":[", NULL) == -EBADMSG, "truncated JSON is -EBADMSG");
	check(parse("not json at all", NULL) == -EBADMSG, "not JSON is -EBADMSG");
	check(parse("[]", NULL) == -EBADMSG, "a TOC that is not an object is -EBADMSG");
	check(parse("{\"version\":1}", NULL) == -EBADMSG, "a TOC without entries is -EBADMSG");
	check(parse("{\"entries\":{}}", NULL) == -EBADMSG, "entries not an array is -EBADMSG");
	check(parse("{\"entries\":[],\"entries\":[]}", NULL) == -EBADMSG,
	      "duplicate keys are -EBADMSG (two readers could pick different ones)");
	check(parse("{\"entries\":[{\"name\":\"x\",\"type\":\"reg\",\"size\":-1}]}", NULL) == -EBADMSG,
	      "a negative size is -EBADMSG");
	check(parse("{\"entries\":[{\"name\":\"x\",\"type\":\"dir\",\"mode\":1e3}]}", NULL) == -EBADMSG,
	      "a real where an integer belongs is -EBADMSG");
	check(parse("{\"entries\":[{\"name\":\"x\",\"type\":\"socket\"}]}", NULL) == -EBADMSG,
	      "an unknown entry type is -EBADMSG");
	r = parse_json(ok, strlen(ok), -1, NULL);
	check(r == -EBADMSG, "a TOC longer than its declared length is -EBADMSG (%d)", r);
	r = parse_json(ok, strlen(ok), 1, NULL);
	check(r == -EBADMSG, "a TOC shorter than its declared length is -EBADMSG (%d)", r);
}

static void test_nesting(void)
{
	/* jansson stops at JSON_PARSER_MAX_DEPTH (2048) levels, so the recursion of its parser
	 * and of json_decref() is bounded; a deep value under a key the TOC reader ignores is
	 * harmless below that. */
	size_t depths[] = { 2000, 100000 };

	for (size_t k = 0; k < ELEMENTSOF(depths); k++) {
		size_t d = depths[k], n;
		_cleanup_free_ char *json = malloc(2 * d + 64);
		char *p = json;
		int r;

		p += sprintf(p, "{\"x\":");
		memset(p, '[', d);
		p += d;
		memset(p, ']', d);
		p += d;
		strcpy(p, ",\"entries\":[]}");
		r = parse(json, &n);
		if (d < 2048)
			check(r == 0 && n == 0, "%zu nested arrays parse (%d)", d, r);
		else
			check(r == -EBADMSG, "%zu nested arrays are -EBADMSG, not a crash (%d)", d, r);
	}
}

static void test_ranges(void)
{
	char d[DIGEST_STRING_MAX];
	char *json;
	int r;

	digest_buffer(PAYLOAD, strlen(PAYLOAD), d);

	json = toc_a(",\"offset\":100000", "");
	r = parse(json, NULL);
	check(r == -EBADMSG, "a chunk offset past the blob is -EBADMSG (%d)", r);
	free(json);

	json = toc_a(",\"offset\":0,\"endOffset\":100000", "");
	r = parse(json, NULL);
	check(r == 0, "an endOffset past the payloads is clamped to the next payload (%d)", r);
	free(json);

	/* The TOC itself is not payload: a chunk that starts inside it is refused. */
	{
		struct blob b;

		blob_build(&b, "{}", 2, 0);
		if (asprintf(&json, "{\"entries\":[{\"name\":\"a\",\"type\":\"reg\",\"size\":13,"
			     "\"digest\":\"%s\",\"offset\":%zu}]}", d, b.payload_len + 2) < 0)
			abort();
		free(b.p);
		r = parse(json, NULL);
		check(r == -EBADMSG, "a chunk starting in the TOC's frame is -EBADMSG (%d)", r);
		free(json);
	}

	/* Chunks of one file: in order, inside the file, sizes as declared. */
	if (asprintf(&json, "{\"entries\":[{\"name\":\"f\",\"type\":\"reg\",\"size\":20,"
		     "\"digest\":\"%s\",\"offset\":0,\"chunkSize\":10,\"chunkDigest\":\"%s\"},"
		     "{\"name\":\"f\",\"type\":\"chunk\",\"offset\":0,\"chunkOffset\":5,"
		     "\"chunkSize\":15,\"chunkDigest\":\"%s\"}]}", d, d, d) < 0)
		abort();
	r = parse(json, NULL);
	check(r == -EBADMSG, "overlapping chunks (10 bytes at 0, then at 5) are -EBADMSG (%d)", r);
	free(json);

	if (asprintf(&json, "{\"entries\":[{\"name\":\"f\",\"type\":\"reg\",\"size\":20,"
		     "\"digest\":\"%s\",\"offset\":0,\"chunkDigest\":\"%s\"},"
		     "{\"name\":\"f\",\"type\":\"chunk\",\"offset\":0,\"chunkOffset\":20,"
		     "\"chunkDigest\":\"%s\"}]}", d, d, d) < 0)
		abort();
	r = parse(json, NULL);
	check(r == -EBADMSG, "a chunk starting at the file's end is -EBADMSG (%d)", r);
	free(json);

	if (asprintf(&json, "{\"entries\":[{\"name\":\"f\",\"type\":\"reg\",\"size\":20,"
		     "\"digest\":\"%s\",\"offset\":0,\"chunkSize\":7,\"chunkDigest\":\"%s\"}]}",
		     d, d) < 0)
		abort();
	r = parse(json, NULL);
	check(r == -EBADMSG, "a chunkSize that disagrees with the file is -EBADMSG (%d)", r);
	free(json);

	/* Two files whose chunks share compressed bytes: each chunk is verified by its own
	 * digest when it is read, so sharing is no risk and is accepted. */
	if (asprintf(&json, "{\"entries\":[{\"name\":\"a\",\"type\":\"reg\",\"size\":13,"
		     "\"digest\":\"%s\",\"offset\":0,\"chunkDigest\":\"%s\"},"
		     "{\"name\":\"b\",\"type\":\"reg\",\"size\":13,"
		     "\"digest\":\"%s\",\"offset\":0,\"chunkDigest\":\"%s\"}]}", d, d, d, d) < 0)
		abort();
	r = parse(json, NULL);
	check(r == 0, "two files naming the same compressed range are accepted (%d)", r);
	free(json);
}

static void test_names(void)
{
	static const char *const bad[] = { "../x", "a/../../x", "d/.wh..", "d/.wh...", NULL };
	char json[512];

	for (size_t i = 0; bad[i]; i++) {
		snprintf(json, sizeof(json),
			 "{\"entries\":[{\"name\":\"%s\",\"type\":\"dir\"}]}", bad[i]);
		check(parse(json, NULL) == -EBADMSG, "the name '%s' is -EBADMSG", bad[i]);
	}
	check(parse("{\"entries\":[{\"name\":\"h\",\"type\":\"hardlink\",\"linkName\":\"../etc/shadow\"}]}",
		    NULL) == -EBADMSG, "a hard link target with '..' is -EBADMSG");
	check(parse("{\"entries\":[{\"name\":\"/abs//p/./q\",\"type\":\"dir\"}]}", NULL) == 0,
	      "an absolute name is normalised, as in tar layers");
}

static void test_ceilings(void)
{
	/* Declared sizes are checked before anything is read or allocated: a blob of 1 TiB
	 * whose reader fails every read. */
	static const struct { const char *position; int want; const char *what; } cases[] = {
		{ "1000:1000:600000000:1", -EFBIG, "a TOC declared over 512 MiB uncompressed" },
		{ "1000:300000000:1000:1", -EFBIG, "a compressed TOC over 256 MiB" },
		{ "1099511627000:1000:1000:1", -EBADMSG, "a TOC past the blob's end" },
		{ "1000:0:1000:1", -EBADMSG, "an empty compressed TOC" },
		{ "1000:1000:1000:2", -EPROTO, "an unknown TOC type" },
		{ "1000:1000:1000", -EBADMSG, "a position with three fields" },
		{ "99999999999999999999999:1:1:1", -EBADMSG, "an offset over 64 bits" },
	};
	struct blob none = {};
	struct blob_range_reader rd = { .read = mem_read, .userdata = &none };

	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		struct annotation ann[2] = {
			{ (char *)"io.github.containers.zstd-chunked.manifest-position",
			  (char *)cases[i].position },
			{ (char *)"io.github.containers.zstd-chunked.manifest-checksum",
			  (char *)"sha256:0000000000000000000000000000000000000000000000000000000000000000" },
		};
		struct layer_desc l = { .digest = (char *)"sha256:0", .size = 1ULL << 40,
					.compression = LAYER_COMPRESSION_ZSTD, .annotations = ann,
					.n_annotations = 2 };
		int r = layer_lazy_parse(&l, LAYER_FORMAT_ZSTD_CHUNKED, &rd, discard, &(size_t) { 0 });

		check(r == cases[i].want, "%s: %d (want %d)", cases[i].what, r, cases[i].want);
	}

	/* 32,000,001 tiny values under a key the reader ignores: jansson would need ~1.5 GiB for
	 * these 64 MB of JSON; refused before it allocates any. */
	{
		size_t n_values = 32000001, n = 0;
		_cleanup_free_ char *json = malloc(n_values * 2 + 64);
		char *p = json;
		int r;

		p += sprintf(p, "{\"entries\":[],\"x\":[");
		for (size_t i = 0; i < n_values; i++) {
			*p++ = '0';
			*p++ = ',';
		}
		p[-1] = ']';
		strcpy(p, "}");
		r = parse(json, &n);
		check(r == -EFBIG, "a TOC of 32,000,001 values is -EFBIG (%d)", r);
	}

	/* More entries than any real layer: refused as a whole before any is handed out. */
	{
		size_t n_entries = 2000001, n = 0;
		_cleanup_free_ char *json = malloc(n_entries * 2 + 32);
		char *p = json;
		int r;

		p += sprintf(p, "{\"entries\":[");
		for (size_t i = 0; i < n_entries; i++) {
			*p++ = '0';
			*p++ = ',';
		}
		p[-1] = ']';
		strcpy(p, "}");
		r = parse(json, &n);
		check(r == -EFBIG && n == 0, "a TOC of 2,000,001 entries is -EFBIG (%d, %zu out)", r, n);
	}
}

int main(void)
{
	test_structure();
	test_nesting();
	test_ranges();
	test_names();
	test_ceilings();
	return tap_done();
}
