/*
 * fs/read_path.c: see read_path.h.  A read finds the chunks it overlaps (a binary search in
 * the tree's chunk list), serves each stored one from its open blob and collects the missing
 * ones; if any is missing, one fetcher call brings them in, together with fetch-ahead and
 * read-around chunks that it does not wait for, and the collected chunks are served then.
 * A read inside one chunk hands out that chunk's blob fd (splice); any other is assembled in
 * a buffer.
 *
 * Load: every FUSE read of a file comes here, from up to 64 threads; a read of a stored file
 * costs a stat of the tree, a binary search, a blob fd cache lookup and no allocation unless
 * it spans chunks.  Only a miss allocates its plan and calls the fetcher.
 *
 * A file of a layer read through an untrusted seek index is a miss, stored or not, until the
 * fetcher checked its tar records in this mount (docs/security.md, "Seek indexes"): the store
 * is keyed by digest, so stored bytes may be any layer's.  Other files pay one test for it.
 */
#include "read_path.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cache/base/log.h"
#include "cache/base/trace.h"
#include "cache/base/util.h"
#include "cache/store/blob_store.h"
#include "fs/exec_ahead.h"
#include "fs/local_readahead.h"
#include "fs/profile.h"
#include "fs/read_around.h"
#include "fs/task_io.h"

/* On a miss, the chunks that follow in the file come along, up to this many bytes. */
#define FETCH_AHEAD (2u << 20)
/* How far past the end of a missed file, in the layer's blob, its neighbours come along
 * (fs/read_around.h): what the link moves in one round trip (so the extra bytes delay the next
 * request by less than the round trip they may save it), at most this much: of 32 KiB to
 * 512 KiB, 128 KiB gave the benchmark's python3 start its shortest time (simulated over its
 * recorded reads, both link settings; tests/bench/README.md). */
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#define READ_AROUND_BYTES (128u << 10)
#define READ_AROUND_CHUNKS 64u
/* In a layer read through its seek index, a miss fetches from the span's checkpoint (or from
 * where the last request in the span stopped: cache/fetch.c keeps its inflate cursor), so the
 * chunks of the span that end before the read's own come at no extra byte; past that, the same
 * window as for eStargz.  Up to this many chunks (a span of small files).  Before cursors
 * were kept, a later miss in the span fetched its prefix again, so the whole span came along
 * (2 MiB, ~0.8 MB compressed): reading a Debian minbase layer's tree fetched 2.4 GB with
 * eStargz's window and 55-80 MB (its layer: 49 MB) with whole spans. */
#define READ_AROUND_SEEK_CHUNKS 512u
/* A read that failed because the registry did not answer within the timeout is remembered
 * this long, in this many slots (the oldest is replaced), for the kernel's retry of its first
 * page (see timed_out_take()). */
#define TIMED_OUT_WINDOW_MS 2000
#define TIMED_OUT_SLOTS 16u

struct timed_out_read {
	fs_ino_t ino;
	uint64_t off, end;
	pid_t pid;
	int64_t at_ms;          /* 0: free */
	uint64_t syscr;         /* the thread's finished read calls then (task_io.h) */
	bool syscr_known;
};

struct read_path {
	const struct fs_tree *tree;
	struct blob_store *bs;
	struct fetcher *fetcher;          /* NULL when the image has no lazy layer */
	struct blob_fds *fds;             /* open blobs of recently read chunks */
	struct read_around *read_around;  /* with a fetcher: what a miss fetches along */
	struct local_ra *ra;              /* opens the next files' blobs while one is read */
	struct exec_ahead *exec_ahead;    /* with a fetcher: a program's libraries fetched ahead */
	struct fs_profile *profile;       /* NULL: none recorded or used */
	pthread_mutex_t lock;
	struct timed_out_read timed_out[TIMED_OUT_SLOTS];   /* guarded by lock */
};

/* One read: bytes [off, end) of inode @ino, which lie in chunks [first, last) of its @n. */
struct read_span {
	fs_ino_t ino;
	const struct fs_chunk_ref *c;
	size_t n, first, last;
	uint64_t off, end;
	char *buf;               /* NULL: inside one chunk, served as its blob @fd */
	struct blob_fd fd;
	/* A file of an untrusted seek index whose tar records this mount has not checked yet:
	 * its chunks are not served from the store before the fetcher checked them
	 * (fetcher_chunk_proven()).  Which first chunk that is: first_fetchable. */
	bool unproven;
	size_t first_fetchable;
};

