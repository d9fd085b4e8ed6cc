/* cache/registry/rate_limit.h: one byte budget per second shared by every transfer of a run (all of
 * `lazyroot prewarm --limit-rate`'s jobs and requests), charged as the bytes arrive.
 *
 * libcurl's own receive limit is per transfer and checked only between reads of the socket:
 * a response that is already in the socket buffer when it looks (short ranges, a busy CPU)
 * goes through at full speed.  Charging every received block here and sleeping until it is
 * paid for holds the total to the rate whatever the sizes and the number of connections. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "cache/base/util.h"

struct rate_limit;

/* @bytes_per_sec > 0.  An idle limiter lets at most RATE_LIMIT_BURST_MS worth of bytes pass
 * at once. */
int rate_limit_new(uint64_t bytes_per_sec, struct rate_limit **ret);
struct rate_limit *rate_limit_free(struct rate_limit *rl);  /* NULL-safe */
DEFINE_CLEANUP_FUNC(struct rate_limit *, rate_limit_free);

uint64_t rate_limit_rate(const struct rate_limit *rl);

/* Charges @n bytes that just arrived (thread-safe) and returns how many microseconds the
 * caller must wait before it takes more, 0 if none: the caller sleeps, the others go on
 * charging against the same clock. */
int64_t rate_limit_charge(struct rate_limit *rl, size_t n);

#define RATE_LIMIT_BURST_MS 250
