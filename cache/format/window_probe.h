/* cache/format/window_probe.h: which bytes of a deflate checkpoint's window the stream after
 * it refers to.
 *
 * A seek index keeps, per checkpoint, the 32 KiB of output before it: deflate's matches may
 * copy from that far back.  They only can until 32 KiB more has come out, and in practice the
 * stream after a checkpoint refers to about a tenth of its window (measured on tar+gzip layers
 * of binaries and Python modules), so an index could keep only those bytes: the others
 * zeroed, which the index's deflate all but removes, and the ones before the first used one
 * dropped (not in the index format yet, docs/formats.md; tests/bench/seek-span.c measures it).
 *
 * The probe learns it with zlib's own decoder, fed the same compressed bytes as the main stream
 * from the checkpoint on, three times with three made-up windows: window byte i is i & 0xff in
 * the first, ~i & 0xff in the second, i >> 8 in the third.  Decoding does not depend on the
 * bytes it produces, so the three run in step; an output byte copied from the window differs
 * between the first two (a literal does not) and the first and third say which byte it was. */
#ifndef LAZYROOT_WINDOW_PROBE_H
#define LAZYROOT_WINDOW_PROBE_H

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

#endif