/* What a read fetches: chunks[0..n_own) are its own (span chunk own[k] each), the rest are
 * fetched ahead and not waited for.  Room for the rest of the file and READ_AROUND_CHUNKS. */
struct read_plan {
	struct fetch_chunk *chunks;
	size_t *own;
	size_t n, n_own;
};

int read_path_new(const struct fs_tree *tree, struct blob_store *bs, struct fetcher *fetcher,
		  unsigned fds_slots, struct read_path **ret)
{
	_cleanup_(read_path_freep) struct read_path *rp = NULL;
	int r;

	rp = malloc(sizeof(*rp));
	if (!rp)
		return -ENOMEM;
	*rp = (struct read_path) { .tree = tree, .bs = bs, .fetcher = fetcher };
	(void)pthread_mutex_init(&rp->lock, NULL);
	r = blob_fds_new(fds_slots, &rp->fds);
	if (r >= 0 && fetcher)
		r = read_around_new(tree, &rp->read_around);
	if (r >= 0 && fetcher)
		r = exec_ahead_new(tree, bs, fetcher, &rp->exec_ahead);
	if (r >= 0)
		r = local_ra_new(tree, bs, rp->fds, fds_slots, &rp->ra);
	if (r < 0)
		return r;
	*ret = TAKE_PTR(rp);
	return 0;
}

void read_path_set_profile(struct read_path *rp, struct fs_profile *profile)
{
	rp->profile = profile;
}

void read_path_stop_fetching(struct read_path *rp)
{
	exec_ahead_stop(rp ? rp->exec_ahead : NULL);
}

void read_path_get_exec_ahead_stats(struct read_path *rp, struct exec_ahead_stats *ret)
{
	exec_ahead_get_stats(rp ? rp->exec_ahead : NULL, ret);
}

static void read_path_done(struct read_path *rp)
{
	/* The read-ahead workers use the fds: stop them first. */
	local_ra_free(rp->ra);
	exec_ahead_free(rp->exec_ahead);
	read_around_free(rp->read_around);
	blob_fds_free(rp->fds);
	(void)pthread_mutex_destroy(&rp->lock);
}
DEFINE_FREE_FUNC(struct read_path, read_path_free, read_path_done);

void read_reply_done(struct read_reply *rr)
{
	free(rr->buf);
	rr->buf = NULL;
	blob_fds_put(&rr->fd);
}

/* "sha256:<hex>" of a chunk (not of a zeros one). */
static void chunk_digest(const struct fs_chunk_ref *c, char ret[DIGEST_STRING_MAX])
{
	digest_format_sha256(c->digest, ret);
}

static bool chunk_fetchable(const struct fs_chunk_ref *c)
{
	return !c->zeros && c->blob_length > 0;
}

/* The chunk holding byte @off, or @n if none does. */
static size_t chunk_find(const struct fs_chunk_ref *c, size_t n, uint64_t off)
{
	size_t lo = 0, hi = n;

	/* The chunks tile the file in order (fs_tree_add checked): the last one starting at
	 * or before @off holds it. */
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (c[mid].file_offset <= off)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == 0 || off - c[lo - 1].file_offset >= c[lo - 1].size)
		return n;
	return lo - 1;
}

struct chunk_open_args {
	struct read_path *rp;
	fs_ino_t ino;
	const struct fs_chunk_ref *c;
};

/* Opens a chunk's blob (for blob_fds_get(), on a miss): 0, -ENOENT if it is not stored, -EIO
 * for anything else. */
static int chunk_open(void *userdata, int *ret_fd)
{
	const struct chunk_open_args *a = userdata;
	const struct fs_chunk_ref *c = a->c;
	char digest[DIGEST_STRING_MAX];
	int r;

	chunk_digest(c, digest);
	/* A fetched chunk may be stored short (see blob_store_open_blob_sized()): then it is
	 * missing and gets fetched again. */
	r = c->blob_length > 0 ? blob_store_open_blob_sized(a->rp->bs, digest, c->size, ret_fd) :
				 blob_store_open_blob(a->rp->bs, digest, ret_fd);
	if (r < 0 && r != -ENOENT) {
		log_debug_errno(r, "failed to open chunk '%s' of inode %" PRIu64 ", EIO: %m", digest,
				(uint64_t)a->ino);
		return -EIO;
	}
	return r;
}

