/*
 * cache/store/blob_store.c: content-addressed files under DIR/blobs/sha256/ab/<hex>.
 *
 * Invariant: a file under its final name is complete and its content hashes to its name.
 * Writers stream into an anonymous O_TMPFILE in DIR/tmp/ (or a mkostemp() name there when
 * the file system lacks O_TMPFILE), hash as they write, fsync, and only then link the file
 * under its final name.  linkat() never replaces an existing name, so when two writers race on
 * one digest the first blob stays and the second temporary is dropped (ret_created = false).
 *
 * The store holds no mutable state beyond its directory fds, so any number of threads (and
 * processes) may use one store concurrently.  Expected load: a few hundred to a few thousand
 * blobs per layer, from a few bytes to tens of MiB each, most of them small.  Creating,
 * syncing and linking a temporary file costs ~0.5 ms on ext4, so a blob's first
 * BLOB_BUFFER_MAX bytes are kept in memory: a small blob that is already stored (re-indexing,
 * the same file in several layers) then costs no file I/O at all.
 *
 * Runs of zeros are not written: every aligned SPARSE_BLOCK of zeros becomes a hole (the write
 * offset skips it, ftruncate() gives the file its size), so a file of zeros -- a layer's
 * preallocated image, a sparse tar entry's holes, a decompression bomb -- costs no disk
 * blocks.  Reads of a hole give zeros, so the content and its digest are unchanged.  Writes go
 * through the same buffer once the temporary exists, so that blocks stay aligned to the file
 * whatever the callers' write sizes.
 */
#include "blob_store.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "cache/base/digest.h"
#include "cache/base/util.h"

#define BLOB_BUFFER_MAX (64 * 1024)
/* The unit of holes: ext4's, xfs's and tmpfs's block (and page) size. */
#define SPARSE_BLOCK 4096
_Static_assert(BLOB_BUFFER_MAX % SPARSE_BLOCK == 0, "flushes of a full buffer stay aligned");

struct blob_store {
	int blobs_fd;   /* DIR/blobs/sha256 */
	int tmp_fd;     /* DIR/tmp */
	char *tmp_path; /* DIR/tmp, for the mkostemp() fallback */
};

struct blob_txn {
	struct blob_store *bs;
	struct digest_ctx *digest;
	uint8_t *buf;           /* the content while it fits in BLOB_BUFFER_MAX and fd < 0,
				 * then the bytes not yet flushed to fd */
	size_t buf_len;
	uint64_t size;          /* bytes written */
	uint64_t flushed;       /* bytes flushed to fd (holes included): a multiple of
				 * SPARSE_BLOCK until the last flush */
	uint64_t data_end;      /* end of the last block actually written to fd */
	int fd;                 /* the temporary, once the content spilled or at commit */
	char *tmp_name;         /* NULL for an O_TMPFILE, else the name in DIR/tmp */
	bool no_sync;           /* BLOB_TXN_NO_SYNC: the caller calls blob_store_sync() */
};

static void blob_store_done(struct blob_store *bs)
{
	closep(&bs->blobs_fd);
	closep(&bs->tmp_fd);
	free(bs->tmp_path);
}
DEFINE_FREE_FUNC(struct blob_store, blob_store_free, blob_store_done);

static int open_dir(const char *path, int *ret_fd)
{
	int fd;

	fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	*ret_fd = fd;
	return 0;
}

/* @read_only: the cache directory cannot be written (a read-only mount, a baked image): blobs
 * are read, nothing is created, and a transaction fails with -EROFS. */
static int blob_store_open_mode(const char *cache_dir, bool read_only, struct blob_store **ret)
{
	_cleanup_(blob_store_freep) struct blob_store *bs = NULL;
	_cleanup_free_ char *blobs = NULL;
	int r;

	bs = calloc(1, sizeof(*bs));
	if (!bs)
		return -ENOMEM;
	bs->blobs_fd = bs->tmp_fd = -EBADF;

	if (asprintf(&blobs, "%s/blobs/sha256", cache_dir) < 0)
		return -ENOMEM;
	if (asprintf(&bs->tmp_path, "%s/tmp", cache_dir) < 0) {
		bs->tmp_path = NULL;
		return -ENOMEM;
	}

	if (!read_only) {
		r = mkdir_p(blobs, 0700);
		if (r < 0)
			return r;
		r = mkdir_p(bs->tmp_path, 0700);
		if (r < 0)
			return r;
		r = open_dir(bs->tmp_path, &bs->tmp_fd);
		if (r < 0)
			return r;
	}
	r = open_dir(blobs, &bs->blobs_fd);
	if (r < 0)
		return r;

	*ret = TAKE_PTR(bs);
	return 0;
}

