/*
 * cache/registry/docker_archive.c: see docker_archive.h.  A `docker save` tar names its layers by
 * member name, not digest, and stores them as written by the daemon (usually uncompressed), so
 * the only way to a manifest a pull can verify is to hash each member once.  That costs one
 * sequential read of the archive per process that opens it (source_local.c shares the result
 * between the sources of one process); the media type comes from the first bytes.
 */
#include "docker_archive.h"

#include <jansson.h>
#include <stdarg.h>

#include "cache/format/manifest.h"
#include "cache/format/reference.h"

#define MANIFEST_JSON_MAX (16u << 20)
#define HASH_CHUNK (1u << 20)

static const unsigned char gzip_magic[] = { 0x1f, 0x8b };
static const unsigned char zstd_magic[] = { 0x28, 0xb5, 0x2f, 0xfd };

static void docker_archive_done(struct docker_archive *a)
{
	for (size_t i = 0; i < a->n_images; i++) {
		strv_free(a->images[i].repo_tags);
		free(a->images[i].manifest);
	}
	free(a->images);
	free(a->blobs);
}
DEFINE_FREE_FUNC(struct docker_archive, docker_archive_free, docker_archive_done);

static int fail(char *err, size_t err_size, int r, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int fail(char *err, size_t err_size, int r, const char *fmt, ...)
{
	va_list ap;

	if (err && err_size) {
		va_start(ap, fmt);
		vsnprintf(err, err_size, fmt, ap);
		va_end(ap);
	}
	return r;
}

const struct docker_archive_blob *docker_archive_find_blob(const struct docker_archive *a,
							   const char *digest)
{
	for (size_t i = 0; i < a->n_blobs; i++)
		if (streq(a->blobs[i].digest, digest))
			return &a->blobs[i];
	return NULL;
}

/* One hashed member, remembered by name so that layers shared between images are read once. */
struct hashed {
	const struct tar_member *m;
	char digest[DIGEST_STRING_MAX];
	const char *media_type;
};

struct loader {
	int fd;
	const struct tar_index *t;
	struct docker_archive *a;
	struct hashed *done;
	size_t n_done;
	unsigned char *buf;
	char *err;
	size_t err_size;
};

static const char *sniff_layer_type(const unsigned char *head, size_t n)
{
	if (n >= sizeof(gzip_magic) && memcmp(head, gzip_magic, sizeof(gzip_magic)) == 0)
		return "application/vnd.oci.image.layer.v1.tar+gzip";
	if (n >= sizeof(zstd_magic) && memcmp(head, zstd_magic, sizeof(zstd_magic)) == 0)
		return "application/vnd.oci.image.layer.v1.tar+zstd";
	return "application/vnd.oci.image.layer.v1.tar";
}

static int hash_member(struct loader *l, const char *name, const struct hashed **ret)
{
	_cleanup_(digest_ctx_freep) struct digest_ctx *ctx = NULL;
	const struct tar_member *m = tar_index_find(l->t, name);
	struct docker_archive_blob *blobs;
	struct hashed *done, *h;
	int r;

	if (!m)
		return fail(l->err, l->err_size, -ENOENT, "manifest.json names '%s', which is not in the archive",
			    name);
	for (size_t i = 0; i < l->n_done; i++)
		if (l->done[i].m == m) {
			*ret = &l->done[i];
			return 0;
		}

	done = reallocarray(l->done, l->n_done + 1, sizeof(*l->done));
	if (!done)
		return -ENOMEM;
	l->done = done;
	h = &l->done[l->n_done];
	*h = (struct hashed) { .m = m, .media_type = sniff_layer_type(NULL, 0) };

	r = digest_ctx_new(&ctx);
	if (r < 0)
		return r;
	for (uint64_t off = 0; off < m->size;) {
		size_t n = m->size - off < HASH_CHUNK ? (size_t)(m->size - off) : HASH_CHUNK;

		r = tar_pread(l->fd, l->buf, n, m->offset + off);
		if (r < 0)
			return fail(l->err, l->err_size, r, "cannot read '%s' in the archive: %s", name,
				    strerror(-r));
		if (off == 0)
			h->media_type = sniff_layer_type(l->buf, n);
		digest_ctx_update(ctx, l->buf, n);
		off += n;
	}
	digest_ctx_final(ctx, h->digest);
	l->a->bytes_read += m->size;
	l->n_done++;

	if (!docker_archive_find_blob(l->a, h->digest)) {
		blobs = reallocarray(l->a->blobs, l->a->n_blobs + 1, sizeof(*blobs));
		if (!blobs)
			return -ENOMEM;
		l->a->blobs = blobs;
		blobs[l->a->n_blobs++] = (struct docker_archive_blob) {
			.offset = m->offset, .size = m->size,
		};
		memcpy(blobs[l->a->n_blobs - 1].digest, h->digest, sizeof(h->digest));
	}
	*ret = h;
	return 0;
}

static int descriptor(const char *media_type, const struct hashed *h, json_t **ret)
{
	json_t *d = json_pack("{s:s,s:s,s:I}", "mediaType", media_type, "digest", h->digest, "size",
			      (json_int_t)h->m->size);

	if (!d)
		return -ENOMEM;
	*ret = d;
	return 0;
}

static int repo_tags_load(json_t *tags, char ***ret)
{
	_cleanup_strv_free_ char **l = NULL;
	size_t i;
	json_t *v;
	int r;

	if (!json_is_array(tags)) {
		*ret = NULL;
		return json_is_null(tags) || !tags ? 0 : -EPROTO;
	}
	json_array_foreach(tags, i, v) {
		_cleanup_(reference_freep) struct reference *ref = NULL;
		const char *s = json_string_value(v);

		if (!s)
			return -EPROTO;
		if (reference_parse(s, &ref) >= 0 && !reference_is_local(ref)) {
			char *c = reference_to_string(ref);

			r = c ? strv_consume(&l, c) : -ENOMEM;
			if (r < 0)
				free(c);
		} else {
			r = strv_push(&l, s);
		}
		if (r < 0)
			return r;
	}
	*ret = TAKE_PTR(l);
	return 0;
}

static int image_load(struct loader *l, json_t *entry, struct docker_archive_image *img)
{
	json_t *layers = json_object_get(entry, "Layers"), *v, *descs = NULL, *man = NULL;
	const char *config = json_string_value(json_object_get(entry, "Config"));
	const struct hashed *h;
	size_t i;
	int r;

	if (!config || !json_is_array(layers))
		return fail(l->err, l->err_size, -EPROTO,
			    "manifest.json has an entry without Config or Layers");
	r = repo_tags_load(json_object_get(entry, "RepoTags"), &img->repo_tags);
	if (r < 0)
		return r == -EPROTO ? fail(l->err, l->err_size, r, "manifest.json has malformed RepoTags")
				    : r;

	descs = json_array();
	if (!descs)
		return -ENOMEM;
	json_array_foreach(layers, i, v) {
		const char *name = json_string_value(v);
		json_t *d;

		if (!name) {
			r = fail(l->err, l->err_size, -EPROTO, "manifest.json has a malformed layer name");
			goto finish;
		}
		r = hash_member(l, name, &h);
		if (r >= 0)
			r = descriptor(h->media_type, h, &d);
		if (r >= 0)
			r = json_array_append_new(descs, d) < 0 ? -ENOMEM : 0;
		if (r < 0)
			goto finish;
	}
	r = hash_member(l, config, &h);
	if (r < 0)
		goto finish;
	man = json_pack("{s:i,s:s,s:{s:s,s:s,s:I},s:O}", "schemaVersion", 2, "mediaType",
			MEDIA_TYPE_OCI_MANIFEST, "config", "mediaType",
			"application/vnd.oci.image.config.v1+json", "digest", h->digest, "size",
			(json_int_t)h->m->size, "layers", descs);
	if (!man) {
		r = -ENOMEM;
		goto finish;
	}
	/* Sorted and compact: the same archive always gives the same bytes, so the same digest. */
	img->manifest = json_dumps(man, JSON_COMPACT | JSON_SORT_KEYS);
	if (!img->manifest) {
		r = -ENOMEM;
		goto finish;
	}
	img->manifest_len = strlen(img->manifest);
	r = digest_buffer(img->manifest, img->manifest_len, img->digest);
finish:
	json_decref(descs);
	json_decref(man);
	return r;
}

int docker_archive_load(int fd, const struct tar_index *t, struct docker_archive **ret,
			char *err, size_t err_size)
{
	_cleanup_(docker_archive_freep) struct docker_archive *a = NULL;
	const struct tar_member *m = tar_index_find(t, "manifest.json");
	_cleanup_free_ char *text = NULL;
	struct loader l = { .fd = fd, .t = t, .err = err, .err_size = err_size };
	json_error_t jerr;
	json_t *root = NULL, *entry;
	size_t i;
	int r;

	if (!m)
		return fail(err, err_size, -EPROTO, "no manifest.json: not a docker-archive");
	if (m->size > MANIFEST_JSON_MAX)
		return fail(err, err_size, -EPROTO, "manifest.json is larger than %u MiB",
			    MANIFEST_JSON_MAX >> 20);
	text = malloc(m->size + 1);
	if (!text)
		return -ENOMEM;
	r = tar_pread(fd, text, m->size, m->offset);
	if (r < 0)
		return fail(err, err_size, r, "cannot read manifest.json: %s", strerror(-r));
	text[m->size] = 0;

	a = calloc(1, sizeof(*a));
	l.buf = malloc(HASH_CHUNK);
	if (!a || !l.buf) {
		free(l.buf);
		return -ENOMEM;
	}
	l.a = a;

	root = json_loadb(text, m->size, JSON_REJECT_DUPLICATES, &jerr);
	if (!json_is_array(root) || json_array_size(root) == 0) {
		r = fail(err, err_size, -EPROTO, "manifest.json is not a list of images");
		goto finish;
	}
	a->images = calloc(json_array_size(root), sizeof(*a->images));
	if (!a->images) {
		r = -ENOMEM;
		goto finish;
	}
	json_array_foreach(root, i, entry) {
		r = image_load(&l, entry, &a->images[i]);
		a->n_images = i + 1;  /* so that a half-loaded entry is freed too */
		if (r < 0)
			goto finish;
	}
	*ret = TAKE_PTR(a);
	r = 0;
finish:
	json_decref(root);
	free(l.done);
	free(l.buf);
	return r;
}
