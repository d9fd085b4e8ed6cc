/*
 * cache/format/seek_memo.c: a few parsed seek indexes kept between the steps of a pull
 * (seek_memo.h).  A handful of slots: a pull takes back what it put within moments, and what
 * it never takes (a layer read whole after all) is freed when a newer entry needs the slot.
 */
#include "seek_memo.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "cache/base/digest.h"
#include "cache/base/util.h"

#define MEMO_SLOTS 8

struct memo_slot {
	char blob[DIGEST_STRING_MAX];
	char layer[DIGEST_STRING_MAX];
	struct seek_index *si;  /* NULL: free */
	uint64_t age;
};

static pthread_mutex_t memo_lock = PTHREAD_MUTEX_INITIALIZER;
static struct memo_slot memo[MEMO_SLOTS];  /* guarded by memo_lock */
static uint64_t memo_clock;                /* guarded by memo_lock */

static struct memo_slot *slot_free_or_oldest(void)
{
	struct memo_slot *s = &memo[0];

	for (size_t i = 0; i < MEMO_SLOTS; i++) {
		if (!memo[i].si)
			return &memo[i];
		if (memo[i].age < s->age)
			s = &memo[i];
	}
	return s;
}

void seek_memo_put(const char *blob_digest, const char *layer_digest, struct seek_index *si)
{
	struct seek_index *old;
	struct memo_slot *s;

	if (!si)
		return;
	old = seek_memo_take(blob_digest, layer_digest);
	pthread_mutex_lock(&memo_lock);
	s = slot_free_or_oldest();
	seek_index_free(TAKE_PTR(old));
	old = s->si;
	(void)snprintf(s->blob, sizeof(s->blob), "%s", blob_digest);
	(void)snprintf(s->layer, sizeof(s->layer), "%s", layer_digest);
	s->si = si;
	s->age = ++memo_clock;
	pthread_mutex_unlock(&memo_lock);
	seek_index_free(old);
}

struct seek_index *seek_memo_take(const char *blob_digest, const char *layer_digest)
{
	struct seek_index *si = NULL;

	pthread_mutex_lock(&memo_lock);
	for (size_t i = 0; i < MEMO_SLOTS && !si; i++)
		if (memo[i].si && streq(memo[i].blob, blob_digest) &&
		    streq(memo[i].layer, layer_digest))
			si = TAKE_PTR(memo[i].si);
	pthread_mutex_unlock(&memo_lock);
	return si;
}
