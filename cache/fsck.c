/*
 * cache/fsck.c: the consistency check of a cache directory (see fsck.h).  Hashing every blob is
 * the cost (a cache can hold GBs): the files are listed first and hashed by a few threads that
 * take the next file from a shared counter; everything that touches SQLite stays on the calling
 * thread.  The order of the checks makes one --repair run sufficient: bad blobs are deleted
 * before seek indexes are read and tar layers are checked for missing contents, and layers and
 * seek indexes are dropped before orphans are looked for, so that the blobs of a dropped layer
 * or index are not left behind as orphans.
 */
#include "fsck.h"

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <sys/file.h>
#include <time.h>

#include "cache/base/digest.h"
#include "cache/base/error.h"
#include "cache/gc.h"
#include "cache/base/util.h"
#include "cache/seek.h"

#define FSCK_MAX_THREADS 8
#define READ_BUF (1u << 20)

struct fsck_blob {
	char *rel;        /* "xx/NAME" under blobs/sha256 */
	char *digest;     /* NULL: not a well-formed blob name */
	uint64_t size;
	int status;       /* 0 good, -EBADMSG mismatch, other -errno: unreadable */
	bool removed;
};

struct fsck {
	struct cache *c;
	const struct fsck_options *o;
	void (*problem)(void *userdata, const char *line, bool repaired);
	void *userdata;
	struct fsck_result *res;
	int dir_fd;       /* blobs/sha256 */
	struct fsck_blob *blobs;
	size_t n_blobs, n_allocated;
	atomic_size_t next;
};

