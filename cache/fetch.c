/*
 * cache/fetch.c: turns missing chunks of lazy layers into verified blobs in the blob store.
 *
 * Single flight: every chunk being fetched has a struct flight in f->flights, keyed by its
 * digest and owned by the call (fetcher_ensure or the prefetch thread) that fetches it.  Other
 * callers wanting the same digest take a reference and wait on f->flight_done until the owner
 * completes it; the result (0 or -EIO) is theirs too.  A completed flight leaves the table at
 * once, so a failure is never sticky: the next call starts a new flight.  An owner completes
 * all of its own flights before it waits on anyone else's, so waits cannot form a cycle.
 *
 * A call groups the chunks it owns by layer and offset and fetches runs of them that are
 * adjacent, overlap, or lie at most FETCH_GAP_MAX apart with one Range request of at most
 * f->request_max bytes (PREFETCH_REQUEST_MAX for prefetch).  The run is streamed: each
 * chunk is decompressed, verified and stored as soon as its last compressed byte arrived, so
 * storing overlaps receiving and a reader waiting for the run's first chunk gets it before
 * the rest is in.  A run cut short fails only the chunks not complete yet; a retry asks only
 * for the bytes not received.  Memory per fetch: one chunk's compressed and decompressed
 * bytes (more while chunks overlap).  At most FETCH_SLOTS_MAX requests run at once, each slot
 * a connection of the range source (cache/registry/range_source.h; created on first need,
 * reused): the image's registry with its mirrors, or its local layout or archive.
 *
 * Time: a fetcher_ensure() call gives up after f->timeout_ms (fetcher_options.timeout_ms, else
 * FETCH_DEADLINE_MS) with -EIO, whether it fetches or waits.  The source (registry.c) already
 * retries 429/5xx and connection failures within its request timeout (for an image's fetcher
 * the same timeout, else FETCH_REQUEST_TIMEOUT_MS), so a request is repeated here only after
 * a truncated answer (-EPROTO), and only if a reasonable part of the timeout is left.  Chunks
 * whose bytes fail verification, or that an answer cut short did not reach, are fetched again
 * (fetch_run()) from where the source says (struct blob_retry: the same endpoint a few times,
 * then the next mirror) while a quarter of the timeout is left.  A call that failed at the end
 * of its time returns -ETIMEDOUT, so that the read path can tell the kernel's retry of it.  No
 * failure is remembered: the next call tries again.
 *
 * Interrupts: fetcher_ensure_interruptible() hands the chunks it owns to a task thread of their
 * own (at most FETCH_TASKS_MAX at once, else it fetches them itself) and then waits for their
 * flights like any waiter, so fetcher_interrupt() can end its wait while the fetch goes on for
 * the other waiters.  Calls are told apart by an id (f->next_owner), not an address: a task may
 * still own a flight when its caller's thread makes the next call.  fetcher_free() cancels
 * the requests of the tasks (range_source_cancel()) and waits for them.
 *
 * Ahead: a chunk marked fetch_chunk.ahead (a read's fetch-ahead and read-around) is fetched
 * like the others but nobody waits for it: the call's waits and result cover only the chunks
 * not marked so, an ahead chunk that another call is fetching already is left to it, runs
 * holding a needed chunk are requested first, and ahead chunks are stored without an fsync
 * each (fetcher_free() syncs the store once if any was).
 *
 * Prefetch: fetcher_prefetch() appends to a queue (each digest at most once per fetcher); one
 * thread takes runs from its head in order.  Before each request the thread waits until no
 * fetcher_ensure() is in progress (f->ensures_active), so reads always go first; between
 * requests it checks f->stop, so fetcher_free() waits for at most one request.
 *
 * Full store: f->make_room (the mount's eviction, with max-size configured) is asked for room
 * when the file system has less than a chunk and ROOM_MARGIN free, and when a write fails with
 * ENOSPC or EDQUOT (at most one call at a time; after one that freed nothing, none for
 * ROOM_RETRY_MS).  A chunk whose store fails with ENOSPC or EDQUOT (after make_room freed
 * nothing, or once more after it did) is verified in memory and kept in f->unstored (at most
 * UNSTORED_BYTES_MAX, oldest first out), so the readers waiting for it are answered from
 * there; its flight fails with -ENOSPC and counts as chunks_no_space, not as a failure.  The
 * store is then marked full: ahead chunks and prefetch are not fetched until a chunk a read
 * needed was stored, or the file system shows FULL_ROOM_MIN free (looked at every
 * FULL_RETRY_MS); the condition is logged at most once per FULL_LOG_MS.  When it ends, the
 * chunks kept in memory are stored (store_flush_unstored()).
 *
 * Max-size on a file system with room: every TRIM_BYTES stored (at most once per
 * TRIM_INTERVAL_MS), f->make_room is asked for no room (need 0): the mount's gc down to
 * max-size, so the cache is kept to it while a mount fills it, not only at the next pull.
 *
 * Expected load: many FUSE threads calling fetcher_ensure() for one or a few chunks of a
 * file at a time, mostly cold misses right after mount; chunks of tens of KiB to a few MiB.
 */
#include "fetch.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cache/link_estimate.h"
#include "cache/base/error.h"
#include "cache/base/log.h"
#include "cache/base/trace.h"
#include "cache/format/seek_cursor_pool.h"
#include "cache/base/util.h"

#define FETCH_SLOTS_MAX 8U
#define FETCH_GAP_MAX (64U * 1024)
/* Runs are streamed, so these bound no memory: they bound how long one request may take
 * (a request must end within the per-request timeout).  Reads: FETCH_REQUEST_MAX; a caller
 * that sizes its calls by the rate it sees (prewarm) may ask for up to FETCH_REQUEST_LIMIT. */
#define FETCH_REQUEST_MAX (16U * 1024 * 1024)
#define FETCH_REQUEST_LIMIT (64U * 1024 * 1024)
#define PREFETCH_REQUEST_MAX (4U * 1024 * 1024)
#define PREFETCH_BATCH_MAX 1024U
#define FETCH_CHUNK_MAX (64U * 1024 * 1024)       /* compressed or decompressed, one chunk */
#define FETCH_DEADLINE_MS 60000L
#define FETCH_REQUEST_TIMEOUT_MS 30000L
#define FETCH_ATTEMPTS 2U
#define FETCH_BACKOFF_MS_FIRST 100L
#define FETCH_TIMED_OUT_MS 1000L     /* a failure with less than this left ran out of time */
#define FETCH_TASKS_MAX 64U
/* Decoded chunks held back while a run still has a needed chunk to decode (run_defer()). */
#define DEFER_MAX (16U * 1024 * 1024)
#define OWNER_PREFETCH 1U
#define PREFETCH_FAILURE_PAUSE_MS 1000L
#define FLIGHT_BUCKETS 256U
#define UNSTORED_BYTES_MAX (64U * 1024 * 1024)
#define FULL_RETRY_MS 5000L
#define FULL_LOG_MS 60000L
#define FULL_ROOM_MIN (2 * PREFETCH_REQUEST_MAX)
#define ROOM_MARGIN (4U * 1024 * 1024)
#define STORE_RESERVE (1U * 1024 * 1024)
#define ROOM_RETRY_MS 30000L
#define TRIM_BYTES (16U * 1024 * 1024)
#define TRIM_INTERVAL_MS 60000L

#define MAX(a, b) ((a) > (b) ? (a) : (b))

struct flight {
	struct flight *next;           /* bucket chain; guarded by f->lock, as all fields */
	uint64_t owner;                /* identifies the fetching call */
	unsigned refs;                 /* the owner's, until completion, plus each waiter's */
	bool done;
	int result;
	char digest[DIGEST_STRING_MAX];
	/* A chunk of an untrusted seek index is inflated to prove its file too (the first chunk's
	 * tar records), which another file's chunk of the same digest does not: its flight is
	 * its own, per layer and span (flight_placed()). */
	bool placed;
	unsigned layer;
	uint64_t blob_offset;
};

/* A verified chunk the store had no room for, held for its readers. */
struct unstored {
	struct unstored *next;         /* newer */
	size_t size;
	char digest[DIGEST_STRING_MAX];
	uint8_t data[];
};

/* A set of digest strings, for the prefetch queue's deduplication. */
struct digest_node {
	struct digest_node *next;
	char digest[DIGEST_STRING_MAX];
};

struct digest_set {
	struct digest_node **buckets;
	size_t n_buckets, n;
};

struct fetcher {
	struct blob_store *bs;
	struct fetch_layer *layers;
	size_t n_layers;
	struct range_source *src;                 /* owned */
	bool defer_sync;                          /* fetcher_options.defer_sync */
	bool store_only;                          /* fetcher_options.store_only */
	int (*make_room)(void *userdata, uint64_t need);  /* fetcher_options.make_room */
	void *make_room_userdata;
	void (*seek_failed)(void *userdata, const char *layer);  /* fetcher_options.seek_failed */
	void *seek_failed_userdata;
	char *cache_dir;                          /* for messages; may be NULL */
	long timeout_ms;                          /* of one fetcher_ensure() call */
	uint64_t request_max;                     /* of one Range request of an ensure */

	pthread_mutex_t lock;
	pthread_cond_t flight_done;               /* broadcast when any flight completes */
	pthread_cond_t slot_free;                 /* signalled when a fetch slot is released */
	pthread_cond_t prefetch_wake;             /* queue grew, ensures_active hit 0, or stop */
	pthread_cond_t task_done;                 /* broadcast when tasks_active drops to 0 */

	/* All below guarded by lock. */
	struct flight *flights[FLIGHT_BUCKETS];
	struct range_conn **idle;                 /* FETCH_SLOTS_MAX entries */
	size_t n_idle;
	unsigned n_slots;                         /* slots in use or idle */
	unsigned ensures_active;
	unsigned tasks_active;                    /* task threads running */
	uint64_t next_owner;                      /* id of the next fetching call */
	struct fetch_chunk *queue;
	size_t queue_head, queue_len, queue_alloc;
	struct digest_set queued;
	/* Chunks of the prefetch batch under way already counted in stats.prefetch_done as their
	 * flights completed, so progress moves while a batch of a thousand chunks streams in. */
	uint64_t prefetch_batch_counted;
	bool thread_started, stop;
	/* Set (atomically) by fetcher_free(): registry requests in flight abort within about a
	 * second and none starts, so abandoned fetches do not hold up the daemon's exit. */
	bool cancel;
	/* The store had no room at its last write: no ahead chunk or prefetch until
	 * full_retry_ms.  Cleared by the next chunk stored. */
	bool full;
	int64_t full_retry_ms, full_logged_ms;
	bool making_room;                     /* a make_room call is running */
	int64_t room_retry_ms;                /* no make_room call before this */
	uint64_t stored_since_trim;           /* bytes stored since the last trim */
	int64_t trim_next_ms;                 /* no trim before this */
	struct unstored *unstored_old, *unstored_new;   /* oldest first */
	size_t unstored_bytes;
	pthread_t thread;
	struct link_estimate link;            /* guarded by lock: from every request that got
					       * its bytes */
	struct fetch_stats stats;             /* guarded by lock, but for chunks_cached: */
	uint64_t hits;                        /* atomic: counted on every cached read, so it
					       * never waits behind fetch bookkeeping */
	bool unsynced;                        /* atomic: a chunk was stored without fsync */
	struct seek_cursor_pool *cursors;     /* seek spans' inflate cursors between requests */
	struct seq_window *seq;               /* guarded by lock: per layer (seq_window_advance()) */
};

/* One chunk the current call owns the flight of. */
struct job {
	struct fetch_chunk c;
	struct flight *fl;
	int result;
};

/* Waits on @cond (a CLOCK_MONOTONIC one) until @deadline_ms; -ETIMEDOUT once it passed. */
static int cond_wait_until(pthread_cond_t *cond, pthread_mutex_t *lock, int64_t deadline_ms)
{
	struct timespec ts = { .tv_sec = deadline_ms / 1000,
			       .tv_nsec = (deadline_ms % 1000) * 1000000L };
	int r;

	r = pthread_cond_timedwait(cond, lock, &ts);
	return r == ETIMEDOUT ? -ETIMEDOUT : 0;
}

static size_t digest_hash(const char *s)
{
	size_t h = 14695981039346656037ULL;

	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ULL;
	return h;
}

static void digest_set_done(struct digest_set *s)
{
	for (size_t i = 0; i < s->n_buckets; i++) {
		struct digest_node *n = s->buckets[i];

		while (n) {
			struct digest_node *next = n->next;

			free(n);
			n = next;
		}
	}
	free(s->buckets);
	*s = (struct digest_set) {};
}

static bool digest_set_contains(const struct digest_set *s, const char *digest)
{
	if (s->n_buckets == 0)
		return false;
	for (struct digest_node *n = s->buckets[digest_hash(digest) % s->n_buckets]; n; n = n->next)
		if (streq(n->digest, digest))
			return true;
	return false;
}

