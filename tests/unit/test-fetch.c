/* tests/unit/test-fetch.c: missing chunks become verified blobs, once per digest, with as few
 * Range reads as possible; prefetch fills the store behind reads.  Layers are real
 * multi-member gzip (eStargz-like) and multi-frame zstd (zstd:chunked-like) blobs of an OCI
 * layout, read through the real range source of a local image (source_range_new()) that the
 * tests wrap to count its streams and make them slow or fail. */
#include "cache/fetch.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <zlib.h>
#include <zstd.h>

#include "cache/base/error.h"
#include "cache/base/log.h"
#include "cache/base/util.h"
#include "cache/registry/source.h"
#include "tap.h"

#define N_CHUNKS 6            /* adjacent chunks at the start of each layer */
#define GAP_CHUNK N_CHUNKS    /* layer 0 only: one more chunk behind a 128 KiB hole */
#define HOLE (128 * 1024)
#define EVENTS_MAX 256

enum { EV_START, EV_END };

struct event {
	int type;
	unsigned layer;
	uint64_t offset;
};

/* Shared by the readers of all layers. */
static pthread_mutex_t ev_lock = PTHREAD_MUTEX_INITIALIZER;
static struct event events[EVENTS_MAX];
static size_t n_events;

struct test_reader {
	unsigned layer;
	atomic_int calls;
	atomic_int in_read;
	atomic_bool fail;              /* reads fail with -EHOSTUNREACH */
	atomic_int fail_next;          /* so many reads (ending from now on) fail so */
	atomic_long slow_offset;       /* a read starting here sleeps slow_us; -1: none */
	atomic_long slow_us;
	atomic_bool slow_release;      /* the slow read ends now, however long it had left */
	atomic_long all_us;            /* every read sleeps this long */
};

struct layer_data {
	struct test_reader rd;
	struct fetch_layer fl;
	uint64_t size;
	unsigned n;
	struct fetch_chunk chunks[N_CHUNKS + 1];
	uint8_t *plain[N_CHUNKS + 1];
};

static struct layer_data L[2];
static char dir[] = "/tmp/test-fetch-XXXXXX";
static unsigned store_seq;

static void log_event(int type, unsigned layer, uint64_t offset)
{
	pthread_mutex_lock(&ev_lock);
	if (n_events < EVENTS_MAX)
		events[n_events++] = (struct event) { type, layer, offset };
	pthread_mutex_unlock(&ev_lock);
}

static void events_reset(void)
{
	pthread_mutex_lock(&ev_lock);
	n_events = 0;
	pthread_mutex_unlock(&ev_lock);
}

/* Decrements @n if it is above 0; whether it did. */
static bool take_one(atomic_int *n)
{
	int v = atomic_load(n);

	while (v > 0 && !atomic_compare_exchange_weak(n, &v, v - 1))
		;
	return v > 0;
}

/* The fetcher's range source here: the real one of the local layout, each stream counted,
 * logged, and slowed or failed as the layer's test_reader says. */
struct test_source {
	struct range_source base;
	struct range_source *local;
};

struct test_conn {
	struct range_conn base;
	struct range_conn *local;
};

/* A stream's bytes handed on in pieces that end anywhere in a chunk, as a network's do. */
#define PIECE 4000U

struct piece_sink {
	int (*sink)(void *userdata, const void *buf, size_t n);
	void *userdata;
};

static int piece_write(void *userdata, const void *buf, size_t n)
{
	struct piece_sink *p = userdata;
	int r = 0;

	for (size_t k = 0; r >= 0 && k < n; k += PIECE)
		r = p->sink(p->userdata, (const char *)buf + k, n - k < PIECE ? n - k : PIECE);
	return r;
}

/* A slow read sleeps slow_us, or less if the test lets it go: a test that asserts what happens
 * while it is still in progress gives it a bound no loaded machine reaches (SLOW_HELD_US: a call
 * that wrongly waited for it returns only after that), then releases it. */
#define SLOW_HELD_US ((long)(10000000 * TAP_TIME_SCALE))
static void slow_read_wait(struct test_reader *rd)
{
	for (long t = 0; t < rd->slow_us && !rd->slow_release; t += 10000)
		usleep(10000);
}

static int test_connect(struct range_source *s, struct range_conn **ret)
{
	struct test_source *ts = (struct test_source *)s;
	struct test_conn *c = calloc(1, sizeof(*c));
	int r;

	if (!c)
		return -ENOMEM;
	r = range_source_connect(ts->local, &c->local);
	if (r < 0) {
		free(c);
		return r;
	}
	c->base.source = s;
	*ret = &c->base;
	return 0;
}