int blob_store_open(const char *cache_dir, struct blob_store **ret)
{
	return blob_store_open_mode(cache_dir, false, ret);
}

int blob_store_open_readonly(const char *cache_dir, struct blob_store **ret)
{
	return blob_store_open_mode(cache_dir, true, ret);
}

/* "sha256:abcd…" -> "ab/abcd…", relative to blobs_fd. */
static int blob_relpath(const char *digest, char ret[3 + DIGEST_HEX_LEN + 1])
{
	const char *hex;

	if (digest_validate(digest) < 0)
		return -EBADMSG;
	hex = digest + strlen("sha256:");
	ret[0] = hex[0];
	ret[1] = hex[1];
	ret[2] = '/';
	memcpy(ret + 3, hex, DIGEST_HEX_LEN + 1);
	return 0;
}

int blob_store_open_blob(struct blob_store *bs, const char *digest, int *ret_fd)
{
	char rel[3 + DIGEST_HEX_LEN + 1];
	int fd, r;

	r = blob_relpath(digest, rel);
	if (r < 0)
		return r;
	fd = openat(bs->blobs_fd, rel, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return -errno;
	*ret_fd = fd;
	return 0;
}

int blob_store_open_blob_sized(struct blob_store *bs, const char *digest, uint64_t size,
			       int *ret_fd)
{
	struct stat st;
	int fd = -EBADF, r;

	r = blob_store_open_blob(bs, digest, &fd);
	if (r < 0)
		return r;
	if (fstat(fd, &st) < 0 || (uint64_t)st.st_size != size) {
		(void)close(fd);
		return -ENOENT;
	}
	*ret_fd = fd;
	return 0;
}

/* 1 with *st when the blob is stored (a regular file), 0 when it is not. */
static int blob_stat(struct blob_store *bs, const char *digest, struct stat *st)
{
	char rel[3 + DIGEST_HEX_LEN + 1];
	int r;

	r = blob_relpath(digest, rel);
	if (r < 0)
		return r;
	if (fstatat(bs->blobs_fd, rel, st, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? 0 : -errno;
	return S_ISREG(st->st_mode) ? 1 : 0;
}

int blob_store_has(struct blob_store *bs, const char *digest)
{
	struct stat st;

	return blob_stat(bs, digest, &st);
}

int blob_store_has_size(struct blob_store *bs, const char *digest, uint64_t size)
{
	struct stat st;
	int r;

	r = blob_stat(bs, digest, &st);
	return r <= 0 ? r : (uint64_t)st.st_size == size;
}

int blob_store_remove(struct blob_store *bs, const char *digest)
{
	char rel[3 + DIGEST_HEX_LEN + 1];
	int r;

	r = blob_relpath(digest, rel);
	if (r < 0)
		return r;
	if (unlinkat(bs->blobs_fd, rel, 0) < 0)
		return -errno;
	return 0;
}

static void blob_txn_done(struct blob_txn *t)
{
	if (t->tmp_name)
		(void)unlinkat(t->bs->tmp_fd, t->tmp_name, 0);
	closep(&t->fd);
	digest_ctx_free(t->digest);
	free(t->buf);
	free(t->tmp_name);
}
static DEFINE_FREE_FUNC(struct blob_txn, blob_txn_free, blob_txn_done);
DEFINE_CLEANUP_FUNC(struct blob_txn *, blob_txn_free);

int blob_txn_begin(struct blob_store *bs, struct blob_txn **ret)
{
	return blob_txn_begin_flags(bs, 0, ret);
}

int blob_txn_begin_flags(struct blob_store *bs, unsigned flags, struct blob_txn **ret)
{
	_cleanup_(blob_txn_freep) struct blob_txn *t = NULL;
	int r;

	if (bs->tmp_fd < 0)
		return -EROFS;  /* opened read-only */
	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	t->bs = bs;
	t->fd = -EBADF;
	t->no_sync = flags & BLOB_TXN_NO_SYNC;

	r = digest_ctx_new(&t->digest);
	if (r < 0)
		return r;
	t->buf = malloc(BLOB_BUFFER_MAX);
	if (!t->buf)
		return -ENOMEM;

	*ret = TAKE_PTR(t);
	return 0;
}

/* Creates the temporary file. */
static int blob_txn_open_tmp(struct blob_txn *t)
{
	t->fd = openat(t->bs->tmp_fd, ".", O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600);
	if (t->fd < 0) {
		_cleanup_free_ char *path = NULL;

		/* Kernels and file systems without O_TMPFILE report one of these. */
		if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL)
			return -errno;
		if (asprintf(&path, "%s/blob-XXXXXX", t->bs->tmp_path) < 0)
			return -ENOMEM;
		t->fd = mkostemp(path, O_CLOEXEC);
		if (t->fd < 0)
			return -errno;
		t->tmp_name = strdup(strrchr(path, '/') + 1);
		if (!t->tmp_name) {
			(void)unlink(path);
			return -ENOMEM;
		}
	}
	return 0;
}

static int pwrite_all(int fd, const uint8_t *p, size_t len, uint64_t off)
{
	while (len > 0) {
		ssize_t n = pwrite(fd, p, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		p += n;
		len -= n;
		off += n;
	}
	return 0;
}

static size_t min_size(size_t a, size_t b)
{
	return a < b ? a : b;
}

static bool block_is_zero(const uint8_t *p, size_t len)
{
	static const uint8_t zeros[SPARSE_BLOCK];

	return memcmp(p, zeros, len) == 0;
}

/* Appends @len bytes to the temporary at t->flushed, each run of non-zero blocks in one write,
 * each zero block left a hole.  @len is a multiple of SPARSE_BLOCK except on the last flush. */
static int blob_txn_flush(struct blob_txn *t, const uint8_t *p, size_t len)
{
	size_t i = 0;
	int r;

	while (i < len) {
		size_t start = i, n = min_size(SPARSE_BLOCK, len - i);

		if (block_is_zero(p + i, n)) {
			i += n;
			continue;
		}
		/* Grow the run of data blocks, then write it at once. */
		do {
			i += n;
			n = min_size(SPARSE_BLOCK, len - i);
		} while (i < len && !block_is_zero(p + i, n));
		r = pwrite_all(t->fd, p + start, i - start, t->flushed + start);
		if (r < 0)
			return r;
		t->data_end = t->flushed + i;
	}
	t->flushed += len;
	return 0;
}

/* Moves the buffered bytes to the temporary, which is created first when needed. */
static int blob_txn_spill(struct blob_txn *t)
{
	int r;

	if (t->fd < 0) {
		r = blob_txn_open_tmp(t);
		if (r < 0)
			return r;
	}
	r = blob_txn_flush(t, t->buf, t->buf_len);
	if (r < 0)
		return r;
	t->buf_len = 0;
	return 0;
}

int blob_txn_write(struct blob_txn *t, const void *buf, size_t n)
{
	const uint8_t *p = buf;
	int r;

	digest_ctx_update(t->digest, buf, n);
	t->size += n;

	if (t->fd < 0 && n <= BLOB_BUFFER_MAX - t->buf_len) {
		memcpy(t->buf + t->buf_len, buf, n);
		t->buf_len += n;
		return 0;
	}
	while (n > 0) {
		size_t k;

		if (t->fd >= 0 && t->buf_len == 0 && n >= BLOB_BUFFER_MAX) {
			/* Whole blocks straight from the caller's buffer: no copy. */
			k = n - n % SPARSE_BLOCK;
			r = blob_txn_flush(t, p, k);
			if (r < 0)
				return r;
		} else {
			k = min_size(n, BLOB_BUFFER_MAX - t->buf_len);
			memcpy(t->buf + t->buf_len, p, k);
			t->buf_len += k;
			if (t->buf_len == BLOB_BUFFER_MAX) {
				r = blob_txn_spill(t);
				if (r < 0)
					return r;
			}
		}
		p += k;
		n -= k;
	}
	return 0;
}

/* Gives the finished temporary its final name; -EEXIST if that name is taken. */
static int blob_txn_link(struct blob_txn *t, const char *rel)
{
	char proc[sizeof("/proc/self/fd/") + 3 * sizeof(int)];

	if (t->tmp_name) {
		if (linkat(t->bs->tmp_fd, t->tmp_name, t->bs->blobs_fd, rel, 0) < 0)
			return -errno;
		return 0;
	}

	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", t->fd);
	if (linkat(AT_FDCWD, proc, t->bs->blobs_fd, rel, AT_SYMLINK_FOLLOW) == 0)
		return 0;
	if (errno != ENOENT)
		return -errno;
	/* No /proc: AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH, which the daemon (root) has. */
	if (linkat(t->fd, "", t->bs->blobs_fd, rel, AT_EMPTY_PATH) < 0)
		return -errno;
	return 0;
}

/* Whether the blob already stored under @rel has the size of ours: 1 if so, 0 if not.
 * Blobs written with BLOB_TXN_NO_SYNC become durable only at blob_store_sync(); after a power
 * loss before that, a file under its final name may be short (ext4 commits the size with the
 * data).  Its name then still promises content it lacks, so the next writer replaces it. */
static int blob_existing_is_whole(struct blob_txn *t, const char *rel)
{
	struct stat st;

	if (fstatat(t->bs->blobs_fd, rel, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? 0 : -errno;
	return S_ISREG(st.st_mode) && (uint64_t)st.st_size == t->size;
}

/* Puts our (verified) temporary in place of a damaged blob: linked under a unique name next to
 * it, then renamed over it, so the final name never shows anything but a whole blob. */
static int blob_txn_replace(struct blob_txn *t, const char *rel, bool *ret_created)
{
	char tmp[3 + DIGEST_HEX_LEN + 32];
	int r;

	snprintf(tmp, sizeof(tmp), "%s.%d.replace", rel, (int)getpid());
	(void)unlinkat(t->bs->blobs_fd, tmp, 0);
	r = blob_txn_link(t, tmp);
	if (r < 0)
		return r;
	if (renameat(t->bs->blobs_fd, tmp, t->bs->blobs_fd, rel) < 0) {
		r = -errno;
		(void)unlinkat(t->bs->blobs_fd, tmp, 0);
		return r;
	}
	*ret_created = true;
	return 0;
}

/* Makes the temporary durable and gives it the name @rel; *ret_created is false if another
 * writer got there first. */
static int blob_txn_store(struct blob_txn *t, char rel[3 + DIGEST_HEX_LEN + 1], bool *ret_created)
{
	int r;

	r = blob_txn_spill(t);
	if (r < 0)
		return r;
	/* A hole at the end has no block that would give the file its size. */
	if (t->data_end < t->size && ftruncate(t->fd, (off_t)t->size) < 0)
		return -errno;
	if (!t->no_sync && fsync(t->fd) < 0)
		return -errno;
	/* Unsynced blobs get durable at the caller's blob_store_sync(); start their writeback
	 * now, without waiting for it, so that sync has little left to write: a 60 MB prewarm's
	 * final syncfs took 0.15 s on loopback when all of it was still dirty.  Advisory: a
	 * failure here changes nothing. */
	if (t->no_sync)
		(void)sync_file_range(t->fd, 0, 0, SYNC_FILE_RANGE_WRITE);

	rel[2] = '\0';
	if (mkdirat(t->bs->blobs_fd, rel, 0700) < 0 && errno != EEXIST)
		return -errno;
	rel[2] = '/';

	/* The directory is not fsynced: a name lost in a crash is a cache miss, never a wrong
	 * blob, and syncing it per blob would double the cost of unpacking a layer. */
	r = blob_txn_link(t, rel);
	if (r == -EEXIST) {
		r = blob_existing_is_whole(t, rel);
		if (r < 0)
			return r;
		if (r == 0)
			return blob_txn_replace(t, rel, ret_created);
		*ret_created = false;
		return 0;
	}
	if (r < 0)
		return r;
	*ret_created = true;
	return 0;
}

int blob_txn_commit(struct blob_txn *t, const char *expected, char ret_digest[DIGEST_STRING_MAX],
		    bool *ret_created)
{
	_cleanup_(blob_txn_freep) struct blob_txn *txn = t;
	char actual[DIGEST_STRING_MAX];
	char rel[3 + DIGEST_HEX_LEN + 1];
	bool created = false;
	int r;

	digest_ctx_final(txn->digest, actual);
	if (expected && !streq(expected, actual))
		return -EBADMSG;

	r = blob_relpath(actual, rel);
	if (r < 0)
		return r;

	/* Still in memory: no file at all if the blob is already stored (and whole). */
	r = txn->fd < 0 ? blob_existing_is_whole(txn, rel) : 0;
	if (r == 0)
		r = blob_txn_store(txn, rel, &created);
	if (r < 0)
		return r;

	if (ret_digest)
		memcpy(ret_digest, actual, DIGEST_STRING_MAX);
	if (ret_created)
		*ret_created = created;
	return 0;
}

void blob_txn_abort(struct blob_txn *t)
{
	blob_txn_free(t);
}

int blob_store_free_bytes(struct blob_store *bs, uint64_t *ret)
{
	struct statvfs sv;

	if (fstatvfs(bs->blobs_fd, &sv) < 0)
		return -errno;
	/* What an unprivileged writer may use: root's reserve is not ours to fill either. */
	*ret = (uint64_t)sv.f_bavail * sv.f_frsize;
	return 0;
}

int blob_store_sync(struct blob_store *bs)
{
	if (syncfs(bs->blobs_fd) < 0)
		return -errno;
	return 0;
}
