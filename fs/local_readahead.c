/*
 * fs/local_readahead.c: see local_readahead.h.  Why: the blob store names files by digest, so a
 * walk of the mount reads blobs scattered over the disk in no useful order, each costing a
 * directory lookup, an inode read and a data read, one after the other since the walker reads
 * one file at a time.  Workers issuing the next files' opens and WILLNEEDs at once give the
 * disk many requests to sort and overlap.
 *
 * The tree order is an array of the regular files with stored content (depth first, readdir
 * order, each inode once), built by the first worker on the first read, with each inode's
 * position in it and the running sum of the bytes read ahead per file.  The window is the
 * files after the reader's, at most max_files of them and max_bytes in all.  State under
 * ra->lock: the reader's position and the next file to open; the arrays are written once,
 * before `built` is set, and only read after.
 * Load: one note per FUSE read (a lock and a few compares); per file ahead one blob_fds
 * lookup, and for a blob not open yet an openat(), fstat() and posix_fadvise().  When the
 * page cache is warm the kernel sends no reads, so nothing runs.
 */
#include "local_readahead.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cache/store/blob_store.h"
#include "cache/base/digest.h"
#include "cache/base/log.h"
#include "cache/base/util.h"
#include "fs/blob_fds.h"

/* Enough opens in flight to keep a disk's queue busy; each blocks on its inode read. */
#define RA_THREADS 4
/* Files ahead of the reader (and at most a quarter of the fd cache) ... */
#define RA_FILES_MAX 128
/* ... and bytes: what a tar reads in well under a second, little next to the page cache. */
#define RA_BYTES_MAX (32ull << 20)
/* Of one file, only its start: the kernel's own read-ahead takes over once it is read. */
#define RA_FILE_BYTES_MAX (4ull << 20)

struct local_ra {
	const struct fs_tree *tree;  /* borrowed */
	struct blob_store *bs;       /* borrowed */
	struct blob_fds *fds;        /* borrowed */
	unsigned max_files;

	pthread_mutex_t lock;
	pthread_cond_t cond;
	pthread_t threads[RA_THREADS];
	unsigned n_threads;     /* guarded by lock */
	bool started;           /* guarded by lock: threads were started (or failed to) */
	bool stop;              /* guarded by lock */
	bool building;          /* guarded by lock: a worker builds the order */
	bool built;             /* guarded by lock; the arrays below are immutable once set */
	bool broken;            /* guarded by lock: no order (no memory): no read-ahead */
	fs_ino_t pending;       /* guarded by lock: the last read before the order was built */
	size_t reader;          /* guarded by lock: order index of the first file ahead */
	size_t next;            /* guarded by lock: order index of the next file to open */

	uint32_t *order;        /* inode numbers, in tree order */
	size_t n_order;
	uint32_t *pos;          /* inode number -> 1 + index in order, 0: not there */
	uint64_t *bytes;        /* bytes[k]: read-ahead bytes of order[0 .. k) */

	uint64_t opened;        /* atomic */
};

int local_ra_new(const struct fs_tree *tree, struct blob_store *bs, struct blob_fds *fds,
		 unsigned fds_slots, struct local_ra **ret)
{
	struct local_ra *ra;

	ra = calloc(1, sizeof(*ra));
	if (!ra)
		return -ENOMEM;
	ra->tree = tree;
	ra->bs = bs;
	ra->fds = fds;
	ra->max_files = fds_slots / 4 < RA_FILES_MAX ? fds_slots / 4 : RA_FILES_MAX;
	if (ra->max_files == 0)
		ra->max_files = 1;
	pthread_mutex_init(&ra->lock, NULL);
	pthread_cond_init(&ra->cond, NULL);
	*ret = ra;
	return 0;
}

static void local_ra_done(struct local_ra *ra)
{
	unsigned n;

	pthread_mutex_lock(&ra->lock);
	ra->stop = true;
	n = ra->n_threads;
	pthread_cond_broadcast(&ra->cond);
	pthread_mutex_unlock(&ra->lock);
	for (unsigned i = 0; i < n; i++)
		(void)pthread_join(ra->threads[i], NULL);
	pthread_cond_destroy(&ra->cond);
	pthread_mutex_destroy(&ra->lock);
	free(ra->order);
	free(ra->pos);
	free(ra->bytes);
}
DEFINE_FREE_FUNC(struct local_ra, local_ra_free, local_ra_done);