static int test_stream(struct range_conn *rc, const char *digest, uint64_t size,
		       uint64_t offset, uint64_t len,
		       int (*sink)(void *userdata, const void *buf, size_t n), void *userdata)
{
	struct test_conn *c = (struct test_conn *)rc;
	struct test_reader *rd = &L[strcmp(digest, L[0].fl.digest) == 0 ? 0 : 1].rd;
	struct piece_sink p = { sink, userdata };

	rd->calls++;
	rd->in_read++;
	log_event(EV_START, rd->layer, offset);
	if (rd->all_us > 0)
		usleep(rd->all_us);
	if ((long)offset == rd->slow_offset)
		slow_read_wait(rd);
	log_event(EV_END, rd->layer, offset);
	rd->in_read--;
	if (rd->fail || take_one(&rd->fail_next))
		return error_set(-EHOSTUNREACH, "failed as the test asked");
	return range_conn_stream(c->local, digest, size, offset, len, piece_write, &p);
}

static void test_disconnect(struct range_conn *rc)
{
	range_conn_free(((struct test_conn *)rc)->local);
	free(rc);
}

static void test_cancel(struct range_source *s)
{
	range_source_cancel(((struct test_source *)s)->local);
}

static void test_source_free(struct range_source *s)
{
	range_source_free(((struct test_source *)s)->local);
	free(s);
}

static const struct range_source_ops test_source_ops = {
	.connect = test_connect, .stream = test_stream,
	.disconnect = test_disconnect, .cancel = test_cancel, .free = test_source_free,
};

/* The local layout's range source, wrapped. */
static struct range_source *test_source_new(void)
{
	_cleanup_(reference_freep) struct reference *ref = NULL;
	struct test_source *ts = calloc(1, sizeof(*ts));
	char name[600];

	snprintf(name, sizeof(name), "oci:%s/layout", dir);
	if (!ts || reference_parse(name, &ref) < 0 ||
	    source_range_new(ref, NULL, &ts->local) < 0)
		abort();
	ts->base.ops = &test_source_ops;
	return &ts->base;
}

static void reader_reset(void)
{
	for (unsigned l = 0; l < 2; l++) {
		L[l].rd.calls = 0;
		L[l].rd.fail = false;
		L[l].rd.fail_next = 0;
		L[l].rd.slow_offset = -1;
		L[l].rd.slow_us = 0;
		L[l].rd.slow_release = false;
		L[l].rd.all_us = 0;
	}
	events_reset();
}

static int calls(void)
{
	return L[0].rd.calls + L[1].rd.calls;
}

static size_t gzip_member(const uint8_t *in, size_t len, uint8_t *out, size_t max)
{
	z_stream z = {};
	size_t n;

	if (deflateInit2(&z, 6, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY) != Z_OK)
		abort();
	z.next_in = (uint8_t *)in;
	z.avail_in = len;
	z.next_out = out;
	z.avail_out = max;
	if (deflate(&z, Z_FINISH) != Z_STREAM_END)
		abort();
	n = max - z.avail_out;
	deflateEnd(&z);
	return n;
}

/* Moves the layer file @path (open as @fd, @ld->size bytes) into the layout, named by its
 * digest. */
static int layer_store(struct layer_data *ld, int fd, const char *path)
{
	char digest[DIGEST_STRING_MAX], blob[600];
	uint8_t *bytes = malloc(ld->size);

	if (!bytes || pread(fd, bytes, ld->size, 0) != (ssize_t)ld->size)
		return -EIO;
	digest_buffer(bytes, ld->size, digest);
	free(bytes);
	snprintf(blob, sizeof(blob), "%s/layout/blobs/sha256/%s", dir, digest + strlen("sha256:"));
	if (rename(path, blob) < 0)
		return -errno;
	ld->fl.digest = strdup(digest);
	ld->fl.size = ld->size;
	return 0;
}

/* Writes layer @l into the layout, named by its digest: N_CHUNKS chunks back to back (layer
 * 0 also a hole and one more chunk), each its own gzip member or zstd frame, with contents
 * that compress only partly. */
