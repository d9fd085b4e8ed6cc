/* tests/fuzz/fuzz-seek-index.c: the seek index parser (cache/format/seek_index.c), on indexes
 * that may come from anyone with push rights to a repository.
 *
 * An index's body is deflated, which a mutated input never inflates to: so the first byte
 * picks a mode.  Odd: the rest is a body, which this harness wraps (deflate, file header) so
 * that the fuzzer works on the tables.  Even: the rest is the whole index file.  An index that
 * parses is walked, trusted and untrusted, and each of its small chunks is inflated from a
 * synthetic blob: nothing may read out of bounds, whatever the offsets, windows, masks and bits
 * say. */
#include "cache/format/seek_index.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define SMALL (1 << 20)

struct walk {
	const struct seek_index *si;
	uint8_t *blob;
	size_t blob_len;
};

static int walk_entry(void *userdata, const struct entry *e)
{
	struct walk *w = userdata;

	for (size_t i = 0; i < e->n_chunks; i++) {
		const struct chunk *c = &e->chunks[i];
		uint8_t *out;

		if (c->size > SMALL || c->blob_offset > w->blob_len ||
		    c->blob_length > w->blob_len - c->blob_offset)
			continue;
		out = malloc(c->size);
		if (!out)
			abort();
		(void)seek_index_chunk_decode(w->si, c->blob_offset, c->digest, c->size,
					      w->blob + c->blob_offset, c->blob_length, out);
		free(out);
	}
	return 0;
}

/* Walked as an index built here, and (@untrusted) as one from elsewhere, whose reads prove
 * tar headers and windows as they go (seek_trust.c, sparse windows' shadow decoder). */
static void check(const uint8_t *buf, size_t len, bool untrusted)
{
	struct seek_index *si = NULL;
	struct seek_index_info info;
	struct walk w = {};

	if (seek_index_parse(buf, len, NULL, 0, &si) < 0)
		return;
	if (untrusted && seek_index_set_untrusted(si) < 0)
		abort();
	seek_index_get_info(si, &info);
	w.si = si;
	w.blob_len = info.blob_size < SMALL ? info.blob_size : SMALL;
	w.blob = calloc(1, w.blob_len ?: 1);
	if (!w.blob)
		abort();
	for (size_t i = 0; i < w.blob_len; i++)
		w.blob[i] = (uint8_t)(i * 31 + 7);
	(void)seek_index_foreach(si, walk_entry, &w);
	free(w.blob);
	seek_index_free(si);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *file;
	uLongf zlen;

	if (size < 1)
		return 0;
	if (!(data[0] & 1)) {
		check(data + 1, size - 1, false);
		check(data + 1, size - 1, true);
		return 0;
	}
	zlen = compressBound(size - 1);
	file = malloc(24 + zlen);
	if (!file)
		abort();
	memcpy(file, "LZRSEEKI", 8);
	memset(file + 8, 0, 16);
	file[8] = SEEK_INDEX_VERSION;
	for (int i = 0; i < 8; i++)
		file[16 + i] = (uint8_t)((uint64_t)(size - 1) >> (8 * i));
	if (compress(file + 24, &zlen, data + 1, size - 1) != Z_OK)
		abort();
	check(file, 24 + zlen, false);
	check(file, 24 + zlen, true);
	free(file);
	return 0;
}
