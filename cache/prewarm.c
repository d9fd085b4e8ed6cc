/*
 * cache/prewarm.c: every chunk of an image's lazy layers into the blob store.
 *
 * A plan is the list of chunks still missing, deduplicated by digest and sorted by (layer,
 * blob offset), cut into batches: runs of chunks of one layer that lie at most PREWARM_GAP_MAX
 * apart and span at most batch_max compressed bytes.  The fetcher turns each batch into one
 * Range request (it merges neighbours within the same gap) and stores each chunk as soon as it
 * is verified.  Workers take the next batch under p->lock, so requests go out in blob order
 * and a registry that serves ranges sequentially sees a mostly sequential read.
 *
 * Batch size: each request costs a round trip during which its connection carries nothing
 * (measured: 8 MiB batches left a 100 Mbit/s link with 10 ms delay idle 5-7% of the time at
 * --jobs 1), so batches should be large; but a request must finish well within the fetcher's
 * per-request timeout, whatever the link.  Each worker starts with PREWARM_BATCH_FIRST and
 * then sizes its next batch to what its last one moved in PREWARM_BATCH_MS, growing at most
 * twofold per batch (a batch found mostly stored looks fast), between PREWARM_BATCH_MIN and
 * batch_max; a batch of less than half the size (a layer's end) may grow it, not shrink
 * it.  The fetcher streams each batch (one chunk in memory at a time), so the size costs no
 * memory.
 *
 * Expected load: a few thousand chunks per image of tens of KiB to a few MiB; the plan is a
 * few hundred bytes per chunk in memory.
 */
#include "prewarm.h"

#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "cache/seek.h"
#include "cache/format/layer_lazy.h"
#include "cache/base/log.h"
#include "cache/base/util.h"

#define PREWARM_GAP_MAX (64U * 1024)          /* as the fetcher's FETCH_GAP_MAX */
#define PREWARM_BATCH_FIRST (8U * 1024 * 1024)
#define PREWARM_BATCH_DEFAULT PREWARM_BATCH_LIMIT
#define PREWARM_BATCH_MIN (1U * 1024 * 1024)
#define PREWARM_BATCH_MS 4000                 /* a batch should take about this long */
#define PREWARM_JOBS_DEFAULT 4U
#define PREWARM_PROBE_BYTES (128U * 1024)     /* above blob_store's in-memory limit */

struct prewarm_plan {
	struct fetch_chunk *chunks;
	size_t n_chunks, n_alloc;
	uint64_t bytes;
};

struct plan_builder {
	struct prewarm_plan *p;
	unsigned layer;
};

static void prewarm_plan_done(struct prewarm_plan *p)
{
	free(p->chunks);
}
DEFINE_FREE_FUNC(struct prewarm_plan, prewarm_plan_free, prewarm_plan_done);

static int plan_add_entry(void *userdata, const struct entry *e)
{
	struct plan_builder *b = userdata;
	struct prewarm_plan *p = b->p;

	for (size_t i = 0; i < e->n_chunks; i++) {
		const struct chunk *c = &e->chunks[i];
		struct fetch_chunk *fc;

		/* Runs of zeros are never fetched: the fs serves them from memory. */
		if (!c->digest || c->blob_length == 0)
			continue;
		if (strlen(c->digest) >= DIGEST_STRING_MAX)
			return -EBADMSG;
		if (GREEDY_REALLOC(p->chunks, p->n_alloc, p->n_chunks + 1) < 0)
			return -ENOMEM;
		fc = &p->chunks[p->n_chunks++];
		*fc = (struct fetch_chunk) {
			.layer = b->layer, .blob_offset = c->blob_offset,
			.blob_length = c->blob_length, .size = c->size,
		};
		memcpy(fc->digest, c->digest, strlen(c->digest) + 1);
	}
	return 0;
}

static int compare_digest(const void *a, const void *b)
{
	const struct fetch_chunk *x = a, *y = b;
	int d = strcmp(x->digest, y->digest);

	if (d != 0)
		return d;
	/* The first occurrence in (layer, offset) order wins: deterministic plans. */
	if (x->layer != y->layer)
		return x->layer < y->layer ? -1 : 1;
	if (x->blob_offset != y->blob_offset)
		return x->blob_offset < y->blob_offset ? -1 : 1;
	return 0;
}

static int compare_position(const void *a, const void *b)
{
	const struct fetch_chunk *x = a, *y = b;

	if (x->layer != y->layer)
		return x->layer < y->layer ? -1 : 1;
	if (x->blob_offset != y->blob_offset)
		return x->blob_offset < y->blob_offset ? -1 : 1;
	return 0;
}

/* The compressed bytes chunk @c adds to the ranges of the chunks before it in position order
 * (@prev the one before, NULL for the first; *@end: where they reach so far, updated): chunks
 * of a seek index span all start at its checkpoint, so their blob_lengths overlap, and a
 * request carries the span once. */