uint64_t local_ra_opened(struct local_ra *ra)
{
	return ra ? __atomic_load_n(&ra->opened, __ATOMIC_RELAXED) : 0;
}

/* Bytes a file is read ahead by: its chunks that have a blob, up to RA_FILE_BYTES_MAX. */
static uint64_t file_ra_bytes(const struct fs_tree *t, fs_ino_t ino)
{
	const struct fs_chunk_ref *c;
	uint64_t sum = 0;
	size_t n;

	if (fs_tree_file_chunks(t, ino, &c, &n) < 0)
		return 0;
	for (size_t i = 0; i < n && sum < RA_FILE_BYTES_MAX; i++)
		if (!c[i].zeros)
			sum += c[i].size;
	return sum < RA_FILE_BYTES_MAX ? sum : RA_FILE_BYTES_MAX;
}

/* Walks the tree depth first with an explicit stack (an image may nest directories deeper than
 * a thread's stack would allow recursion) into the arrays, without the lock. */
static int order_build(const struct fs_tree *t, uint32_t **ret_order, size_t *ret_n,
		       uint32_t **ret_pos, uint64_t **ret_bytes)
{
	struct frame {
		fs_ino_t dir;
		size_t pos;
	};
	_cleanup_free_ struct frame *stack = NULL;
	_cleanup_free_ uint32_t *order = NULL, *pos = NULL;
	_cleanup_free_ uint64_t *bytes = NULL;
	size_t count = fs_tree_count(t), depth = 0, cap = 0, n = 0;

	if (count >= UINT32_MAX)
		return -EFBIG;
	order = malloc(count * sizeof(*order));
	pos = calloc(count + 1, sizeof(*pos));
	bytes = malloc((count + 1) * sizeof(*bytes));
	if (!order || !pos || !bytes || GREEDY_REALLOC(stack, cap, 64) < 0)
		return -ENOMEM;

	bytes[0] = 0;
	stack[depth++] = (struct frame) { .dir = FS_ROOT_INO };
	while (depth > 0) {
		struct frame *f = &stack[depth - 1];
		struct stat st;
		fs_ino_t ino;
		uint64_t b;

		if (fs_tree_readdir(t, f->dir, f->pos++, NULL, &ino) < 0) {
			depth--;
			continue;
		}
		if (fs_tree_stat(t, ino, &st) < 0)
			continue;
		if (S_ISDIR(st.st_mode)) {
			if (GREEDY_REALLOC(stack, cap, depth + 1) < 0)
				return -ENOMEM;
			stack[depth++] = (struct frame) { .dir = ino };
			continue;
		}
		if (!S_ISREG(st.st_mode) || pos[ino] != 0)
			continue;   /* a hardlink's later names: its blobs are open already */
		b = file_ra_bytes(t, ino);
		if (b == 0)
			continue;
		order[n] = (uint32_t)ino;
		pos[ino] = (uint32_t)++n;
		bytes[n] = bytes[n - 1] + b;
	}

	*ret_order = TAKE_PTR(order);
	*ret_n = n;
	*ret_pos = TAKE_PTR(pos);
	*ret_bytes = TAKE_PTR(bytes);
	return 0;
}

/* Under ra->lock: the reader is at @ino now. */
static void reader_moved(struct local_ra *ra, fs_ino_t ino)
{
	size_t k;

	if (ino == 0 || ino > fs_tree_count(ra->tree) || ra->pos[ino] == 0)
		return;
	k = ra->pos[ino];   /* the first file after @ino */
	if (k == ra->reader)
		return;
	ra->reader = k;
	/* Forward: skip what the reader passed.  Back, or far ahead of a new reader: start over
	 * right after it (blobs still open are skipped quickly). */
	if (ra->next < k || ra->next > k + ra->max_files)
		ra->next = k;
	pthread_cond_broadcast(&ra->cond);
}

/* Under ra->lock: whether order[ra->next] is inside the window. */
static bool window_open(const struct local_ra *ra)
{
	if (!ra->built || ra->next >= ra->n_order)
		return false;
	if (ra->next >= ra->reader + ra->max_files)
		return false;
	/* The first file ahead always goes, however big. */
	return ra->next == ra->reader || ra->bytes[ra->next + 1] - ra->bytes[ra->reader] <= RA_BYTES_MAX;
}