static int layer_build(unsigned l, enum layer_compression comp)
{
	struct layer_data *ld = &L[l];
	char path[512];
	uint8_t *out;
	uint64_t off = 0;
	size_t max = 1 << 20;
	_cleanup_close_ int fd = -EBADF;

	ld->n = l == 0 ? N_CHUNKS + 1 : N_CHUNKS;
	out = malloc(max);
	snprintf(path, sizeof(path), "%s/layer%u", dir, l);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	ld->fl.compression = comp;
	if (fd < 0 || !out)
		return -errno;

	for (unsigned i = 0; i < ld->n; i++) {
		size_t size = 20000 + 3000 * i + 1000 * l, clen;
		uint8_t *p = malloc(size);
		uint32_t x = 12345 + 777 * i + 99 * l;

		for (size_t k = 0; k < size; k++) {
			x = x * 1103515245 + 12345;
			p[k] = (k % 7 == 0) ? (uint8_t)(x >> 16) : (uint8_t)('a' + k % 13);
		}
		if (i == GAP_CHUNK)
			off += HOLE;
		if (comp == LAYER_COMPRESSION_GZIP)
			clen = gzip_member(p, size, out, max);
		else
			clen = ZSTD_compress(out, max, p, size, 3);
		if (pwrite(fd, out, clen, off) != (ssize_t)clen)
			return -EIO;
		ld->plain[i] = p;
		ld->chunks[i] = (struct fetch_chunk) {
			.layer = l, .blob_offset = off, .blob_length = clen, .size = size,
		};
		digest_buffer(p, size, ld->chunks[i].digest);
		off += clen;
	}
	free(out);

	ld->size = off;
	ld->rd.layer = l;
	return layer_store(ld, fd, path);
}

/* An OCI layout of the two layers (a layout without images: only its blobs are read). */
static int layout_build(void)
{
	const char *parts[] = { "layout", "layout/blobs", "layout/blobs/sha256" };
	_cleanup_close_ int fd = -EBADF;
	char path[600];
	int r;

	for (size_t i = 0; i < 3; i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, parts[i]);
		if (mkdir(path, 0700) < 0)
			return -errno;
	}
	snprintf(path, sizeof(path), "%s/layout/oci-layout", dir);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || dprintf(fd, "{\"imageLayoutVersion\": \"1.0.0\"}\n") < 0)
		return -EIO;
	r = layer_build(0, LAYER_COMPRESSION_GZIP);
	return r < 0 ? r : layer_build(1, LAYER_COMPRESSION_ZSTD);
}

struct env {
	struct blob_store *bs;
	struct fetcher *f;
};

static void env_new_timeout(struct env *e, long timeout_ms)
{
	struct fetch_layer layers[2] = { L[0].fl, L[1].fl };
	struct fetcher_options o = { .timeout_ms = timeout_ms };
	char path[512];
	int r;

	reader_reset();
	snprintf(path, sizeof(path), "%s/store%u", dir, store_seq++);
	r = blob_store_open(path, &e->bs);
	if (r < 0)
		abort();
	r = fetcher_new(test_source_new(), &o, e->bs, layers, 2, &e->f);
	if (r < 0)
		abort();
}

static void env_new(struct env *e)
{
	env_new_timeout(e, 0);
}

static void env_done(struct env *e)
{
	e->f = fetcher_free(e->f);
	e->bs = blob_store_free(e->bs);
}

/* 1 if the blob of @c is stored with exactly its plain bytes, 0 if absent, -1 if wrong. */
static int stored_right(struct env *e, unsigned l, unsigned i)
{
	const struct fetch_chunk *c = &L[l].chunks[i];
	_cleanup_close_ int fd = -EBADF;
	_cleanup_free_ uint8_t *buf = malloc(c->size + 1);
	ssize_t n;

	if (blob_store_open_blob(e->bs, c->digest, &fd) < 0)
		return 0;
	n = read(fd, buf, c->size + 1);
	return n == (ssize_t)c->size && memcmp(buf, L[l].plain[i], c->size) == 0 ? 1 : -1;
}

static void wait_until_reading(unsigned l)
{
	for (int i = 0; i < 5000 && L[l].rd.in_read == 0; i++)
		usleep(1000);
}

static void test_basic(void)
{
	struct env e;
	struct fetch_stats st;
	int r;

	env_new(&e);
	r = fetcher_ensure(e.f, &L[0].chunks[2], 1);
	check(r == 0, "ensure of a missing gzip chunk succeeds (r=%d)", r);
	check(stored_right(&e, 0, 2) == 1, "the chunk is stored with its decompressed contents");
	check(calls() == 1, "one read for one chunk (%d)", calls());
	r = fetcher_ensure(e.f, &L[0].chunks[2], 1);
	check(r == 0 && calls() == 1, "a second ensure of a stored chunk costs no read (%d)",
	      calls());
	fetcher_note_hit(e.f);
	fetcher_get_stats(e.f, &st);
	check(st.requests == 1 && st.chunks_fetched == 1 && st.chunks_cached == 1 &&
	      st.chunks_failed == 0 && st.bytes_fetched == L[0].chunks[2].blob_length,
	      "stats count one request, its bytes, one fetched and one cached chunk");
	env_done(&e);
}

