/*
 * cache/registry/source_local.c: see source_local.h.  An oci: layout is a directory: index.json is read
 * on each manifest request (it is small), blobs are opened by digest and pread.  An archive is
 * indexed once per process (tar headers, plus the layer hashes of a docker-archive) and shared
 * by every source on it, refcounted in a table keyed by path and file identity: the mount
 * daemon opens one source per fetch slot and a pull one per lazy layer, and none of them should
 * rescan or rehash.  Blob reads then go straight to the archive's bytes at the member's offset.
 */
#include "source_local.h"

#include <assert.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <sys/stat.h>

#include "cache/base/digest.h"
#include "cache/base/error.h"
#include "cache/registry/docker_archive.h"
#include "cache/registry/registry.h"
#include "cache/format/manifest.h"
#include "cache/registry/tar_index.h"

#define INDEX_JSON_MAX (4u << 20)
#define MANIFEST_MAX (4u << 20)
#define STREAM_CHUNK (256u * 1024)
#define REF_NAME_ANNOTATION "org.opencontainers.image.ref.name"

/* One archive file as this process indexed it; immutable once in the table. */
struct local_archive {
	struct local_archive *next;   /* guarded by archives_lock */
	unsigned n_ref;               /* guarded by archives_lock */
	enum reference_transport transport;
	char *path;
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtime;
	int fd;
	struct tar_index *tar;
	struct docker_archive *docker;  /* docker-archive only */
};

static pthread_mutex_t archives_lock = PTHREAD_MUTEX_INITIALIZER;
static struct local_archive *archives;  /* guarded by archives_lock */

struct source_local {
	struct reference *ref;
	bool opened;
	int dir_fd;                       /* oci: the layout directory */
	struct local_archive *archive;    /* oci-archive:, docker-archive: */
	uint64_t bytes;
};

/* Where a blob's bytes are: a file of its own (oci:) or a range of the archive. */
struct blob_loc {
	int fd;
	bool own_fd;
	uint64_t offset, size;
};

static void blob_loc_done(struct blob_loc *l)
{
	if (l->own_fd)
		closep(&l->fd);
}