/* Adds @digest, which must not be in the set yet. */
static int digest_set_add(struct digest_set *s, const char *digest)
{
	struct digest_node *node;

	if (s->n >= s->n_buckets) {
		size_t nb = s->n_buckets ? s->n_buckets * 4 : 64;
		struct digest_node **b = calloc(nb, sizeof(*b));

		if (!b)
			return -ENOMEM;
		for (size_t i = 0; i < s->n_buckets; i++) {
			struct digest_node *n = s->buckets[i];

			while (n) {
				struct digest_node *next = n->next;
				size_t h = digest_hash(n->digest) % nb;

				n->next = b[h];
				b[h] = n;
				n = next;
			}
		}
		free(s->buckets);
		s->buckets = b;
		s->n_buckets = nb;
	}

	node = calloc(1, sizeof(*node));
	if (!node)
		return -ENOMEM;
	memcpy(node->digest, digest, sizeof(node->digest));
	node->next = s->buckets[digest_hash(digest) % s->n_buckets];
	s->buckets[digest_hash(digest) % s->n_buckets] = node;
	s->n++;
	return 0;
}

enum claim {
	CLAIM_MINE,     /* the caller owns a new flight and must complete it */
	CLAIM_WAIT,     /* another call fetches it: the caller holds a reference to wait on */
	CLAIM_DUP,      /* the caller itself fetches it already */
};

static bool flight_placed(const struct fetcher *f, const struct fetch_chunk *c)
{
	return c->layer < f->n_layers && f->layers[c->layer].seek &&
	       seek_index_untrusted(f->layers[c->layer].seek);
}

static bool flight_matches(const struct flight *fl, const struct fetch_chunk *c, bool placed)
{
	return streq(fl->digest, c->digest) && fl->placed == placed &&
	       (!placed || (fl->layer == c->layer && fl->blob_offset == c->blob_offset));
}

/* Called with f->lock held. */
static int flight_claim(struct fetcher *f, const struct fetch_chunk *c, uint64_t owner,
			struct flight **ret)
{
	struct flight **bucket = &f->flights[digest_hash(c->digest) % FLIGHT_BUCKETS], *fl;
	bool placed = flight_placed(f, c);

	for (fl = *bucket; fl; fl = fl->next)
		if (flight_matches(fl, c, placed))
			break;
	if (fl && fl->owner == owner)
		return CLAIM_DUP;
	if (fl) {
		fl->refs++;
		*ret = fl;
		return CLAIM_WAIT;
	}

	fl = calloc(1, sizeof(*fl));
	if (!fl)
		return -ENOMEM;
	memcpy(fl->digest, c->digest, sizeof(fl->digest));
	fl->placed = placed;
	fl->layer = c->layer;
	fl->blob_offset = c->blob_offset;
	fl->owner = owner;
	fl->refs = 1;
	fl->next = *bucket;
	*bucket = fl;
	*ret = fl;
	return CLAIM_MINE;
}

/* Called with f->lock held. */
static void flight_unref(struct flight *fl)
{
	assert(fl->refs > 0);
	if (--fl->refs == 0)
		free(fl);
}

/* Publishes the owner's result: the flight leaves the table, so the next call for this
 * digest starts afresh.  Called with f->lock held. */
static void flight_complete(struct fetcher *f, struct flight *fl, int result)
{
	struct flight **p = &f->flights[digest_hash(fl->digest) % FLIGHT_BUCKETS];

	while (*p != fl)
		p = &(*p)->next;
	*p = fl->next;
	fl->next = NULL;
	fl->done = true;
	fl->result = result;
	if (fl->owner == OWNER_PREFETCH && result >= 0) {
		f->stats.prefetch_done++;
		f->prefetch_batch_counted++;
	}
	(void)pthread_cond_broadcast(&f->flight_done);
	flight_unref(fl);
}

/* Waits for each of @fls (dropping the references); returns how many failed or were not done
 * by @deadline.  With @cancellable, f->stop ends the wait too; with @intr, fetcher_interrupt()
 * does (and sets *ret_interrupted). */
static unsigned flights_wait(struct fetcher *f, struct flight **fls, size_t n, int64_t deadline,
			     bool cancellable, const struct fetch_interrupt *intr,
			     bool *ret_interrupted)
{
	unsigned failed = 0;
	bool interrupted = false;

	pthread_mutex_lock(&f->lock);
	for (size_t i = 0; i < n; i++) {
		struct flight *fl = fls[i];
		bool timed_out = false;

		for (;;) {
			interrupted = intr && intr->interrupted;
			if (fl->done || timed_out || interrupted || (cancellable && f->stop))
				break;
			timed_out = cond_wait_until(&f->flight_done, &f->lock, deadline) < 0;
		}
		if (!fl->done || fl->result < 0) {
			if (!fl->done && !interrupted)
				log_debug("waiting for chunk '%s' timed out", fl->digest);
			failed++;
		}
		flight_unref(fl);
	}
	pthread_mutex_unlock(&f->lock);
	if (ret_interrupted)
		*ret_interrupted = interrupted;
	return failed;
}

static bool chunk_valid(const struct fetcher *f, const struct fetch_chunk *c)
{
	if (c->layer >= f->n_layers) {
		log_debug("chunk '%s' names layer %u of %zu", c->digest, c->layer, f->n_layers);
		return false;
	}
	if (c->blob_length == 0 || c->blob_length > FETCH_CHUNK_MAX || c->size > FETCH_CHUNK_MAX ||
	    c->blob_offset > f->layers[c->layer].size ||
	    c->blob_length > f->layers[c->layer].size - c->blob_offset) {
		log_debug("chunk '%s' at %llu+%llu (%llu bytes) does not fit layer '%s' of %llu bytes",
			  c->digest, (unsigned long long)c->blob_offset,
			  (unsigned long long)c->blob_length, (unsigned long long)c->size,
			  f->layers[c->layer].digest, (unsigned long long)f->layers[c->layer].size);
		return false;
	}
	if (digest_validate(c->digest) < 0) {
		log_debug("chunk digest '%.80s' is invalid", c->digest);
		return false;
	}
	return true;
}

/* Takes a fetch slot: a connection of the range source.  Waits while all FETCH_SLOTS_MAX are
 * in use, until @deadline. */
static int slot_acquire(struct fetcher *f, int64_t deadline, struct range_conn **ret)
{
	struct range_conn *conn;
	int r;

	pthread_mutex_lock(&f->lock);
	for (;;) {
		if (f->n_idle > 0) {
			*ret = f->idle[--f->n_idle];
			pthread_mutex_unlock(&f->lock);
			return 0;
		}
		if (f->n_slots < FETCH_SLOTS_MAX) {
			f->n_slots++;
			break;
		}
		if (cond_wait_until(&f->slot_free, &f->lock, deadline) < 0) {
			pthread_mutex_unlock(&f->lock);
			return -ETIMEDOUT;
		}
	}
	pthread_mutex_unlock(&f->lock);

	r = range_source_connect(f->src, &conn);
	if (r < 0) {
		pthread_mutex_lock(&f->lock);
		f->n_slots--;
		(void)pthread_cond_signal(&f->slot_free);
		pthread_mutex_unlock(&f->lock);
		return r;
	}
	*ret = conn;
	return 0;
}

static void slot_release(struct fetcher *f, struct range_conn *conn)
{
	pthread_mutex_lock(&f->lock);
	f->idle[f->n_idle++] = conn;
	(void)pthread_cond_signal(&f->slot_free);
	pthread_mutex_unlock(&f->lock);
}

/* The source retried -EAGAIN and -EHOSTUNREACH already (registry.c); a body cut short it
 * does not. */
static bool error_transient(int r)
{
	return r == -EPROTO;
}

/* Writes the verified-by-commit chunk @c (@data, c->size bytes) to the store. */
static int store_write(struct fetcher *f, const struct fetch_chunk *c, const void *data)
{
	struct blob_txn *t = NULL;
	int r;

	/* A chunk fetched ahead is not synced one by one: dozens of fsyncs a second would queue
	 * the journal commits of the chunks readers wait for behind theirs, and a blob a power
	 * loss leaves short is fetched again (fetcher_free() syncs them all). */
	if (c->ahead && !f->defer_sync)
		__atomic_store_n(&f->unsynced, true, __ATOMIC_RELAXED);
	r = blob_txn_begin_flags(f->bs, f->defer_sync || c->ahead ? BLOB_TXN_NO_SYNC : 0, &t);
	if (r < 0)
		return r;
	r = blob_txn_write(t, data, c->size);
	if (r < 0) {
		blob_txn_abort(t);
		return r;
	}
	/* Verified by the commit, which hashes as it writes and links the blob under its name
	 * only when it matches @c->digest: one pass over the bytes, not two. */
	return blob_txn_commit(t, c->digest, NULL, NULL);
}

static bool error_no_space(int r)
{
	return r == -ENOSPC || r == -EDQUOT;
}

/* The bytes free on the store's file system, UINT64_MAX if unknown. */
static uint64_t store_avail(struct fetcher *f)
{
	uint64_t avail;

	return blob_store_free_bytes(f->bs, &avail) >= 0 ? avail : UINT64_MAX;
}

/* Asks f->make_room for room, unless another thread does or the last call freed nothing a
 * moment ago.  Returns true if it freed some. */
static bool store_make_room(struct fetcher *f, uint64_t need)
{
	bool ask;
	int r = 0;

	if (!f->make_room)
		return false;
	pthread_mutex_lock(&f->lock);
	ask = !f->making_room && now_ms() >= f->room_retry_ms;
	if (ask)
		f->making_room = true;
	pthread_mutex_unlock(&f->lock);
	if (!ask)
		return false;

	r = f->make_room(f->make_room_userdata, need);
	if (r < 0)
		log_debug_errno(r, "making room in the cache failed: %m");

	pthread_mutex_lock(&f->lock);
	f->making_room = false;
	if (r <= 0)
		f->room_retry_ms = now_ms() + ROOM_RETRY_MS;
	pthread_mutex_unlock(&f->lock);
	return r > 0;
}

/* Keeps the cache to max-size while chunks are stored on a file system with room (the top of
 * this file): after TRIM_BYTES more were stored, at most once per TRIM_INTERVAL_MS, and never
 * while another thread makes room.  A trim that frees nothing does not hold back the next
 * store_make_room(). */
static void store_trim(struct fetcher *f, uint64_t stored)
{
	int64_t now = now_ms();
	bool due;
	int r;

	if (!f->make_room)
		return;
	pthread_mutex_lock(&f->lock);
	f->stored_since_trim += stored;
	due = !f->making_room && f->stored_since_trim >= TRIM_BYTES && now >= f->trim_next_ms;
	if (due) {
		f->making_room = true;
		f->stored_since_trim = 0;
		f->trim_next_ms = now + TRIM_INTERVAL_MS;
	}
	pthread_mutex_unlock(&f->lock);
	if (!due)
		return;
	r = f->make_room(f->make_room_userdata, 0);
	if (r < 0)
		log_debug_errno(r, "keeping the cache to its max-size failed: %m");
	pthread_mutex_lock(&f->lock);
	f->making_room = false;
	pthread_mutex_unlock(&f->lock);
}

/* Keeps verified chunk @c in memory for its readers, forgetting the oldest kept ones beyond
 * UNSTORED_BYTES_MAX.  Called with f->lock held. */
static void unstored_add(struct fetcher *f, const struct fetch_chunk *c, const void *data)
{
	struct unstored *u;

	if (c->size > UNSTORED_BYTES_MAX)
		return;
	u = malloc(sizeof(*u) + c->size);
	if (!u)
		return;
	*u = (struct unstored) { .size = c->size };
	memcpy(u->digest, c->digest, sizeof(u->digest));
	memcpy(u->data, data, c->size);
	while (f->unstored_old && f->unstored_bytes + u->size > UNSTORED_BYTES_MAX) {
		struct unstored *old = f->unstored_old;

		f->unstored_old = old->next;
		f->unstored_bytes -= old->size;
		free(old);
	}
	if (!f->unstored_old)
		f->unstored_new = NULL;
	if (f->unstored_new)
		f->unstored_new->next = u;
	else
		f->unstored_old = u;
	f->unstored_new = u;
	f->unstored_bytes += u->size;
}

/* The store refused chunk @c for lack of space (@error): marks the store full, says so in the
 * log (at most once per FULL_LOG_MS), and keeps the chunk for its readers if it verifies
 * (unless fetcher_options.store_only). */