static uint64_t range_new_bytes(const struct fetch_chunk *c, const struct fetch_chunk *prev,
				uint64_t *end)
{
	uint64_t from, e = c->blob_offset + c->blob_length;

	if (!prev || prev->layer != c->layer)
		*end = 0;
	from = c->blob_offset > *end ? c->blob_offset : *end;
	if (e <= from)
		return 0;
	*end = e;
	return e - from;
}

int prewarm_plan_new(struct index_db *db, struct blob_store *bs, const struct manifest *m,
		     struct prewarm_plan **ret)
{
	_cleanup_(prewarm_plan_freep) struct prewarm_plan *p = NULL;
	uint64_t reach = 0;
	size_t k = 0;
	int r;

	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;

	for (size_t i = 0; i < m->n_layers; i++) {
		struct plan_builder b = { .p = p, .layer = (unsigned)i };

		if (layer_format_detect(&m->layers[i]) == LAYER_FORMAT_TAR &&
		    !seek_layer_is_lazy(db, &m->layers[i]))
			continue;
		r = index_db_layer_foreach(db, m->layers[i].digest, plan_add_entry, &b);
		if (r < 0)
			return log_debug_errno(r, "cannot list the chunks of layer '%s': %m",
					       m->layers[i].digest);
	}

	if (p->n_chunks > 0)
		qsort(p->chunks, p->n_chunks, sizeof(*p->chunks), compare_digest);
	for (size_t i = 0; i < p->n_chunks; i++) {
		if (k > 0 && streq(p->chunks[k - 1].digest, p->chunks[i].digest))
			continue;
		/* On an error (not 0 or 1) keep it: fetching will tell. */
		r = blob_store_has_size(bs, p->chunks[i].digest, p->chunks[i].size);
		if (r == 1)
			continue;
		p->chunks[k++] = p->chunks[i];
	}
	p->n_chunks = k;
	if (p->n_chunks > 0)
		qsort(p->chunks, p->n_chunks, sizeof(*p->chunks), compare_position);
	for (size_t i = 0; i < p->n_chunks; i++)
		p->bytes += range_new_bytes(&p->chunks[i], i == 0 ? NULL : &p->chunks[i - 1],
					    &reach);

	*ret = TAKE_PTR(p);
	return 0;
}

uint64_t prewarm_plan_layer_bytes(const struct prewarm_plan *p, unsigned layer)
{
	uint64_t bytes = 0, reach = 0;
	const struct fetch_chunk *prev = NULL;

	for (size_t i = 0; p && i < p->n_chunks; i++) {
		if (p->chunks[i].layer != layer)
			continue;
		bytes += range_new_bytes(&p->chunks[i], prev, &reach);
		prev = &p->chunks[i];
	}
	return bytes;
}

void prewarm_plan_size(const struct prewarm_plan *p, size_t *ret_chunks, uint64_t *ret_bytes)
{
	if (ret_chunks)
		*ret_chunks = p ? p->n_chunks : 0;
	if (ret_bytes)
		*ret_bytes = p ? p->bytes : 0;
}

struct prewarm_run {
	const struct prewarm_plan *p;
	struct fetcher *f;
	const struct prewarm_options *o;
	uint64_t batch_max;

	pthread_mutex_t lock;
	size_t next;        /* guarded by lock: the first chunk no worker has taken */
	size_t failed;      /* guarded by lock: chunks of failed batches */
	bool stop;          /* guarded by lock: a batch failed, start no new one */
	bool no_space;      /* guarded by lock: a batch was verified but not stored (ENOSPC) */
	pthread_mutex_t progress_lock;  /* serialises o->progress */
};

/* Takes the next batch of at most @batch_max bytes: [*ret_first, *ret_first + n), n = 0 when
 * there is none left. */
static size_t run_take(struct prewarm_run *w, uint64_t batch_max, size_t *ret_first,
		       uint64_t *ret_bytes)
{
	const struct fetch_chunk *c = w->p->chunks;
	size_t first, n = 0;
	uint64_t start, end, new_end = 0, bytes = 0;

	pthread_mutex_lock(&w->lock);
	first = w->next;
	if (w->stop || first >= w->p->n_chunks) {
		pthread_mutex_unlock(&w->lock);
		return 0;
	}
	start = c[first].blob_offset;
	end = start + c[first].blob_length;
	for (size_t i = first; i < w->p->n_chunks; i++) {
		uint64_t e = c[i].blob_offset + c[i].blob_length;

		if (n > 0) {
			if (c[i].layer != c[first].layer || c[i].blob_offset > end + PREWARM_GAP_MAX ||
			    (e > end ? e : end) - start > batch_max)
				break;
			if (e > end)
				end = e;
		}
		bytes += range_new_bytes(&c[i], n == 0 ? NULL : &c[i - 1], &new_end);
		n++;
	}
	w->next = first + n;
	pthread_mutex_unlock(&w->lock);

	*ret_first = first;
	*ret_bytes = bytes;
	return n;
}

