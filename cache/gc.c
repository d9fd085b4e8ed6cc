/*
 * cache/gc.c: reference computation, eviction and orphan removal (see gc.h).
 *
 * Which image uses which layer is in the manifests (images.manifest), so every operation starts
 * by parsing all of them: a cache holds tens to hundreds of images, each a few KiB.  Which layer
 * names which blob is asked of the index (entries.digest and chunks.digest are indexed since
 * schema 3), one query per blob; a layer's seek index is named in seek_indexes by the layer's
 * digest, and goes with the last image that uses the layer.  Rows are deleted first, in one transaction, and blob files
 * only afterwards: a crash in between leaves orphans, which the next gc removes, never a row
 * naming a deleted blob.
 */
#include "gc.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <time.h>

#include "cache/config.h"
#include "cache/base/digest.h"
#include "cache/base/log.h"
#include "cache/format/manifest.h"
#include "cache/base/util.h"
#include "cache/store/blob_store.h"
#include "cache/store/mount_records.h"

struct gc_image {
	char *digest;
	int64_t last_used;
	char **layers;
	bool gone;
};

struct gc_images {
	struct gc_image *v;
	size_t n, n_allocated;
};

static void gc_images_done(struct gc_images *s)
{
	for (size_t i = 0; i < s->n; i++) {
		free(s->v[i].digest);
		strv_free(s->v[i].layers);
	}
	free(s->v);
	*s = (struct gc_images) {};
}

static int gc_images_add(void *userdata, const struct index_db_image_row *row)
{
	struct gc_images *s = userdata;
	_cleanup_(manifest_freep) struct manifest *m = NULL;
	struct gc_image *img;
	int r;

	r = manifest_parse(row->manifest, row->manifest_len, row->media_type, &m);
	if (r < 0) {
		/* Without its layers the image's blobs would look unused: refuse to guess. */
		log_debug_errno(r, "cannot parse the manifest of image '%s': %m", row->digest);
		return -EBADMSG;
	}
	r = GREEDY_REALLOC(s->v, s->n_allocated, s->n + 1);
	if (r < 0)
		return r;
	img = &s->v[s->n];
	*img = (struct gc_image) { .last_used = row->last_used };
	img->digest = strdup(row->digest);
	if (!img->digest)
		return -ENOMEM;
	s->n++;
	for (size_t i = 0; i < m->n_layers; i++) {
		r = strv_push(&img->layers, m->layers[i].digest);
		if (r < 0)
			return r;
	}
	return 0;
}

static int gc_images_load(struct cache *c, struct gc_images *ret)
{
	struct gc_images s = {};
	int r;

	r = index_db_image_foreach(c->db, gc_images_add, &s);
	if (r < 0) {
		gc_images_done(&s);
		return r;
	}
	*ret = s;
	return 0;
}

/* True if an image other than @except (SIZE_MAX: none) that is still there uses @layer. */
static bool layer_in_use(const struct gc_images *s, const char *layer, size_t except)
{
	for (size_t i = 0; i < s->n; i++)
		if (i != except && !s->v[i].gone && strv_contains(s->v[i].layers, layer))
			return true;
	return false;
}

int cache_lock(struct cache *c, int operation, int *ret_fd)
{
	/* Nothing can change a read-only cache through this process: there is nothing to pin,
	 * and no file to lock. */
	if (c->read_only) {
		if (operation & LOCK_EX)
			return -EROFS;
		*ret_fd = -EBADF;
		return 0;
	}
	return cache_lock_file(c->dir, "gc.lock", operation, ret_fd);
}