static int store_full(struct fetcher *f, const struct fetch_chunk *c, const void *data, int error)
{
	bool verified = digest_verify_buffer(data, c->size, c->digest) >= 0;
	bool say;
	int64_t now = now_ms();

	pthread_mutex_lock(&f->lock);
	say = !f->store_only &&
	      (f->full_logged_ms == 0 || now - f->full_logged_ms >= FULL_LOG_MS);
	if (say)
		f->full_logged_ms = now;
	f->full = true;
	f->full_retry_ms = now + FULL_RETRY_MS;
	if (verified && !f->store_only)
		unstored_add(f, c, data);
	pthread_mutex_unlock(&f->lock);

	if (say)
		log_error_errno(error, "cache '%s' is full: %m; reads are served from memory without "
				"being stored, and nothing is fetched ahead until there is room",
				f->cache_dir ?: "?");
	if (!verified)
		return log_debug_errno(-EBADMSG, "chunk of layer '%s' does not hash to '%s'",
				       f->layers[c->layer].digest, c->digest);
	return -ENOSPC;
}

static bool store_is_full(struct fetcher *f)
{
	return __atomic_load_n(&f->full, __ATOMIC_RELAXED);
}

/* The store has room again: the chunks kept in memory while it was full are stored, oldest
 * first, so that they survive the mount.  The list is taken whole: a reader that misses one
 * while it is written fetches it again (never wrong bytes: the commit verifies them); a chunk
 * that does not fit now is dropped, as one forgotten beyond UNSTORED_BYTES_MAX is. */
static void store_flush_unstored(struct fetcher *f)
{
	struct unstored *u;
	size_t stored = 0, dropped = 0;
	int r = 0;

	pthread_mutex_lock(&f->lock);
	u = f->unstored_old;
	f->unstored_old = f->unstored_new = NULL;
	f->unstored_bytes = 0;
	pthread_mutex_unlock(&f->lock);
	while (u) {
		struct unstored *next = u->next;
		struct fetch_chunk c = { .size = u->size, .ahead = true };

		memcpy(c.digest, u->digest, sizeof(c.digest));
		if (r >= 0)
			r = store_avail(f) < c.size + ROOM_MARGIN ? -ENOSPC : store_write(f, &c, u->data);
		if (r >= 0)
			stored++;
		else
			dropped++;
		free(u);
		u = next;
	}
	if (stored + dropped > 0)
		log_info("cache '%s': stored %zu chunks served from memory while it was full "
			 "(%zu dropped)", f->cache_dir ?: "?", stored, dropped);
}

/* After a chunk was stored while the store was marked full: the mark goes once the file system
 * has FULL_ROOM_MIN free (a small chunk fitting in the last free bytes is no reason to
 * prefetch again). */
static void store_check_room(struct fetcher *f)
{
	uint64_t avail;
	bool was_full;

	if (blob_store_free_bytes(f->bs, &avail) < 0 || avail < FULL_ROOM_MIN)
		return;
	pthread_mutex_lock(&f->lock);
	was_full = f->full;
	f->full = false;
	(void)pthread_cond_broadcast(&f->prefetch_wake);
	pthread_mutex_unlock(&f->lock);
	if (was_full) {
		log_info("cache '%s' has room again, fetching ahead again", f->cache_dir ?: "?");
		store_flush_unstored(f);
	}
}

/* A seek index that yields a chunk that is not what it says is not trusted again: the layer's
 * later chunks fail, and the owner forgets the index (fetcher_options.seek_failed). */
static int seek_chunk_failed(struct fetcher *f, struct fetch_layer *l, int r)
{
	if (!__atomic_exchange_n(&l->seek_failed, true, __ATOMIC_RELAXED)) {
		log_warning("a chunk of layer '%s' does not match its seek index, which is dropped: "
			    "the layer will be read whole (%s)", l->digest,
			    error_message() ?: "its digest does not match");
		if (f->seek_failed)
			f->seek_failed(f->seek_failed_userdata, l->digest);
	}
	return r;
}

static int store_chunk_verified(struct fetcher *f, const struct fetch_chunk *c, void *out);

/* chunk_decode() for a layer read through its seek index: inflated from its checkpoint, or
 * from where @cur stopped (@in holds the blob from @base on: a resumed run has no bytes
 * before its cursor). */
static int seek_chunk_decode(struct fetcher *f, const struct fetch_chunk *c, const uint8_t *in,
			     uint64_t base, void *out, struct seek_cursor *cur)
{
	struct fetch_layer *l = &f->layers[c->layer];
	uint64_t from = MAX(base, c->blob_offset), end = c->blob_offset + c->blob_length;
	int r;

	if (__atomic_load_n(&l->seek_failed, __ATOMIC_RELAXED))
		return -EIO;
	if (end < from)
		return log_debug_errno(-EIO, "chunk '%s' of layer '%s' ends before where the request "
				       "started, EIO", c->digest, l->digest);
	r = seek_index_chunk_decode_from(l->seek, cur, c->blob_offset, c->digest, c->size,
					 in + (from - base), from, end - from, out);
	if (r == -ENODATA)  /* a resumed run met a chunk its cursor had passed: no lie either */
		return log_debug_errno(-EIO, "chunk '%s' of layer '%s' lies before where the "
				       "request started, EIO", c->digest, l->digest);
	if (r < 0) {
		log_debug_errno(r, "chunk '%s' of layer '%s' does not inflate from its seek index: %m",
				c->digest, l->digest);
		return seek_chunk_failed(f, l, -EIO);
	}
	return 0;
}

/* Decompresses one chunk of a fetched run, whose bytes @win holds from blob offset @base on,
 * into @out (at least c->size bytes, one or more). */
static int chunk_decode(struct fetcher *f, const struct fetch_chunk *c, const uint8_t *win,
			uint64_t base, void *out, struct seek_cursor *cur)
{
	const struct fetch_layer *l = &f->layers[c->layer];
	int r;

	if (l->seek)
		return seek_chunk_decode(f, c, win, base, out, cur);
	r = chunk_decompress(l->compression, win + (c->blob_offset - base), c->blob_length, out,
			     c->size);
	if (r < 0)
		return log_debug_errno(r, "chunk '%s' at %llu of layer '%s' does not decompress: %m",
				       c->digest, (unsigned long long)c->blob_offset, l->digest);
	return 0;
}

/* Verifies and stores the decoded chunk @out.  -ENOSPC: verified, but kept in memory only
 * (store_full()); -EBADMSG: wrong bytes of a layer whose chunks may be fetched again. */
static int chunk_store_decoded(struct fetcher *f, const struct fetch_chunk *c, void *out)
{
	struct fetch_layer *l = &f->layers[c->layer];
	int r = store_chunk_verified(f, c, out);

	/* The seek index said these bytes hash so: the index lied, not the registry. */
	return l->seek && r == -EBADMSG ? seek_chunk_failed(f, l, -EIO) : r;
}

/* Stores a chunk's decompressed bytes @out, which the blob store hashes against its digest:
 * -EBADMSG when they do not match. */
static int store_chunk_verified(struct fetcher *f, const struct fetch_chunk *c, void *out)
{
	const struct fetch_layer *l = &f->layers[c->layer];
	uint64_t avail;
	int r;

	/* Evicting needs some room itself (the index's WAL grows before rows go), so it is asked
	 * for before the file system is full; and a chunk never takes the last STORE_RESERVE
	 * bytes, so that `lazyroot gc`, `rm` and `images` can still open the index. */
	avail = store_avail(f);
	if (f->make_room && avail < c->size + ROOM_MARGIN && store_make_room(f, c->size))
		avail = store_avail(f);
	r = avail < c->size + STORE_RESERVE ? -ENOSPC : store_write(f, c, out);
	if (error_no_space(r) && store_make_room(f, c->size))
		r = store_avail(f) < c->size + STORE_RESERVE ? -ENOSPC : store_write(f, c, out);
	if (error_no_space(r))
		return store_full(f, c, out, r);
	if (r == -EBADMSG)
		return log_debug_errno(r, "chunk at %llu of layer '%s' does not hash to '%s'",
				       (unsigned long long)c->blob_offset, l->digest, c->digest);
	if (r < 0)
		return log_debug_errno(r, "storing chunk '%s' failed: %m", c->digest);
	if (store_is_full(f))
		store_check_room(f);
	store_trim(f, c->size);
	return 0;
}

/* One run being received: the bytes of [start, end) of a layer arrive in order, and each job
 * is stored as soon as its last compressed byte is in, while the rest is still on its way
 * (the kernel keeps receiving meanwhile).  @win keeps only bytes that a job not yet stored
 * needs: one chunk's compressed bytes, or more while chunks overlap. */
struct run_sink {
	struct fetcher *f;
	struct job *jobs;        /* sorted by offset */
	size_t n, next;          /* jobs[next..n) are not completed yet */
	uint64_t pos;            /* blob offset of the next byte to arrive */
	uint64_t end;            /* of the run */
	uint64_t base;           /* blob offset of win[0]; win holds [base, pos) */
	uint8_t *win;
	size_t win_alloc;
	void *out;               /* one chunk's decompressed bytes */
	struct seek_cursor *cursor;  /* seek index layers: where the last inflate stopped */
	unsigned failed;
	bool exhausted;          /* the source has no try left for bytes that failed */
	int64_t first_us, last_us;   /* when bytes of the current attempt came: first, last */
	uint64_t call;           /* the owner of the jobs' flights, for the trace */
	/* Chunks marked ahead that came before the run's last needed one (jobs[last_needed];
	 * SIZE_MAX: none) are decoded in turn but stored after it: see run_defer(). */
	size_t last_needed;
	struct deferred *deferred;
	size_t n_deferred, deferred_alloc;
	uint64_t deferred_bytes;
};

/* A job's decoded bytes, held back (run_defer()). */
struct deferred {
	size_t job;
	void *bytes;
};

