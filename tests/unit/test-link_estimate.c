/* Unit test of cache/link_estimate.c: nothing measured -> the caller's maximum; a fast link
 * with a long round trip -> the maximum; a slow link -> what it moves in one round trip; a
 * very slow one -> 0; short responses time the round trip but not the rate; a sample that
 * makes no sense is ignored; one odd sample moves the estimate only part of the way. */
#include "cache/link_estimate.h"
#include "tap.h"

#define KiB 1024ULL
#define MAX (128 * KiB)

/* A response of @bytes at @rate bytes/s, its first byte @latency_us after it was sent. */
static void add(struct link_estimate *e, int64_t latency_us, double rate, uint64_t bytes)
{
	int64_t start = 1000000, first = start + latency_us;

	link_estimate_add(e, start, first, first + (int64_t)((double)bytes / rate * 1e6), bytes);
}

int main(void)
{
	struct link_estimate e = {};
	uint64_t b;

	check(link_estimate_bytes_per_round_trip(&e, MAX) == MAX, "nothing measured: the maximum");

	/* 100 Mbit/s, 20 ms round trip: 250 kB per round trip, over the maximum. */
	add(&e, 20000, 12.5e6, 512 * KiB);
	check(link_estimate_bytes_per_round_trip(&e, MAX) == MAX, "fast link: the maximum");

	/* 5 Mbit/s, 20 ms: 12.5 kB. */
	e = (struct link_estimate) {};
	add(&e, 20000, 625e3, 256 * KiB);
	b = link_estimate_bytes_per_round_trip(&e, MAX);
	check(b > 11500 && b < 13500, "5 Mbit/s with 20 ms: about 12.5 kB (%llu)",
	      (unsigned long long)b);

	/* Short responses give round trips only; the rate stays. */
	for (int i = 0; i < 20; i++)
		add(&e, 40000, 1e9, 2 * KiB);
	b = link_estimate_bytes_per_round_trip(&e, MAX);
	check(e.n_rate == 1 && b > 23000 && b < 27000,
	      "short responses move the round trip (40 ms) but not the rate: ~25 kB (%llu)",
	      (unsigned long long)b);

	/* 512 kbit/s, 5 ms: 320 bytes, not worth it. */
	e = (struct link_estimate) {};
	add(&e, 5000, 64e3, 64 * KiB);
	check(link_estimate_bytes_per_round_trip(&e, MAX) == 0, "very slow link: 0");

	/* A response with no first byte, or a clock that went backwards, teaches nothing. */
	link_estimate_add(&e, 2000, 1000, 3000, 64 * KiB);
	link_estimate_add(&e, 1000, 3000, 2000, 64 * KiB);
	check(e.n_latency == 1 && e.n_rate == 1, "senseless samples are ignored");

	/* One odd sample (a new connection's handshake) moves the average a quarter of the way. */
	e = (struct link_estimate) {};
	add(&e, 20000, 625e3, 256 * KiB);
	add(&e, 100000, 625e3, 256 * KiB);
	check(e.latency_us > 39000 && e.latency_us < 41000,
	      "one 100 ms sample after a 20 ms one: 40 ms (%.0f us)", e.latency_us);
	return tap_done();
}