/* @s's failure, as this thread's message (error.h); returns @r. */
static int set_error(struct source_local *s, int r, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int set_error(struct source_local *s, int r, const char *fmt, ...)
{
	va_list ap;

	(void)s;
	va_start(ap, fmt);
	(void)error_setv(r, fmt, ap);
	va_end(ap);
	return r;
}

static void local_archive_done(struct local_archive *a)
{
	closep(&a->fd);
	tar_index_free(a->tar);
	docker_archive_free(a->docker);
	free(a->path);
}
static DEFINE_FREE_FUNC(struct local_archive, local_archive_free, local_archive_done);
DEFINE_CLEANUP_FUNC(struct local_archive *, local_archive_free);

static void local_archive_unref(struct local_archive *a)
{
	bool last;

	if (!a)
		return;
	pthread_mutex_lock(&archives_lock);
	assert(a->n_ref > 0);
	last = --a->n_ref == 0;
	if (last)
		for (struct local_archive **p = &archives; *p; p = &(*p)->next)
			if (*p == a) {
				*p = a->next;
				break;
			}
	pthread_mutex_unlock(&archives_lock);
	if (last)
		local_archive_free(a);
}

static const char *transport_name(enum reference_transport t)
{
	return t == REFERENCE_DOCKER_ARCHIVE ? "docker-archive" : "oci-archive";
}

/* Indexes the archive at @s->ref->path; called with archives_lock held. */
static int local_archive_open(struct source_local *s, struct local_archive **ret)
{
	_cleanup_(local_archive_freep) struct local_archive *a = NULL;
	const char *path = s->ref->path;
	char why[256] = "";
	struct stat fst;
	int r;

	a = calloc(1, sizeof(*a));
	if (!a)
		return -ENOMEM;
	a->fd = open(path, O_RDONLY | O_CLOEXEC);
	if (a->fd < 0)
		return set_error(s, -errno, "cannot open '%s'", path);
	/* Identity from the file actually opened, in case it was replaced since the stat. */
	if (fstat(a->fd, &fst) < 0)
		return set_error(s, -errno, "cannot stat '%s'", path);
	a->transport = s->ref->transport;
	a->dev = fst.st_dev;
	a->ino = fst.st_ino;
	a->size = fst.st_size;
	a->mtime = fst.st_mtim;
	a->path = strdup(path);
	if (!a->path)
		return -ENOMEM;

	r = tar_index_scan(a->fd, fst.st_size, &a->tar);
	if (r == -ENODATA)
		return set_error(s, r, "%s '%s' is truncated", transport_name(a->transport), path);
	if (r == -EPROTO)
		return set_error(s, r, "'%s' is not a tar archive (%s: expects one)", path,
				 transport_name(a->transport));
	if (r < 0)
		return set_error(s, r, "cannot read '%s'", path);

	if (a->transport == REFERENCE_OCI_ARCHIVE) {
		if (!tar_index_find(a->tar, "index.json"))
			return set_error(s, -EPROTO,
					 "'%s' is not an OCI layout archive (it has no index.json)", path);
	} else {
		r = docker_archive_load(a->fd, a->tar, &a->docker, why, sizeof(why));
		if (r == -ENODATA)
			return set_error(s, r, "docker-archive '%s' is truncated", path);
		if (r < 0 && why[0])
			return set_error(s, r, "'%s' is not a usable docker-archive: %s", path, why);
		if (r < 0)
			return set_error(s, r, "cannot read docker-archive '%s'", path);
		s->bytes += a->docker->bytes_read;
	}
	a->n_ref = 1;
	*ret = TAKE_PTR(a);
	return 0;
}

static bool local_archive_matches(const struct local_archive *a, const struct reference *ref,
				  const struct stat *st)
{
	return a->transport == ref->transport && streq(a->path, ref->path) &&
	       a->dev == st->st_dev && a->ino == st->st_ino && a->size == st->st_size &&
	       a->mtime.tv_sec == st->st_mtim.tv_sec && a->mtime.tv_nsec == st->st_mtim.tv_nsec;
}

static int archive_acquire(struct source_local *s)
{
	const char *path = s->ref->path;
	struct stat st;
	int r = 0;

	if (stat(path, &st) < 0)
		return set_error(s, -errno, "cannot open %s '%s'",
				 transport_name(s->ref->transport), path);
	if (S_ISDIR(st.st_mode))
		return set_error(s, -EPROTO, "'%s' is a directory: %s: expects a tar file (use oci:%s)",
				 path, transport_name(s->ref->transport), path);

	/* Held while indexing, so that concurrent openers of one archive hash it once. */
	pthread_mutex_lock(&archives_lock);
	for (struct local_archive *a = archives; a; a = a->next)
		if (local_archive_matches(a, s->ref, &st)) {
			a->n_ref++;
			s->archive = a;
			break;
		}
	if (!s->archive) {
		r = local_archive_open(s, &s->archive);
		if (r >= 0) {
			s->archive->next = archives;
			archives = s->archive;
		}
	}
	pthread_mutex_unlock(&archives_lock);
	return r;
}

static int ensure_open(struct source_local *s)
{
	const char *path = s->ref->path;
	int r;

	if (s->opened)
		return 0;
	if (s->ref->transport == REFERENCE_OCI) {
		s->dir_fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (s->dir_fd < 0 && errno == ENOTDIR)
			return set_error(s, -EPROTO,
					 "'%s' is not a directory: oci: expects an OCI image layout "
					 "(use oci-archive: or docker-archive: for a tar)", path);
		if (s->dir_fd < 0)
			return set_error(s, -errno, "cannot open OCI layout '%s'", path);
	} else {
		r = archive_acquire(s);
		if (r < 0)
			return r;
	}
	s->opened = true;
	return 0;
}

int source_local_new(const struct reference *ref, struct source_local **ret)
{
	_cleanup_(source_local_freep) struct source_local *s = NULL;
	int r;

	if (!reference_is_local(ref) || !ref->path)
		return -EINVAL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->dir_fd = -EBADF;
	r = reference_dup(ref, &s->ref);
	if (r < 0)
		return r;
	*ret = TAKE_PTR(s);
	return 0;
}

static void source_local_done(struct source_local *s)
{
	closep(&s->dir_fd);
	local_archive_unref(s->archive);
	reference_free(s->ref);
}
DEFINE_FREE_FUNC(struct source_local, source_local_free, source_local_done);

void source_local_get_counters(struct source_local *s, uint64_t *ret_requests,
			       uint64_t *ret_bytes)
{
	*ret_requests = 0;
	*ret_bytes = s->bytes;
}

int source_local_ping(struct source_local *s)
{
	return ensure_open(s);
}

/* The bytes of an archive member or layout file, for index.json. */
static int read_layout_file(struct source_local *s, const char *name, size_t max, char **ret,
			    size_t *ret_len)
{
	_cleanup_free_ char *buf = NULL;
	const struct tar_member *m;
	size_t len;
	int r;

	if (s->dir_fd >= 0) {
		_cleanup_close_ int fd = openat(s->dir_fd, name, O_RDONLY | O_CLOEXEC);

		if (fd < 0 && errno == ENOENT)
			return set_error(s, -EPROTO, "'%s' is not an OCI image layout (it has no %s)",
					 s->ref->path, name);
		if (fd < 0)
			return set_error(s, -errno, "cannot open '%s/%s'", s->ref->path, name);
		r = read_full_fd(fd, max, &buf, &len);
		if (r < 0)
			return set_error(s, r, "cannot read '%s/%s'", s->ref->path, name);
	} else {
		m = tar_index_find(s->archive->tar, name);
		if (!m)
			return set_error(s, -EPROTO, "'%s' is not an OCI layout archive (it has no %s)",
					 s->ref->path, name);
		if (m->size > max)
			return set_error(s, -EFBIG, "%s in '%s' is too large", name, s->ref->path);
		len = m->size;
		buf = malloc(len + 1);
		if (!buf)
			return -ENOMEM;
		r = tar_pread(s->archive->fd, buf, len, m->offset);
		if (r < 0)
			return set_error(s, r, "cannot read %s in '%s': %s", name, s->ref->path,
					 r == -ENODATA ? "archive truncated" : strerror(-r));
		buf[len] = 0;
	}
	s->bytes += len;
	*ret = TAKE_PTR(buf);
	*ret_len = len;
	return 0;
}

static int blob_locate(struct source_local *s, const char *digest, struct blob_loc *ret)
{
	_cleanup_free_ char *name = NULL;
	int r;

	r = ensure_open(s);
	if (r < 0)
		return r;
	r = digest_validate(digest);
	if (r < 0)
		return set_error(s, -EINVAL, "invalid digest '%s'", digest);
	if (asprintf(&name, "blobs/sha256/%s", digest + strlen("sha256:")) < 0)
		return -ENOMEM;

	if (s->dir_fd >= 0) {
		_cleanup_close_ int fd = openat(s->dir_fd, name, O_RDONLY | O_CLOEXEC);
		struct stat st;

		if (fd < 0 && errno == ENOENT)
			return set_error(s, -ENOENT, "blob '%s' not found in '%s'", digest,
					 s->ref->path);
		if (fd < 0 || fstat(fd, &st) < 0)
			return set_error(s, -errno, "cannot open blob '%s' in '%s'", digest,
					 s->ref->path);
		if (!S_ISREG(st.st_mode))
			return set_error(s, -EPROTO, "blob '%s' in '%s' is not a regular file", digest,
					 s->ref->path);
		*ret = (struct blob_loc) { .fd = TAKE_FD(fd), .own_fd = true, .size = st.st_size };
		return 0;
	}
	if (s->archive->docker) {
		const struct docker_archive_blob *b = docker_archive_find_blob(s->archive->docker,
									       digest);

		if (b) {
			*ret = (struct blob_loc) { .fd = s->archive->fd, .offset = b->offset,
						   .size = b->size };
			return 0;
		}
	} else {
		const struct tar_member *m = tar_index_find(s->archive->tar, name);

		if (m) {
			*ret = (struct blob_loc) { .fd = s->archive->fd, .offset = m->offset,
						   .size = m->size };
			return 0;
		}
	}
	return set_error(s, -ENOENT, "blob '%s' not found in '%s'", digest, s->ref->path);
}

static int blob_pread(struct source_local *s, const struct blob_loc *l, const char *digest,
		      void *buf, size_t len, uint64_t offset)
{
	int r = tar_pread(l->fd, buf, len, l->offset + offset);

	if (r == -ENODATA)
		return set_error(s, -EPROTO, "blob '%s' in '%s' is truncated", digest, s->ref->path);
	if (r < 0)
		return set_error(s, r, "cannot read blob '%s' in '%s'", digest, s->ref->path);
	s->bytes += len;
	return 0;
}

/* A whole blob, at most @max bytes, checked against its digest. */
static int blob_read_verified(struct source_local *s, const char *digest, size_t max,
			      char **ret, size_t *ret_len)
{
	_cleanup_(blob_loc_done) struct blob_loc l = { .fd = -EBADF };
	_cleanup_free_ char *buf = NULL;
	int r;

	r = blob_locate(s, digest, &l);
	if (r < 0)
		return r;
	if (l.size > max)
		return set_error(s, -EFBIG, "blob '%s' in '%s' is larger than %zu bytes", digest,
				 s->ref->path, max);
	buf = malloc(l.size + 1);
	if (!buf)
		return -ENOMEM;
	r = blob_pread(s, &l, digest, buf, l.size, 0);
	if (r < 0)
		return r;
	buf[l.size] = 0;
	if (digest_verify_buffer(buf, l.size, digest) < 0)
		return set_error(s, -EBADMSG, "blob '%s' in '%s' does not match its digest", digest,
				 s->ref->path);
	*ret = TAKE_PTR(buf);
	*ret_len = l.size;
	return 0;
}

/* The descriptor of index.json the reference selects: by ref.name, or the only one. */
struct selected {
	char digest[DIGEST_STRING_MAX];
	uint64_t size;
	char *media_type;
};

static int tags_list(json_t *manifests, char **ret)
{
	_cleanup_free_ char *out = NULL;
	size_t i;
	json_t *d;

	json_array_foreach(manifests, i, d) {
		const char *name = json_string_value(
			json_object_get(json_object_get(d, "annotations"), REF_NAME_ANNOTATION));
		char *grown;

		if (asprintf(&grown, "%s%s%s", out ? out : "", out ? ", " : "", name ? name : "(none)") < 0)
			return -ENOMEM;
		free(out);
		out = grown;
	}
	*ret = out ? TAKE_PTR(out) : strdup("nothing");
	return *ret ? 0 : -ENOMEM;
}

static int oci_select(struct source_local *s, struct selected *ret)
{
	_cleanup_free_ char *text = NULL, *tags = NULL;
	json_t *root, *manifests, *d, *pick = NULL;
	const char *tag = s->ref->tag, *digest, *media_type;
	json_error_t jerr;
	json_int_t size;
	size_t len = 0, i;
	int r;

	r = read_layout_file(s, "index.json", INDEX_JSON_MAX, &text, &len);
	if (r < 0)
		return r;
	root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
	manifests = json_object_get(root, "manifests");
	if (!json_is_array(manifests)) {
		json_decref(root);
		return set_error(s, -EPROTO, "index.json of '%s' is malformed", s->ref->path);
	}
	json_array_foreach(manifests, i, d) {
		const char *name = json_string_value(
			json_object_get(json_object_get(d, "annotations"), REF_NAME_ANNOTATION));

		if (tag ? (name && streq(name, tag)) : json_array_size(manifests) == 1) {
			pick = d;
			break;
		}
	}
	if (!pick) {
		r = tags_list(manifests, &tags);
		if (r >= 0 && tag)
			r = set_error(s, -ENOENT, "tag '%s' not found in '%s' (it has: %s)", tag,
				      s->ref->path, tags);
		else if (r >= 0 && json_array_size(manifests) == 0)
			r = set_error(s, -ENOENT, "'%s' holds no image", s->ref->path);
		else if (r >= 0)
			r = set_error(s, -ENOENT,
				      "'%s' holds %zu images: name one as PATH:TAG (tags: %s)",
				      s->ref->path, json_array_size(manifests), tags);
		json_decref(root);
		return r;
	}

	digest = json_string_value(json_object_get(pick, "digest"));
	media_type = json_string_value(json_object_get(pick, "mediaType"));
	size = json_integer_value(json_object_get(pick, "size"));
	if (!digest || digest_validate(digest) < 0 || size < 0) {
		json_decref(root);
		return set_error(s, -EPROTO, "index.json of '%s' has a malformed descriptor",
				 s->ref->path);
	}
	*ret = (struct selected) { .size = size };
	snprintf(ret->digest, sizeof(ret->digest), "%s", digest);
	ret->media_type = media_type ? strdup(media_type) : NULL;
	json_decref(root);
	return media_type && !ret->media_type ? -ENOMEM : 0;
}

static int docker_select(struct source_local *s, const struct docker_archive_image **ret)
{
	const struct docker_archive *a = s->archive->docker;

	if (s->ref->index >= 0) {
		if ((size_t)s->ref->index >= a->n_images)
			return set_error(s, -ENOENT, "'%s' has %zu images: there is no @%ld",
					 s->ref->path, a->n_images, s->ref->index);
		*ret = &a->images[s->ref->index];
		return 0;
	}
	if (s->ref->tag) {
		for (size_t i = 0; i < a->n_images; i++)
			if (strv_contains(a->images[i].repo_tags, s->ref->tag)) {
				*ret = &a->images[i];
				return 0;
			}
		return set_error(s, -ENOENT, "'%s' has no image tagged '%s'", s->ref->path,
				 s->ref->tag);
	}
	if (a->n_images != 1)
		return set_error(s, -ENOENT, "'%s' holds %zu images: name one as PATH:REF or PATH:@N",
				 s->ref->path, a->n_images);
	*ret = &a->images[0];
	return 0;
}

int source_local_head_manifest(struct source_local *s, char ret_digest[72], uint64_t *ret_size,
			       char **ret_media_type)
{
	const struct docker_archive_image *img;
	struct selected sel;
	char *mt;
	int r;

	r = ensure_open(s);
	if (r < 0)
		return r;
	if (s->archive && s->archive->docker) {
		r = docker_select(s, &img);
		if (r < 0)
			return r;
		mt = strdup(MEDIA_TYPE_OCI_MANIFEST);
		if (!mt)
			return -ENOMEM;
		memcpy(ret_digest, img->digest, DIGEST_STRING_MAX);
		*ret_size = img->manifest_len;
		*ret_media_type = mt;
		return 0;
	}
	r = oci_select(s, &sel);
	if (r < 0)
		return r;
	memcpy(ret_digest, sel.digest, DIGEST_STRING_MAX);
	*ret_size = sel.size;
	*ret_media_type = sel.media_type;
	return 0;
}

static int manifest_copy(const struct docker_archive_image *img, char **ret_buf,
			 size_t *ret_len, char **ret_content_type, char ret_digest[72])
{
	_cleanup_free_ char *buf = strndup(img->manifest, img->manifest_len);
	char *ct = strdup(MEDIA_TYPE_OCI_MANIFEST);

	if (!buf || !ct) {
		free(ct);
		return -ENOMEM;
	}
	*ret_buf = TAKE_PTR(buf);
	*ret_len = img->manifest_len;
	*ret_content_type = ct;
	memcpy(ret_digest, img->digest, DIGEST_STRING_MAX);
	return 0;
}

int source_local_get_manifest(struct source_local *s, const char *tag_or_digest, char **ret_buf,
			      size_t *ret_len, char **ret_content_type, char ret_digest[72])
{
	_cleanup_free_ char *media_type = NULL, *buf = NULL;
	const struct docker_archive_image *img;
	char digest[DIGEST_STRING_MAX];
	size_t len;
	int r;

	r = ensure_open(s);
	if (r < 0)
		return r;

	if (tag_or_digest && strchr(tag_or_digest, ':') && digest_validate(tag_or_digest) >= 0) {
		snprintf(digest, sizeof(digest), "%s", tag_or_digest);
		if (s->archive && s->archive->docker)
			for (size_t i = 0; i < s->archive->docker->n_images; i++) {
				img = &s->archive->docker->images[i];
				if (streq(img->digest, digest))
					return manifest_copy(img, ret_buf, ret_len, ret_content_type,
							     ret_digest);
			}
	} else if (s->archive && s->archive->docker) {
		r = docker_select(s, &img);
		if (r < 0)
			return r;
		return manifest_copy(img, ret_buf, ret_len, ret_content_type, ret_digest);
	} else {
		struct selected sel;

		r = oci_select(s, &sel);
		if (r < 0)
			return r;
		memcpy(digest, sel.digest, sizeof(digest));
		media_type = sel.media_type;
	}

	r = blob_read_verified(s, digest, MANIFEST_MAX, &buf, &len);
	if (r < 0)
		return r;
	*ret_buf = TAKE_PTR(buf);
	*ret_len = len;
	*ret_content_type = TAKE_PTR(media_type);
	memcpy(ret_digest, digest, DIGEST_STRING_MAX);
	return 0;
}

int source_local_get_blob(struct source_local *s, const char *digest, size_t max,
			  char **ret_buf, size_t *ret_len)
{
	return blob_read_verified(s, digest, max, ret_buf, ret_len);
}

int source_local_stream_blob(struct source_local *s, const char *digest, uint64_t offset,
			     uint64_t len, int (*sink)(void *userdata, const void *buf, size_t n),
			     void *userdata)
{
	_cleanup_(blob_loc_done) struct blob_loc l = { .fd = -EBADF };
	_cleanup_free_ char *buf = NULL;
	int r;

	r = blob_locate(s, digest, &l);
	if (r < 0)
		return r;
	if (len == REGISTRY_TO_END && offset <= l.size)
		len = l.size - offset;
	if (offset > l.size || len > l.size - offset)
		return set_error(s, -EPROTO, "range %llu+%llu is beyond the end of blob '%s' "
				 "(%llu bytes)", (unsigned long long)offset,
				 (unsigned long long)len, digest, (unsigned long long)l.size);
	/* A chunk's range is small: no buffer larger than it. */
	buf = malloc(len < STREAM_CHUNK ? (size_t)len + 1 : STREAM_CHUNK);
	if (!buf)
		return -ENOMEM;
	for (uint64_t done = 0; done < len;) {
		size_t n = len - done < STREAM_CHUNK ? (size_t)(len - done) : STREAM_CHUNK;

		r = blob_pread(s, &l, digest, buf, n, offset + done);
		if (r < 0)
			return r;
		r = sink(userdata, buf, n);
		if (r < 0)
			return r;
		done += n;
	}
	return 0;
}