static int64_t now_us(void)
{
	struct timespec ts;

	(void)clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void run_complete(struct run_sink *s, struct job *j, int result)
{
	struct fetcher *f = s->f;

	j->result = result;
	if (trace_enabled())
		trace_emit("chunk", "\"call\":%llu,\"layer\":%u,\"off\":%llu,\"clen\":%llu,"
			   "\"size\":%llu,\"ahead\":%s,\"r\":%d,\"t\":%lld",
			   (unsigned long long)s->call, j->c.layer,
			   (unsigned long long)j->c.blob_offset,
			   (unsigned long long)j->c.blob_length, (unsigned long long)j->c.size,
			   j->c.ahead ? "true" : "false", result, (long long)now_us());
	pthread_mutex_lock(&f->lock);
	if (result < 0) {
		if (result == -ENOSPC)
			f->stats.chunks_no_space++;
		else
			f->stats.chunks_failed++;
		if (!j->c.ahead)
			s->failed++;
	} else {
		f->stats.chunks_fetched++;
	}
	flight_complete(f, j->fl, result);
	j->fl = NULL;
	pthread_mutex_unlock(&f->lock);
}

/* The end of job @j with its store's result @r. */
static void run_finish_job(struct run_sink *s, struct job *j, int r)
{
	if (r == -EBADMSG)
		j->result = r;  /* wrong bytes: maybe fetched again (fetch_run()) */
	else
		run_complete(s, j, r < 0 && r != -ENOSPC ? -EIO : r);
}

/* Holds back the decoded bytes of job @i (in s->out) when it is marked ahead and the run has a
 * needed chunk after it: storing a chunk makes a file (0.5 ms each on the journal-less ext4 of
 * the bench VMs, tens of us elsewhere), and a miss in a seek index span decodes every file of
 * the span before the one it needs -- dozens of stores its reader waited for.  At most
 * DEFER_MAX bytes; their flights complete when they are stored (run_flush_deferred()). */
static bool run_defer(struct run_sink *s, size_t i)
{
	const struct job *j = &s->jobs[i];
	void *copy;

	if (!j->c.ahead || s->last_needed == SIZE_MAX || i > s->last_needed ||
	    s->deferred_bytes + j->c.size > DEFER_MAX ||
	    GREEDY_REALLOC(s->deferred, s->deferred_alloc, s->n_deferred + 1) < 0)
		return false;
	copy = malloc(j->c.size ?: 1);
	if (!copy)
		return false;
	memcpy(copy, s->out, j->c.size);
	s->deferred[s->n_deferred++] = (struct deferred) { .job = i, .bytes = copy };
	s->deferred_bytes += j->c.size;
	return true;
}

/* Stores the held-back chunks, in order, and completes their flights. */
static void run_flush_deferred(struct run_sink *s)
{
	for (size_t k = 0; k < s->n_deferred; k++) {
		struct job *j = &s->jobs[s->deferred[k].job];

		run_finish_job(s, j, chunk_store_decoded(s->f, &j->c, s->deferred[k].bytes));
		free(s->deferred[k].bytes);
	}
	s->n_deferred = 0;
	s->deferred_bytes = 0;
}

/* Decodes every job whose bytes are all in, in offset order, stores it (or holds it back:
 * run_defer()), and drops the bytes no remaining job needs from the window. */
static void run_store_ready(struct run_sink *s)
{
	uint64_t keep;

	while (s->next < s->n) {
		struct job *j = &s->jobs[s->next];
		int r;

		if (j->c.blob_offset + j->c.blob_length > s->pos)
			break;
		r = chunk_decode(s->f, &j->c, s->win, s->base, s->out, s->cursor);
		if (r >= 0 && run_defer(s, s->next)) {
			s->next++;
			continue;
		}
		if (r >= 0)
			r = chunk_store_decoded(s->f, &j->c, s->out);
		run_finish_job(s, j, r);
		if (s->next == s->last_needed)
			run_flush_deferred(s);
		s->next++;
	}

	keep = s->next < s->n && s->jobs[s->next].c.blob_offset < s->pos ?
	       s->jobs[s->next].c.blob_offset : s->pos;
	if (keep > s->base) {
		memmove(s->win, s->win + (keep - s->base), s->pos - keep);
		s->base = keep;
	}
}

/* The sink of the run's stream; each byte comes once, in order (range_conn_stream()). */
static int run_sink_write(void *userdata, const void *buf, size_t n)
{
	struct run_sink *s = userdata;
	const uint8_t *p = buf;

	s->last_us = now_us();
	if (s->first_us == 0)
		s->first_us = s->last_us;

	while (n > 0 && s->next < s->n) {
		const struct fetch_chunk *c = &s->jobs[s->next].c;
		uint64_t need = s->pos - s->base;
		size_t take;

		if (s->pos < c->blob_offset) {
			/* A gap between chunks: bytes no chunk needs. */
			take = c->blob_offset - s->pos < n ? (size_t)(c->blob_offset - s->pos) : n;
			s->pos += take;
			s->base = s->pos;  /* the window is empty here */
			p += take;
			n -= take;
			continue;
		}
		/* Up to the end of the job (run_store_ready() left it unfinished). */
		take = c->blob_offset + c->blob_length - s->pos < n ?
		       (size_t)(c->blob_offset + c->blob_length - s->pos) : n;
		if (need + take > s->win_alloc) {
			size_t na = MAX(need + take, s->win_alloc * 2);
			uint8_t *w = realloc(s->win, na);

			if (!w)
				return -ENOMEM;
			s->win = w;
			s->win_alloc = na;
		}
		memcpy(s->win + need, p, take);
		s->pos += take;
		p += take;
		n -= take;
		run_store_ready(s);
	}
	s->pos += n;  /* past the last job: nothing asks for these */
	return 0;
}

/* One trace line per attempt at a run: which call, which bytes, how many of its chunks
 * nobody waited for. */
static void trace_stream(const struct run_sink *s, unsigned layer, uint64_t from, uint64_t len,
			 int64_t start_us, int r)
{
	unsigned ahead = 0;

	if (!trace_enabled())
		return;
	for (size_t i = 0; i < s->n; i++)
		ahead += s->jobs[i].c.ahead;
	trace_emit("fetch", "\"call\":%llu,\"layer\":%u,\"off\":%llu,\"len\":%llu,"
		   "\"got\":%llu,\"chunks\":%zu,\"ahead\":%u,\"r\":%d,\"t0\":%lld,\"t1\":%lld",
		   (unsigned long long)s->call, layer, (unsigned long long)from,
		   (unsigned long long)len, (unsigned long long)(s->pos - from), s->n, ahead, r,
		   (long long)start_us, (long long)now_us());
}

/* fetch_stream() without the count of streams running. */
static int fetch_stream_tries(struct fetcher *f, unsigned layer, struct run_sink *s,
			      int64_t deadline, struct blob_retry *rt)
{
	const struct fetch_layer *l = &f->layers[layer];
	/* Worth another try: half the call's time, or a whole request if that is less. */
	long request_ms = f->src->timeout_ms, attempt_ms = f->timeout_ms / 2;
	long backoff = FETCH_BACKOFF_MS_FIRST;
	uint64_t first = s->pos;
	char error[256] = "";
	int r;

	if (request_ms > 0 && request_ms < attempt_ms)
		attempt_ms = request_ms;
	for (unsigned attempt = 1;; attempt++) {
		uint64_t from = s->pos, len = s->end - s->pos;
		struct range_conn *conn;
		int64_t start_us;

		r = slot_acquire(f, deadline, &conn);
		start_us = now_us();
		s->first_us = 0;
		if (r < 0) {
			(void)snprintf(error, sizeof(error), "no registry connection: %s",
				       strerror(-r));
			break;
		}
		if (rt && attempt == 1 && !range_conn_retry_bad(conn, rt)) {
			slot_release(f, conn);
			s->exhausted = true;
			return log_debug_errno(-EBADMSG, "layer '%s': no try left for %llu bytes at "
					       "%llu that failed verification", l->digest,
					       (unsigned long long)len, (unsigned long long)from);
		}
		trace_call_set(s->call);
		r = range_conn_stream(conn, l->digest, l->size, from, len, run_sink_write, s);
		trace_call_set(0);
		trace_stream(s, layer, from, len, start_us, r);
		if (r < 0)
			(void)snprintf(error, sizeof(error), "%s", error_take(r));
		slot_release(f, conn);

		pthread_mutex_lock(&f->lock);
		f->stats.requests++;
		f->stats.bytes_fetched += s->pos - from;
		if (r >= 0 && s->first_us > 0)
			link_estimate_add(&f->link, start_us, s->first_us, s->last_us, s->pos - from);
		pthread_mutex_unlock(&f->lock);
		if (r >= 0)
			return 0;

		if (attempt >= FETCH_ATTEMPTS || !error_transient(r) ||
		    now_ms() + backoff + attempt_ms > deadline ||
		    __atomic_load_n(&f->cancel, __ATOMIC_RELAXED))
			break;
		sleep_ms(backoff);
		backoff *= 4;
	}

	log_debug_errno(r, "fetching %llu bytes at %llu of layer '%s' failed after %llu: %s",
			(unsigned long long)(s->end - first), (unsigned long long)first, l->digest,
			(unsigned long long)(s->pos - first), error);
	return r;
}

/* Streams [s->pos, s->end) of layer @layer into @s, retrying transient failures while a whole
 * new attempt fits before @deadline; a retry asks only for what @s has not had.  With @rt, the
 * bytes are asked for again after wrong ones: the source picks where (struct blob_retry), or
 * sets s->exhausted.  Logs the final failure once.  Counted in requests_running meanwhile, so
 * that `lazyroot stats` can tell a quiet mount from one whose stream has not ended yet. */
static int fetch_stream(struct fetcher *f, unsigned layer, struct run_sink *s, int64_t deadline,
			struct blob_retry *rt)
{
	int r;

	pthread_mutex_lock(&f->lock);
	f->stats.requests_running++;
	pthread_mutex_unlock(&f->lock);
	r = fetch_stream_tries(f, layer, s, deadline, rt);
	pthread_mutex_lock(&f->lock);
	f->stats.requests_running--;
	pthread_mutex_unlock(&f->lock);
	return r;
}

/* Bytes that came, well framed, but wrong or short: worth asking for again. */
static bool bad_bytes(int r)
{
	return r == -EPROTO || r == -EBADMSG;
}

/* Moves the jobs of @s worth another try -- those whose bytes failed verification, and after
 * an answer cut short (@r) those not reached -- with their flights into a new array *ret,
 * in order.  Returns how many (0: *ret is NULL). */
static size_t run_take_again(struct run_sink *s, int r, struct job **ret)
{
	struct job *again;
	size_t k = 0;

	*ret = NULL;
	again = calloc(s->n, sizeof(*again));
	if (!again)
		return 0;
	for (size_t i = 0; i < s->n; i++) {
		struct job *j = &s->jobs[i];

		if (!j->fl || !(j->result == -EBADMSG || (i >= s->next && bad_bytes(r))))
			continue;
		again[k] = *j;
		again[k++].result = 0;
		j->fl = NULL;
	}
	if (k == 0)
		free(again);
	else
		*ret = again;
	return k;
}

/* Claims the first seek index span of a run of @jobs (sorted), after any other request for
 * it (seek_cursor_pool.h), and returns the cursor that request parked when it can inflate
 * every job of that span from where it stopped: in *ret_from the blob offset to ask for from.
 * NULL (and *ret_from untouched) when a job of that span lies before the cursor, a later span
 * starts before it (its bytes start at its own checkpoint), or this is a @retry of bytes that
 * failed (from the checkpoint). */
static struct seek_cursor *run_resume(struct fetcher *f, const struct job *jobs, size_t n,
				      int64_t deadline, bool retry, struct seek_span_claim *claim,
				      uint64_t *ret_from)
{
	const struct fetch_chunk *c0 = &jobs[0].c;
	const struct seek_index *si = f->layers[c0->layer].seek;
	_cleanup_(seek_cursor_freep) struct seek_cursor *cur = NULL;
	uint64_t from, o;

	cur = seek_cursor_pool_take(f->cursors, si, c0->blob_offset, c0->digest, c0->size,
				    deadline, &from, claim);
	if (!cur || retry)
		return NULL;
	for (size_t i = 1; i < n; i++) {
		const struct fetch_chunk *c = &jobs[i].c;
		bool ok = c->blob_offset == c0->blob_offset ?
			  seek_cursor_resume_at(cur, si, c->blob_offset, c->digest, c->size, &o) == 1 :
			  c->blob_offset >= from;

		if (!ok)
			return NULL;
	}
	*ret_from = from;
	return TAKE_PTR(cur);
}

/* Claims the seek index spans of @jobs (sorted) after the first one (run_resume() claims that),
 * in blob order: a request for one of them waits for this one and goes on from its cursor.
 * Returns how many, in *ret (to release with seek_cursor_pool_put()). */
static size_t run_claim_rest(struct fetcher *f, const struct job *jobs, size_t n,
			     int64_t deadline, struct seek_span_claim **ret)
{
	const struct seek_index *si = f->layers[jobs[0].c.layer].seek;
	struct seek_span_claim *claims = NULL;
	size_t k = 0, alloc = 0;

	for (size_t i = 1; i < n; i++) {
		if (jobs[i].c.blob_offset == jobs[i - 1].c.blob_offset ||
		    GREEDY_REALLOC(claims, alloc, k + 1) < 0)
			continue;
		seek_cursor_pool_claim(f->cursors, si, jobs[i].c.blob_offset, deadline, &claims[k++]);
	}
	*ret = claims;
	return k;
}

/* One try at @jobs (of one layer, sorted): streams the range they lie in, stores each chunk
 * that verifies, and completes every flight but those of jobs worth another try, which go to
 * *ret_again (@rt: this is such a try).  Returns how many chunks not marked ahead failed. */
static unsigned run_try(struct fetcher *f, struct job *jobs, size_t n, int64_t deadline,
			struct blob_retry *rt, struct job **ret_again, size_t *ret_n_again)
{
	struct run_sink s = { .f = f, .jobs = jobs, .n = n, .call = jobs[0].fl->owner,
			      .last_needed = SIZE_MAX };
	bool seek = f->layers[jobs[0].c.layer].seek;
	struct seek_span_claim claim = {}, *more = NULL;
	size_t n_more = 0;
	uint64_t out_max = 1, end = 0;
	int r = -ENOMEM;

	for (size_t i = 0; i < n; i++) {
		out_max = MAX(out_max, jobs[i].c.size);
		end = MAX(end, jobs[i].c.blob_offset + jobs[i].c.blob_length);
		if (!jobs[i].c.ahead)
			s.last_needed = i;
	}
	s.pos = s.base = jobs[0].c.blob_offset;
	s.end = end;
	s.out = malloc(out_max);
	if (s.out && seek) {
		s.cursor = run_resume(f, jobs, n, deadline, rt != NULL, &claim, &s.pos);
		n_more = run_claim_rest(f, jobs, n, deadline, &more);
	}
	s.base = s.pos;
	if (s.out && seek && !s.cursor && seek_cursor_new(&s.cursor) < 0) {
		free(s.out);
		s.out = NULL;
	}
	if (!s.out)
		log_debug("fetching %llu bytes of layer '%s' failed: out of memory",
			  (unsigned long long)(end - s.pos), f->layers[jobs[0].c.layer].digest);
	else if (seek && !claim.held && now_ms() >= deadline)
		/* The call's time went waiting for another request of the span (a registry that
		 * does not answer): this one would only wait as long again. */
		r = log_debug_errno(-ETIMEDOUT, "layer '%s': no time left after waiting for the "
				    "span's other request", f->layers[jobs[0].c.layer].digest);
	else
		r = fetch_stream(f, jobs[0].c.layer, &s, deadline, rt);  /* it logged a failure */
	/* Decoded before the stream ended (or broke): good bytes, whatever came after. */
	run_flush_deferred(&s);
	free(s.deferred);

	*ret_n_again = 0;
	*ret_again = NULL;
	/* Another try only with a good part of the call's time left. */
	if (s.out && !s.exhausted && deadline - now_ms() >= f->timeout_ms / 4)
		*ret_n_again = run_take_again(&s, r, ret_again);
	/* What did not arrive whole (or at all) or failed verification is not stored: those
	 * flights fail. */
	for (size_t i = 0; i < n; i++)
		if (jobs[i].fl)
			run_complete(&s, &jobs[i], -EIO);
	free(s.win);
	free(s.out);
	/* Where it stopped, for the next request in the span (a failed one is not kept). */
	if (seek)
		seek_cursor_pool_put(f->cursors, &claim, r >= 0 ? TAKE_PTR(s.cursor) : NULL);
	for (size_t i = 0; i < n_more; i++)
		seek_cursor_pool_put(f->cursors, &more[i], NULL);
	free(more);
	seek_cursor_free(s.cursor);
	return s.failed;
}

/* Fetches one run: @jobs of one layer, sorted.  Chunks whose bytes fail verification (or come
 * short) are fetched again, from where struct blob_retry says, while tries and time are left.
 * Completes every job's flight (each as soon as it is stored or has failed for good); returns
 * how many failed. */
static unsigned fetch_run(struct fetcher *f, struct job *jobs, size_t n, int64_t deadline)
{
	struct blob_retry rt = {};
	struct job *again;
	size_t n_again;
	unsigned failed;

	failed = run_try(f, jobs, n, deadline, NULL, &again, &n_again);
	while (n_again > 0) {
		struct job *cur = again;

		log_debug("fetching %zu chunks of layer '%s' again: their bytes failed verification",
			  n_again, f->layers[cur[0].c.layer].digest);
		pthread_mutex_lock(&f->lock);
		f->stats.chunks_refetched += n_again;
		pthread_mutex_unlock(&f->lock);
		failed += run_try(f, cur, n_again, deadline, &rt, &again, &n_again);
		free(cur);
	}
	return failed;
}

static int job_compare(const void *a, const void *b)
{
	const struct job *x = a, *y = b;

	if (x->c.layer != y->c.layer)
		return x->c.layer < y->c.layer ? -1 : 1;
	if (x->c.blob_offset != y->c.blob_offset)
		return x->c.blob_offset < y->c.blob_offset ? -1 : 1;
	/* Chunks of one seek index span start at its checkpoint: the nearer end first, so that
	 * they are inflated in one pass (seek_cursor). */
	if (x->c.blob_length != y->c.blob_length)
		return x->c.blob_length < y->c.blob_length ? -1 : 1;
	return 0;
}

/* The run of sorted @jobs that starts at jobs[i]: neighbours in one layer, at most
 * FETCH_GAP_MAX apart, in at most @request_max bytes.  Returns its end index; *ret_needed:
 * it holds a chunk not marked ahead. */
static size_t run_end(const struct job *jobs, size_t n, size_t i, uint64_t request_max,
		      uint64_t *ret_start, uint64_t *ret_len, bool *ret_needed)
{
	uint64_t start = jobs[i].c.blob_offset, end = start + jobs[i].c.blob_length;
	bool needed = !jobs[i].c.ahead;
	size_t k = i + 1;

	for (; k < n; k++) {
		const struct fetch_chunk *c = &jobs[k].c;
		uint64_t e = MAX(end, c->blob_offset + c->blob_length);

		if (c->layer != jobs[i].c.layer || c->blob_offset > end + FETCH_GAP_MAX ||
		    e - start > request_max)
			break;
		end = e;
		needed |= !c->ahead;
	}
	*ret_start = start;
	*ret_len = end - start;
	*ret_needed = needed;
	return k;
}

/* Whether chunks nobody waits for are held back: the store was full at its last write, and
 * either that was less than FULL_RETRY_MS ago or its file system still has less than
 * FULL_ROOM_MIN free (looked at once per FULL_RETRY_MS, by one caller, which then may try). */
static bool store_holds_back(struct fetcher *f)
{
	bool full, due;
	uint64_t avail;
	int64_t now = now_ms();

	pthread_mutex_lock(&f->lock);
	full = f->full;
	due = now >= f->full_retry_ms;
	if (full && due)
		f->full_retry_ms = now + FULL_RETRY_MS;
	pthread_mutex_unlock(&f->lock);
	if (!full)
		return false;
	if (!due)
		return true;
	return blob_store_free_bytes(f->bs, &avail) >= 0 && avail < FULL_ROOM_MIN;
}


/* Completes the flights of @jobs with @result, without fetching them. */
static void jobs_release(struct fetcher *f, struct job *jobs, size_t n, int result)
{
	pthread_mutex_lock(&f->lock);
	for (size_t i = 0; i < n; i++) {
		jobs[i].result = result;
		flight_complete(f, jobs[i].fl, result);
		jobs[i].fl = NULL;
	}
	pthread_mutex_unlock(&f->lock);
}

/* Fetches the chunks of @jobs (whose flights the caller owns), merging neighbours into
 * requests of at most @request_max bytes: first the runs that hold a chunk some read waits
 * for, then the runs of chunks marked ahead only.  Returns how many chunks not marked ahead
 * failed. */
static unsigned fetch_jobs(struct fetcher *f, struct job *jobs, size_t n, uint64_t request_max,
			   int64_t deadline)
{
	unsigned failed = 0;

	qsort(jobs, n, sizeof(*jobs), job_compare);
	for (int pass = 0; pass < 2; pass++)
		for (size_t i = 0, k; i < n; i = k) {
			uint64_t start, len;
			bool needed;

			k = run_end(jobs, n, i, request_max, &start, &len, &needed);
			if (needed != (pass == 0))
				continue;
			/* The store filled up during the first pass: what nobody waits for is
			 * not fetched (its flights fail without a request). */
			if (pass == 1 && store_holds_back(f))
				jobs_release(f, jobs + i, k - i, -ENOSPC);
			else
				failed += fetch_run(f, jobs + i, k - i, deadline);
		}
	return failed;
}

/* Claims the flights of @chunks (with @owner), sorting them into @jobs (fetch) and @waits
 * (wait).  Called with f->lock held; returns how many could not be claimed. */
static unsigned claim_all(struct fetcher *f, const struct fetch_chunk *const *chunks, size_t n,
			  uint64_t owner, struct job *jobs, size_t *n_jobs,
			  struct flight **waits, size_t *n_waits)
{
	unsigned failed = 0;

	for (size_t i = 0; i < n; i++) {
		struct flight *fl = NULL;
		int r;

		r = flight_claim(f, chunks[i], owner, &fl);
		if (r == CLAIM_MINE)
			jobs[(*n_jobs)++] = (struct job) { .c = *chunks[i], .fl = fl };
		else if (r == CLAIM_WAIT && chunks[i]->ahead)
			flight_unref(fl);   /* another call fetches it: nobody here waits for it */
		else if (r == CLAIM_WAIT)
			waits[(*n_waits)++] = fl;
		else if (r < 0) {
			f->stats.chunks_failed++;
			if (!chunks[i]->ahead)
				failed++;
		}
	}
	return failed;
}

/* Completes at once the flights of jobs whose chunk got stored between the caller's first look
 * and its claim (another call's flight completed in between), and drops them from @jobs. */
/* Whether chunk @c, marked refetch, must still be inflated from its layer: its file's records
 * were not checked yet (another call's fetch may have checked them since it was marked, and
 * fetching it again would only repeat bytes that call brought). */
static bool refetch_needed(struct fetcher *f, const struct fetch_chunk *c)
{
	uint8_t md[32];

	if (!c->refetch)
		return false;
	if (digest_parse_sha256(c->digest, md) < 0)
		return true;
	return !fetcher_chunk_proven(f, c->layer, c->blob_offset, md, c->size);
}

static void jobs_drop_stored(struct fetcher *f, struct job *jobs, size_t *n_jobs)
{
	size_t k = 0;

	for (size_t i = 0; i < *n_jobs; i++) {
		if (!refetch_needed(f, &jobs[i].c) &&
		    blob_store_has_size(f->bs, jobs[i].c.digest, jobs[i].c.size) > 0) {
			pthread_mutex_lock(&f->lock);
			flight_complete(f, jobs[i].fl, 0);
			pthread_mutex_unlock(&f->lock);
		} else {
			jobs[k++] = jobs[i];
		}
	}
	*n_jobs = k;
}

struct task {
	struct fetcher *f;
	int64_t deadline;
	size_t n;
	struct job jobs[];
};

static void *task_thread(void *userdata)
{
	struct task *t = userdata;
	struct fetcher *f = t->f;

	(void)fetch_jobs(f, t->jobs, t->n, f->request_max, t->deadline);

	pthread_mutex_lock(&f->lock);
	if (--f->ensures_active == 0)
		(void)pthread_cond_broadcast(&f->prefetch_wake);
	if (--f->tasks_active == 0)
		(void)pthread_cond_broadcast(&f->task_done);
	pthread_mutex_unlock(&f->lock);
	free(t);
	return NULL;
}

/* Starts a task thread fetching @jobs (whose flights the caller owns; they become the task's)
 * and appends a reference to the flight of each job not marked ahead to @waits, for the
 * caller to wait on.  On failure nothing changed and the caller fetches @jobs itself. */
static int task_start(struct fetcher *f, const struct job *jobs, size_t n, int64_t deadline,
		      struct flight **waits, size_t *n_waits)
{
	struct task *t;
	pthread_attr_t attr;
	pthread_t thread;
	sigset_t all, old;
	int r;

	t = malloc(sizeof(*t) + n * sizeof(*jobs));
	if (!t)
		return -ENOMEM;
	*t = (struct task) { .f = f, .deadline = deadline, .n = n };
	memcpy(t->jobs, jobs, n * sizeof(*jobs));

	pthread_mutex_lock(&f->lock);
	if (f->stop || f->tasks_active >= FETCH_TASKS_MAX) {
		pthread_mutex_unlock(&f->lock);
		free(t);
		return -EAGAIN;
	}
	f->tasks_active++;
	f->ensures_active++;   /* prefetch keeps yielding to this read's fetch */
	for (size_t i = 0; i < n; i++) {
		if (t->jobs[i].c.ahead)
			continue;
		t->jobs[i].fl->refs++;
		waits[(*n_waits)++] = t->jobs[i].fl;
	}
	pthread_mutex_unlock(&f->lock);

	r = -pthread_attr_init(&attr);
	if (r >= 0) {
		(void)pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		/* Signals are the main thread's business. */
		(void)sigfillset(&all);
		(void)pthread_sigmask(SIG_SETMASK, &all, &old);
		r = -pthread_create(&thread, &attr, task_thread, t);
		(void)pthread_sigmask(SIG_SETMASK, &old, NULL);
		(void)pthread_attr_destroy(&attr);
	}
	if (r >= 0)
		return 0;

	log_debug_errno(r, "starting a fetch thread failed, fetching on the reader's: %m");
	pthread_mutex_lock(&f->lock);
	for (size_t i = 0; i < n; i++)
		if (!t->jobs[i].c.ahead)
			flight_unref(waits[--(*n_waits)]);
	f->ensures_active--;   /* the caller's own count keeps it above 0 */
	if (--f->tasks_active == 0)
		(void)pthread_cond_broadcast(&f->task_done);
	pthread_mutex_unlock(&f->lock);
	free(t);
	return r;
}

/* ---- A seek span's prefix is fetched once ------------------------------------------------
 * A chunk of a layer read through its seek index is inflated from its span's checkpoint, so the
 * request for it carries every compressed byte of the span before it.  Fetched one by one, as
 * reads and prewarm's batches come, a span's chunks each brought that prefix again (read-around
 * stopped at 512 chunks, racing readers each started a request, prewarm's batches cut spans): a
 * full read fetched up to 1.33x its layer.  So every call first adds the other chunks of each
 * span it needs a chunk of, up to its needed chunks' end and @ahead bytes more (what the link
 * moves in a round trip), marked ahead (span_expand()): they come in one request, and are
 * claimed at once, so a read of another of them waits for that request instead of starting
 * its own from the checkpoint.  The request's inflate cursor is parked (seek_cursor_pool.h),
 * so a later read further in the span asks only for the bytes after it.  The spans of the
 * call's needed chunks are listed (each once, with how far its needed chunks reach), each
 * span's chunks appended from the index (at most SPAN_CHUNKS_MAX: a span of 2 MiB of tiny
 * files; the rest is left to the reads that want them), and what the call had already, or a
 * span gave twice, dropped again (a sort by digest).  Nothing here looks at the store: the
 * call does, for every chunk.  Load: a read's miss names a span or a few, a prewarm batch some
 * tens (all of a span's chunks: it takes the whole span); a span holds one chunk (a big file)
 * to a few thousand (small ones). */

#define SPAN_CHUNKS_MAX 4096U

/* ---- Sequential reads take whole spans along --------------------------------------------
 * A tar of the tree, a copy, a checksum of every file: reads come one after another in
 * archive order, and each miss fetched a round trip's worth past the read and waited a round
 * trip for it (the full read of the benchmark image: 400 requests, 30% of the link).  So, as
 * the kernel's readahead, a window per layer: where the fetch-ahead of its last miss ends and
 * how big it was.  A miss whose needed chunks end in the window's second half or at most a
 * window past it reads on from there: the window doubles (from the round trip's worth up to
 * SEQ_AHEAD_MAX) and the call takes everything up to its new end along -- from
 * SEQ_WHOLE_MIN on, whole spans, the ones after the read's too, each from its checkpoint in
 * a request of its own that nobody waits for, so the next ones are on their way while the
 * reader works through this one.  A miss in the first half finds the rest on its way and
 * takes nothing more; any other miss starts over (a cold start's scattered reads keep the
 * round trip's worth).  Load: one lock and a few comparisons per call; whole spans are
 * listed only when the window moves, about once per half window read. */
#define SEQ_AHEAD_MIN (64U * 1024)
#define SEQ_WHOLE_MIN (512U * 1024)
#define SEQ_AHEAD_MAX (4U * 1024 * 1024)

struct seq_window {
	uint64_t end, size;          /* size 0: none yet */
};

/* For a call whose needed chunks in layer @layer end at blob offset @end: where its take-along
 * ends (0: at the round trip's worth @ahead past them, as for any read), and in *ret_whole
 * whether whole spans are taken up to there. */
static uint64_t seq_window_advance(struct fetcher *f, unsigned layer, uint64_t end,
				   uint64_t ahead, bool *ret_whole)
{
	struct seq_window *w = &f->seq[layer];
	uint64_t target = 0;

	*ret_whole = false;
	pthread_mutex_lock(&f->lock);
	if (w->size > 0 && end + w->size / 2 <= w->end && end + 2 * w->size > w->end) {
		/* In the first half: the rest of the window is on its way. */
	} else if (w->size > 0 && end + w->size / 2 > w->end && end <= w->end + w->size) {
		w->size = 2 * w->size < SEQ_AHEAD_MAX ? 2 * w->size : SEQ_AHEAD_MAX;
		w->end = MAX(end, w->end) + w->size;
		target = w->end;
		*ret_whole = w->size >= SEQ_WHOLE_MIN;
	} else {
		w->size = MAX(ahead, SEQ_AHEAD_MIN);
		w->end = end + w->size;
	}
	pthread_mutex_unlock(&f->lock);
	return target;
}

struct span {
	unsigned layer;
	uint64_t blob_offset;
	uint64_t reach;              /* the largest blob_length of its chunks in the call */
	uint64_t reach_needed;       /* the same of those not marked ahead (0: none) */
	bool needed;                 /* one of them is not marked ahead */
};

struct expansion {
	struct fetch_chunk *out;
	size_t n, alloc, added;      /* added: of the current span */
	unsigned layer;
	uint64_t blob_offset, reach; /* reach: chunks ending later are not taken along */
	const struct seek_index *seek;
};

static int span_compare(const void *a, const void *b)
{
	const struct span *x = a, *y = b;

	if (x->layer != y->layer)
		return x->layer < y->layer ? -1 : 1;
	if (x->blob_offset != y->blob_offset)
		return x->blob_offset < y->blob_offset ? -1 : 1;
	return 0;
}

/* The distinct spans of @chunks in seek index layers, in *ret: the request for a span
 * inflates everything before its last chunk, so every chunk on the way is taken along (a
 * later read of one it skipped would fetch the span's start again). */
static int spans_needed(const struct fetch_layer *layers, size_t n_layers,
			const struct fetch_chunk *chunks, size_t n, struct span **ret,
			size_t *ret_n)
{
	_cleanup_free_ struct span *spans = NULL;
	size_t k = 0, alloc = 0;

	for (size_t i = 0; i < n; i++) {
		const struct fetch_chunk *c = &chunks[i];

		if (c->layer >= n_layers || !layers[c->layer].seek ||
		    __atomic_load_n(&layers[c->layer].seek_failed, __ATOMIC_RELAXED))
			continue;
		if (GREEDY_REALLOC(spans, alloc, k + 1) < 0)
			return -ENOMEM;
		spans[k++] = (struct span) { .layer = c->layer, .blob_offset = c->blob_offset,
					     .reach = c->blob_length,
					     .reach_needed = c->ahead ? 0 : c->blob_length,
					     .needed = !c->ahead };
	}
	if (k > 1)
		qsort(spans, k, sizeof(*spans), span_compare);
	*ret_n = 0;
	for (size_t i = 0; i < k; i++)
		if (*ret_n == 0 || span_compare(&spans[*ret_n - 1], &spans[i]) != 0)
			spans[(*ret_n)++] = spans[i];
		else {
			spans[*ret_n - 1].reach = MAX(spans[*ret_n - 1].reach, spans[i].reach);
			spans[*ret_n - 1].reach_needed = MAX(spans[*ret_n - 1].reach_needed,
							     spans[i].reach_needed);
			spans[*ret_n - 1].needed |= spans[i].needed;
		}
	*ret = TAKE_PTR(spans);
	return 0;
}

static int span_add(void *userdata, const char *digest, uint64_t size, uint64_t blob_length)
{
	struct expansion *x = userdata;
	struct seek_chunk_ref first;
	uint8_t md[32];

	if (x->added >= SPAN_CHUNKS_MAX || blob_length > x->reach)
		return 0;
	if (GREEDY_REALLOC(x->out, x->alloc, x->n + 1) < 0)
		return -ENOMEM;
	x->out[x->n] = (struct fetch_chunk) {
		.layer = x->layer, .blob_offset = x->blob_offset, .blob_length = blob_length,
		.size = size, .ahead = true,
	};
	memcpy(x->out[x->n].digest, digest, sizeof(x->out[x->n].digest));
	/* The first chunks of an untrusted index's files whose records this mount has not
	 * checked: inflated again even when stored, so that the one request proves every file of
	 * the span, not only the one read (fs/read_path.c serves none of them from the store
	 * before).  A later chunk proves nothing (seek_trust.c): it is inflated only if missing. */
	if (seek_index_untrusted(x->seek) && digest_parse_sha256(digest, md) >= 0 &&
	    seek_index_chunk_first(x->seek, x->blob_offset, digest, size, &first) == 0)
		x->out[x->n].refetch = !seek_index_chunk_proven(x->seek, x->blob_offset, md, size);
	x->n++;
	x->added++;
	return 0;
}

struct position {
	const char *digest;
	size_t i;
};

/* By digest, then position: the first of equal digests comes first. */
static int position_compare(const void *a, const void *b)
{
	const struct position *x = a, *y = b;
	int d = strcmp(x->digest, y->digest);

	if (d != 0)
		return d;
	return x->i < y->i ? -1 : x->i > y->i;
}

/* Whether @c, a chunk of the digest of @prev, is inflated for a reason of its own: it proves
 * its file (refetch), which is not @prev's (a file with the content of an earlier one, such
 * as /usr/share/doc's copyright files: left out, its read fetches its span again). */
static bool proves_elsewhere(const struct fetch_chunk *c, const struct fetch_chunk *prev)
{
	return c->refetch && (c->layer != prev->layer || c->blob_offset != prev->blob_offset);
}

/* Drops the chunks at positions >= @keep whose digest came earlier in @x->out, but for those
 * that prove a file of their own (proves_elsewhere()). */
static int drop_repeats(struct expansion *x, size_t keep)
{
	_cleanup_free_ struct position *pos = NULL;
	_cleanup_free_ bool *drop = NULL;
	size_t k = keep;

	pos = malloc(x->n * sizeof(*pos));
	drop = calloc(x->n, sizeof(*drop));
	if (!pos || !drop)
		return -ENOMEM;
	for (size_t i = 0; i < x->n; i++)
		pos[i] = (struct position) { .digest = x->out[i].digest, .i = i };
	qsort(pos, x->n, sizeof(*pos), position_compare);
	for (size_t i = 1; i < x->n; i++)
		if (pos[i].i >= keep && streq(pos[i].digest, pos[i - 1].digest) &&
		    !proves_elsewhere(&x->out[pos[i].i], &x->out[pos[i - 1].i]))
			drop[pos[i].i] = true;
	for (size_t i = keep; i < x->n; i++)
		if (!drop[i])
			x->out[k++] = x->out[i];
	x->n = k;
	return 0;
}

/* Whether spans[i] is the last span of its layer with a needed chunk: the one whose end tells
 * where a sequential read is (seq_window_advance()). */
static bool span_last_needed(const struct span *spans, size_t n, size_t i)
{
	if (!spans[i].needed)
		return false;
	for (size_t k = i + 1; k < n && spans[k].layer == spans[i].layer; k++)
		if (spans[k].needed)
			return false;
	return true;
}

/* Adds the chunks of @x's span up to its reach and, with @target, every chunk of the spans
 * after it that start before @target (seq_window_advance()). */
static int span_take(struct expansion *x, uint64_t target)
{
	uint64_t next = x->blob_offset;
	int r;

	r = seek_index_span_foreach(x->seek, x->blob_offset, span_add, x);
	if (r == -ENOENT)
		return 0;  /* not a checkpoint: the fetcher fails that chunk, nothing to add */
	while (r >= 0 && target > 0 && seek_index_span_next(x->seek, next, &next) >= 0 &&
	       next < target) {
		x->blob_offset = next;
		x->added = 0;
		r = seek_index_span_foreach(x->seek, next, span_add, x);
	}
	return r;
}

/* The chunks of @chunks (@n, in their order) followed by those of every span of a seek index
 * layer that holds one of them not marked ahead: marked ahead, none of @chunks again and each
 * digest once; for a sequential read, those of the spans after it too.  A new array in *ret and
 * its length in *ret_n; *ret is NULL when there is nothing to add. */
static int span_expand(struct fetcher *f, const struct fetch_chunk *chunks, size_t n,
		       uint64_t ahead, struct fetch_chunk **ret, size_t *ret_n)
{
	_cleanup_free_ struct span *spans = NULL;
	struct expansion x = {};
	size_t n_spans;
	int r;

	*ret = NULL;
	*ret_n = n;
	r = spans_needed(f->layers, f->n_layers, chunks, n, &spans, &n_spans);
	if (r < 0 || n_spans == 0)
		return r;
	if (GREEDY_REALLOC(x.out, x.alloc, n) < 0)
		return -ENOMEM;
	memcpy(x.out, chunks, n * sizeof(*chunks));
	x.n = n;
	for (size_t i = 0; i < n_spans && r >= 0; i++) {
		uint64_t target = 0;
		bool whole = false;

		x.layer = spans[i].layer;
		x.blob_offset = spans[i].blob_offset;
		/* The round trip's bytes past the needed chunks, or as far as the call's own
		 * chunks ahead go: fs/read_path.c's read-around already took that window past
		 * the read, and adding it again past those fetched two. */
		x.reach = spans[i].needed ? MAX(spans[i].reach, spans[i].reach_needed + ahead)
					  : spans[i].reach;
		if (span_last_needed(spans, n_spans, i))
			target = seq_window_advance(f, x.layer, x.blob_offset + spans[i].reach,
						    ahead, &whole);
		if (target > 0)
			x.reach = whole ? UINT64_MAX : MAX(x.reach, target - x.blob_offset);
		x.seek = f->layers[x.layer].seek;
		x.added = 0;
		r = span_take(&x, whole ? target : 0);
	}
	if (r >= 0)
		r = drop_repeats(&x, n);
	if (r < 0 || x.n == n) {
		free(x.out);
		return r < 0 ? r : 0;
	}
	*ret = x.out;
	*ret_n = x.n;
	return 0;
}

int fetcher_ensure(struct fetcher *f, const struct fetch_chunk *chunks, size_t n)
{
	return fetcher_ensure_interruptible(f, chunks, n, NULL);
}

void fetcher_interrupt(struct fetcher *f, struct fetch_interrupt *intr)
{
	pthread_mutex_lock(&f->lock);
	intr->interrupted = true;
	(void)pthread_cond_broadcast(&f->flight_done);
	pthread_mutex_unlock(&f->lock);
}

/* The distinct calls whose flights @waits are, as a JSON list in @buf (called with f->lock
 * held, before the waits drop their references). */
static void trace_joined(struct flight *const *waits, size_t n, char *buf, size_t size)
{
	size_t k = 0;

	buf[k++] = '[';
	for (size_t i = 0; i < n && k + 24 < size; i++) {
		bool seen = false;

		for (size_t j = 0; j < i && !seen; j++)
			seen = waits[j]->owner == waits[i]->owner;
		if (!seen)
			k += (size_t)snprintf(buf + k, size - k, "%s%llu", k > 1 ? "," : "",
					      (unsigned long long)waits[i]->owner);
	}
	buf[k++] = ']';
	buf[k] = '\0';
}

/* The chunks of @chunks to fetch, in @missing (returns how many), and in *@ret_invalid how
 * many needed ones the fetcher cannot fetch (a layer or range it does not know). */
static size_t chunks_missing(struct fetcher *f, const struct fetch_chunk *chunks, size_t n,
			     const struct fetch_chunk **missing, unsigned *ret_invalid)
{
	bool hold_back = store_holds_back(f);
	size_t n_missing = 0;

	for (size_t i = 0; i < n; i++) {
		if (!chunk_valid(f, &chunks[i])) {
			if (!chunks[i].ahead)
				(*ret_invalid)++;
			continue;
		}
		/* What cannot be stored is not fetched unless a reader waits for it. */
		if (chunks[i].ahead && hold_back)
			continue;
		/* On an error (not 0 or 1) fetch anyway: storing will tell. */
		if (refetch_needed(f, &chunks[i]) ||
		    blob_store_has_size(f->bs, chunks[i].digest, chunks[i].size) != 1)
			missing[n_missing++] = &chunks[i];
	}
	return n_missing;
}

/* One round of fetcher_ensure_interruptible(), by @deadline.  *ret_joined_failed: a flight
 * this call joined (another call's fetch) failed. */
static int ensure_round(struct fetcher *f, const struct fetch_chunk *chunks, size_t n,
			struct fetch_interrupt *intr, int64_t deadline, bool *ret_joined_failed)
{
	_cleanup_free_ const struct fetch_chunk **missing = NULL;
	_cleanup_free_ struct job *jobs = NULL;
	_cleanup_free_ struct flight **waits = NULL;
	size_t n_missing = 0, n_jobs = 0, n_waits = 0, n_joined;
	unsigned failed = 0, invalid = 0, joined_failed;
	bool interrupted = false;
	int64_t trace_t0 = trace_enabled() ? now_us() : 0;
	char joined[256] = "[]";
	uint64_t owner;

	*ret_joined_failed = false;
	missing = calloc(n, sizeof(*missing));
	jobs = calloc(n, sizeof(*jobs));
	waits = calloc(n, sizeof(*waits));
	if (!missing || !jobs || !waits)
		return -EIO;

	n_missing = chunks_missing(f, chunks, n, missing, &invalid);
	pthread_mutex_lock(&f->lock);
	f->stats.chunks_failed += invalid;
	if (n_missing == 0) {
		pthread_mutex_unlock(&f->lock);
		return invalid > 0 ? -EIO : 0;
	}
	f->ensures_active++;
	owner = f->next_owner++;
	failed += claim_all(f, missing, n_missing, owner, jobs, &n_jobs, waits, &n_waits);
	if (trace_t0)
		trace_joined(waits, n_waits, joined, sizeof(joined));
	pthread_mutex_unlock(&f->lock);
	n_joined = n_waits;   /* waits[0..n_joined): other calls' flights */

	jobs_drop_stored(f, jobs, &n_jobs);
	if (n_jobs > 0 && (!intr || task_start(f, jobs, n_jobs, deadline, waits, &n_waits) < 0))
		failed += fetch_jobs(f, jobs, n_jobs, f->request_max, deadline);
	joined_failed = flights_wait(f, waits, n_joined, deadline, false, intr, &interrupted);
	failed += joined_failed;
	failed += flights_wait(f, waits + n_joined, n_waits - n_joined, deadline, false, intr,
			       &interrupted);

	pthread_mutex_lock(&f->lock);
	if (--f->ensures_active == 0)
		(void)pthread_cond_broadcast(&f->prefetch_wake);
	pthread_mutex_unlock(&f->lock);

	if (trace_t0)
		trace_emit("ensure", "\"call\":%llu,\"op\":%llu,\"chunks\":%zu,\"missing\":%zu,"
			   "\"mine\":%zu,\"joined\":%s,\"failed\":%u,\"t0\":%lld,\"t1\":%lld",
			   (unsigned long long)owner, (unsigned long long)trace_op_current(), n,
			   n_missing, n_jobs, joined, failed, (long long)trace_t0,
			   (long long)now_us());
	if (interrupted)
		return -EINTR;
	*ret_joined_failed = joined_failed > 0;
	if (failed + invalid == 0)
		return 0;
	return store_is_full(f) ? -ENOSPC : -EIO;
}

/* Whether @first (the first chunk of @c's file) is among @all[0..n) already: it is then
 * fetched even when stored, and waited for if @c is. */
static bool first_mark_known(struct fetch_chunk *all, size_t n, const struct fetch_chunk *c,
			     const struct seek_chunk_ref *first)
{
	for (size_t j = 0; j < n; j++)
		if (all[j].layer == c->layer && streq(all[j].digest, first->digest) &&
		    all[j].blob_offset == first->blob_offset) {
			all[j].refetch = true;
			all[j].ahead &= c->ahead;
			return true;
		}
	return false;
}

/* An untrusted seek index's file is served only once its first chunk was inflated from this
 * layer (its tar records are checked then, seek_trust.c): a call that wants a later chunk of
 * a file not checked yet fetches the first one too, even when it is stored, in the same call
 * (a later chunk inflates in any order: it proves nothing and serves nothing before).  *ret:
 * @chunks with those added (NULL: none to add). */
static int seek_firsts_add(struct fetcher *f, const struct fetch_chunk *chunks, size_t n,
			   struct fetch_chunk **ret, size_t *ret_n)
{
	_cleanup_free_ struct fetch_chunk *all = NULL;
	size_t k = n;

	*ret = NULL;
	for (size_t i = 0; i < n; i++) {
		const struct fetch_layer *l = chunks[i].layer < f->n_layers ?
					      &f->layers[chunks[i].layer] : NULL;
		struct seek_chunk_ref first;

		if (!l || !l->seek || seek_index_chunk_first(l->seek, chunks[i].blob_offset,
							     chunks[i].digest, chunks[i].size,
							     &first) <= 0)
			continue;
		if (!all) {
			all = calloc(2 * n, sizeof(*all));
			if (!all)
				return -ENOMEM;
			memcpy(all, chunks, n * sizeof(*all));
		}
		/* Taken along, but its records are in an earlier span: not worth a request for
		 * that span's prefix nobody waits for.  It inflates without them and is kept,
		 * not served before its file is proven (seek_trust.c). */
		if (chunks[i].ahead && first.blob_offset != chunks[i].blob_offset)
			continue;
		if (first_mark_known(all, k, &chunks[i], &first))
			continue;
		all[k] = (struct fetch_chunk) { .layer = chunks[i].layer, .refetch = true,
						.blob_offset = first.blob_offset,
						.blob_length = first.blob_length, .size = first.size,
						.ahead = chunks[i].ahead };
		memcpy(all[k].digest, first.digest, sizeof(first.digest));
		k++;
	}
	*ret = TAKE_PTR(all);
	*ret_n = k;
	return 0;
}

int fetcher_ensure_interruptible(struct fetcher *f, const struct fetch_chunk *chunks, size_t n,
				 struct fetch_interrupt *intr)
{
	_cleanup_free_ struct fetch_chunk *all = NULL, *spans = NULL;
	int64_t deadline = now_ms() + f->timeout_ms;
	bool joined_failed;
	int r;

	if (n == 0)
		return 0;
	r = seek_firsts_add(f, chunks, n, &all, &n);
	if (r < 0)
		return -EIO;
	if (all)
		chunks = all;
	/* A seek span comes whole, in one request (span_expand()); without memory, piecemeal. */
	if (span_expand(f, chunks, n, fetcher_read_around_bytes(f, FETCH_SEEK_AHEAD_MAX), &spans,
			&n) >= 0 && spans)
		chunks = spans;
	r = ensure_round(f, chunks, n, intr, deadline, &joined_failed);
	/* A flight joined midway may have been a fetch that its own readers gave up on, failing
	 * just now (the registry it waited for came back and closed the stalled connection): its
	 * failure is not this call's.  With time left, fetch what is still missing ourselves. */
	if ((r == -EIO || r == -ENOSPC) && joined_failed && deadline - now_ms() >= f->timeout_ms / 4) {
		log_debug("a fetch this read waited for failed, fetching again");
		r = ensure_round(f, chunks, n, intr, deadline, &joined_failed);
	}
	/* A failure that took (nearly) the whole timeout: the registry did not answer in time. */
	if (r == -EIO && deadline - now_ms() < MAX(f->timeout_ms / 10, FETCH_TIMED_OUT_MS))
		r = -ETIMEDOUT;
	return r;
}

uint64_t fetcher_read_around_bytes(struct fetcher *f, uint64_t max)
{
	uint64_t b;

	pthread_mutex_lock(&f->lock);
	b = link_estimate_bytes_per_round_trip(&f->link, max);
	pthread_mutex_unlock(&f->lock);
	return b;
}

int fetcher_read_unstored(struct fetcher *f, const char *digest, uint64_t off, size_t n,
			  void *dst)
{
	int r = -ENOENT;

	pthread_mutex_lock(&f->lock);
	for (struct unstored *u = f->unstored_old; u; u = u->next)
		if (streq(u->digest, digest) && off <= u->size && n <= u->size - off) {
			memcpy(dst, u->data + off, n);
			r = 0;
			break;
		}
	if (r < 0 && f->full)
		r = -ENOSPC;
	pthread_mutex_unlock(&f->lock);
	return r;
}

void fetcher_note_hit(struct fetcher *f)
{
	__atomic_add_fetch(&f->hits, 1, __ATOMIC_RELAXED);
}

void fetcher_get_stats(struct fetcher *f, struct fetch_stats *ret)
{
	pthread_mutex_lock(&f->lock);
	*ret = f->stats;
	pthread_mutex_unlock(&f->lock);
	ret->chunks_cached += __atomic_load_n(&f->hits, __ATOMIC_RELAXED);
}

/* Takes the next run from the head of the queue into @batch: queued chunks of one layer that
 * follow each other closely, within PREFETCH_REQUEST_MAX.  Called with f->lock held and the
 * queue not empty. */
static size_t prefetch_take(struct fetcher *f, struct fetch_chunk *batch)
{
	const struct fetch_chunk *first = &f->queue[f->queue_head];
	uint64_t start = first->blob_offset, end = start + first->blob_length;
	size_t n = 0;

	batch[n++] = *first;
	f->queue_head++;
	while (f->queue_head < f->queue_len && n < PREFETCH_BATCH_MAX) {
		const struct fetch_chunk *c = &f->queue[f->queue_head];
		uint64_t e = MAX(end, c->blob_offset + c->blob_length);

		if (c->layer != first->layer || c->blob_offset < start ||
		    c->blob_offset > end + FETCH_GAP_MAX || e - start > PREFETCH_REQUEST_MAX)
			break;
		end = e;
		batch[n++] = *c;
		f->queue_head++;
	}

	if (f->queue_head == f->queue_len) {
		f->queue_head = f->queue_len = 0;
	} else if (f->queue_head > f->queue_alloc / 2) {
		memmove(f->queue, f->queue + f->queue_head,
			(f->queue_len - f->queue_head) * sizeof(*f->queue));
		f->queue_len -= f->queue_head;
		f->queue_head = 0;
	}
	return n;
}

/* Fetches one batch taken from the queue; returns how many of it failed. */
static unsigned prefetch_batch(struct fetcher *f, struct fetch_chunk *batch, size_t n,
			       const struct fetch_chunk **missing, struct job *jobs,
			       struct flight **waits)
{
	int64_t deadline = now_ms() + FETCH_DEADLINE_MS;
	size_t n_missing = 0, n_jobs = 0, n_waits = 0;
	unsigned found = 0, failed = 0, failed_waits;
	uint64_t done;

	for (size_t i = 0; i < n; i++) {
		if (blob_store_has_size(f->bs, batch[i].digest, batch[i].size) == 1)
			found++;
		else
			missing[n_missing++] = &batch[i];
	}

	pthread_mutex_lock(&f->lock);
	f->stats.prefetch_done += found;
	f->prefetch_batch_counted = 0;
	failed += claim_all(f, missing, n_missing, OWNER_PREFETCH, jobs, &n_jobs, waits, &n_waits);
	pthread_mutex_unlock(&f->lock);

	jobs_drop_stored(f, jobs, &n_jobs);
	failed += fetch_jobs(f, jobs, n_jobs, PREFETCH_REQUEST_MAX, deadline);
	/* A chunk an ensure is fetching right now: its result counts for prefetch too. */
	failed_waits = flights_wait(f, waits, n_waits, deadline, true, NULL, NULL);
	failed += failed_waits;

	pthread_mutex_lock(&f->lock);
	done = n - found - failed;
	f->stats.prefetch_done += done > f->prefetch_batch_counted ?
				   done - f->prefetch_batch_counted : 0;
	pthread_mutex_unlock(&f->lock);
	return failed;
}

/* What cannot be stored is not fetched: while the store holds back, waits until a read stored
 * a chunk or until the next look at its free space, and returns true.  Called with f->lock
 * held. */
static bool prefetch_wait_for_room(struct fetcher *f)
{
	bool held;

	if (!f->full)
		return false;
	pthread_mutex_unlock(&f->lock);
	held = store_holds_back(f);
	pthread_mutex_lock(&f->lock);
	if (!held || f->stop)
		return false;
	(void)cond_wait_until(&f->prefetch_wake, &f->lock, f->full_retry_ms);
	return true;
}

static void *prefetch_thread(void *userdata)
{
	struct fetcher *f = userdata;
	_cleanup_free_ struct fetch_chunk *batch = NULL;
	_cleanup_free_ const struct fetch_chunk **missing = NULL;
	_cleanup_free_ struct job *jobs = NULL;
	_cleanup_free_ struct flight **waits = NULL;

	batch = calloc(PREFETCH_BATCH_MAX, sizeof(*batch));
	missing = calloc(PREFETCH_BATCH_MAX, sizeof(*missing));
	jobs = calloc(PREFETCH_BATCH_MAX, sizeof(*jobs));
	waits = calloc(PREFETCH_BATCH_MAX, sizeof(*waits));

	pthread_mutex_lock(&f->lock);
	if (!batch || !missing || !jobs || !waits) {
		log_debug("prefetch thread: out of memory, not prefetching");
		f->stats.prefetch_running = false;
		pthread_mutex_unlock(&f->lock);
		return NULL;
	}
	while (!f->stop) {
		size_t n;

		if (f->queue_head == f->queue_len) {
			f->stats.prefetch_running = false;
			(void)pthread_cond_wait(&f->prefetch_wake, &f->lock);
			continue;
		}
		f->stats.prefetch_running = true;
		/* A read always goes ahead of prefetch work. */
		if (f->ensures_active > 0) {
			(void)pthread_cond_wait(&f->prefetch_wake, &f->lock);
			continue;
		}
		if (prefetch_wait_for_room(f))
			continue;

		n = prefetch_take(f, batch);
		pthread_mutex_unlock(&f->lock);

		if (prefetch_batch(f, batch, n, missing, jobs, waits) > 0) {
			/* Do not hammer a registry that fails; reads will still try at once. */
			int64_t until = now_ms() + PREFETCH_FAILURE_PAUSE_MS;

			pthread_mutex_lock(&f->lock);
			while (!f->stop && cond_wait_until(&f->prefetch_wake, &f->lock, until) == 0)
				;
			continue;
		}
		pthread_mutex_lock(&f->lock);
	}
	f->stats.prefetch_running = false;
	pthread_mutex_unlock(&f->lock);
	return NULL;
}

/* Called with f->lock held. */
static int prefetch_start(struct fetcher *f)
{
	sigset_t all, old;
	int r;

	if (f->thread_started)
		return 0;
	/* Signals are the main thread's business. */
	(void)sigfillset(&all);
	(void)pthread_sigmask(SIG_SETMASK, &all, &old);
	r = -pthread_create(&f->thread, NULL, prefetch_thread, f);
	(void)pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r < 0)
		return log_debug_errno(r, "starting the prefetch thread failed: %m");
	f->thread_started = true;
	return 0;
}

