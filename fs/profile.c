/*
 * fs/profile.c: a mount's start profile (profile.h).  Recording keeps the chunks reads touch
 * in an array, deduplicated by an open-addressing set of their digests, under one lock, and
 * only until its window ends: after that a read pays one atomic load.  Using keeps the matched
 * chunks in the profile's order (what the jobs fetch) and, sorted by digest, with a flag each,
 * what reads count as used (a binary search per chunk read, no lock).
 */
#include "profile.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "cache/base/log.h"
#include "cache/base/util.h"
#include "cache/store/blob_store.h"

#define SET_SLOTS (2 * START_PROFILE_CHUNKS_MAX)

struct used_chunk {
	uint8_t digest[32];
	uint8_t used;                  /* atomic */
};

struct fs_profile {
	pthread_mutex_t lock;
	bool recording;                /* atomic; set before the mount serves */
	uint64_t window_ms;
	int64_t first_ms;              /* guarded by lock: the first read, 0 before */
	struct fs_chunk_ref *rec;      /* guarded by lock, START_PROFILE_CHUNKS_MAX slots */
	size_t n_rec;                  /* guarded by lock */
	uint32_t *rec_set;             /* guarded by lock: 1 + index into rec, 0 free */
	bool rec_taken;                /* guarded by lock */

	struct fetch_chunk *use;       /* the profile's chunks the image has, its order */
	struct used_chunk *used;       /* the same, by digest */
	size_t n_use;
	uint64_t skipped, fetched, n_used;  /* fetched and n_used atomic */

	struct fetcher *f;
	struct blob_store *bs;
	pthread_t jobs[FS_PROFILE_JOBS];
	unsigned n_jobs;
	unsigned running;              /* atomic */
	size_t next_batch;             /* atomic */
	bool stop;                     /* atomic */
};

int fs_profile_new(struct fs_profile **ret)
{
	struct fs_profile *p = calloc(1, sizeof(*p));

	if (!p)
		return -ENOMEM;
	(void)pthread_mutex_init(&p->lock, NULL);
	*ret = p;
	return 0;
}

struct fs_profile *fs_profile_free(struct fs_profile *p)
{
	if (!p)
		return NULL;
	fs_profile_fetch_stop(p);
	free(p->rec);
	free(p->rec_set);
	free(p->use);
	free(p->used);
	(void)pthread_mutex_destroy(&p->lock);
	free(p);
	return NULL;
}

int fs_profile_record(struct fs_profile *p, uint64_t window_ms)
{
	p->rec = calloc(START_PROFILE_CHUNKS_MAX, sizeof(*p->rec));
	p->rec_set = calloc(SET_SLOTS, sizeof(*p->rec_set));
	if (!p->rec || !p->rec_set)
		return -ENOMEM;
	p->window_ms = window_ms;
	__atomic_store_n(&p->recording, true, __ATOMIC_RELEASE);
	return 0;
}

/* Adds @c unless recorded already; false when the recording is full. */
static bool record_one(struct fs_profile *p, const struct fs_chunk_ref *c)
{
	uint32_t h;

	memcpy(&h, c->digest, sizeof(h));  /* a sha256 is as good a hash as any */
	for (h %= SET_SLOTS; p->rec_set[h]; h = (h + 1) % SET_SLOTS)
		if (memcmp(p->rec[p->rec_set[h] - 1].digest, c->digest, 32) == 0)
			return true;
	if (p->n_rec == START_PROFILE_CHUNKS_MAX)
		return false;
	p->rec[p->n_rec++] = *c;
	p->rec_set[h] = (uint32_t)p->n_rec;
	return true;
}

static void note_record(struct fs_profile *p, const struct fs_chunk_ref *c, size_t n)
{
	int64_t now = now_ms();
	bool on = true;

	pthread_mutex_lock(&p->lock);
	if (p->first_ms == 0)
		p->first_ms = now;
	if ((uint64_t)(now - p->first_ms) > p->window_ms || p->rec_taken)
		on = false;
	for (size_t i = 0; on && i < n; i++)
		if (!c[i].zeros && c[i].blob_length > 0)
			on = record_one(p, &c[i]);
	if (!on)
		__atomic_store_n(&p->recording, false, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&p->lock);
}

