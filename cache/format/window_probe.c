/* cache/format/window_probe.c: see window_probe.h. */
#include "window_probe.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

enum { PROBE_LOW, PROBE_MIXED, PROBES };

struct window_probe {
	z_stream zs[PROBES];
	unsigned n_ready;       /* z_streams initialized, to end */
	size_t window_len;
	size_t produced;        /* bytes each decoder put out (they run in step) */
	bool done;
	uint8_t out[PROBES][WINDOW_PROBE_SIZE];
};

/* Window byte @i is i & 0xff in one window and (i & 0xff) + 1 + (i >> 8) in the other: never
 * the same in both (i >> 8 is 0 to 127), and the pair names i. */
static uint8_t made_up_byte(unsigned kind, size_t i)
{
	if (kind == PROBE_LOW)
		return (uint8_t)(i & 0xff);
	return (uint8_t)((i & 0xff) + 1 + (i >> 8));
}

static int probe_start(z_stream *zs, unsigned kind, size_t window_len, unsigned bits,
		       uint8_t prime_byte)
{
	uint8_t window[WINDOW_PROBE_SIZE];

	for (size_t i = 0; i < window_len; i++)
		window[i] = made_up_byte(kind, i);
	if (bits > 0 && inflatePrime(zs, (int)bits, prime_byte >> (8 - bits)) != Z_OK)
		return -EINVAL;
	return inflateSetDictionary(zs, window, (uInt)window_len) == Z_OK ? 0 : -EINVAL;
}

struct window_probe *window_probe_free(struct window_probe *p)
{
	if (p)
		for (unsigned k = 0; k < p->n_ready; k++)
			(void)inflateEnd(&p->zs[k]);
	free(p);
	return NULL;
}

int window_probe_new(size_t window_len, unsigned bits, uint8_t prime_byte,
		     struct window_probe **ret)
{
	_cleanup_(window_probe_freep) struct window_probe *p = NULL;
	int r;

	if (window_len == 0 || window_len > WINDOW_PROBE_SIZE || bits > 7)
		return -EINVAL;
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->window_len = window_len;
	for (unsigned k = 0; k < PROBES; k++) {
		if (inflateInit2(&p->zs[k], -15) != Z_OK)
			return -ENOMEM;
		p->n_ready++;
		r = probe_start(&p->zs[k], k, window_len, bits, prime_byte);
		if (r < 0)
			return r;
	}
	*ret = TAKE_PTR(p);
	return 0;
}

int window_probe_feed(struct window_probe *p, const uint8_t *in, size_t n)
{
	size_t produced = p->produced;
	bool ended = false;

	if (p->done)
		return 1;
	while (n > 0) {
		uInt take = n > UINT32_MAX ? UINT32_MAX : (uInt)n;

		for (unsigned k = 0; k < PROBES; k++) {
			z_stream *zs = &p->zs[k];
			int zr;

			zs->next_in = (uint8_t *)in;
			zs->avail_in = take;
			zs->next_out = p->out[k] + p->produced;
			zs->avail_out = (uInt)(WINDOW_PROBE_SIZE - p->produced);
			zr = inflate(zs, Z_NO_FLUSH);
			if (zr != Z_OK && zr != Z_STREAM_END && zr != Z_BUF_ERROR)
				return -EBADMSG;
			/* Decoding does not look at the window's bytes: all three agree. */
			if (k == 0)
				produced = WINDOW_PROBE_SIZE - zs->avail_out;
			else if (WINDOW_PROBE_SIZE - zs->avail_out != produced)
				return -EBADMSG;
			ended = zr == Z_STREAM_END;
		}
		p->produced = produced;
		if (ended || p->produced == WINDOW_PROBE_SIZE) {
			p->done = true;
			return 1;
		}
		in += take;
		n -= take;
	}
	return 0;
}

void window_probe_used(const struct window_probe *p, uint8_t *used)
{
	for (size_t i = 0; i < p->window_len; i++)
		used[i] = 0;
	for (size_t j = 0; j < p->produced; j++) {
		uint8_t low = p->out[PROBE_LOW][j], mixed = p->out[PROBE_MIXED][j];
		size_t i;

		if (low == mixed)
			continue;  /* a literal */
		i = low | (size_t)((uint8_t)(mixed - low) - 1) << 8;
		if (i < p->window_len)
			used[i] = 1;
	}
}

struct window_shadow {
	z_stream zs;
	bool ready, done;
	size_t produced;        /* of the output it follows */
	uint8_t out[WINDOW_PROBE_SIZE];
};

struct window_shadow *window_shadow_free(struct window_shadow *s)
{
	if (s && s->ready)
		(void)inflateEnd(&s->zs);
	free(s);
	return NULL;
}

int window_shadow_new(const uint8_t *window, const uint8_t *mask, size_t window_len,
		      unsigned bits, uint8_t prime_byte, struct window_shadow **ret)
{
	_cleanup_(window_shadow_freep) struct window_shadow *s = NULL;

	if (window_len > WINDOW_PROBE_SIZE || bits > 7)
		return -EINVAL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	if (inflateInit2(&s->zs, -15) != Z_OK)
		return -ENOMEM;
	s->ready = true;
	/* The changed window is built in s->out, free until the first step. */
	for (size_t i = 0; i < window_len; i++)
		s->out[i] = window_mask_used(mask, i) ? window[i] : (uint8_t)~window[i];
	if (bits > 0 && inflatePrime(&s->zs, (int)bits, prime_byte >> (8 - bits)) != Z_OK)
		return -EINVAL;
	if (window_len > 0 && inflateSetDictionary(&s->zs, s->out, (uInt)window_len) != Z_OK)
		return -EINVAL;
	*ret = TAKE_PTR(s);
	return 0;
}

size_t window_shadow_limit(const struct window_shadow *s, size_t want)
{
	size_t left = WINDOW_PROBE_SIZE - s->produced;

	return s->done || want < left ? want : left;
}

bool window_shadow_done(const struct window_shadow *s)
{
	return s->done;
}

int window_shadow_step(struct window_shadow *s, const uint8_t *in, size_t in_len, size_t out_len,
		       int flush, size_t consumed, const uint8_t *out, size_t produced)
{
	int zr;

	if (s->done)
		return 0;
	if (out_len > WINDOW_PROBE_SIZE - s->produced || in_len > UINT32_MAX)
		return -EINVAL;
	s->zs.next_in = (uint8_t *)in;
	s->zs.avail_in = (uInt)in_len;
	s->zs.next_out = s->out;
	s->zs.avail_out = (uInt)out_len;
	zr = inflate(&s->zs, flush);
	if ((zr != Z_OK && zr != Z_STREAM_END && zr != Z_BUF_ERROR) ||
	    in_len - s->zs.avail_in != consumed || out_len - s->zs.avail_out != produced ||
	    memcmp(s->out, out, produced) != 0)
		return -EBADMSG;
	s->produced += produced;
	s->done = zr == Z_STREAM_END || s->produced == WINDOW_PROBE_SIZE;
	return 0;
}
