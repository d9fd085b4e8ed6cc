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

/* A request waiting for a span's claim.  When the claim is released, the one whose first
 * chunk comes first in the stream goes first: it goes on from the cursor the last request
 * parked, and the next one from its cursor.  In the order they happened to wake up, a
 * request would pass over the chunks of one that started later and then had to fetch the
 * span from its checkpoint again (two readers of one file, the kernel's readahead and the
 * reader's own read). */
struct waiter {
	const struct seek_index *si;  /* NULL: a free entry */
	uint64_t blob_offset;
	uint64_t uoff;                /* of its first chunk */
};

struct seek_cursor_pool {
	pthread_mutex_t lock;
	pthread_cond_t released;                    /* a claim was released */
	struct slot slots[SEEK_CURSOR_POOL_SIZE];   /* guarded by lock */
	struct seek_span_claim claims[SEEK_CURSOR_CLAIMS_MAX];  /* guarded by lock */
	struct waiter waiters[SEEK_CURSOR_CLAIMS_MAX];          /* guarded by lock */
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

static struct waiter *waiter_add(struct seek_cursor_pool *p, const struct seek_index *si,
				 uint64_t blob_offset, uint64_t uoff)
{
	for (size_t i = 0; i < SEEK_CURSOR_CLAIMS_MAX; i++)
		if (!p->waiters[i].si) {
			p->waiters[i] = (struct waiter) { .si = si, .blob_offset = blob_offset,
							  .uoff = uoff };
			return &p->waiters[i];
		}
	return NULL;  /* every entry in use: this one waits in no order */
}

/* Whether another request waiting for @w's span starts before it in the stream. */
static bool waiter_behind(const struct seek_cursor_pool *p, const struct waiter *w)
{
	if (!w)
		return false;
	for (size_t i = 0; i < SEEK_CURSOR_CLAIMS_MAX; i++) {
		const struct waiter *o = &p->waiters[i];

		if (o != w && o->si == w->si && o->blob_offset == w->blob_offset &&
		    (o->uoff < w->uoff || (o->uoff == w->uoff && o < w)))
			return true;
	}
	return false;
}

/* Waits (lock held) until nobody has the span claimed and no request waiting for it starts
 * before @uoff; false at @deadline_ms. */
static bool claim_wait(struct seek_cursor_pool *p, const struct seek_index *si,
		       uint64_t blob_offset, uint64_t uoff, int64_t deadline_ms)
{
	struct timespec ts = { .tv_sec = deadline_ms / 1000,
			       .tv_nsec = (long)(deadline_ms % 1000) * 1000000L };
	struct waiter *w = NULL;
	bool ok = true;

	if (claim_find(p, si, blob_offset))
		w = waiter_add(p, si, blob_offset, uoff);
	while (ok && (claim_find(p, si, blob_offset) || waiter_behind(p, w)))
		ok = pthread_cond_timedwait(&p->released, &p->lock, &ts) != ETIMEDOUT;
	if (w) {
		w->si = NULL;
		/* The one behind it may go now (or wait for its claim). */
		(void)pthread_cond_broadcast(&p->released);
	}
	return ok;
}

/* Where chunk (@digest, @size) of the span at @blob_offset starts in the stream (0: not
 * found, first). */
static uint64_t chunk_uoff(const struct seek_index *si, uint64_t blob_offset, const char *digest,
			   uint64_t size)
{
	const struct seek_chunk *c;
	uint8_t md[32];
	size_t cp;

	if (!digest || digest_parse_sha256(digest, md) < 0 ||
	    seek_cp_find_start(si, blob_offset, &cp) < 0 || seek_chunk_find(si, cp, md, size, &c) < 0)
		return 0;
	return c->uoff;
}

/* Claims the span in *claim (lock held), after waiting for whoever has it. */
static void claim_take(struct seek_cursor_pool *p, struct seek_span_claim *claim,
		       uint64_t uoff, int64_t deadline_ms)
{
	if (!claim_wait(p, claim->si, claim->blob_offset, uoff, deadline_ms))
		return;
	for (size_t i = 0; i < SEEK_CURSOR_CLAIMS_MAX && !claim->held; i++)
		if (!p->claims[i].held) {
			claim->held = true;
			p->claims[i] = *claim;
		}
}

void seek_cursor_pool_claim(struct seek_cursor_pool *p, const struct seek_index *si,
			    uint64_t blob_offset, int64_t deadline_ms,
			    struct seek_span_claim *claim)
{
	*claim = (struct seek_span_claim) { .si = si, .blob_offset = blob_offset };
	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	claim_take(p, claim, 0, deadline_ms);  /* from the checkpoint: first */
	pthread_mutex_unlock(&p->lock);
}

struct seek_cursor *seek_cursor_pool_take(struct seek_cursor_pool *p, const struct seek_index *si,
					  uint64_t blob_offset, const char *digest, uint64_t size,
					  int64_t deadline_ms, uint64_t *ret_offset,
					  struct seek_span_claim *claim)
{
	struct seek_cursor *cur = NULL;
	uint64_t uoff;

	*claim = (struct seek_span_claim) { .si = si, .blob_offset = blob_offset };
	if (!p)
		return NULL;
	uoff = chunk_uoff(si, blob_offset, digest, size);
	pthread_mutex_lock(&p->lock);
	claim_take(p, claim, uoff, deadline_ms);
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