/* Copies bytes [from, from + n) of the file, all inside chunk @c, into @dst. */
static int chunk_read(fs_ino_t ino, const struct fs_chunk_ref *c, int fd, uint64_t from,
		      size_t n, char *dst)
{
	char digest[DIGEST_STRING_MAX];
	off_t pos = (off_t)(from - c->file_offset);

	while (n > 0) {
		ssize_t k = pread(fd, dst, n, pos);

		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0) {
			chunk_digest(c, digest);
			if (k < 0)
				log_debug_errno(errno, "failed to read chunk '%s' of inode %" PRIu64
						", EIO: %m", digest, (uint64_t)ino);
			else
				log_debug("chunk '%s' of inode %" PRIu64 " is shorter than its %" PRIu64
					  " bytes, EIO", digest, (uint64_t)ino, c->size);
			return -EIO;
		}
		dst += k;
		n -= (size_t)k;
		pos += k;
	}
	return 0;
}

/* Serves chunk @i's part of the read: copies it to its place in s->buf or, with no buffer,
 * keeps the chunk's open blob in s->fd.  -ENOENT if the blob is not stored, -EIO for any
 * other failure. */
static int chunk_serve(struct read_path *rp, struct read_span *s, size_t i)
{
	const struct fs_chunk_ref *c = &s->c[i];
	uint64_t from = s->off > c->file_offset ? s->off : c->file_offset;
	uint64_t to = c->file_offset + c->size < s->end ? c->file_offset + c->size : s->end;
	struct chunk_open_args args = { .rp = rp, .ino = s->ino, .c = c };
	_cleanup_blob_fd_ struct blob_fd fd = BLOB_FD_NONE;
	int r;

	if (c->zeros) {
		memset(s->buf + (from - s->off), 0, to - from);
		return 0;
	}
	r = blob_fds_get(rp->fds, c->digest, chunk_open, &args, &fd);
	if (r < 0)
		return r;
	if (!s->buf) {
		s->fd = fd;
		fd = BLOB_FD_NONE;
		return 0;
	}
	return chunk_read(s->ino, c, fd.fd, from, to - from, s->buf + (from - s->off));
}

/* Serves chunk @i's part of the read from the fetcher's memory when the chunk was fetched but
 * the store had no room for it (the read is then assembled in a buffer).  -ENOENT if it is not
 * there, -ENOSPC if it is not there and the store is full. */
static int chunk_serve_unstored(struct read_path *rp, struct read_span *s, size_t i)
{
	const struct fs_chunk_ref *c = &s->c[i];
	uint64_t from = s->off > c->file_offset ? s->off : c->file_offset;
	uint64_t to = c->file_offset + c->size < s->end ? c->file_offset + c->size : s->end;
	char digest[DIGEST_STRING_MAX];
	bool own_buf = false;
	int r;

	if (!rp->fetcher || !chunk_fetchable(c))
		return -ENOENT;
	if (!s->buf) {
		/* A read inside this one chunk: nothing else is in a buffer yet. */
		s->buf = malloc(s->end - s->off);
		if (!s->buf)
			return -ENOMEM;
		own_buf = true;
	}
	chunk_digest(c, digest);
	r = fetcher_read_unstored(rp->fetcher, digest, from - c->file_offset, to - from,
				  s->buf + (from - s->off));
	if (r < 0 && own_buf) {
		free(s->buf);
		s->buf = NULL;
	}
	return r;
}

/* Finds the chunks of [off, off + len) (len > 0, inside the file), and the buffer the read is
 * assembled in unless it lies in one chunk of a blob. */
static int span_find(struct read_path *rp, fs_ino_t ino, uint64_t off, size_t len,
		     struct read_span *ret)
{
	struct read_span s = { .ino = ino, .off = off, .end = off + len, .fd = BLOB_FD_NONE };
	int r;