int fetcher_prefetch(struct fetcher *f, const struct fetch_chunk *chunks, size_t n)
{
	_cleanup_free_ bool *skip = NULL;
	size_t added = 0;
	int r = 0;

	if (n == 0)
		return 0;
	skip = calloc(n, sizeof(*skip));
	if (!skip)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++)
		skip[i] = !chunk_valid(f, &chunks[i]) || blob_store_has_size(f->bs, chunks[i].digest, chunks[i].size) == 1;

	pthread_mutex_lock(&f->lock);
	for (size_t i = 0; i < n; i++) {
		if (skip[i] || digest_set_contains(&f->queued, chunks[i].digest))
			continue;
		if (f->queue_len == f->queue_alloc) {
			size_t na = f->queue_alloc ? f->queue_alloc * 2 : 256;
			struct fetch_chunk *q = realloc(f->queue, na * sizeof(*q));

			if (!q) {
				r = -ENOMEM;
				break;
			}
			f->queue = q;
			f->queue_alloc = na;
		}
		r = digest_set_add(&f->queued, chunks[i].digest);
		if (r < 0)
			break;
		f->queue[f->queue_len++] = chunks[i];
		added++;
	}
	f->stats.prefetch_total += added;
	if (added > 0) {
		int k = prefetch_start(f);

		if (k < 0 && r >= 0)
			r = k;
		if (k >= 0)
			f->stats.prefetch_running = true;
		(void)pthread_cond_broadcast(&f->prefetch_wake);
	}
	pthread_mutex_unlock(&f->lock);
	return r;
}