/* The size of a worker's next batch after one of @bytes took @ms (see the top of the file). */
static uint64_t batch_next(const struct prewarm_run *w, uint64_t batch, uint64_t bytes, int64_t ms)
{
	uint64_t next = bytes * PREWARM_BATCH_MS / (uint64_t)(ms > 0 ? ms : 1);

	/* A batch cut short by the end of a layer took mostly a round trip: its rate is a lower
	 * bound, a reason to grow but not to shrink. */
	if (bytes < batch / 2 && next < batch)
		next = batch;
	if (next > batch * 2)
		next = batch * 2;
	if (next < PREWARM_BATCH_MIN)
		next = PREWARM_BATCH_MIN;
	return next < w->batch_max ? next : w->batch_max;
}

static void *run_worker(void *userdata)
{
	struct prewarm_run *w = userdata;
	uint64_t batch = w->batch_max < PREWARM_BATCH_FIRST ? w->batch_max : PREWARM_BATCH_FIRST;
	size_t first, n;
	uint64_t bytes;

	while ((n = run_take(w, batch, &first, &bytes)) > 0) {
		int64_t t0 = now_ms();
		int r = fetcher_ensure(w->f, w->p->chunks + first, n);

		batch = batch_next(w, batch, bytes, now_ms() - t0);

		if (r < 0) {
			pthread_mutex_lock(&w->lock);
			w->failed += n;
			w->stop = true;
			/* The fetcher's verdict on a full store: the bytes were right. */
			w->no_space = w->no_space || r == -ENOSPC;
			pthread_mutex_unlock(&w->lock);
			log_debug_errno(r, "prewarming %zu chunks from '%s' failed: %m", n,
					w->p->chunks[first].digest);
			continue;
		}
		if (w->o->progress) {
			pthread_mutex_lock(&w->progress_lock);
			w->o->progress(w->o->userdata, bytes);
			pthread_mutex_unlock(&w->progress_lock);
		}
	}
	return NULL;
}

/* After a failure: is it the store?  A blob larger than the store keeps in memory forces a
 * temporary file and real writes into DIR/tmp. */
static int store_probe(struct blob_store *bs)
{
	_cleanup_free_ void *buf = calloc(1, PREWARM_PROBE_BYTES);
	struct blob_txn *t = NULL;
	int r;

	if (!buf)
		return -ENOMEM;
	r = blob_txn_begin(bs, &t);
	if (r < 0)
		return r;
	r = blob_txn_write(t, buf, PREWARM_PROBE_BYTES);
	blob_txn_abort(t);
	return r;
}

int prewarm_run(const struct prewarm_plan *p, struct fetcher *f, struct blob_store *bs,
		const struct prewarm_options *o, size_t *ret_failed)
{
	static const struct prewarm_options defaults = {};
	struct prewarm_run w = {
		.p = p, .f = f, .o = o ? o : &defaults,
		.lock = PTHREAD_MUTEX_INITIALIZER, .progress_lock = PTHREAD_MUTEX_INITIALIZER,
	};
	_cleanup_free_ pthread_t *threads = NULL;
	unsigned jobs, started = 0;
	sigset_t all, old;
	int r = 0;

	if (ret_failed)
		*ret_failed = p->n_chunks;
	if (p->n_chunks == 0) {
		if (ret_failed)
			*ret_failed = 0;
		return 0;
	}
	w.batch_max = w.o->batch_max ? w.o->batch_max : PREWARM_BATCH_DEFAULT;
	jobs = w.o->jobs ? w.o->jobs : PREWARM_JOBS_DEFAULT;

	threads = calloc(jobs, sizeof(*threads));
	if (!threads)
		return -ENOMEM;
	/* Signals are the main thread's business. */
	(void)sigfillset(&all);
	(void)pthread_sigmask(SIG_SETMASK, &all, &old);
	for (unsigned i = 0; i < jobs; i++) {
		r = -pthread_create(&threads[i], NULL, run_worker, &w);
		if (r < 0)
			break;
		started++;
	}
	(void)pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (started == 0)
		return log_debug_errno(r, "cannot start prewarm threads: %m");
	for (unsigned i = 0; i < started; i++)
		(void)pthread_join(threads[i], NULL);

	/* The fetcher stored without fsync (fetcher_options.defer_sync): what we report as
	 * prewarmed must be on disk.  Until here a power loss leaves at most short blobs, which
	 * every reader treats as missing (blob_store_has_size). */
	r = blob_store_sync(bs);
	if (r < 0)
		return log_debug_errno(r, "cannot sync the blob store: %m");

	/* A stop leaves the rest of the plan untaken: not stored either. */
	w.failed += p->n_chunks - w.next;
	if (ret_failed)
		*ret_failed = w.failed;
	if (w.failed == 0)
		return 0;
	if (w.no_space)
		return -ENOSPC;
	r = store_probe(bs);
	if (r < 0)
		return log_debug_errno(r, "the blob store cannot be written: %m");
	return -EIO;
}