	r = fs_tree_file_chunks(rp->tree, ino, &s.c, &s.n);
	if (r < 0)
		return log_debug_errno(-EIO, "inode %" PRIu64 " has no content chunks (%s), EIO",
				       (uint64_t)ino, strerror(-r));
	s.first = chunk_find(s.c, s.n, off);
	if (s.first == s.n) {
		log_debug("inode %" PRIu64 " has no chunk at offset %" PRIu64 ", EIO", (uint64_t)ino,
			  off);
		return -EIO;
	}
	for (s.last = s.first; s.last < s.n && s.c[s.last].file_offset < s.end; s.last++)
		;
	if (s.c[s.last - 1].file_offset + s.c[s.last - 1].size < s.end) {
		log_debug("the chunks of inode %" PRIu64 " end before offset %" PRIu64 ", EIO",
			  (uint64_t)ino, s.end);
		return -EIO;
	}
	/* A read inside one chunk is spliced from its blob, like a tar file's; any other is
	 * assembled in memory. */
	if (s.last - s.first > 1 || s.c[s.first].zeros) {
		s.buf = malloc(len);
		if (!s.buf)
			return -ENOMEM;
	}
	*ret = s;
	return 0;
}

void fetch_chunk_from_ref(const struct fs_chunk_ref *c, bool ahead, struct fetch_chunk *ret)
{
	*ret = (struct fetch_chunk) {
		.layer = c->layer,
		.blob_offset = c->blob_offset,
		.blob_length = c->blob_length,
		.size = c->size,
		.ahead = ahead,
	};
	chunk_digest(c, ret->digest);
}

/* Whether file @s may not be served from the store yet (read_span.unproven).  Its chunks all
 * come from one layer and one entry of its index: its first fetchable chunk tells. */
static bool span_unproven(struct read_path *rp, struct read_span *s)
{
	const struct fs_chunk_ref *c;

	if (!rp->fetcher)
		return false;
	for (s->first_fetchable = 0; s->first_fetchable < s->n; s->first_fetchable++)
		if (chunk_fetchable(&s->c[s->first_fetchable]))
			break;
	if (s->first_fetchable == s->n)
		return false;
	c = &s->c[s->first_fetchable];
	return !fetcher_chunk_proven(rp->fetcher, c->layer, c->blob_offset, c->digest, c->size);
}

/* Adds chunk @i of @s to @p as the read's own. */
static int plan_own(struct read_plan *p, const struct read_span *s, size_t i)
{
	if (!p->chunks) {
		p->chunks = calloc(s->n - i + READ_AROUND_SEEK_CHUNKS, sizeof(*p->chunks));
		p->own = calloc(s->n - i, sizeof(*p->own));
		if (!p->chunks || !p->own)
			return -ENOMEM;
	}
	fetch_chunk_from_ref(&s->c[i], false, &p->chunks[p->n]);
	/* Stored or not, an unproven file's first chunk is inflated from this layer again: its
	 * tar records are checked then (the fetcher adds it for the file's other chunks). */
	p->chunks[p->n].refetch = s->unproven && i == s->first_fetchable;
	p->own[p->n++] = i;
	return 0;
}

/* Serves the stored chunks of @s and adds the missing ones to @p, as the read's own. */
static int serve_stored(struct read_path *rp, struct read_span *s, struct read_plan *p)
{
	int r;

	s->unproven = span_unproven(rp, s);
	for (size_t i = s->first; i < s->last; i++) {
		if (s->unproven && chunk_fetchable(&s->c[i])) {
			r = plan_own(p, s, i);
			if (r < 0)
				return r;
			continue;
		}
		r = chunk_serve(rp, s, i);
		if (r == -ENOENT && chunk_serve_unstored(rp, s, i) == 0)
			continue;
		if (r == 0) {
			if (rp->fetcher && chunk_fetchable(&s->c[i]))
				fetcher_note_hit(rp->fetcher);
			continue;
		}
		if (r != -ENOENT)
			return r;
		if (s->c[i].blob_length == 0 || !rp->fetcher) {
			char digest[DIGEST_STRING_MAX];

			chunk_digest(&s->c[i], digest);
			log_debug("chunk '%s' of inode %" PRIu64 " is not in the store and %s, EIO",
				  digest, (uint64_t)s->ino,
				  s->c[i].blob_length == 0 ? "is never fetched" : "there is no fetcher");
			return -EIO;
		}
		r = plan_own(p, s, i);
		if (r < 0)
			return r;
	}
	p->n_own = p->n;
	return 0;
}

/* Adds to @p the chunks that follow file @s in its layer's blob within the read-around window,
 * marked ahead (stored ones too: the fetcher leaves them out, as it looks anyway). */