static int used_cmp(const void *a, const void *b)
{
	return memcmp(a, b, 32);
}

static void note_used(struct fs_profile *p, const struct fs_chunk_ref *c, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		struct used_chunk *u;

		if (c[i].zeros || c[i].blob_length == 0)
			continue;
		u = bsearch(c[i].digest, p->used, p->n_use, sizeof(*p->used), used_cmp);
		if (u && !__atomic_exchange_n(&u->used, 1, __ATOMIC_RELAXED))
			__atomic_add_fetch(&p->n_used, 1, __ATOMIC_RELAXED);
	}
}

void fs_profile_note(struct fs_profile *p, const struct fs_chunk_ref *c, size_t n)
{
	if (!p)
		return;
	if (p->n_use > 0)
		note_used(p, c, n);
	if (__atomic_load_n(&p->recording, __ATOMIC_ACQUIRE))
		note_record(p, c, n);
}

bool fs_profile_record_done(struct fs_profile *p)
{
	bool done;

	if (!p || !p->rec)
		return false;
	pthread_mutex_lock(&p->lock);
	done = !p->rec_taken && p->first_ms != 0 &&
	       (!__atomic_load_n(&p->recording, __ATOMIC_ACQUIRE) ||
		(uint64_t)(now_ms() - p->first_ms) > p->window_ms);
	pthread_mutex_unlock(&p->lock);
	return done;
}

static int record_fill(const struct fs_profile *p, const char *image, char *const *layer_digests,
		       struct start_profile *ret)
{
	size_t n_layers = strv_length(layer_digests);

	if (strlen(image) >= sizeof(ret->image))
		return -EINVAL;
	strcpy(ret->image, image);
	ret->window_ms = p->window_ms;
	for (size_t i = 0; i < n_layers; i++)
		if (strv_push(&ret->layers, layer_digests[i]) < 0)
			return -ENOMEM;
	ret->chunks = calloc(p->n_rec, sizeof(*ret->chunks));
	if (!ret->chunks)
		return -ENOMEM;
	for (size_t i = 0; i < p->n_rec; i++) {
		const struct fs_chunk_ref *c = &p->rec[i];

		if (c->layer >= n_layers)
			return -EINVAL;
		ret->chunks[ret->n_chunks++] = (struct start_profile_chunk) {
			.layer = c->layer, .blob_offset = c->blob_offset,
			.blob_length = c->blob_length, .size = c->size,
		};
		digest_format_sha256(c->digest, ret->chunks[i].digest);
	}
	return 0;
}

int fs_profile_record_take(struct fs_profile *p, const char *image, char *const *layer_digests,
			   struct start_profile *ret)
{
	_cleanup_(start_profile_done) struct start_profile sp = {};
	int r;

	pthread_mutex_lock(&p->lock);
	__atomic_store_n(&p->recording, false, __ATOMIC_RELEASE);
	if (p->rec_taken)
		r = -EALREADY;
	else if (p->n_rec == 0)
		r = -ENODATA;
	else
		r = record_fill(p, image, layer_digests, &sp);
	p->rec_taken = true;
	pthread_mutex_unlock(&p->lock);
	if (r < 0)
		return r;
	*ret = sp;
	sp = (struct start_profile) {};
	return 0;
}

/* A chunk of the profile, as the image would have it. */
struct want {
	uint8_t digest[32];
	unsigned layer;         /* in tree order */
	uint64_t blob_offset, blob_length, size;
	size_t idx;             /* in the profile */
	bool found;
};

static int want_cmp(const void *a, const void *b)
{
	const struct want *x = a, *y = b;
	int c = memcmp(x->digest, y->digest, 32);

	return c ?: (x->idx > y->idx) - (x->idx < y->idx);
}