static void report(struct fsck *f, bool repaired, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void report(struct fsck *f, bool repaired, const char *fmt, ...)
{
	char line[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	f->res->problems++;
	if (repaired)
		f->res->repaired++;
	f->problem(f->userdata, line, repaired);
}

static int list_blob(void *userdata, int dir_fd, const char *rel, const char *digest,
		     const struct stat *st)
{
	struct fsck *f = userdata;
	struct fsck_blob *b;

	(void)dir_fd;
	if (GREEDY_REALLOC(f->blobs, f->n_allocated, f->n_blobs + 1) < 0)
		return -ENOMEM;
	b = &f->blobs[f->n_blobs];
	*b = (struct fsck_blob) { .size = (uint64_t)st->st_size };
	b->rel = strdup(rel);
	b->digest = digest ? strdup(digest) : NULL;
	if (!b->rel || (digest && !b->digest)) {
		free(b->rel);
		free(b->digest);
		return -ENOMEM;
	}
	f->n_blobs++;
	return 0;
}

static int hash_one(struct fsck *f, struct fsck_blob *b, uint8_t *buf)
{
	_cleanup_(digest_ctx_freep) struct digest_ctx *ctx = NULL;
	_cleanup_close_ int fd = -EBADF;
	char got[DIGEST_STRING_MAX];
	int r;

	fd = openat(f->dir_fd, b->rel, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return -errno;
	r = digest_ctx_new(&ctx);
	if (r < 0)
		return r;
	for (;;) {
		ssize_t n = read_full(fd, buf, READ_BUF);

		if (n < 0)
			return (int)n;
		if (n == 0)
			break;
		digest_ctx_update(ctx, buf, (size_t)n);
	}
	digest_ctx_final(ctx, got);
	return streq(got, b->digest) ? 0 : -EBADMSG;
}

static void *hash_thread(void *userdata)
{
	struct fsck *f = userdata;
	uint8_t *buf = malloc(READ_BUF);

	for (;;) {
		size_t i = atomic_fetch_add(&f->next, 1);

		if (i >= f->n_blobs)
			break;
		if (!f->blobs[i].digest)
			continue;
		f->blobs[i].status = buf ? hash_one(f, &f->blobs[i], buf) : -ENOMEM;
	}
	free(buf);
	return NULL;
}

static unsigned thread_count(const struct fsck_options *o)
{
	long n = o->threads ? (long)o->threads : sysconf(_SC_NPROCESSORS_ONLN);

	if (n < 1)
		n = 1;
	return n > FSCK_MAX_THREADS ? FSCK_MAX_THREADS : (unsigned)n;
}

static int hash_all(struct fsck *f)
{
	pthread_t threads[FSCK_MAX_THREADS];
	unsigned n = thread_count(f->o), started = 0;

	atomic_store(&f->next, 0);
	for (; started < n; started++)
		if (pthread_create(&threads[started], NULL, hash_thread, f) != 0)
			break;
	if (started == 0)
		(void)hash_thread(f);
	for (unsigned i = 0; i < started; i++)
		(void)pthread_join(threads[i], NULL);
	return 0;
}

static void remove_blob(struct fsck *f, struct fsck_blob *b, bool *repaired)
{
	*repaired = false;
	if (!f->o->repair)
		return;
	if (unlinkat(f->dir_fd, b->rel, 0) == 0 || errno == ENOENT) {
		b->removed = true;
		*repaired = true;
	}
}

static void check_blobs(struct fsck *f)
{
	for (size_t i = 0; i < f->n_blobs; i++) {
		struct fsck_blob *b = &f->blobs[i];
		bool repaired;

		if (!b->digest) {
			remove_blob(f, b, &repaired);
			report(f, repaired, "unexpected file blobs/sha256/%s%s", b->rel,
			       repaired ? ": removed" : "");
		} else if (b->status == -EBADMSG) {
			remove_blob(f, b, &repaired);
			report(f, repaired, "blob %s does not hash to its name%s", b->digest,
			       repaired ? ": removed" : "");
		} else if (b->status < 0) {
			errno = -b->status;
			report(f, false, "blob %s cannot be read: %m", b->digest);
		}
	}
}

static int collect_layer(void *userdata, const struct index_db_layer_row *row)
{
	if (!streq(row->format, "tar"))
		return 0;  /* lazy layers' chunks may be missing: not fetched yet */
	return strv_push(userdata, row->digest);
}

struct layer_check {
	struct fsck *f;
	uint64_t named, missing;
	char first_missing[DIGEST_STRING_MAX];
};

static int check_content(void *userdata, const char *digest, bool chunk)
{
	struct layer_check *lc = userdata;
	char rel[3 + DIGEST_HEX_LEN + 1];
	struct stat st;

	if (chunk || digest_validate(digest) < 0)
		return 0;
	lc->named++;
	snprintf(rel, sizeof(rel), "%.2s/%s", digest + 7, digest + 7);
	if (fstatat(lc->f->dir_fd, rel, &st, AT_SYMLINK_NOFOLLOW) == 0) {
		if (S_ISREG(st.st_mode))
			return 0;
	} else if (errno != ENOENT && errno != ENOTDIR) {
		return -errno;
	}
	if (lc->missing++ == 0)
		snprintf(lc->first_missing, sizeof(lc->first_missing), "%s", digest);
	return 0;
}

static int check_tar_layers(struct fsck *f)
{
	_cleanup_strv_free_ char **layers = NULL;
	int r;

	r = index_db_layer_foreach_row(f->c->db, collect_layer, &layers);
	if (r < 0)
		return r;
	for (char **l = layers; l && *l; l++) {
		struct layer_check lc = { .f = f };
		bool repaired = false;

		r = index_db_layer_foreach_blob(f->c->db, *l, check_content, &lc);
		if (r < 0)
			return r;
		if (lc.missing == 0)
			continue;
		if (f->o->repair) {
			r = index_db_layer_delete(f->c->db, *l);
			if (r < 0)
				return r;
			repaired = true;
		}
		report(f, repaired, "layer %s: %llu of %llu file contents missing (first %s)%s", *l,
		       (unsigned long long)lc.missing, (unsigned long long)lc.named,
		       lc.first_missing,
		       repaired ? ": dropped from the index, the next pull imports it again" : "");
	}
	return 0;
}

struct seek_rows {
	char **layers, **digests;  /* in step */
};

static int collect_seek_row(void *userdata, const char *layer, const char *digest, bool trusted)
{
	struct seek_rows *rows = userdata;
	int r;

	(void)trusted;
	r = strv_push(&rows->layers, layer);
	return r < 0 ? r : strv_push(&rows->digests, digest);
}

/* Why the seek index @digest of @layer is unusable (a static string), NULL when it is not:
 * the same reading as seek_load(), without the layer's size, which only manifests know. */
static const char *seek_index_problem(struct fsck *f, const char *layer, const char *digest)
{
	_cleanup_(seek_index_freep) struct seek_index *si = NULL;
	_cleanup_free_ char *buf = NULL;
	_cleanup_close_ int fd = -EBADF;
	size_t len;
	int r;

	r = blob_store_open_blob(f->c->bs, digest, &fd);
	if (r == -ENOENT)
		return "is missing";
	if (r >= 0)
		r = read_full_fd(fd, SEEK_INDEX_MAX, &buf, &len);
	if (r < 0)
		return "cannot be read";
	if (digest_verify_buffer(buf, len, digest) < 0)
		return "does not hash to its name";
	r = seek_index_parse(buf, len, layer, 0, &si);
	error_clear();
	return r < 0 ? "does not parse" : NULL;
}

/* Every seek index the index database names must be a blob that parses as that layer's:
 * a layer indexed from a missing one cannot be mounted.  Repair forgets the index and a layer
 * indexed from it (seek_drop()): the next pull reads that layer whole. */
static int check_seek_indexes(struct fsck *f)
{
	_cleanup_strv_free_ char **layers = NULL, **digests = NULL;
	struct seek_rows rows = {};
	int r;

	r = index_db_seek_foreach(f->c->db, collect_seek_row, &rows);
	layers = rows.layers;
	digests = rows.digests;
	if (r < 0)
		return r;
	for (size_t i = 0; layers && layers[i]; i++) {
		const char *why = seek_index_problem(f, layers[i], digests[i]);
		bool repaired = false;

		if (!why)
			continue;
		if (f->o->repair) {
			r = seek_drop(f->c, layers[i]);
			if (r < 0)
				return r;
			repaired = true;
		}
		report(f, repaired, "seek index %s of layer %s %s%s", digests[i], layers[i], why,
		       repaired ? ": dropped, the next pull reads the layer whole" : "");
	}
	return 0;
}

static int collect_seek_layer(void *userdata, const struct index_db_layer_row *row)
{
	if (!streq(row->format, LAYER_FORMAT_GZIP_INDEX))
		return 0;
	return strv_push(userdata, row->digest);
}

/* A layer indexed from a seek index that has no row any more (a crash between the two, an
 * older lazyroot's gc) cannot be mounted: repair drops it, and the next pull imports it. */
static int check_seek_layers(struct fsck *f)
{
	_cleanup_strv_free_ char **layers = NULL;
	int r;

	r = index_db_layer_foreach_row(f->c->db, collect_seek_layer, &layers);
	if (r < 0)
		return r;
	for (char **l = layers; l && *l; l++) {
		bool repaired = false;

		r = index_db_seek_get(f->c->db, *l, NULL, NULL);
		if (r != -ENOENT) {
			if (r < 0)
				return r;
			continue;
		}
		if (f->o->repair) {
			r = index_db_layer_delete(f->c->db, *l);
			if (r < 0)
				return r;
			repaired = true;
		}
		report(f, repaired, "layer %s is indexed from a seek index the cache does not "
		       "have%s", *l, repaired ? ": dropped from the index, the next pull imports "
		       "it again" : "");
	}
	return 0;
}

static int check_orphans(struct fsck *f)
{
	for (size_t i = 0; i < f->n_blobs; i++) {
		struct fsck_blob *b = &f->blobs[i];
		bool repaired;
		int r;

		if (!b->digest || b->removed)
			continue;
		r = index_db_blob_is_referenced(f->c->db, b->digest);
		if (r < 0)
			return r;
		if (r > 0)
			continue;
		remove_blob(f, b, &repaired);
		report(f, repaired, "orphan blob %s (%llu bytes), no layer names it%s", b->digest,
		       (unsigned long long)b->size, repaired ? ": removed" : "");
	}
	return 0;
}

static int check_tmp_entry(void *userdata, int dir_fd, const char *name, const struct stat *st)
{
	struct fsck *f = userdata;
	bool repaired = false;

	if (f->o->repair)
		repaired = unlinkat(dir_fd, name, S_ISDIR(st->st_mode) ? AT_REMOVEDIR : 0) == 0;
	report(f, repaired, "leftover temporary file tmp/%s%s", name, repaired ? ": removed" : "");
	return 0;
}

static int check_tmp(struct fsck *f)
{
	return cache_tmp_foreach_old(f->c, GC_TMP_MIN_AGE_SEC, check_tmp_entry, f);
}

int cache_fsck(struct cache *c, const struct fsck_options *o,
	       void (*problem)(void *userdata, const char *line, bool repaired), void *userdata,
	       struct fsck_result *ret)
{
	_cleanup_close_ int lock_fd = -EBADF, dir_fd = -EBADF;
	_cleanup_strv_free_ char **integrity = NULL;
	_cleanup_free_ char *dir = NULL;
	struct fsck f = {
		.c = c, .o = o, .problem = problem, .userdata = userdata, .res = ret,
	};
	int r;

	*ret = (struct fsck_result) {};
	r = cache_lock(c, LOCK_EX, &lock_fd);
	if (r < 0)
		return r;
	if (asprintf(&dir, "%s/blobs/sha256", c->dir) < 0)
		return -ENOMEM;
	dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dir_fd < 0)
		return -errno;
	f.dir_fd = dir_fd;

	r = index_db_integrity_check(c->db, &integrity);
	if (r < 0)
		goto finish;
	for (char **p = integrity; p && *p; p++)
		report(&f, false, "index.db: %s", *p);

	r = cache_blob_foreach(c, list_blob, &f);
	if (r < 0)
		goto finish;
	for (size_t i = 0; i < f.n_blobs; i++) {
		ret->n_blobs++;
		ret->blob_bytes += f.blobs[i].size;
	}
	hash_all(&f);
	check_blobs(&f);
	r = check_seek_indexes(&f);
	if (r >= 0)
		r = check_seek_layers(&f);
	if (r >= 0)
		r = check_tar_layers(&f);
	if (r >= 0)
		r = check_orphans(&f);
	if (r >= 0)
		r = check_tmp(&f);
finish:
	for (size_t i = 0; i < f.n_blobs; i++) {
		free(f.blobs[i].rel);
		free(f.blobs[i].digest);
	}
	free(f.blobs);
	return r;
}