static void plan_read_around(struct read_path *rp, const struct read_span *s,
			     struct read_plan *p)
{
	const struct fs_chunk_ref *near[2 * READ_AROUND_SEEK_CHUNKS];
	const struct fs_chunk_ref *tail = NULL;
	size_t n_near, added = 0;
	uint64_t window, from, start;
	bool seek;

	for (size_t i = 0; i < s->n; i++)
		if (chunk_fetchable(&s->c[i]) && (!tail || s->c[i].blob_offset > tail->blob_offset))
			tail = &s->c[i];
	if (!tail || !rp->read_around)
		return;
	seek = fetcher_layer_is_seek(rp->fetcher, tail->layer);
	window = fetcher_read_around_bytes(rp->fetcher, seek ? FETCH_SEEK_AHEAD_MAX :
								READ_AROUND_BYTES);
	if (window == 0)
		return;
	from = tail->blob_offset + tail->blob_length;
	/* A seek index layer's chunks of one span all start at its checkpoint: the ones that
	 * end before this request does come at no extra byte (and inflate in the same pass). */
	start = seek ? tail->blob_offset : from;
	n_near = read_around_pick(rp->read_around, tail->layer, start, from + window - start,
				  near, seek ? ELEMENTSOF(near) : READ_AROUND_CHUNKS);
	for (size_t i = 0; i < n_near && added < (seek ? READ_AROUND_SEEK_CHUNKS :
						   READ_AROUND_CHUNKS); i++) {
		char digest[DIGEST_STRING_MAX];

		if (seek && near[i] >= s->c && near[i] < s->c + s->n)
			continue;  /* the file's own */
		/* Only what the link moves in a round trip past the read, as for eStargz (a chunk
		 * of the span starts at its checkpoint: its end is what counts). */
		if (seek && near[i]->blob_offset + near[i]->blob_length > from + window)
			continue;
		if (seek) {
			chunk_digest(near[i], digest);
			if (blob_store_has_size(rp->bs, digest, near[i]->size) > 0)
				continue;
		}
		fetch_chunk_from_ref(near[i], true, &p->chunks[p->n++]);
		added++;
	}
}

/* On a miss, the chunks that follow in the file come along too, up to FETCH_AHEAD bytes:
 * containers read binaries and libraries front to back, and a request for several small
 * chunks costs about what a request for one does (on a 10 ms link, a 2 MiB binary in 40 KiB
 * chunks is 50 round trips one read at a time, 2 with this).  The read waits only for its own
 * chunks: these come after them in the request.  When that reaches the file's end, its
 * neighbours in the layer come along as well. */
static void plan_ahead(struct read_path *rp, const struct read_span *s, struct read_plan *p)
{
	char digest[DIGEST_STRING_MAX];
	uint64_t ahead = 0;
	size_t i;

	for (i = s->last; i < s->n; i++) {
		const struct fs_chunk_ref *c = &s->c[i];

		if (!chunk_fetchable(c))
			continue;
		if (ahead + c->size > FETCH_AHEAD)
			break;
		ahead += c->size;
		chunk_digest(c, digest);
		if (blob_store_has_size(rp->bs, digest, c->size) > 0)
			continue;
		fetch_chunk_from_ref(c, true, &p->chunks[p->n++]);
	}
	if (i == s->n)
		plan_read_around(rp, s, p);
}

/* Remembers that the read @s of process @pid failed because the registry did not answer in
 * time. */
static void timed_out_note(struct read_path *rp, const struct read_span *s, pid_t pid)
{
	struct timed_out_read *oldest = &rp->timed_out[0];
	uint64_t syscr = 0;
	bool syscr_known = task_io_read_syscalls(pid, &syscr) >= 0;

	pthread_mutex_lock(&rp->lock);
	for (size_t i = 1; i < TIMED_OUT_SLOTS; i++)
		if (rp->timed_out[i].at_ms < oldest->at_ms)
			oldest = &rp->timed_out[i];
	*oldest = (struct timed_out_read) {
		.ino = s->ino, .off = s->off, .end = s->end, .pid = pid, .at_ms = now_ms(),
		.syscr = syscr, .syscr_known = syscr_known,
	};
	pthread_mutex_unlock(&rp->lock);
}

