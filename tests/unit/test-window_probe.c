/* tests/unit/test-window_probe.c: the probe names exactly the window bytes a deflate stream
 * copies from: inflating with the others zeroed, or set to anything else, gives the same
 * bytes; it stops after 32 KiB of output or at the stream's end, takes its input in pieces,
 * starts at block boundaries inside a byte, and says when the bytes do not inflate. */
#include "cache/format/window_probe.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "tap.h"

#define WIN WINDOW_PROBE_SIZE

static uint32_t rng = 12345;

static uint8_t next_byte(void)
{
	rng = rng * 1103515245 + 12345;
	return (uint8_t)(rng >> 16);
}

/* Raw deflate of @data with @dict preset: the stream a checkpoint with that window resumes. */
static size_t deflate_with(const uint8_t *dict, size_t dict_len, const uint8_t *data, size_t n,
			   uint8_t *out, size_t out_max)
{
	z_stream zs = {};
	size_t len;

	if (deflateInit2(&zs, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK)
		return 0;
	(void)deflateSetDictionary(&zs, dict, (uInt)dict_len);
	zs.next_in = (uint8_t *)data;
	zs.avail_in = (uInt)n;
	zs.next_out = out;
	zs.avail_out = (uInt)out_max;
	len = deflate(&zs, Z_FINISH) == Z_STREAM_END ? out_max - zs.avail_out : 0;
	deflateEnd(&zs);
	return len;
}

/* Inflates up to @want bytes of the raw stream @in, resumed @bits into @prime, from @win. */
static size_t inflate_from(const uint8_t *in, size_t n, unsigned bits, uint8_t prime,
			   const uint8_t *win, size_t win_len, uint8_t *out, size_t want)
{
	z_stream zs = {};
	size_t got;

	if (inflateInit2(&zs, -15) != Z_OK)
		return 0;
	if (bits > 0)
		(void)inflatePrime(&zs, (int)bits, prime >> (8 - bits));
	(void)inflateSetDictionary(&zs, win, (uInt)win_len);
	zs.next_in = (uint8_t *)in;
	zs.avail_in = (uInt)n;
	zs.next_out = out;
	zs.avail_out = (uInt)want;
	(void)inflate(&zs, Z_NO_FLUSH);
	got = want - zs.avail_out;
	inflateEnd(&zs);
	return got;
}

/* Probes the stream @in (fed @piece bytes at a time) and checks that the window with its
 * unused bytes zeroed, or set to 0x5a, inflates to the same first 32 KiB.  Returns the number
 * of bytes used, or -1. */
static long probe_and_check(const uint8_t *in, size_t n, unsigned bits, uint8_t prime,
			    const uint8_t *win, size_t win_len, size_t piece, uint8_t *used)
{
	static uint8_t real[WIN], got[WIN], sparse[WIN];
	struct window_probe *p = NULL;
	size_t want, n_real, used_n = 0;
	int r = 0;

	if (window_probe_new(win_len, bits, prime, &p) < 0)
		return -1;
	for (size_t off = 0; off < n && r == 0; off += piece)
		r = window_probe_feed(p, in + off, off + piece > n ? n - off : piece);
	if (r == 1)
		window_probe_used(p, used);
	window_probe_free(p);
	if (r != 1)
		return -1;
	want = WIN;
	n_real = inflate_from(in, n, bits, prime, win, win_len, real, want);
	for (uint8_t fill = 0; fill < 2; fill++) {
		for (size_t i = 0; i < win_len; i++)
			sparse[i] = used[i] ? win[i] : fill ? 0x5a : 0;
		if (inflate_from(in, n, bits, prime, sparse, win_len, got, want) != n_real ||
		    memcmp(got, real, n_real) != 0)
			return -1;
	}
	for (size_t i = 0; i < win_len; i++)
		used_n += used[i];
	return (long)used_n;
}

/* The data copies three known ranges of a random window (all within 32 KiB of where they
 * land) amid random literals: the probe names exactly those ranges (random bytes repeat
 * nowhere else). */
static void test_known_ranges(size_t win_len, size_t piece)
{
	static uint8_t win[WIN], data[6000], z[16384], used[WIN];
	static const size_t at[3][2] = { { 2000, 700 }, { 9000, 1000 }, { 32000, 500 } };
	size_t from[3], len[3], n = 0, zlen, expect = 0;
	bool covered = true;
	long u;

	for (size_t i = 0; i < win_len; i++)
		win[i] = next_byte();
	for (int k = 0; k < 3; k++) {
		from[k] = at[k][0] * win_len / WIN;
		len[k] = at[k][1] * win_len / WIN;
		for (int j = 0; j < 300; j++)
			data[n++] = next_byte();
		memcpy(data + n, win + from[k], len[k]);
		n += len[k];
		expect += len[k];
	}
	zlen = deflate_with(win, win_len, data, n, z, sizeof(z));
	u = probe_and_check(z, zlen, 0, 0, win, win_len, piece, used);
	for (int k = 0; k < 3 && u >= 0; k++)
		for (size_t i = from[k]; i < from[k] + len[k]; i++)
			covered &= used[i] == 1;
	check(u >= 0 && covered && (size_t)u == expect,
	      "a %zu-byte window, fed %zu bytes at a time: the copied ranges are named (%ld used of "
	      "%zu copied)", win_len, piece, u, expect);
}

/* After 32 KiB of output the window is out of reach: the probe stops there (1) though the
 * stream goes on, and copies of the window after that are not its business. */
static void test_stops_after_32k(void)
{
	static uint8_t win[WIN], data[3 * WIN], z[4 * WIN], used[WIN];
	struct window_probe *p = NULL;
	size_t zlen;
	int r;

	for (size_t i = 0; i < WIN; i++)
		win[i] = next_byte();
	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = next_byte();
	zlen = deflate_with(win, WIN, data, sizeof(data), z, sizeof(z));
	r = window_probe_new(WIN, 0, 0, &p);
	if (r >= 0)
		r = window_probe_feed(p, z, zlen / 2);
	check(r == 1, "the probe knows once 32 KiB came out, before the stream ends");
	if (r == 1) {
		window_probe_used(p, used);
		r = 0;
		for (size_t i = 0; i < WIN; i++)
			r += used[i];
	}
	check(r == 0, "random data copies nothing from the window (%d bytes used)", r);
	check(window_probe_feed(p, z, zlen) == 1, "feeding more after it knows changes nothing");
	window_probe_free(p);
}

/* Block boundaries of a real stream, most of them inside a byte: at each one after the first
 * 32 KiB, a probe from there names what keeps the next 32 KiB the same. */
static void test_block_boundaries(void)
{
	size_t n = 1 << 20, zmax = n + 4096, zlen, probed = 0, good = 0, with_bits = 0;
	static const char *const words[] = { "import ", "os", ", ", "re", "collections", "\n",
					     "def ", "return ", "self", ".path", "(", ")", ":" };
	uint8_t *data = malloc(n), *z = malloc(zmax), out[4096];
	static uint8_t win[WIN], used[WIN];
	z_stream zs = {};

	for (size_t i = 0; i < n;) {
		const char *w = words[next_byte() % ELEMENTSOF(words)];

		for (; *w && i < n; w++)
			data[i++] = next_byte() < 16 ? next_byte() : (uint8_t)*w;
	}
	zlen = deflate_with((const uint8_t *)"", 0, data, n, z, zmax);
	(void)inflateInit2(&zs, -15);
	zs.next_in = z;
	zs.avail_in = (uInt)zlen;
	for (int zr = Z_OK; zr == Z_OK;) {
		zs.next_out = out;
		zs.avail_out = sizeof(out);
		zr = inflate(&zs, Z_BLOCK);
		if (zr == Z_OK && (zs.data_type & 128) && !(zs.data_type & 64) &&
		    zs.total_out >= WIN) {
			unsigned bits = zs.data_type & 7;
			size_t coff = (size_t)(zs.next_in - z);
			uInt wlen = WIN;

			(void)inflateGetDictionary(&zs, win, &wlen);
			probed++;
			with_bits += bits > 0;
			good += probe_and_check(z + coff, zlen - coff, bits, z[coff - 1], win, wlen,
						4096, used) >= 0;
		}
	}
	inflateEnd(&zs);
	check(probed >= 5 && with_bits > 0 && good == probed,
	      "a stream's block boundaries (%zu, %zu inside a byte): each sparse window inflates "
	      "the same (%zu)", probed, with_bits, good);
	free(data);
	free(z);
}

static void test_ends_early_and_errors(void)
{
	static uint8_t win[100], used[100], z[256];
	static const uint8_t data[] = "a short member";
	struct window_probe *p = NULL;
	size_t zlen;

	memset(win, 'x', sizeof(win));
	zlen = deflate_with(win, sizeof(win), data, sizeof(data), z, sizeof(z));
	check(probe_and_check(z, zlen, 0, 0, win, sizeof(win), 1, used) >= 0,
	      "a stream that ends before 32 KiB: known at its end");
	check(window_probe_new(0, 0, 0, &p) == -EINVAL && window_probe_new(WIN + 1, 0, 0, &p) ==
	      -EINVAL && window_probe_new(10, 8, 0, &p) == -EINVAL, "bad sizes and bits are refused");
	check(window_probe_new(sizeof(win), 0, 0, &p) == 0 &&
	      window_probe_feed(p, (const uint8_t *)"\xff\xff", 2) == -EBADMSG,
	      "bytes that do not inflate (a reserved block type) are -EBADMSG");
	window_probe_free(p);
	check(window_probe_free(NULL) == NULL, "free(NULL) is a no-op");
}

/* Runs a shadow beside a decoder of @z (@zlen) from @win, in steps of @piece input bytes, with
 * @used as its mask: 0 if it agreed all along, else the first error. */
static int shadow_run(const uint8_t *z, size_t zlen, const uint8_t *win, const uint8_t *used,
		      size_t piece)
{
	static uint8_t out[WIN], mask[WIN / 8];
	struct window_shadow *s = NULL;
	z_stream zs = {};
	int r, zr = Z_OK;

	memset(mask, 0, sizeof(mask));
	for (size_t i = 0; i < WIN; i++)
		mask[i / 8] |= (uint8_t)(used[i] << (i % 8));
	r = window_shadow_new(win, mask, WIN, 0, 0, &s);
	if (r < 0 || inflateInit2(&zs, -15) != Z_OK ||
	    inflateSetDictionary(&zs, win, WIN) != Z_OK)
		return -1;
	for (size_t off = 0; off < zlen && r == 0 && zr == Z_OK && !window_shadow_done(s);
	     off += piece) {
		size_t n = off + piece > zlen ? zlen - off : piece, room;

		zs.next_in = (uint8_t *)z + off;
		zs.avail_in = (uInt)n;
		room = window_shadow_limit(s, sizeof(out));
		zs.next_out = out;
		zs.avail_out = (uInt)room;
		zr = inflate(&zs, Z_NO_FLUSH);
		r = window_shadow_step(s, z + off, n, room, Z_NO_FLUSH, n - zs.avail_in, out,
				       room - zs.avail_out);
		off -= zs.avail_in;  /* what it did not take comes again */
	}
	inflateEnd(&zs);
	window_shadow_free(s);
	return r;
}

/* The shadow agrees with a decoder whose mask is the probe's, and catches a used byte left
 * out of the mask (its output depends on it), in whatever pieces the input comes. */
static void test_shadow(void)
{
	static uint8_t win[WIN], data[6000], z[16384], used[WIN];
	size_t n = 0, zlen, dropped = 0;

	for (size_t i = 0; i < WIN; i++)
		win[i] = next_byte();
	for (int k = 0; k < 4; k++) {
		for (int j = 0; j < 400; j++)
			data[n++] = next_byte();
		memcpy(data + n, win + 5000 * k + 100, 600);
		n += 600;
	}
	zlen = deflate_with(win, WIN, data, n, z, sizeof(z));
	if (probe_and_check(z, zlen, 0, 0, win, WIN, 1 << 20, used) < 0)
		abort();
	check(shadow_run(z, zlen, win, used, 1 << 20) == 0 && shadow_run(z, zlen, win, used, 33) == 0,
	      "the shadow agrees with a window masked as the probe says (whole input, 33 bytes at "
	      "a time)");
	for (size_t i = WIN - 1; i > 0 && !dropped; i--)
		if (used[i])
			used[i] = 0, dropped = i;
	check(shadow_run(z, zlen, win, used, 1 << 20) == -EBADMSG &&
	      shadow_run(z, zlen, win, used, 33) == -EBADMSG,
	      "a used byte left out of the mask (%zu) makes the shadow disagree", dropped);
}

int main(void)
{
	test_known_ranges(WIN, 1 << 20);
	test_known_ranges(WIN, 7);
	test_known_ranges(1000, 64);
	test_stops_after_32k();
	test_block_boundaries();
	test_ends_early_and_errors();
	test_shadow();
	return tap_done();
}
