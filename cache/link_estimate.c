/*
 * cache/link_estimate.c: see link_estimate.h.  Exponential moving averages with weight 1/4
 * for each new sample: a few requests follow a change of the link, one odd request (a new
 * connection's handshake, a registry hiccup) moves the estimate only part of the way.
 */
#include "link_estimate.h"

#define SAMPLE_WEIGHT 0.25
#define RATE_MIN_BYTES (32u * 1024)
#define RATE_MIN_US 1000
#define ROUND_TRIP_MIN_BYTES (4u * 1024)

static void average_in(double *avg, unsigned *n, double sample)
{
	*avg = *n == 0 ? sample : *avg + SAMPLE_WEIGHT * (sample - *avg);
	if (*n < UINT32_MAX)
		(*n)++;
}

void link_estimate_add(struct link_estimate *e, int64_t start_us, int64_t first_us,
		       int64_t last_us, uint64_t bytes)
{
	if (first_us < start_us || last_us < first_us)
		return;   /* no byte came, or a clock went backwards: nothing to learn */
	average_in(&e->latency_us, &e->n_latency, (double)(first_us - start_us));
	if (bytes >= RATE_MIN_BYTES && last_us - first_us >= RATE_MIN_US)
		average_in(&e->rate_bps, &e->n_rate,
			   (double)bytes * 1e6 / (double)(last_us - first_us));
}

uint64_t link_estimate_bytes_per_round_trip(const struct link_estimate *e, uint64_t max)
{
	double b;

	if (e->n_latency == 0 || e->n_rate == 0)
		return max;
	b = e->rate_bps * e->latency_us / 1e6;
	if (b < ROUND_TRIP_MIN_BYTES)
		return 0;
	return b >= (double)max ? max : (uint64_t)b;
}