int cache_blob_foreach(struct cache *c,
		       int (*cb)(void *userdata, int dir_fd, const char *rel, const char *digest,
				 const struct stat *st),
		       void *userdata)
{
	_cleanup_free_ char *path = NULL;
	_cleanup_close_ int fd = -EBADF;
	struct dirent *de;
	DIR *d;
	int r = 0;

	if (asprintf(&path, "%s/blobs/sha256", c->dir) < 0)
		return -ENOMEM;
	fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	d = fdopendir(fcntl(fd, F_DUPFD_CLOEXEC, 3));
	if (!d)
		return -errno;
	while (r >= 0 && (de = readdir(d))) {
		struct dirent *fe;
		DIR *sub;
		int sfd;

		if (streq(de->d_name, ".") || streq(de->d_name, ".."))
			continue;
		sfd = openat(fd, de->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
		if (sfd < 0) {
			struct stat st;
			char rel[NAME_MAX + 1];

			if (errno != ENOTDIR || fstatat(fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
				continue;
			snprintf(rel, sizeof(rel), "%s", de->d_name);
			r = cb(userdata, fd, rel, NULL, &st);
			continue;
		}
		sub = fdopendir(sfd);
		if (!sub) {
			r = -errno;
			(void)close(sfd);
			break;
		}
		while (r >= 0 && (fe = readdir(sub))) {
			char rel[2 * NAME_MAX + 2], digest[DIGEST_STRING_MAX + NAME_MAX];
			bool ok;
			struct stat st;

			if (streq(fe->d_name, ".") || streq(fe->d_name, ".."))
				continue;
			snprintf(rel, sizeof(rel), "%s/%s", de->d_name, fe->d_name);
			if (fstatat(fd, rel, &st, AT_SYMLINK_NOFOLLOW) < 0)
				continue;  /* removed meanwhile */
			snprintf(digest, sizeof(digest), "sha256:%s", fe->d_name);
			ok = S_ISREG(st.st_mode) && digest_validate(digest) == 0 &&
			     strlen(de->d_name) == 2 && strncmp(de->d_name, fe->d_name, 2) == 0;
			r = cb(userdata, fd, rel, ok ? digest : NULL, &st);
		}
		closedir(sub);
	}
	closedir(d);
	return r;
}

static int blob_relpath(const char *digest, char rel[3 + DIGEST_HEX_LEN + 1])
{
	const char *hex = digest + strlen("sha256:");

	if (digest_validate(digest) < 0)
		return -EBADMSG;
	snprintf(rel, 3 + DIGEST_HEX_LEN + 1, "%.2s/%s", hex, hex);
	return 0;
}

/* Removes blob @digest if no layer names it; adds its size to *freed.  1 if it removed it. */
static int blob_remove_if_unreferenced(struct cache *c, int dir_fd, const char *digest,
				       uint64_t *freed)
{
	char rel[3 + DIGEST_HEX_LEN + 1];
	struct stat st;
	int r;

	r = index_db_blob_is_referenced(c->db, digest);
	if (r != 0)
		return r < 0 ? r : 0;
	r = blob_relpath(digest, rel);
	if (r < 0)
		return 0;
	if (fstatat(dir_fd, rel, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (unlinkat(dir_fd, rel, 0) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (freed)
		*freed += blob_disk_bytes(&st);
	return 1;
}

static int collect_blob(void *userdata, const char *digest, bool chunk)
{
	(void)chunk;
	return strv_push(userdata, digest);
}

/* A layer's seek index (cache/seek.h) is kept for the layer, not for an image: it goes when
 * the last image that uses the layer goes, its blob pushed to @blobs. */
static int collect_seek_blob(struct cache *c, const char *layer, char ***blobs)
{
	_cleanup_free_ char *digest = NULL;
	int r;

	r = index_db_seek_get(c->db, layer, &digest, NULL);
	if (r == -ENOENT)
		return 0;
	return r < 0 ? r : strv_push(blobs, digest);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Deletes the rows of image @idx and of its layers no other image uses, then the blobs nobody
 * names any more: their bytes are added to *@freed, their number to *@removed (if not NULL). */
static int gc_image_drop(struct cache *c, struct gc_images *s, size_t idx, uint64_t *freed,
			 uint64_t *removed)
{
	struct gc_image *img = &s->v[idx];
	_cleanup_strv_free_ char **drop = NULL, **blobs = NULL;
	_cleanup_free_ char *dir = NULL;
	_cleanup_close_ int dir_fd = -EBADF;
	size_t n;
	int r;

	for (char **l = img->layers; l && *l; l++) {
		if (layer_in_use(s, *l, idx) || strv_contains(drop, *l))
			continue;
		r = strv_push(&drop, *l);
		if (r < 0)
			return r;
		r = index_db_layer_foreach_blob(c->db, *l, collect_blob, &blobs);
		if (r < 0 && r != -ENOENT)
			return r;
		r = collect_seek_blob(c, *l, &blobs);
		if (r < 0)
			return r;
	}

	r = index_db_transaction_begin(c->db);
	if (r < 0)
		return r;
	r = index_db_ref_delete_digest(c->db, img->digest);
	if (r >= 0)
		r = index_db_image_delete(c->db, img->digest);
	for (char **l = drop; r >= 0 && l && *l; l++) {
		r = index_db_layer_delete(c->db, *l);
		if (r >= 0)
			r = index_db_seek_delete(c->db, *l);
	}
	if (r < 0) {
		index_db_transaction_rollback(c->db);
		return r;
	}
	r = index_db_transaction_commit(c->db);
	if (r < 0)
		return r;
	img->gone = true;

	if (asprintf(&dir, "%s/blobs/sha256", c->dir) < 0)
		return -ENOMEM;
	dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dir_fd < 0)
		return -errno;
	n = strv_length(blobs);
	if (n > 0)
		qsort(blobs, n, sizeof(char *), cmp_str);
	for (size_t i = 0; i < n; i++) {
		if (i > 0 && streq(blobs[i], blobs[i - 1]))
			continue;
		r = blob_remove_if_unreferenced(c, dir_fd, blobs[i], freed);
		if (r < 0)
			return r;
		if (r > 0 && removed)
			(*removed)++;
	}
	return 0;
}

int cache_image_remove(struct cache *c, const char *digest, uint64_t *ret_freed)
{
	_cleanup_(gc_images_done) struct gc_images s = {};
	uint64_t freed = 0;
	int r;

	r = gc_images_load(c, &s);
	if (r < 0)
		return r;
	for (size_t i = 0; i < s.n; i++)
		if (streq(s.v[i].digest, digest)) {
			r = gc_image_drop(c, &s, i, &freed, NULL);
			if (ret_freed)
				*ret_freed += freed;
			return r;
		}
	/* Known only by a ref whose image row is gone: forget the refs. */
	r = index_db_ref_delete_digest(c->db, digest);
	return r < 0 ? r : 0;
}

void gc_result_done(struct gc_result *r)
{
	strv_free(r->evicted);
	*r = (struct gc_result) {};
}

static int collect_layer(void *userdata, const struct index_db_layer_row *row)
{
	return strv_push(userdata, row->digest);
}

/* Layers no image uses: left by images removed before this gc existed, or by a crash. */
static int gc_drop_unused_layers(struct cache *c, const struct gc_images *s, uint64_t *dropped)
{
	_cleanup_strv_free_ char **layers = NULL;
	int r;

	r = index_db_layer_foreach_row(c->db, collect_layer, &layers);
	if (r < 0)
		return r;
	for (char **l = layers; l && *l; l++) {
		if (layer_in_use(s, *l, SIZE_MAX))
			continue;
		r = index_db_layer_delete(c->db, *l);
		if (r < 0)
			return r;
		(*dropped)++;
	}
	return 0;
}

static int collect_seek_layer(void *userdata, const char *layer, const char *digest,
			      bool trusted)
{
	(void)digest;
	(void)trusted;
	return strv_push(userdata, layer);
}

/* Seek indexes of layers no image uses (their image removed before indexes went with it, or
 * an index fetched for a pull that failed): the rows go, the sweep then removes their blobs. */
static int gc_drop_unused_seek_indexes(struct cache *c, const struct gc_images *s,
				       uint64_t *dropped)
{
	_cleanup_strv_free_ char **layers = NULL;
	int r;

	r = index_db_seek_foreach(c->db, collect_seek_layer, &layers);
	if (r < 0)
		return r;
	for (char **l = layers; l && *l; l++) {
		if (layer_in_use(s, *l, SIZE_MAX))
			continue;
		r = index_db_seek_delete(c->db, *l);
		if (r < 0)
			return r;
		(*dropped)++;
	}
	return 0;
}

struct sweep {
	struct cache *c;
	struct gc_result *res;
};

static int sweep_blob(void *userdata, int dir_fd, const char *rel, const char *digest,
		      const struct stat *st)
{
	struct sweep *sw = userdata;
	int r;

	if (!digest)
		return 0;  /* not ours to judge: fsck reports it */
	r = index_db_blob_is_referenced(sw->c->db, digest);
	if (r < 0)
		return r;
	if (r == 0) {
		if (unlinkat(dir_fd, rel, 0) < 0)
			return errno == ENOENT ? 0 : -errno;
		sw->res->orphans++;
		sw->res->orphan_bytes += blob_disk_bytes(st);
		return 0;
	}
	sw->res->n_blobs++;
	sw->res->blob_bytes += blob_disk_bytes(st);
	return 0;
}

static int sweep_tmp_entry(void *userdata, int dir_fd, const char *name, const struct stat *st)
{
	uint64_t *removed = userdata;

	if (S_ISDIR(st->st_mode))
		return 0;
	if (unlinkat(dir_fd, name, 0) < 0)
		return errno == ENOENT ? 0 : -errno;
	(*removed)++;
	return 0;
}

/* Age is the only safe test: a younger file may be a live writer's. */
static int gc_sweep_tmp(struct cache *c, int64_t min_age, uint64_t *removed)
{
	return cache_tmp_foreach_old(c, min_age, sweep_tmp_entry, removed);
}

static int gc_locked(struct cache *c, const struct gc_options *o, struct gc_result *res)
{
	_cleanup_(gc_images_done) struct gc_images s = {};
	_cleanup_strv_free_ char **mounted = NULL;
	struct sweep sw = { .c = c, .res = res };
	size_t keep = SIZE_MAX;
	int r;

	r = gc_images_load(c, &s);
	if (r < 0)
		return r;
	r = gc_drop_unused_layers(c, &s, &res->layers_dropped);
	if (r >= 0)
		r = gc_drop_unused_seek_indexes(c, &s, &res->seek_indexes_dropped);
	if (r < 0)
		return r;
	r = cache_blob_foreach(c, sweep_blob, &sw);
	if (r < 0)
		return r;
	r = gc_sweep_tmp(c, o->tmp_min_age, &res->tmp_files);
	if (r < 0)
		return r;
	if (o->max_size == 0 || res->blob_bytes <= o->max_size)
		return 0;

	r = mount_records_mounted_digests(c->dir, &mounted);
	if (r < 0)
		return r;
	if (o->keep_most_recent)
		for (size_t i = 0; i < s.n; i++)
			if (keep == SIZE_MAX || s.v[i].last_used > s.v[keep].last_used)
				keep = i;

	while (res->blob_bytes > o->max_size) {
		size_t victim = SIZE_MAX;
		uint64_t freed = 0, removed = 0;

		for (size_t i = 0; i < s.n; i++) {
			if (s.v[i].gone || i == keep || strv_contains(mounted, s.v[i].digest))
				continue;
			if (victim == SIZE_MAX || s.v[i].last_used < s.v[victim].last_used ||
			    (s.v[i].last_used == s.v[victim].last_used &&
			     strcmp(s.v[i].digest, s.v[victim].digest) < 0))
				victim = i;
		}
		if (victim == SIZE_MAX)
			return -ENOSPC;
		r = gc_image_drop(c, &s, victim, &freed, &removed);
		if (r < 0)
			return r;
		r = strv_push(&res->evicted, s.v[victim].digest);
		if (r < 0)
			return r;
		res->evicted_bytes += freed;
		res->blob_bytes = res->blob_bytes > freed ? res->blob_bytes - freed : 0;
		res->n_blobs = res->n_blobs > removed ? res->n_blobs - removed : 0;
	}
	return 0;
}

int cache_gc(struct cache *c, const struct gc_options *o, struct gc_result *ret)
{
	_cleanup_close_ int lock_fd = -EBADF;
	int r;

	*ret = (struct gc_result) {};
	r = cache_lock(c, LOCK_EX | (o->no_wait ? LOCK_NB : 0), &lock_fd);
	if (r < 0)
		return r;
	r = gc_locked(c, o, ret);
	if (r < 0 && r != -ENOSPC)
		gc_result_done(ret);
	return r;
}

int cache_gc_auto(struct cache *c)
{
	struct gc_options o = { .keep_most_recent = true, .tmp_min_age = GC_TMP_MIN_AGE_SEC };
	struct gc_result res;
	int r;

	if (c->read_only)
		return 0;
	r = config_max_size(&o.max_size, NULL);
	if (r < 0)
		return r;
	if (o.max_size == 0)
		return 0;
	r = cache_gc(c, &o, &res);
	if (r >= 0 || r == -ENOSPC)
		log_debug("automatic gc of '%s': %zu images evicted, %llu bytes left", c->dir,
			  strv_length(res.evicted), (unsigned long long)res.blob_bytes);
	if (r == -ENOSPC)
		r = 0;  /* everything left is in use: nothing more to do */
	gc_result_done(&res);
	return r < 0 ? r : 1;
}