struct want_set {
	struct want *w;
	size_t n;
};

/* For each fetchable chunk of the tree: the profile's chunk of that digest matches it? */
static int want_match(void *userdata, const struct fs_chunk_ref *c)
{
	struct want_set *s = userdata;
	struct want *w = bsearch(c->digest, s->w, s->n, sizeof(*s->w), used_cmp);

	if (!w)
		return 0;
	/* bsearch may land on any of equal digests (a profile may name one chunk at several
	 * places, all but one of them wrong): each is checked. */
	while (w > s->w && memcmp(w[-1].digest, c->digest, 32) == 0)
		w--;
	for (; w < s->w + s->n && memcmp(w->digest, c->digest, 32) == 0; w++)
		if (w->layer == c->layer && w->blob_offset == c->blob_offset &&
		    w->blob_length == c->blob_length && w->size == c->size)
			w->found = true;
	return 0;
}

/* The profile's chunks whose layer the image has, sorted by digest, duplicates after the
 * first. */
static int wants_build(const struct start_profile *sp, char *const *layer_digests,
		       struct want_set *ret)
{
	struct want *w = calloc(sp->n_chunks ?: 1, sizeof(*w));
	size_t n = 0;

	if (!w)
		return -ENOMEM;
	for (size_t i = 0; i < sp->n_chunks; i++) {
		const struct start_profile_chunk *c = &sp->chunks[i];
		size_t l;

		for (l = 0; layer_digests[l] && !streq(layer_digests[l], sp->layers[c->layer]); l++)
			;
		if (!layer_digests[l] || digest_parse_sha256(c->digest, w[n].digest) < 0)
			continue;
		w[n].layer = (unsigned)l;
		w[n].blob_offset = c->blob_offset;
		w[n].blob_length = c->blob_length;
		w[n].size = c->size;
		w[n++].idx = i;
	}
	qsort(w, n, sizeof(*w), want_cmp);
	*ret = (struct want_set) { .w = w, .n = n };
	return 0;
}

/* The found chunks, each once, in the profile's order, and the used set. */
static int use_fill(struct fs_profile *p, const struct want_set *s, size_t n_profile)
{
	_cleanup_free_ struct want **order = calloc(n_profile ?: 1, sizeof(*order));
	size_t n = 0;

	if (!order)
		return -ENOMEM;
	/* Of equal digests, the first found is kept, at its place in the profile. */
	for (size_t i = 0, run = 0; i < s->n; i++) {
		if (i > 0 && memcmp(s->w[i - 1].digest, s->w[i].digest, 32) != 0)
			run = i;
		if (!s->w[i].found)
			continue;
		order[s->w[i].idx] = &s->w[i];
		while (i + 1 < s->n && memcmp(s->w[i + 1].digest, s->w[run].digest, 32) == 0)
			i++;
	}
	p->use = calloc(n_profile ?: 1, sizeof(*p->use));
	p->used = calloc(n_profile ?: 1, sizeof(*p->used));
	if (!p->use || !p->used)
		return -ENOMEM;
	for (size_t i = 0; i < n_profile; i++) {
		const struct want *w = order[i];

		if (!w)
			continue;
		p->use[n] = (struct fetch_chunk) {
			.layer = w->layer, .blob_offset = w->blob_offset,
			.blob_length = w->blob_length, .size = w->size,
		};
		digest_format_sha256(w->digest, p->use[n].digest);
		memcpy(p->used[n++].digest, w->digest, 32);
	}
	qsort(p->used, n, sizeof(*p->used), used_cmp);
	p->n_use = n;
	p->skipped = n_profile - n;
	return (int)n;
}