static void test_merge(void)
{
	struct fetch_chunk rev[N_CHUNKS], pair[2];
	struct fetch_stats st;
	struct env e;
	bool all = true;
	int r;

	env_new(&e);
	for (unsigned i = 0; i < N_CHUNKS; i++)
		rev[i] = L[1].chunks[N_CHUNKS - 1 - i];
	r = fetcher_ensure(e.f, rev, N_CHUNKS);
	check(r == 0, "ensure of %d adjacent zstd chunks in reverse order succeeds (r=%d)",
	      N_CHUNKS, r);
	check(calls() == 1, "adjacent chunks cost one read (%d)", calls());
	for (unsigned i = 0; i < N_CHUNKS; i++)
		all = all && stored_right(&e, 1, i) == 1;
	check(all, "every zstd chunk is stored with its contents");
	fetcher_get_stats(e.f, &st);
	check(st.requests == 1 && st.chunks_fetched == N_CHUNKS, "stats: 1 request, %d chunks",
	      N_CHUNKS);

	/* Chunks 0 and 2 with 1 between: the small gap is read along. */
	reader_reset();
	pair[0] = L[0].chunks[0];
	pair[1] = L[0].chunks[2];
	r = fetcher_ensure(e.f, pair, 2);
	check(r == 0 && calls() == 1, "chunks with a small gap between cost one read (%d)",
	      calls());
	check(stored_right(&e, 0, 1) == 0, "the chunk in the gap is not stored");

	/* Chunk 5 and the one behind the 128 KiB hole: two reads. */
	reader_reset();
	pair[0] = L[0].chunks[N_CHUNKS - 1];
	pair[1] = L[0].chunks[GAP_CHUNK];
	r = fetcher_ensure(e.f, pair, 2);
	check(r == 0 && calls() == 2, "chunks 128 KiB apart cost two reads (%d)", calls());
	check(stored_right(&e, 0, GAP_CHUNK) == 1, "the chunk behind the hole is stored");

	/* The same digest twice in one call. */
	reader_reset();
	pair[0] = L[0].chunks[3];
	pair[1] = L[0].chunks[3];
	r = fetcher_ensure(e.f, pair, 2);
	fetcher_get_stats(e.f, &st);
	check(r == 0 && calls() == 1, "a digest requested twice in one call is read once (%d)",
	      calls());
	env_done(&e);
}

/* Chunks whose compressed ranges overlap (a hostile or odd TOC): each is stored right, from
 * one read, whatever their order. */
static void test_overlap(void)
{
	const struct fetch_chunk *a = &L[1].chunks[1], *b = &L[1].chunks[2];
	struct fetch_chunk set[3], both = *a;
	_cleanup_free_ uint8_t *plain = malloc(a->size + b->size);
	struct env e;
	int r;

	/* "both" spans a and b: their two zstd frames decompress to both plain texts. */
	memcpy(plain, L[1].plain[1], a->size);
	memcpy(plain + a->size, L[1].plain[2], b->size);
	both.blob_length = a->blob_length + b->blob_length;
	both.size = a->size + b->size;
	digest_buffer(plain, both.size, both.digest);

	env_new(&e);
	set[0] = *b;
	set[1] = both;
	set[2] = *a;
	r = fetcher_ensure(e.f, set, 3);
	check(r == 0 && calls() == 1, "overlapping chunks are fetched with one read (r=%d, %d)", r,
	      calls());
	check(stored_right(&e, 1, 1) == 1 && stored_right(&e, 1, 2) == 1 &&
	      blob_store_has_size(e.bs, both.digest, both.size) == 1,
	      "each of three overlapping chunks is stored with its contents");
	env_done(&e);
}

static void test_verify(void)
{
	struct fetch_chunk run[3], bad;
	struct fetch_stats st;
	struct env e;
	int r;

	env_new(&e);
	run[0] = L[0].chunks[0];
	run[1] = L[0].chunks[1];
	run[2] = L[0].chunks[2];
	/* The middle chunk claims the contents of chunk 4. */
	memcpy(run[1].digest, L[0].chunks[4].digest, sizeof(run[1].digest));
	r = fetcher_ensure(e.f, run, 3);
	check(r == -EIO, "a chunk that does not hash to its digest fails with -EIO (r=%d)", r);
	check(calls() == 1, "the run is still one read (%d)", calls());
	check(stored_right(&e, 0, 4) == 0, "nothing is stored under the wrong digest");
	check(stored_right(&e, 0, 0) == 1 && stored_right(&e, 0, 2) == 1,
	      "its neighbours in the run are stored");
	fetcher_get_stats(e.f, &st);
	check(st.chunks_failed == 1 && st.chunks_fetched == 2, "stats: 1 failed, 2 fetched");

	/* A chunk whose compressed bytes are cut short does not decompress. */
	bad = L[0].chunks[3];
	bad.blob_length /= 2;
	r = fetcher_ensure(e.f, &bad, 1);
	check(r == -EIO && stored_right(&e, 0, 3) == 0, "a truncated gzip member fails (r=%d)", r);

	/* A range past the layer's end is refused without a read. */
	reader_reset();
	bad = L[1].chunks[N_CHUNKS - 1];
	bad.blob_length += 1;
	r = fetcher_ensure(e.f, &bad, 1);
	check(r == -EIO && calls() == 0, "a range past the layer's size fails without a read");
	bad = L[1].chunks[0];
	bad.layer = 7;
	r = fetcher_ensure(e.f, &bad, 1);
	check(r == -EIO && calls() == 0, "a chunk of an unknown layer fails without a read");
	env_done(&e);
}

