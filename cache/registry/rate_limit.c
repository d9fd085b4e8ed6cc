/*
 * cache/registry/rate_limit.c: a shared byte budget (a virtual clock, as in GCRA).
 *
 * paid_until is the moment by which every byte charged so far is paid for at the rate.  A
 * charge moves it forward by n / rate; the caller waits until then.  Time that passed idle is
 * credit, but at most RATE_LIMIT_BURST_MS of it, so a limiter unused for an hour does not let
 * an hour's worth of bytes through at once.
 */
#include "rate_limit.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

struct rate_limit {
	pthread_mutex_t lock;
	uint64_t bytes_per_sec;
	int64_t paid_until_us;         /* guarded by lock */
};

static int64_t now_us(void)
{
	struct timespec ts;

	(void)clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int rate_limit_new(uint64_t bytes_per_sec, struct rate_limit **ret)
{
	struct rate_limit *rl;

	if (bytes_per_sec == 0)
		return -EINVAL;
	rl = calloc(1, sizeof(*rl));
	if (!rl)
		return -ENOMEM;
	(void)pthread_mutex_init(&rl->lock, NULL);
	rl->bytes_per_sec = bytes_per_sec;
	rl->paid_until_us = now_us();
	*ret = rl;
	return 0;
}

static void rate_limit_done(struct rate_limit *rl)
{
	(void)pthread_mutex_destroy(&rl->lock);
}
DEFINE_FREE_FUNC(struct rate_limit, rate_limit_free, rate_limit_done);

uint64_t rate_limit_rate(const struct rate_limit *rl)
{
	return rl->bytes_per_sec;
}

int64_t rate_limit_charge(struct rate_limit *rl, size_t n)
{
	int64_t now = now_us(), floor = now - (int64_t)RATE_LIMIT_BURST_MS * 1000, wait;
	/* n * 1e6 / rate without overflow for any block a transfer hands over. */
	int64_t cost = (int64_t)(((unsigned __int128)n * 1000000) / rl->bytes_per_sec);

	pthread_mutex_lock(&rl->lock);
	if (rl->paid_until_us < floor)
		rl->paid_until_us = floor;
	rl->paid_until_us += cost;
	wait = rl->paid_until_us - now;
	pthread_mutex_unlock(&rl->lock);
	return wait > 0 ? wait : 0;
}