static int fetcher_init_sync(struct fetcher *f)
{
	pthread_condattr_t attr;
	int r;

	r = -pthread_condattr_init(&attr);
	if (r < 0)
		return r;
	r = -pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	if (r >= 0)
		r = -pthread_cond_init(&f->flight_done, &attr);
	if (r >= 0)
		r = -pthread_cond_init(&f->slot_free, &attr);
	if (r >= 0)
		r = -pthread_cond_init(&f->prefetch_wake, &attr);
	if (r >= 0)
		r = -pthread_cond_init(&f->task_done, &attr);
	(void)pthread_condattr_destroy(&attr);
	return r;
}

int fetcher_new(struct range_source *src, const struct fetcher_options *o, struct blob_store *bs,
		const struct fetch_layer *layers, size_t n_layers, struct fetcher **ret)
{
	_cleanup_(fetcher_freep) struct fetcher *f = NULL;
	int r;

	if (!src || !bs) {
		range_source_free(src);
		return -EINVAL;
	}
	f = calloc(1, sizeof(*f));
	if (!f) {
		range_source_free(src);
		return -ENOMEM;
	}
	/* fetcher_free() destroys these: initialise them first. */
	(void)pthread_mutex_init(&f->lock, NULL);
	r = fetcher_init_sync(f);
	if (r < 0) {
		range_source_free(src);
		free(TAKE_PTR(f));
		return r;
	}
	f->src = src;
	f->bs = bs;
	f->defer_sync = o && o->defer_sync;
	f->store_only = o && o->store_only;
	f->make_room = o ? o->make_room : NULL;
	f->make_room_userdata = o ? o->make_room_userdata : NULL;
	f->seek_failed = o ? o->seek_failed : NULL;
	f->seek_failed_userdata = o ? o->seek_failed_userdata : NULL;
	if (o && o->cache_dir) {
		f->cache_dir = strdup(o->cache_dir);
		if (!f->cache_dir)
			return -ENOMEM;
	}
	f->timeout_ms = o && o->timeout_ms > 0 ? o->timeout_ms : FETCH_DEADLINE_MS;
	f->request_max = !o || o->request_max == 0 ? FETCH_REQUEST_MAX :
			 o->request_max < FETCH_REQUEST_LIMIT ? o->request_max : FETCH_REQUEST_LIMIT;
	f->next_owner = OWNER_PREFETCH + 1;

	f->layers = calloc(n_layers ?: 1, sizeof(*f->layers));
	f->idle = calloc(FETCH_SLOTS_MAX, sizeof(*f->idle));
	f->seq = calloc(n_layers ?: 1, sizeof(*f->seq));
	if (!f->layers || !f->idle || !f->seq || seek_cursor_pool_new(&f->cursors) < 0)
		return -ENOMEM;
	for (size_t i = 0; i < n_layers; i++) {
		f->layers[i] = layers[i];
		f->layers[i].digest = NULL;
		f->n_layers++;
		if (!layers[i].digest)
			return -EINVAL;
		f->layers[i].digest = strdup(layers[i].digest);
		if (!f->layers[i].digest)
			return -ENOMEM;
	}
	*ret = TAKE_PTR(f);
	return 0;
}