struct racer {
	struct fetcher *f;
	const struct fetch_chunk *c;
	int r;
	int64_t done_ms;
};

static void *racer_run(void *p)
{
	struct racer *x = p;

	x->r = fetcher_ensure(x->f, x->c, 1);
	x->done_ms = now_ms();
	return NULL;
}

static void test_single_flight(void)
{
	struct racer racers[8];
	pthread_t threads[8];
	struct env e;
	bool ok = true;

	env_new(&e);
	L[1].rd.all_us = 200000;
	for (unsigned i = 0; i < 8; i++) {
		racers[i] = (struct racer) { .f = e.f, .c = &L[1].chunks[3] };
		pthread_create(&threads[i], NULL, racer_run, &racers[i]);
	}
	for (unsigned i = 0; i < 8; i++) {
		pthread_join(threads[i], NULL);
		ok = ok && racers[i].r == 0;
	}
	check(ok, "8 threads ensuring one chunk at once all succeed");
	check(calls() == 1, "and cause one read (%d)", calls());
	check(stored_right(&e, 1, 3) == 1, "the chunk is stored");
	env_done(&e);
}

struct waiter {
	struct fetcher *f;
	const struct fetch_chunk *c;
	struct fetch_interrupt intr;
	int r;
	int64_t done_ms;
};

static void *waiter_run(void *p)
{
	struct waiter *x = p;

	x->r = fetcher_ensure_interruptible(x->f, x->c, 1, &x->intr);
	x->done_ms = now_ms();
	return NULL;
}

static void test_interrupt(void)
{
	struct waiter a, b, late = {};
	pthread_t ta, tb;
	struct env e;
	int64_t t0;
	int r;

	env_new(&e);
	L[1].rd.all_us = 800000;
	a = (struct waiter) { .f = e.f, .c = &L[1].chunks[2] };
	b = (struct waiter) { .f = e.f, .c = &L[1].chunks[2] };
	pthread_create(&ta, NULL, waiter_run, &a);
	wait_until_reading(1);
	pthread_create(&tb, NULL, waiter_run, &b);
	usleep(50000);

	t0 = now_ms();
	fetcher_interrupt(e.f, &a.intr);
	pthread_join(ta, NULL);
	check(a.r == -EINTR && L[1].rd.in_read == 1,
	      "the interrupted fetching call returns -EINTR while its read goes on (%d, %lld ms)",
	      a.r, (long long)(a.done_ms - t0));
	pthread_join(tb, NULL);
	/* one read in all (below): b got its chunk from the read it waited for */
	check(b.r == 0, "the other caller of the same chunk waits for that read and succeeds (%d)",
	      b.r);
	check(calls() == 1 && stored_right(&e, 1, 2) == 1, "one read, the chunk is stored");

	/* Interrupted before it starts: returns at once, the fetch still happens. */
	late = (struct waiter) { .f = e.f, .c = &L[1].chunks[4] };
	fetcher_interrupt(e.f, &late.intr);
	t0 = now_ms();
	r = fetcher_ensure_interruptible(e.f, &L[1].chunks[4], 1, &late.intr);
	check(r == -EINTR && stored_right(&e, 1, 4) == 0,
	      "an interrupt that came first: -EINTR before the chunk is in (%lld ms)",
	      (long long)(now_ms() - t0));
	r = fetcher_ensure(e.f, &L[1].chunks[4], 1);
	check(r == 0 && calls() == 2 && stored_right(&e, 1, 4) == 1,
	      "a later call joins the fetch that went on and gets the chunk (%d calls)", calls());
	env_done(&e);
}