/* Whether read @s of process @pid is the kernel's retry of a read that just timed out: when a
 * read-ahead fails, the kernel at once reads the first page the reader wants again, on its
 * own, and that read would wait a whole timeout too (an uncached read then failed after twice
 * --timeout).  It is a read by the same thread inside the range of a read of the same file
 * that timed out less than TIMED_OUT_WINDOW_MS ago, and either smaller (one folio of the
 * failed read-ahead) or asked inside the same read(2): the thread has finished no read call
 * since (its count in task_io.h is the same) -- a file of one page, whose read-ahead was
 * that page, is asked for again whole.  Such a read fails at once, once: the thread's entries
 * for the file are taken, so its next read (trying again, or after the registry is back)
 * fetches. */
static bool timed_out_take(struct read_path *rp, const struct read_span *s, pid_t pid,
			   int64_t *ret_ago_ms)
{
	int64_t now = now_ms();
	uint64_t syscr = 0;
	bool syscr_known = false, found = false;

	pthread_mutex_lock(&rp->lock);
	for (size_t i = 0; i < TIMED_OUT_SLOTS; i++) {
		struct timed_out_read *t = &rp->timed_out[i];

		if (t->at_ms == 0 || t->ino != s->ino || t->pid != pid)
			continue;
		if (now - t->at_ms < TIMED_OUT_WINDOW_MS && s->off >= t->off && s->end <= t->end) {
			if (t->syscr_known && !syscr_known)
				syscr_known = task_io_read_syscalls(pid, &syscr) >= 0;
			if (s->end - s->off < t->end - t->off ||
			    (t->syscr_known && syscr_known && syscr == t->syscr)) {
				*ret_ago_ms = now - t->at_ms;
				found = true;
			}
		}
		t->at_ms = 0;
	}
	pthread_mutex_unlock(&rp->lock);
	return found;
}

/* fetcher_ensure_interruptible() of @p for read @s.  An unproven file is asked for twice at
 * most: the first call may have joined another read's fetch of a chunk with the same digest
 * (another file of the same content), which checked that file's records, not this one's. */
static int fetch_plan(struct read_path *rp, struct read_span *s, const struct read_plan *p,
		      struct fetch_interrupt *intr)
{
	int r;

	r = fetcher_ensure_interruptible(rp->fetcher, p->chunks, p->n, intr);
	if (r >= 0 && s->unproven && span_unproven(rp, s))
		r = fetcher_ensure_interruptible(rp->fetcher, p->chunks, p->n, intr);
	return r;
}

/* Fetches @p in one fetcher call (the fetcher merges adjacent chunks into one request), which
 * @w may interrupt; then serves the read's own chunks. */
static int fetch_and_serve(struct read_path *rp, struct read_span *s, const struct read_plan *p,
			   const struct read_waiter *w)
{
	struct fetch_interrupt intr = {};
	pid_t pid = w ? w->pid : 0;
	int64_t ago_ms;
	int fetched, r;

	if (pid > 0 && timed_out_take(rp, s, pid, &ago_ms)) {
		log_debug("read of inode %" PRIu64 " at %" PRIu64 "+%" PRIu64 " by %d repeats one that "
			  "timed out %" PRId64 " ms ago, EIO", (uint64_t)s->ino, s->off,
			  s->end - s->off, (int)pid, ago_ms);
		return -EIO;
	}
	if (w && w->begin)
		w->begin(w->userdata, rp->fetcher, &intr);
	fetched = r = fetch_plan(rp, s, p, &intr);
	/* Waits for an interrupt in progress: @intr must outlive it. */
	if (w && w->end)
		w->end(w->userdata);
	if (r == -EINTR) {
		log_debug("read of inode %" PRIu64 " at %" PRIu64 " interrupted while fetching '%s', "
			  "EINTR", (uint64_t)s->ino, s->off, p->chunks[0].digest);
		return -EINTR;
	}
	if (r < 0)
		/* Maybe only a chunk fetched ahead failed: the read fails only if one of its own
		 * chunks is missing below. */
		log_debug_errno(r, "failed to fetch some of %zu chunks of inode %" PRIu64
				" (first '%s'): %m", p->n, (uint64_t)s->ino, p->chunks[0].digest);
	/* The check failed (the index lied, and was dropped) or never ran: what the store holds
	 * under these digests may be any layer's bytes. */
	if (s->unproven && span_unproven(rp, s)) {
		log_debug("the tar records of inode %" PRIu64 " were not proven from its layer, "
			  "EIO", (uint64_t)s->ino);
		return -EIO;
	}
	for (size_t k = 0; k < p->n_own; k++) {
		r = chunk_serve(rp, s, p->own[k]);
		if (r == -ENOENT)
			r = chunk_serve_unstored(rp, s, p->own[k]);
		if (r == -ENOSPC) {
			log_debug("chunk '%s' of inode %" PRIu64 " was fetched but the cache is full "
				  "and it is no longer in memory, ENOSPC", p->chunks[k].digest,
				  (uint64_t)s->ino);
			return -ENOSPC;
		}
		if (r == -ENOENT && fetched == -ETIMEDOUT && pid > 0)
			timed_out_note(rp, s, pid);
		if (r == -ENOENT) {
			log_debug("chunk '%s' of inode %" PRIu64 " could not be fetched or verified%s, "
				  "EIO", p->chunks[k].digest, (uint64_t)s->ino,
				  fetched == -ETIMEDOUT ? " in time" : "");
			return -EIO;
		}
		if (r < 0)
			return r;
	}
	return 0;
}