int fetcher_new_for_image(const struct reference *ref, const struct manifest *m,
			  const struct registry_options *ro, const struct fetcher_options *o,
			  struct blob_store *bs, struct fetcher **ret)
{
	struct registry_options rso = ro ? *ro : (struct registry_options) {};
	long request_ms = o && o->timeout_ms > 0 ? o->timeout_ms : FETCH_REQUEST_TIMEOUT_MS;
	_cleanup_free_ struct fetch_layer *layers = NULL;
	struct range_source *src = NULL;
	int r;

	layers = calloc(m->n_layers ?: 1, sizeof(*layers));
	if (!layers)
		return -ENOMEM;
	for (size_t i = 0; i < m->n_layers; i++)
		layers[i] = (struct fetch_layer) {
			.digest = m->layers[i].digest,
			.compression = m->layers[i].compression,
			.size = m->layers[i].size,
		};
	/* Bounds one request, its own retries included: never past the call's timeout. */
	if (rso.timeout_ms <= 0 || rso.timeout_ms > request_ms)
		rso.timeout_ms = request_ms;
	r = source_range_new(ref, &rso, &src);
	if (r < 0)
		return r;
	return fetcher_new(src, o, bs, layers, m->n_layers, ret);
}

int fetcher_set_seek_index(struct fetcher *f, unsigned layer, struct seek_index *si)
{
	if (layer >= f->n_layers) {
		seek_index_free(si);
		return -EINVAL;
	}
	seek_cursor_pool_forget(f->cursors, f->layers[layer].seek);
	seek_index_free(f->layers[layer].seek);
	f->layers[layer].seek = si;
	return 0;
}