int fs_profile_use(struct fs_profile *p, const struct fs_tree *tree, const char *image,
		   char *const *layer_digests, const struct start_profile *sp)
{
	struct want_set s = {};
	int r;

	if (!streq(sp->image, image) || p->use)
		return -EINVAL;
	r = wants_build(sp, layer_digests, &s);
	if (r >= 0)
		r = fs_tree_foreach_prefetch(tree, true, want_match, &s);
	if (r >= 0)
		r = use_fill(p, &s, sp->n_chunks);
	free(s.w);
	return r;
}

/* Of @c[0..n), the ones not stored yet go to @ret; returns how many. */
static size_t batch_missing(struct fs_profile *p, const struct fetch_chunk *c, size_t n,
			    struct fetch_chunk *ret)
{
	size_t k = 0;

	for (size_t i = 0; i < n; i++)
		if (blob_store_has_size(p->bs, c[i].digest, c[i].size) <= 0)
			ret[k++] = c[i];
	return k;
}

static void *fetch_job(void *userdata)
{
	struct fs_profile *p = userdata;
	struct fetch_chunk miss[FS_PROFILE_BATCH];

	while (!__atomic_load_n(&p->stop, __ATOMIC_ACQUIRE)) {
		size_t from = __atomic_fetch_add(&p->next_batch, 1, __ATOMIC_RELAXED) *
			      FS_PROFILE_BATCH;
		size_t n, k, got;
		int r;

		if (from >= p->n_use)
			break;
		n = p->n_use - from < FS_PROFILE_BATCH ? p->n_use - from : FS_PROFILE_BATCH;
		k = batch_missing(p, p->use + from, n, miss);
		if (k == 0)
			continue;
		/* The chunks a read fetches meanwhile are joined, not fetched twice. */
		r = fetcher_ensure(p->f, miss, k);
		if (r < 0)
			log_debug_errno(r, "start profile: some of %zu chunks (first '%s') were not "
					"fetched, ignoring: %m", k, miss[0].digest);
		got = k - batch_missing(p, miss, k, miss);
		__atomic_add_fetch(&p->fetched, got, __ATOMIC_RELAXED);
	}
	__atomic_sub_fetch(&p->running, 1, __ATOMIC_RELEASE);
	return NULL;
}

int fs_profile_fetch_start(struct fs_profile *p, struct fetcher *f, struct blob_store *bs)
{
	int r = 0;

	if (!p || p->n_use == 0 || p->n_jobs > 0)
		return 0;
	p->f = f;
	p->bs = bs;
	for (unsigned i = 0; i < FS_PROFILE_JOBS && (size_t)i * FS_PROFILE_BATCH < p->n_use; i++) {
		__atomic_add_fetch(&p->running, 1, __ATOMIC_RELEASE);
		r = -pthread_create(&p->jobs[p->n_jobs], NULL, fetch_job, p);
		if (r < 0) {
			__atomic_sub_fetch(&p->running, 1, __ATOMIC_RELEASE);
			break;
		}
		p->n_jobs++;
	}
	/* Fewer jobs than asked still fetch every chunk. */
	return p->n_jobs > 0 ? 0 : r;
}

void fs_profile_fetch_stop(struct fs_profile *p)
{
	if (!p)
		return;
	__atomic_store_n(&p->stop, true, __ATOMIC_RELEASE);
	for (unsigned i = 0; i < p->n_jobs; i++)
		(void)pthread_join(p->jobs[i], NULL);
	p->n_jobs = 0;
}

void fs_profile_get_stats(struct fs_profile *p, struct fs_profile_stats *ret)
{
	*ret = (struct fs_profile_stats) {};
	if (!p)
		return;
	ret->chunks = p->n_use;
	ret->skipped = p->skipped;
	ret->fetched = __atomic_load_n(&p->fetched, __ATOMIC_RELAXED);
	ret->used = __atomic_load_n(&p->n_used, __ATOMIC_RELAXED);
	ret->fetching = __atomic_load_n(&p->running, __ATOMIC_ACQUIRE) > 0;
	pthread_mutex_lock(&p->lock);
	ret->recorded = p->n_rec;
	pthread_mutex_unlock(&p->lock);
}