static void test_timeout(void)
{
	struct waiter a;
	struct env e;
	int64_t t0;
	int r;

	env_new_timeout(&e, 300);
	L[0].rd.all_us = 1200000;
	a = (struct waiter) { .f = e.f, .c = &L[0].chunks[3] };
	t0 = now_ms();
	waiter_run(&a);
	check(a.r == -ETIMEDOUT && a.done_ms - t0 >= 250 && L[0].rd.in_read == 1,
	      "a read slower than the timeout: -ETIMEDOUT after the timeout, before the read ends "
	      "(%d, %lld ms)", a.r, (long long)(a.done_ms - t0));
	wait_until_reading(0);
	for (int i = 0; i < 3000 && L[0].rd.in_read > 0; i++)
		usleep(1000);
	L[0].rd.all_us = 0;
	r = fetcher_ensure(e.f, &L[0].chunks[3], 1);
	check(r == 0 && stored_right(&e, 0, 3) == 1,
	      "the failure is not remembered: the chunk is there afterwards");
	/* A call whose fetch is still running when the fetcher is freed: free waits for it. */
	L[0].rd.all_us = 400000;
	a = (struct waiter) { .f = e.f, .c = &L[0].chunks[5] };
	fetcher_interrupt(e.f, &a.intr);
	waiter_run(&a);
	check(a.r == -EINTR, "an interrupted call leaves its fetch running");
	wait_until_reading(0);
	t0 = now_ms();
	env_done(&e);
	check(L[0].rd.in_read == 0, "freeing the fetcher waits for that fetch (%lld ms)",
	      (long long)(now_ms() - t0));
}

static void test_no_blocking(void)
{
	struct racer a, c;
	pthread_t ta, tc;
	struct env e;
	int64_t t0, t1;
	int r;

	env_new(&e);
	r = fetcher_ensure(e.f, &L[0].chunks[1], 1);
	check(r == 0, "chunk B is stored first");

	L[0].rd.slow_offset = (long)L[0].chunks[4].blob_offset;
	L[0].rd.slow_us = SLOW_HELD_US;
	a = (struct racer) { .f = e.f, .c = &L[0].chunks[4] };
	pthread_create(&ta, NULL, racer_run, &a);
	wait_until_reading(0);

	t0 = now_ms();
	r = fetcher_ensure(e.f, &L[0].chunks[1], 1);
	t1 = now_ms();
	check(r == 0 && L[0].rd.in_read == 1,
	      "ensure of stored chunk B returns while A's read sleeps (%lld ms)",
	      (long long)(t1 - t0));

	c = (struct racer) { .f = e.f, .c = &L[1].chunks[2] };
	pthread_create(&tc, NULL, racer_run, &c);
	pthread_join(tc, NULL);
	check(c.r == 0 && L[0].rd.in_read == 1,
	      "a missing chunk of another layer is fetched while A's read sleeps");

	L[0].rd.slow_release = true;
	pthread_join(ta, NULL);
	check(a.r == 0 && stored_right(&e, 0, 4) == 1, "the slow chunk A is stored in the end");
	env_done(&e);
}

static bool wait_prefetch(struct fetcher *f, struct fetch_stats *st)
{
	for (int i = 0; i < 10000; i++) {
		fetcher_get_stats(f, st);
		if (st->prefetch_done == st->prefetch_total && !st->prefetch_running)
			return true;
		usleep(1000);
	}
	return false;
}

static void test_prefetch(void)
{
	struct fetch_chunk all[2 * N_CHUNKS + 1];
	struct fetch_stats st;
	struct env e;
	unsigned n = 0;
	bool ok = true;
	int r;

	env_new(&e);
	r = fetcher_ensure(e.f, &L[0].chunks[0], 1);
	check(r == 0, "one chunk is stored before prefetch");
	reader_reset();
	for (unsigned l = 0; l < 2; l++)
		for (unsigned i = 0; i < L[l].n; i++)
			all[n++] = L[l].chunks[i];
	r = fetcher_prefetch(e.f, all, n);
	check(r == 0, "prefetch queues");
	r = fetcher_prefetch(e.f, all, n);
	check(r == 0, "queueing the same chunks again is harmless");
	check(wait_prefetch(e.f, &st), "prefetch finishes");
	check(st.prefetch_total == n - 1 && st.prefetch_done == st.prefetch_total,
	      "prefetch_done == prefetch_total == %u (total %llu, done %llu)", n - 1,
	      (unsigned long long)st.prefetch_total, (unsigned long long)st.prefetch_done);
	for (unsigned l = 0; l < 2; l++)
		for (unsigned i = 0; i < L[l].n; i++)
			ok = ok && stored_right(&e, l, i) == 1;
	check(ok, "every chunk is in the store");
	/* Layer 0: chunks 1-5, then the one behind the hole; layer 1: chunks 0-5. */
	check(calls() == 3, "prefetch merged adjacent chunks (%d reads)", calls());
	r = fetcher_ensure(e.f, all, n);
	check(r == 0 && calls() == 3, "ensure after prefetch costs no read");
	env_done(&e);
}

