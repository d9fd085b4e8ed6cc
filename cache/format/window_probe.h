/* cache/format/window_probe.h: which bytes of a deflate checkpoint's window the stream after
 * it refers to.
 *
 * A seek index keeps, per checkpoint, the 32 KiB of output before it: deflate's matches may
 * copy from that far back.  They only can until 32 KiB more has come out, and in practice the
 * stream after a checkpoint refers to about a tenth of its window (measured on tar+gzip layers
 * of binaries and Python modules), so an index could keep only those bytes: the others
 * zeroed, which the index's deflate all but removes, and the ones before the first used one
 * dropped (docs/formats.md, "Seek indexes"; tests/bench/seek-span.c measures it).
 *
 * The probe learns it with zlib's own decoder, fed the same compressed bytes as the main stream
 * from the checkpoint on, twice with two made-up windows: window byte i is i & 0xff in the
 * first and (i & 0xff) + 1 + (i >> 8), modulo 256, in the second, so never the same byte in
 * both (i >> 8 is at most 127).  Decoding does not depend on the bytes it produces, so the two
 * run in step; an output byte copied from the window differs between them (a literal does
 * not), and the pair says which byte it was. */
#ifndef LAZYROOT_WINDOW_PROBE_H
#define LAZYROOT_WINDOW_PROBE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cache/base/util.h"

#define WINDOW_PROBE_SIZE 32768U

struct window_probe;

/* A probe for a checkpoint with a window of @window_len bytes (1 to WINDOW_PROBE_SIZE) where
 * the raw deflate stream resumes @bits bits into @prime_byte (the reader's inflatePrime()). */
int window_probe_new(size_t window_len, unsigned bits, uint8_t prime_byte,
		     struct window_probe **ret);
struct window_probe *window_probe_free(struct window_probe *p);  /* NULL-safe */
DEFINE_CLEANUP_FUNC(struct window_probe *, window_probe_free);

/* Feeds @n compressed bytes that follow the checkpoint (more in the next call).  1 once the
 * probe knows (WINDOW_PROBE_SIZE bytes came out, or the member ended), 0 while it needs more,
 * -EBADMSG if the bytes do not inflate (the window is then kept whole). */
int window_probe_feed(struct window_probe *p, const uint8_t *in, size_t n);

/* Once window_probe_feed() returned 1: in @used (window_len bytes), 1 for each window byte
 * the stream refers to, 0 for the others. */
void window_probe_used(const struct window_probe *p, uint8_t *used);

/* A sparse window's mask: bit i % 8 of byte i / 8 set when window byte i is used. */
static inline size_t window_mask_len(size_t window_len)
{
	return (window_len + 7) / 8;
}

static inline bool window_mask_used(const uint8_t *mask, size_t i)
{
	return mask[i / 8] >> (i % 8) & 1;
}

/* The other side, for a window kept sparse by someone else: a shadow decoder that runs beside
 * the one reading from a checkpoint, fed the same input in the same steps, whose window has
 * every byte the mask calls unused changed.  An output byte that depends on such a byte comes
 * out different in the two, so equal outputs prove, for the bytes that came out, that the
 * stream did not refer to them.  It follows the first WINDOW_PROBE_SIZE bytes of output (the
 * window is out of reach after those) or up to the member's end. */
struct window_shadow;

/* @window (@window_len bytes) as the reader set it, @mask its mask (window_mask_used()).  @bits and @prime_byte as for window_probe_new(). */
int window_shadow_new(const uint8_t *window, const uint8_t *mask, size_t window_len,
		      unsigned bits, uint8_t prime_byte, struct window_shadow **ret);
struct window_shadow *window_shadow_free(struct window_shadow *s);  /* NULL-safe */
DEFINE_CLEANUP_FUNC(struct window_shadow *, window_shadow_free);

/* At most this much output may the reader's next inflate() ask for (the shadow mirrors it in
 * a buffer of its own): @want cut to what is left of the output it follows. */
size_t window_shadow_limit(const struct window_shadow *s, size_t want);
/* Whether it is past the output it follows (it then agrees with anything). */
bool window_shadow_done(const struct window_shadow *s);

/* The reader called inflate(@flush) with @in_len bytes at @in and room for @out_len (at most
 * window_shadow_limit()); it took @consumed bytes and put out @out (@produced bytes).  The
 * shadow does the same: 0 when it agrees (or is past what it follows), -EBADMSG when its output
 * or progress differs: the stream refers to a byte the mask calls unused. */
int window_shadow_step(struct window_shadow *s, const uint8_t *in, size_t in_len, size_t out_len,
		       int flush, size_t consumed, const uint8_t *out, size_t produced);

#endif