/* Which chunks (layer and blob offset, the key the fetcher's trace lines use) a read used, so
 * that tests/bench/trace.py can tell fetched bytes nobody read. */
static void trace_span(const struct read_span *s, size_t n_missing)
{
	char list[1024];
	size_t k = 0;

	for (size_t i = s->first; i < s->last && k + 48 < sizeof(list); i++)
		if (s->c[i].blob_length > 0)
			k += (size_t)snprintf(list + k, sizeof(list) - k, "%s\"%u:%" PRIu64 "\"",
					      k ? "," : "", s->c[i].layer, s->c[i].blob_offset);
	list[k] = '\0';
	trace_emit("span", "\"op\":%" PRIu64 ",\"ino\":%" PRIu64 ",\"missing\":%zu,"
		   "\"chunks\":[%s]", trace_op_current(), (uint64_t)s->ino, n_missing, list);
}

/* Reads @len (> 0) bytes at @off, all inside the file, chunk by chunk. */
static int read_chunks(struct read_path *rp, fs_ino_t ino, uint64_t off, size_t len,
		       const struct read_waiter *w, struct read_reply *ret)
{
	_cleanup_free_ struct fetch_chunk *chunks = NULL;
	_cleanup_free_ size_t *own = NULL;
	struct read_plan p = {};
	struct read_span s;
	int r;

	r = span_find(rp, ino, off, len, &s);
	if (r < 0)
		return r;
	fs_profile_note(rp->profile, s.c + s.first, s.last - s.first);
	r = serve_stored(rp, &s, &p);
	chunks = p.chunks;
	own = p.own;
	if (trace_enabled() && r >= 0)
		trace_span(&s, p.n_own);
	if (r >= 0 && p.n_own > 0) {
		plan_ahead(rp, &s, &p);
		r = fetch_and_serve(rp, &s, &p, w);
	}
	if (r < 0) {
		free(s.buf);
		blob_fds_put(&s.fd);
		return r;
	}
	*ret = (struct read_reply) {
		.buf = s.buf, .fd = s.fd, .len = len,
		.pos = s.buf ? 0 : (off_t)(off - s.c[s.first].file_offset),
	};
	return 0;
}

int read_path_read(struct read_path *rp, fs_ino_t ino, off_t off, size_t size,
		   const struct read_waiter *w, struct read_reply *ret)
{
	struct stat st;
	int r;

	r = fs_tree_stat(rp->tree, ino, &st);
	if (r < 0)
		return r;
	if (off < 0)
		return -EINVAL;
	if (off >= st.st_size || size == 0) {
		*ret = READ_REPLY_NONE;
		return 0;
	}
	/* Never ask a blob for more than the file holds: a short blob is then visible as a
	 * short read instead of extra bytes. */
	if ((uint64_t)(st.st_size - off) < size)
		size = (size_t)(st.st_size - off);
	local_ra_note_read(rp->ra, ino);
	exec_ahead_note_read(rp->exec_ahead, ino, off, st.st_mode, w ? w->pid : 0);
	return read_chunks(rp, ino, (uint64_t)off, size, w, ret);
}