static void test_prefetch_yields(void)
{
	struct fetch_stats st;
	struct racer a;
	pthread_t ta;
	struct env e;
	size_t end_a = SIZE_MAX, first_prefetch = SIZE_MAX;

	env_new(&e);
	L[0].rd.slow_offset = (long)L[0].chunks[0].blob_offset;
	L[0].rd.slow_us = 300000;
	a = (struct racer) { .f = e.f, .c = &L[0].chunks[0] };
	pthread_create(&ta, NULL, racer_run, &a);
	wait_until_reading(0);

	check(fetcher_prefetch(e.f, L[1].chunks, N_CHUNKS) == 0, "prefetch queued during a read");
	pthread_join(ta, NULL);
	check(a.r == 0, "the read succeeds");
	check(wait_prefetch(e.f, &st) && st.prefetch_done == N_CHUNKS, "prefetch finishes after it");

	pthread_mutex_lock(&ev_lock);
	for (size_t i = 0; i < n_events; i++) {
		if (events[i].type == EV_END && events[i].layer == 0 && end_a == SIZE_MAX)
			end_a = i;
		if (events[i].type == EV_START && events[i].layer == 1 && first_prefetch == SIZE_MAX)
			first_prefetch = i;
	}
	pthread_mutex_unlock(&ev_lock);
	check(end_a != SIZE_MAX && first_prefetch != SIZE_MAX && end_a < first_prefetch,
	      "prefetch reads start only after the read ended (events %zu < %zu)", end_a,
	      first_prefetch);
	env_done(&e);
}

/* A read that joined another call's fetch, which then failed for good (its deadline came), is
 * not failed with it: with time left it fetches the chunk itself. */
static void test_joined_failure_is_not_inherited(void)
{
	struct racer a, b;
	pthread_t ta, tb;
	struct env e;

	env_new_timeout(&e, 1000 * TAP_TIME_SCALE);
	L[1].rd.slow_offset = (long)L[1].chunks[2].blob_offset;
	L[1].rd.slow_us = 950000 * TAP_TIME_SCALE;
	a = (struct racer) { .f = e.f, .c = &L[1].chunks[2] };
	pthread_create(&ta, NULL, racer_run, &a);
	wait_until_reading(1);
	usleep(400000 * TAP_TIME_SCALE);
	/* a's read ends at 950 ms and fails; no time is left for a's retry. */
	L[1].rd.slow_offset = -1;
	L[1].rd.fail_next = 1;
	b = (struct racer) { .f = e.f, .c = &L[1].chunks[2] };
	pthread_create(&tb, NULL, racer_run, &b);
	pthread_join(ta, NULL);
	pthread_join(tb, NULL);
	check(a.r == -ETIMEDOUT, "the call whose own fetch failed by its deadline gets -ETIMEDOUT (%d)",
	      a.r);
	check(b.r == 0 && stored_right(&e, 1, 2) == 1,
	      "the call that joined it fetches again and gets the chunk (%d, %d reads)", b.r,
	      calls());
	check(calls() == 2, "two reads in all: the failed one and the joined call's own");
	env_done(&e);
}

/* Chunks marked ahead ride along but are not waited for, fail nobody, and do not hold back the
 * runs that readers need. */
static void test_ahead_is_not_waited_for(void)
{
	struct fetch_interrupt intr = {};
	struct fetch_chunk cs[2];
	struct fetch_stats st;
	struct racer a;
	pthread_t ta;
	struct env e;
	struct event first;
	int64_t t0, took;
	int r;

	env_new(&e);
	/* The needed chunk sorts after the one fetched ahead (layer 1 > layer 0). */
	cs[0] = L[0].chunks[1];
	cs[0].ahead = true;
	cs[1] = L[1].chunks[1];
	L[0].rd.slow_offset = (long)L[0].chunks[1].blob_offset;
	L[0].rd.slow_us = SLOW_HELD_US;
	t0 = now_ms();
	r = fetcher_ensure_interruptible(e.f, cs, 2, &intr);
	took = now_ms() - t0;
	/* The slow read is held for SLOW_HELD_US: a call that waited for it took that long.  The
	 * task that fetches it may start its read only after the call returned. */
	check(r == 0 && took * 1000 < SLOW_HELD_US / 2 && stored_right(&e, 1, 1) == 1,
	      "the call returns once its own chunk is in, not after the slow one fetched ahead "
	      "(%d, %lld ms)", r, (long long)took);
	wait_until_reading(0);
	check(L[0].rd.in_read == 1, "the chunk fetched ahead is being read meanwhile");
	L[0].rd.slow_release = true;
	pthread_mutex_lock(&ev_lock);
	first = events[0];
	pthread_mutex_unlock(&ev_lock);
	check(first.type == EV_START && first.layer == 1,
	      "the run holding the needed chunk is requested first");
	r = fetcher_ensure(e.f, &L[0].chunks[1], 1);
	check(r == 0 && stored_right(&e, 0, 1) == 1 && calls() == 2,
	      "a later call for the chunk fetched ahead joins that fetch: no third read (%d)",
	      calls());

	/* Another call fetches a chunk slowly: asking for it ahead does not wait for it. */
	L[0].rd.slow_release = false;
	L[0].rd.slow_offset = (long)L[0].chunks[4].blob_offset;
	a = (struct racer) { .f = e.f, .c = &L[0].chunks[4] };
	pthread_create(&ta, NULL, racer_run, &a);
	wait_until_reading(0);
	cs[0] = L[0].chunks[4];
	cs[0].ahead = true;
	cs[1] = L[1].chunks[4];
	t0 = now_ms();
	r = fetcher_ensure(e.f, cs, 2);
	took = now_ms() - t0;
	check(r == 0 && L[0].rd.in_read == 1 && stored_right(&e, 1, 4) == 1,
	      "a chunk another call is fetching, asked for ahead, is not waited for (%lld ms)",
	      (long long)took);
	L[0].rd.slow_release = true;
	pthread_join(ta, NULL);
	check(a.r == 0 && stored_right(&e, 0, 4) == 1, "and that call gets it");

	/* A chunk fetched ahead that cannot be fetched fails nobody. */
	L[0].rd.slow_offset = -1;
	L[0].rd.fail = true;
	cs[0] = L[0].chunks[3];
	cs[0].ahead = true;
	cs[1] = L[1].chunks[3];
	r = fetcher_ensure(e.f, cs, 2);
	fetcher_get_stats(e.f, &st);
	check(r == 0 && stored_right(&e, 1, 3) == 1 && stored_right(&e, 0, 3) == 0,
	      "a failing chunk fetched ahead does not fail the call (%d)", r);
	check(st.chunks_failed == 1, "but counts as failed in the stats (%llu)",
	      (unsigned long long)st.chunks_failed);
	env_done(&e);
}