bool fetcher_layer_is_seek(struct fetcher *f, unsigned layer)
{
	return layer < f->n_layers && f->layers[layer].seek;
}

bool fetcher_chunk_proven(struct fetcher *f, unsigned layer, uint64_t blob_offset,
			  const uint8_t digest[32], uint64_t size)
{
	/* Other formats and trusted indexes: one test each, the read path's only extra cost. */
	if (layer >= f->n_layers || !f->layers[layer].seek)
		return true;
	return seek_index_chunk_proven(f->layers[layer].seek, blob_offset, digest, size);
}

static void fetcher_done(struct fetcher *f)
{
	/* Nobody waits for what is still in flight any more (the mount is gone). */
	__atomic_store_n(&f->cancel, true, __ATOMIC_RELAXED);
	if (f->src)
		range_source_cancel(f->src);
	pthread_mutex_lock(&f->lock);
	f->stop = true;
	(void)pthread_cond_broadcast(&f->prefetch_wake);
	(void)pthread_cond_broadcast(&f->flight_done);
	pthread_mutex_unlock(&f->lock);
	if (f->thread_started)
		(void)pthread_join(f->thread, NULL);
	/* Fetches that readers stopped waiting for: cancelled above, each ends within about a
	 * second. */
	pthread_mutex_lock(&f->lock);
	while (f->tasks_active > 0)
		(void)pthread_cond_wait(&f->task_done, &f->lock);
	pthread_mutex_unlock(&f->lock);

	/* No call is in progress any more, so no flight is left and every slot is idle. */
	assert(f->n_idle == f->n_slots);
	if (__atomic_load_n(&f->unsynced, __ATOMIC_RELAXED)) {
		int r = blob_store_sync(f->bs);

		if (r < 0)
			log_debug_errno(r, "syncing the chunks fetched ahead failed: %m");
	}
	for (size_t i = 0; i < f->n_idle; i++)
		range_conn_free(f->idle[i]);
	free(f->idle);
	range_source_free(f->src);
	for (size_t i = 0; i < FLIGHT_BUCKETS; i++)
		assert(!f->flights[i]);

	seek_cursor_pool_free(f->cursors);
	for (size_t i = 0; i < f->n_layers; i++) {
		free((char *)f->layers[i].digest);
		seek_index_free(f->layers[i].seek);
	}
	free(f->layers);
	free(f->seq);
	free(f->queue);
	digest_set_done(&f->queued);
	while (f->unstored_old) {
		struct unstored *u = f->unstored_old;

		f->unstored_old = u->next;
		free(u);
	}
	free(f->cache_dir);

	(void)pthread_cond_destroy(&f->flight_done);
	(void)pthread_cond_destroy(&f->slot_free);
	(void)pthread_cond_destroy(&f->prefetch_wake);
	(void)pthread_cond_destroy(&f->task_done);
	(void)pthread_mutex_destroy(&f->lock);
}
DEFINE_FREE_FUNC(struct fetcher, fetcher_free, fetcher_done);
