/* Unit test of cache/registry/rate_limit.c: charges from several threads at once, each sleeping as
 * told, never move more than the rate (plus one burst) per second; a limiter left idle
 * lends one burst and no more; a charge within the rate costs no wait. */
#include <errno.h>
#include <pthread.h>
#include <time.h>

#include "cache/registry/rate_limit.h"
#include "tap.h"

#define RATE (4ULL << 20)          /* bytes per second */
#define THREADS 4
#define BLOCK 16384
#define BLOCKS_PER_THREAD 64      /* 4 MiB in all: one second at RATE */

static double now_s(void)
{
	struct timespec ts;

	(void)clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_us(int64_t us)
{
	struct timespec ts = { .tv_sec = us / 1000000, .tv_nsec = (us % 1000000) * 1000 };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static void *receiver(void *userdata)
{
	struct rate_limit *rl = userdata;

	for (int i = 0; i < BLOCKS_PER_THREAD; i++)
		sleep_us(rate_limit_charge(rl, BLOCK));
	return NULL;
}

int main(void)
{
	struct rate_limit *rl = NULL;
	pthread_t threads[THREADS];
	double t0, took, least;
	int64_t wait;

	check(rate_limit_new(0, &rl) == -EINVAL, "a zero rate is refused");
	check(rate_limit_new(RATE, &rl) == 0 && rate_limit_rate(rl) == RATE, "a limiter is made");

	/* A fresh limiter has lent nothing yet: half a second's bytes cost about half a second. */
	wait = rate_limit_charge(rl, RATE / 2);
	check(wait >= 250000 && wait <= 500000, "half a second's bytes wait 0.25-0.5 s (%lld us)",
	      (long long)wait);
	sleep_us(wait);

	/* Four threads charging at once share the one budget. */
	t0 = now_s();
	for (int i = 0; i < THREADS; i++)
		(void)pthread_create(&threads[i], NULL, receiver, rl);
	for (int i = 0; i < THREADS; i++)
		(void)pthread_join(threads[i], NULL);
	took = now_s() - t0;
	least = (double)(THREADS * BLOCKS_PER_THREAD * BLOCK) / RATE - RATE_LIMIT_BURST_MS / 1000.0;
	check(took >= least, "%d threads moved %d bytes in %.3f s, not faster than the rate "
	      "(at least %.3f s)", THREADS, THREADS * BLOCKS_PER_THREAD * BLOCK, took, least);

	/* Idle for a second: one burst is free, the next byte beyond it is not. */
	sleep_us(1000000);
	wait = rate_limit_charge(rl, RATE * RATE_LIMIT_BURST_MS / 1000 / 2);
	check(wait == 0, "after idling, half a burst passes at once (%lld us)", (long long)wait);
	wait = rate_limit_charge(rl, RATE);
	check(wait > 500000, "a second's bytes beyond the burst wait (%lld us)", (long long)wait);

	rl = rate_limit_free(rl);
	check(rate_limit_free(NULL) == NULL, "free is NULL-safe");
	return tap_done();
}
