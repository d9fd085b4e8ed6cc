/*
 * cache/link_estimate.h: what the link to the registry delivers, from the requests a fetcher
 * made: how long a request waits for its first byte (round trip plus the registry's time)
 * and how fast bytes then come.  Their product is what the link moves in one round trip: the
 * most a request may carry beyond what a reader waits for without delaying the next request
 * by more than a round trip (read-around).  Plain struct, no locking: the owner guards it.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

struct link_estimate {
	double latency_us;      /* moving average; valid when n_latency > 0 */
	double rate_bps;        /* bytes per second, moving average; valid when n_rate > 0 */
	unsigned n_latency, n_rate;
};

/* One finished request: sent at @start_us, first body byte at @first_us, last at @last_us,
 * @bytes of body.  Responses too short to time (under 32 KiB, or under a millisecond from
 * first to last byte) give a latency sample only. */
void link_estimate_add(struct link_estimate *e, int64_t start_us, int64_t first_us,
		       int64_t last_us, uint64_t bytes);

/* Bytes the link moves in one round trip, at most @max; @max while nothing is measured yet,
 * 0 when that is under 4 KiB (too little to be worth a request's extra bytes). */
uint64_t link_estimate_bytes_per_round_trip(const struct link_estimate *e, uint64_t max);