static void test_failure(void)
{
	struct fetch_stats st;
	struct env e;
	int64_t t0;
	int r;

	env_new(&e);
	L[1].rd.fail = true;
	t0 = now_ms();
	r = fetcher_ensure(e.f, &L[1].chunks[1], 1);
	check(r == -EIO, "a failing reader gives -EIO (r=%d)", r);
	check(calls() >= 1 && calls() <= 3 && now_ms() - t0 < 5000 * TAP_TIME_SCALE,
	      "after a few quick attempts (%d)", calls());
	check(stored_right(&e, 1, 1) == 0, "nothing is stored");
	fetcher_get_stats(e.f, &st);
	check(st.chunks_failed == 1, "stats: 1 failed");

	L[1].rd.fail = false;
	r = fetcher_ensure(e.f, &L[1].chunks[1], 1);
	check(r == 0 && stored_right(&e, 1, 1) == 1,
	      "when the source comes back a new ensure succeeds (r=%d)", r);
	env_done(&e);
}

static void test_free_stops_prefetch(void)
{
	struct fetch_chunk q[2 * N_CHUNKS];
	struct env e;
	int64_t t0, t1;
	int started;

	env_new(&e);
	/* Alternating layers: each chunk is its own request, each 200 ms. */
	for (unsigned i = 0; i < N_CHUNKS; i++) {
		q[2 * i] = L[0].chunks[i];
		q[2 * i + 1] = L[1].chunks[i];
	}
	L[0].rd.all_us = L[1].rd.all_us = 200000;
	check(fetcher_prefetch(e.f, q, 2 * N_CHUNKS) == 0, "a long prefetch is queued");
	wait_until_reading(0);
	started = calls();
	t0 = now_ms();
	e.f = fetcher_free(e.f);
	t1 = now_ms();
	check(calls() <= started + 1 && L[0].rd.in_read == 0 && L[1].rd.in_read == 0,
	      "fetcher_free stops prefetch after at most one request (%lld ms, %d reads, %d then)",
	      (long long)(t1 - t0), calls(), started);
	env_done(&e);
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st, (void)flag, (void)ftw;
	return remove(path);
}

int main(void)
{
	if (getenv("TEST_DEBUG"))
		log_set_level(LOG_LEVEL_DEBUG);
	if (!mkdtemp(dir)) {
		printf("Bail out! mkdtemp: %m\n");
		return 1;
	}
	if (layout_build() < 0) {
		printf("Bail out! building layers: %m\n");
		return 1;
	}

	test_basic();
	test_merge();
	test_overlap();
	test_verify();
	test_single_flight();
	test_no_blocking();
	test_interrupt();
	test_timeout();
	test_prefetch();
	test_prefetch_yields();
	test_failure();
	test_joined_failure_is_not_inherited();
	test_ahead_is_not_waited_for();
	test_free_stops_prefetch();

	for (unsigned l = 0; l < 2; l++) {
		free((char *)L[l].fl.digest);
		for (unsigned i = 0; i < L[l].n; i++)
			free(L[l].plain[i]);
	}
	(void)nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	return tap_done();
}
