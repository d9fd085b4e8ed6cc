/*
 * cache/format/seek_cursor_pool.c: parked inflate cursors (seek_cursor_pool.h).  A handful of
 * slots searched linearly under one lock: a mount has at most a few tens of spans being read
 * at once, and a lookup costs nothing next to the request it saves.
 */
#include "seek_cursor_pool.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "cache/format/seek_index_private.h"

struct slot {
	struct seek_cursor *cur;
	uint64_t parked;        /* when, in pool ticks: the smallest goes first */
};

struct seek_cursor_pool {
	pthread_mutex_t lock;
	pthread_cond_t released;                    /* a claim was released */
	struct slot slots[SEEK_CURSOR_POOL_SIZE];   /* guarded by lock */
	struct seek_span_claim claims[SEEK_CURSOR_CLAIMS_MAX];  /* guarded by lock */
	uint64_t tick;                              /* guarded by lock */
};

int seek_cursor_pool_new(struct seek_cursor_pool **ret)
{
	struct seek_cursor_pool *p = calloc(1, sizeof(*p));
	pthread_condattr_t attr;

	if (!p)
		return -ENOMEM;
	(void)pthread_mutex_init(&p->lock, NULL);
	(void)pthread_condattr_init(&attr);
	(void)pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	(void)pthread_cond_init(&p->released, &attr);
	(void)pthread_condattr_destroy(&attr);
	*ret = p;
	return 0;
}

struct seek_cursor_pool *seek_cursor_pool_free(struct seek_cursor_pool *p)
{
	if (!p)
		return NULL;
	for (size_t i = 0; i < SEEK_CURSOR_POOL_SIZE; i++)
		seek_cursor_free(p->slots[i].cur);
	(void)pthread_cond_destroy(&p->released);
	(void)pthread_mutex_destroy(&p->lock);
	free(p);
	return NULL;
}

static struct seek_span_claim *claim_find(struct seek_cursor_pool *p,
					  const struct seek_index *si, uint64_t blob_offset)
{
	for (size_t i = 0; i < SEEK_CURSOR_CLAIMS_MAX; i++)
		if (p->claims[i].held && p->claims[i].si == si &&
		    p->claims[i].blob_offset == blob_offset)
			return &p->claims[i];
	return NULL;
}

/* Waits (lock held) until nobody has the span claimed; false at @deadline_ms. */
static bool claim_wait(struct seek_cursor_pool *p, const struct seek_index *si,
		       uint64_t blob_offset, int64_t deadline_ms)
{
	struct timespec ts = { .tv_sec = deadline_ms / 1000,
			       .tv_nsec = (long)(deadline_ms % 1000) * 1000000L };

	while (claim_find(p, si, blob_offset))
		if (pthread_cond_timedwait(&p->released, &p->lock, &ts) == ETIMEDOUT)
			return false;
	return true;
}

struct seek_cursor *seek_cursor_pool_take(struct seek_cursor_pool *p, const struct seek_index *si,
					  uint64_t blob_offset, const char *digest, uint64_t size,
					  int64_t deadline_ms, uint64_t *ret_offset,
					  struct seek_span_claim *claim)
{
	struct seek_cursor *cur = NULL;

	*claim = (struct seek_span_claim) { .si = si, .blob_offset = blob_offset };
	if (!p)
		return NULL;
	pthread_mutex_lock(&p->lock);
	if (claim_wait(p, si, blob_offset, deadline_ms)) {
		for (size_t i = 0; i < SEEK_CURSOR_CLAIMS_MAX && !claim->held; i++)
			if (!p->claims[i].held) {
				claim->held = true;
				p->claims[i] = *claim;
			}
	}
	for (size_t i = 0; i < SEEK_CURSOR_POOL_SIZE && !cur; i++)
		if (p->slots[i].cur &&
		    seek_cursor_resume_at(p->slots[i].cur, si, blob_offset, digest, size,
					  ret_offset) == 1) {
			cur = p->slots[i].cur;
			p->slots[i].cur = NULL;
		}
	pthread_mutex_unlock(&p->lock);
	return cur;
}

/* The slot @cur goes to: one of the same span, else a free one, else the oldest. */
static struct slot *slot_for(struct seek_cursor_pool *p, const struct seek_cursor *cur)
{
	struct slot *free_slot = NULL, *oldest = &p->slots[0];

	for (size_t i = 0; i < SEEK_CURSOR_POOL_SIZE; i++) {
		struct slot *s = &p->slots[i];

		if (!s->cur) {
			free_slot = free_slot ?: s;
			continue;
		}
		if (s->cur->si == cur->si && s->cur->cp == cur->cp)
			return s;
		if (oldest->cur && s->parked < oldest->parked)
			oldest = s;
	}
	return free_slot ?: oldest;
}

void seek_cursor_pool_put(struct seek_cursor_pool *p, struct seek_span_claim *claim,
			  struct seek_cursor *cur)
{
	struct seek_span_claim *c;
	struct slot *s;

	if (!p) {
		seek_cursor_free(cur);
		return;
	}
	pthread_mutex_lock(&p->lock);
	if (claim && claim->held && (c = claim_find(p, claim->si, claim->blob_offset))) {
		c->held = false;
		(void)pthread_cond_broadcast(&p->released);
	}
	if (claim)
		claim->held = false;
	if (cur && cur->active) {
		s = slot_for(p, cur);
		seek_cursor_free(s->cur);
		*s = (struct slot) { .cur = TAKE_PTR(cur), .parked = ++p->tick };
	}
	pthread_mutex_unlock(&p->lock);
	seek_cursor_free(cur);
}

void seek_cursor_pool_forget(struct seek_cursor_pool *p, const struct seek_index *si)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	for (size_t i = 0; i < SEEK_CURSOR_POOL_SIZE; i++)
		if (p->slots[i].cur && p->slots[i].cur->si == si) {
			seek_cursor_free(p->slots[i].cur);
			p->slots[i].cur = NULL;
		}
	pthread_mutex_unlock(&p->lock);
}