struct ra_open_args {
	struct blob_store *bs;
	const struct fs_chunk_ref *c;
};

static int ra_open(void *userdata, int *ret_fd)
{
	const struct ra_open_args *a = userdata;
	char digest[DIGEST_STRING_MAX];

	digest_format_sha256(a->c->digest, digest);
	/* A fetched chunk stored short (prewarm, power loss) is the read's to fetch again. */
	return a->c->blob_length > 0 ?
	       blob_store_open_blob_sized(a->bs, digest, a->c->size, ret_fd) :
	       blob_store_open_blob(a->bs, digest, ret_fd);
}

/* Opens the stored blobs of @ino's first RA_FILE_BYTES_MAX bytes into the fd cache and starts
 * reading them.  A blob not in the store is left to the read that needs it (which fetches). */
static void file_read_ahead(struct local_ra *ra, fs_ino_t ino)
{
	const struct fs_chunk_ref *c;
	uint64_t done = 0;
	size_t n;

	if (fs_tree_file_chunks(ra->tree, ino, &c, &n) < 0)
		return;
	for (size_t i = 0; i < n && done < RA_FILE_BYTES_MAX; i++) {
		struct ra_open_args args = { .bs = ra->bs, .c = &c[i] };
		struct blob_fd h = BLOB_FD_NONE;
		uint64_t len;

		if (c[i].zeros)
			continue;
		len = c[i].size < RA_FILE_BYTES_MAX - done ? c[i].size : RA_FILE_BYTES_MAX - done;
		done += len;
		/* Open already: read before, or ahead a moment ago; its pages are cached or
		 * on their way. */
		if (blob_fds_cached(ra->fds, c[i].digest))
			continue;
		if (blob_fds_get(ra->fds, c[i].digest, ra_open, &args, &h) < 0)
			continue;
		__atomic_add_fetch(&ra->opened, 1, __ATOMIC_RELAXED);
		(void)posix_fadvise(h.fd, 0, (off_t)len, POSIX_FADV_WILLNEED);
		blob_fds_put(&h);
	}
}

static void *ra_worker(void *userdata)
{
	struct local_ra *ra = userdata;

	pthread_mutex_lock(&ra->lock);
	for (;;) {
		fs_ino_t ino;

		if (ra->stop)
			break;
		if (!ra->built && !ra->building && !ra->broken) {
			uint32_t *order = NULL, *pos = NULL;
			uint64_t *bytes = NULL;
			size_t n = 0;
			int r;

			ra->building = true;
			pthread_mutex_unlock(&ra->lock);
			r = order_build(ra->tree, &order, &n, &pos, &bytes);
			pthread_mutex_lock(&ra->lock);
			ra->building = false;
			if (r < 0) {
				log_debug_errno(r, "failed to order the tree for read-ahead, "
						"ignoring: %m");
				ra->broken = true;
			} else {
				ra->order = order;
				ra->n_order = n;
				ra->pos = pos;
				ra->bytes = bytes;
				ra->built = true;
				reader_moved(ra, ra->pending);
			}
			pthread_cond_broadcast(&ra->cond);
			continue;
		}
		if (!window_open(ra)) {
			pthread_cond_wait(&ra->cond, &ra->lock);
			continue;
		}
		ino = ra->order[ra->next++];
		pthread_mutex_unlock(&ra->lock);
		file_read_ahead(ra, ino);
		pthread_mutex_lock(&ra->lock);
	}
	pthread_mutex_unlock(&ra->lock);
	return NULL;
}

/* Under ra->lock, once: the workers start with the first read, in the process that serves. */
static void workers_start(struct local_ra *ra)
{
	ra->started = true;
	for (unsigned i = 0; i < RA_THREADS; i++) {
		int r = -pthread_create(&ra->threads[i], NULL, ra_worker, ra);

		if (r < 0) {
			log_debug_errno(r, "failed to start read-ahead thread %u, ignoring: %m", i);
			break;
		}
		ra->n_threads++;
	}
}

void local_ra_note_read(struct local_ra *ra, fs_ino_t ino)
{
	if (!ra)
		return;
	pthread_mutex_lock(&ra->lock);
	if (!ra->started)
		workers_start(ra);
	if (ra->built)
		reader_moved(ra, ino);
	else
		ra->pending = ino;
	pthread_mutex_unlock(&ra->lock);
}
