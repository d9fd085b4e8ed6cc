/*
 * cache/registry/artifact.c: pushes and finds artifacts that refer to an image (artifact.h)
 * over one struct registry.  JSON goes through jansson: the manifest an artifact_push() writes
 * is built in a fixed key order without timestamps, so that the same blobs give the same
 * digest and a second push changes nothing.
 *
 * The referrers tag schema (distribution-spec 1.1, "Unavailable Referrers API") is a
 * read-modify-write of one tag with no condition the registry checks (docker-registry 2.8 has
 * no If-Match): the pusher reads the index, appends its descriptor unless it is there, PUTs,
 * and reads again to see it listed; a writer that read before our PUT and writes after it
 * drops our entry after we looked.  The next push of the same artifact puts it back.
 */
#include "artifact.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "cache/base/error.h"
#include "cache/base/log.h"
#include "cache/base/util.h"
#include "cache/registry/registry.h"
#include "cache/registry/registry_job.h"

#define OCI_MANIFEST "application/vnd.oci.image.manifest.v1+json"
#define OCI_INDEX "application/vnd.oci.image.index.v1+json"
#define ANNOTATIONS_MAX 256
#define REFERRER_PAGES_MAX 64

static const char empty_config[] = "{}";

/* jansson >= 2.11 provides json_decrefp(). */
#define _cleanup_json_ _cleanup_(json_decrefp)

static void artifact_desc_done(struct artifact_desc *d)
{
	for (size_t i = 0; i < d->n_annotations; i++)
		free_many(d->annotations[i].key, d->annotations[i].value);
	free_many(d->media_type, d->artifact_type, d->annotations);
	*d = (struct artifact_desc) {};
}

void artifact_list_done(struct artifact_list *l)
{
	if (!l)
		return;
	for (size_t i = 0; i < l->n; i++)
		artifact_desc_done(&l->items[i]);
	free(l->items);
	*l = (struct artifact_list) {};
}

void artifact_list_keep_type(struct artifact_list *l, const char *artifact_type)
{
	size_t k = 0;

	if (!artifact_type)
		return;
	for (size_t i = 0; i < l->n; i++) {
		if (l->items[i].artifact_type && streq(l->items[i].artifact_type, artifact_type))
			l->items[k++] = l->items[i];
		else
			artifact_desc_done(&l->items[i]);
	}
	l->n = k;
	if (k == 0) {  /* callers take an empty list for none at all: nothing left to free */
		free(l->items);
		l->items = NULL;
	}
}

const char *artifact_desc_annotation(const struct artifact_desc *d, const char *key)
{
	for (size_t i = 0; i < d->n_annotations; i++)
		if (streq(d->annotations[i].key, key))
			return d->annotations[i].value;
	return NULL;
}

static int dup_string(json_t *obj, const char *key, bool required, char **ret)
{
	json_t *v = json_object_get(obj, key);

	if (!v && !required)
		return 0;
	if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > 255)
		return -EPROTO;
	*ret = strdup(json_string_value(v));
	return *ret ? 0 : -ENOMEM;
}

static int parse_annotations(json_t *obj, struct artifact_desc *d)
{
	const char *key;
	json_t *v;

	if (!obj)
		return 0;
	if (!json_is_object(obj) || json_object_size(obj) > ANNOTATIONS_MAX)
		return -EPROTO;
	d->annotations = calloc(json_object_size(obj) ?: 1, sizeof(*d->annotations));
	if (!d->annotations)
		return -ENOMEM;
	json_object_foreach(obj, key, v) {
		struct annotation *a = &d->annotations[d->n_annotations];

		if (!json_is_string(v))
			return -EPROTO;
		a->key = strdup(key);
		a->value = strdup(json_string_value(v));
		d->n_annotations++;
		if (!a->key || !a->value)
			return -ENOMEM;
	}
	return 0;
}

/* One descriptor; -EPROTO unless digest, size and mediaType are valid. */
static int parse_desc(json_t *obj, struct artifact_desc *d)
{
	json_t *digest = json_object_get(obj, "digest"), *size = json_object_get(obj, "size");
	int r;

	if (!json_is_object(obj) || !json_is_string(digest) ||
	    digest_validate(json_string_value(digest)) < 0 || !json_is_integer(size) ||
	    json_integer_value(size) < 0)
		return -EPROTO;
	(void)snprintf(d->digest, sizeof(d->digest), "%s", json_string_value(digest));
	d->size = (uint64_t)json_integer_value(size);
	r = dup_string(obj, "mediaType", true, &d->media_type);
	if (r < 0)
		return r;
	r = dup_string(obj, "artifactType", false, &d->artifact_type);
	if (r < 0)
		return r;
	return parse_annotations(json_object_get(obj, "annotations"), d);
}

/* Appends the descriptors of @array (of @artifact_type when not NULL) to @l. */
static int list_add(struct artifact_list *l, json_t *array, const char *artifact_type)
{
	size_t i;
	json_t *v;

	if (!json_is_array(array))
		return error_set(-EPROTO, "referrers listing has no manifests array");
	json_array_foreach(array, i, v) {
		struct artifact_desc d = {};
		struct artifact_desc *items;
		int r;

		r = parse_desc(v, &d);
		if (r < 0 || (artifact_type && !(d.artifact_type &&
						 streq(d.artifact_type, artifact_type)))) {
			artifact_desc_done(&d);
			if (r == -EPROTO)
				return error_set(r, "referrers listing: descriptor %zu is malformed",
						 i + 1);
			if (r < 0)
				return r;
			continue;
		}
		if (l->n >= ARTIFACT_REFERRERS_MAX) {
			artifact_desc_done(&d);
			return error_set(-EFBIG, "more than %d referrers", ARTIFACT_REFERRERS_MAX);
		}
		items = reallocarray(l->items, l->n + 1, sizeof(*items));
		if (!items) {
			artifact_desc_done(&d);
			return -ENOMEM;
		}
		l->items = items;
		l->items[l->n++] = d;
	}
	return 0;
}

/* The "manifests" of an image index document. */
static int index_parse(const char *buf, size_t len, json_t **ret_root)
{
	json_t *root = json_loadb(buf, len, 0, NULL);
	json_t *mt = json_object_get(root, "mediaType");

	if (!json_is_array(json_object_get(root, "manifests")) ||
	    (mt && !(json_is_string(mt) && streq(json_string_value(mt), OCI_INDEX)))) {
		json_decref(root);
		return error_set(-EPROTO, "referrers listing is not an OCI image index");
	}
	*ret_root = root;
	return 0;
}

int artifact_list_from_json(const char *buf, size_t len, struct artifact_list *ret)
{
	_cleanup_json_ json_t *root = json_loadb(buf, len, 0, NULL);
	struct artifact_list l = {};
	int r;

	r = list_add(&l, root, NULL);
	if (r < 0) {
		artifact_list_done(&l);
		return r;
	}
	*ret = l;
	return 0;
}

static int annotations_json(const struct annotation *a, size_t n, json_t *obj)
{
	_cleanup_json_ json_t *o = NULL;

	if (n == 0)
		return 0;
	o = json_object();
	if (!o)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++)
		if (json_object_set_new(o, a[i].key, json_string(a[i].value)) < 0)
			return -ENOMEM;
	return json_object_set(obj, "annotations", o) < 0 ? -ENOMEM : 0;
}

/* {"mediaType", "digest", "size"[, "artifactType"][, "annotations"]} */
static json_t *desc_json(const char *media_type, const char *digest, uint64_t size,
			 const char *artifact_type, const struct annotation *a, size_t n)
{
	json_t *o = json_pack("{s:s, s:s, s:I}", "mediaType", media_type, "digest", digest,
			      "size", (json_int_t)size);

	if (!o)
		return NULL;
	if ((artifact_type && json_object_set_new(o, "artifactType", json_string(artifact_type)) < 0) ||
	    annotations_json(a, n, o) < 0) {
		json_decref(o);
		return NULL;
	}
	return o;
}

int artifact_list_to_json(const struct artifact_list *l, char **ret)
{
	_cleanup_json_ json_t *array = json_array();

	if (!array)
		return -ENOMEM;
	for (size_t i = 0; i < l->n; i++) {
		const struct artifact_desc *d = &l->items[i];

		if (json_array_append_new(array, desc_json(d->media_type, d->digest, d->size,
							   d->artifact_type, d->annotations,
							   d->n_annotations)) < 0)
			return -ENOMEM;
	}
	*ret = json_dumps(array, JSON_COMPACT);
	return *ret ? 0 : -ENOMEM;
}

/* "sha256-<hex>": the referrers tag of @subject_digest. */
static void referrers_tag(const char *subject_digest, char ret[DIGEST_STRING_MAX])
{
	(void)snprintf(ret, DIGEST_STRING_MAX, "%s", subject_digest);
	ret[strcspn(ret, ":")] = '-';
}

/* The referrers index of the tag schema: NULL in *ret_root when the tag does not exist. */
static int tag_index_get(struct registry *r, const char *subject_digest, json_t **ret_root)
{
	_cleanup_free_ char *buf = NULL, *ctype = NULL;
	char tag[DIGEST_STRING_MAX], digest[DIGEST_STRING_MAX];
	size_t len;
	int e;

	referrers_tag(subject_digest, tag);
	e = registry_get_manifest(r, tag, &buf, &len, &ctype, digest);
	if (e == -ENOENT) {
		error_clear();
		*ret_root = NULL;
		return 0;
	}
	if (e < 0)
		return e;
	return index_parse(buf, len, ret_root);
}

static bool index_lists(json_t *root, const char *digest)
{
	size_t i;
	json_t *v;

	json_array_foreach(json_object_get(root, "manifests"), i, v) {
		json_t *d = json_object_get(v, "digest");

		if (json_is_string(d) && streq(json_string_value(d), digest))
			return true;
	}
	return false;
}

/* Appends @desc (stolen) to the index (a new one when @root is NULL) and PUTs it. */
static int tag_index_put(struct registry *r, const char *subject_digest, json_t *root,
			 json_t *desc)
{
	_cleanup_json_ json_t *doc = root ? json_incref(root)
					  : json_pack("{s:i, s:s, s:[]}", "schemaVersion", 2,
						      "mediaType", OCI_INDEX, "manifests");
	_cleanup_free_ char *buf = NULL;
	char tag[DIGEST_STRING_MAX];

	if (!doc || json_array_append_new(json_object_get(doc, "manifests"), desc) < 0)
		return -ENOMEM;
	buf = json_dumps(doc, JSON_COMPACT);
	if (!buf)
		return -ENOMEM;
	referrers_tag(subject_digest, tag);
	return registry_put_manifest(r, tag, OCI_INDEX, buf, strlen(buf), NULL);
}

/* Makes the referrers tag of @subject_digest list @desc: read, append, PUT, read again. */
static int tag_schema_add(struct registry *r, const char *subject_digest, json_t *desc)
{
	const char *digest = json_string_value(json_object_get(desc, "digest"));
	int e;

	for (unsigned attempt = 0;; attempt++) {
		_cleanup_json_ json_t *root = NULL;

		e = tag_index_get(r, subject_digest, &root);
		if (e < 0)
			return e;
		if (root && index_lists(root, digest))
			return 0;
		if (attempt >= ARTIFACT_TAG_ATTEMPTS)
			break;
		if (attempt > 0)
			log_debug("referrers tag of %s lost %s to another writer, adding it again",
				  subject_digest, digest);
		e = tag_index_put(r, subject_digest, root, json_incref(desc));
		if (e < 0)
			return e;
	}
	return error_set(-EAGAIN, "referrers tag of %s in %s/%s changed under each of %d updates",
			 subject_digest, registry_domain(r), registry_repository(r),
			 ARTIFACT_TAG_ATTEMPTS);
}

/* The artifact's manifest: the empty config, @blobs as layers, @subject. */
static int manifest_build(const struct artifact_desc *subject, const char *artifact_type,
			  const struct artifact_blob *blobs, size_t n, char **ret)
{
	_cleanup_json_ json_t *m = NULL, *layers = json_array();
	char digest[DIGEST_STRING_MAX];
	int e;

	if (!layers)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		e = digest_buffer(blobs[i].data, blobs[i].size, digest);
		if (e < 0)
			return e;
		if (json_array_append_new(layers, desc_json(blobs[i].media_type, digest,
							    blobs[i].size, NULL,
							    blobs[i].annotations,
							    blobs[i].n_annotations)) < 0)
			return -ENOMEM;
	}
	e = digest_buffer(empty_config, strlen(empty_config), digest);
	if (e < 0)
		return e;
	m = json_pack("{s:i, s:s, s:s, s:o, s:O, s:o}", "schemaVersion", 2, "mediaType",
		      OCI_MANIFEST, "artifactType", artifact_type, "config",
		      desc_json(ARTIFACT_EMPTY_MEDIA_TYPE, digest, strlen(empty_config), NULL,
				NULL, 0),
		      "layers", layers, "subject",
		      desc_json(subject->media_type, subject->digest, subject->size, NULL, NULL, 0));
	if (!m)
		return -ENOMEM;
	*ret = json_dumps(m, JSON_COMPACT);
	return *ret ? 0 : -ENOMEM;
}

static int push_blobs(struct registry *r, const struct artifact_blob *blobs, size_t n)
{
	char digest[DIGEST_STRING_MAX];
	int e;

	e = digest_buffer(empty_config, strlen(empty_config), digest);
	if (e >= 0)
		e = registry_put_blob(r, digest, empty_config, strlen(empty_config));
	for (size_t i = 0; e >= 0 && i < n; i++) {
		e = digest_buffer(blobs[i].data, blobs[i].size, digest);
		if (e >= 0)
			e = registry_put_blob(r, digest, blobs[i].data, blobs[i].size);
	}
	return e;
}

int artifact_push(struct registry *r, const struct artifact_desc *subject,
		  const char *artifact_type, const struct artifact_blob *blobs, size_t n,
		  char ret_digest[DIGEST_STRING_MAX])
{
	_cleanup_free_ char *manifest = NULL;
	_cleanup_json_ json_t *desc = NULL;
	char digest[DIGEST_STRING_MAX];
	bool has_api = false;
	int e;

	if (digest_validate(subject->digest) < 0 || !subject->media_type || !artifact_type ||
	    n == 0)
		return -EINVAL;
	e = push_blobs(r, blobs, n);
	if (e < 0)
		return e;
	e = manifest_build(subject, artifact_type, blobs, n, &manifest);
	if (e < 0)
		return e;
	e = digest_buffer(manifest, strlen(manifest), digest);
	if (e < 0)
		return e;
	e = registry_put_manifest(r, digest, OCI_MANIFEST, manifest, strlen(manifest), &has_api);
	if (e < 0)
		return e;
	if (!has_api) {
		/* The descriptor as the spec wants it in the referrers list: artifactType and
		 * the manifest's annotations (it has none). */
		desc = desc_json(OCI_MANIFEST, digest, strlen(manifest), artifact_type, NULL, 0);
		if (!desc)
			return -ENOMEM;
		e = tag_schema_add(r, subject->digest, desc);
		if (e < 0)
			return e;
	}
	log_debug("pushed artifact %s (%s) for %s to %s/%s%s", digest, artifact_type,
		  subject->digest, registry_domain(r), registry_repository(r),
		  has_api ? "" : " (referrers tag)");
	if (ret_digest)
		memcpy(ret_digest, digest, DIGEST_STRING_MAX);
	return 0;
}

/* Mounts the config and layers of @m from the other repository; -ENOENT if one is not. */
static int mount_blobs(struct registry *dst, const struct manifest *m)
{
	int e;

	e = registry_mount_blob(dst, m->config_digest);
	for (size_t i = 0; e >= 0 && i < m->n_layers; i++)
		e = registry_mount_blob(dst, m->layers[i].digest);
	return e;
}

int artifact_copy_subject(struct registry *dst, struct registry *src, const char *subject_digest)
{
	_cleanup_free_ char *buf = NULL, *ctype = NULL;
	_cleanup_(manifest_freep) struct manifest *m = NULL;
	char digest[DIGEST_STRING_MAX];
	size_t len;
	int e;

	e = registry_head_manifest(dst, subject_digest, digest, NULL);
	if (e >= 0)
		return 0;
	if (e != -ENOENT)
		return e;
	error_clear();
	e = registry_get_manifest(src, subject_digest, &buf, &len, &ctype, digest);
	if (e < 0)
		return e;
	if (!ctype || !media_type_is_manifest(ctype))
		return error_set(-EOPNOTSUPP, "subject %s is no image manifest (%s): not copied",
				 subject_digest, ctype ?: "no media type");
	e = manifest_parse(buf, len, ctype, &m);
	if (e < 0)
		return e;
	e = mount_blobs(dst, m);
	if (e == -ENOENT)
		return error_set(e, "%s/%s did not mount the blobs of %s from %s", registry_domain(dst),
				 registry_repository(dst), subject_digest, registry_repository(src));
	if (e < 0)
		return e;
	return registry_put_manifest(dst, subject_digest, ctype, buf, len, NULL);
}

/* Every page of the referrers API; -ENOENT when the registry has none. */
static int find_api(struct registry *r, const char *subject_digest, const char *artifact_type,
		    struct artifact_list *l)
{
	_cleanup_free_ char *next = NULL;

	for (unsigned page = 0;; page++) {
		_cleanup_free_ char *buf = NULL, *url = TAKE_PTR(next);
		_cleanup_json_ json_t *root = NULL;
		size_t len;
		int e;

		if (page >= REFERRER_PAGES_MAX)
			return error_set(-EFBIG, "referrers of %s: more than %d pages",
					 subject_digest, REFERRER_PAGES_MAX);
		e = registry_get_referrers(r, subject_digest, artifact_type, url, &buf, &len,
					   &next);
		if (e < 0)
			return e;
		e = index_parse(buf, len, &root);
		if (e < 0)
			return e;
		e = list_add(l, json_object_get(root, "manifests"), artifact_type);
		if (e < 0 || !next)
			return e;
	}
}

struct tag_ask {
	const char *subject_digest;
	json_t *root;  /* the referrers tag's index; NULL when there is none */
};

static int tag_ask_call(struct registry *r, void *userdata)
{
	struct tag_ask *t = userdata;

	return tag_index_get(r, t->subject_digest, &t->root);
}

/* The referrers API, with the referrers tag asked at once beside it when the route is not
 * known (@tag not NULL): the tag's answer is used when the API 404s, and a registry without
 * the API costs one round trip, not two.  An error of the API's is returned as it is. */
static int find_api_and_tag(struct registry *r, const char *subject_digest,
			    const char *artifact_type, struct tag_ask *tag, struct artifact_list *l)
{
	struct registry_job *job = NULL;
	struct error_carry api;
	int e, t;

	if (tag) {
		e = registry_ensure_pinged(r);
		if (e < 0)
			return e;
		e = registry_job_start(r, tag_ask_call, tag, &job);
		if (e < 0)
			return e;
	}
	e = find_api(r, subject_digest, artifact_type, l);
	error_save(&api);
	t = registry_job_join(job);
	if (t < 0 && (e == -EOPNOTSUPP || e == -ENOENT))
		return t;  /* the tag was the answer, and it failed */
	return error_restore(e, &api);
}

int artifact_find(struct registry *r, const char *subject_digest, const char *artifact_type,
		  enum artifact_route *route, struct artifact_list *ret)
{
	struct tag_ask tag = { .subject_digest = subject_digest };
	struct artifact_list l = {};
	bool via_tag = route && *route == ARTIFACT_ROUTE_TAG;
	bool asked_tag = false;
	int e = 0;

	if (digest_validate(subject_digest) < 0)
		return -EINVAL;
	if (!via_tag) {
		asked_tag = !route || *route == ARTIFACT_ROUTE_UNKNOWN;
		e = find_api_and_tag(r, subject_digest, artifact_type, asked_tag ? &tag : NULL,
				     &l);
		if (e >= 0 && route)
			*route = ARTIFACT_ROUTE_API;
		if (e == -EOPNOTSUPP && route)
			*route = ARTIFACT_ROUTE_TAG;
		/* Not found at all (an unknown repository): the tag cannot hurt either. */
		via_tag = e == -EOPNOTSUPP || e == -ENOENT;
	}
	if (via_tag) {
		error_clear();
		artifact_list_done(&l);
		e = asked_tag ? 0 : tag_index_get(r, subject_digest, &tag.root);
		if (e >= 0 && tag.root)
			e = list_add(&l, json_object_get(tag.root, "manifests"), artifact_type);
	}
	json_decref(tag.root);
	if (e < 0) {
		artifact_list_done(&l);
		return e;
	}
	*ret = l;
	return 0;
}

int artifact_get(struct registry *r, const char *digest, const char *subject_digest,
		 const char *artifact_type, struct artifact_list *ret_blobs)
{
	_cleanup_free_ char *buf = NULL, *ctype = NULL;
	_cleanup_json_ json_t *root = NULL;
	struct artifact_list l = {};
	char got[DIGEST_STRING_MAX];
	json_t *subject, *mt, *type;
	size_t len;
	int e;

	e = registry_get_manifest(r, digest, &buf, &len, &ctype, got);
	if (e < 0)
		return e;
	root = json_loadb(buf, len, 0, NULL);
	mt = json_object_get(root, "mediaType");
	subject = json_object_get(json_object_get(root, "subject"), "digest");
	type = json_object_get(root, "artifactType");
	if (!json_is_string(mt) || !streq(json_string_value(mt), OCI_MANIFEST) ||
	    !json_is_string(subject) || !streq(json_string_value(subject), subject_digest))
		return error_set(-EBADMSG, "artifact %s in %s/%s does not refer to %s", digest,
				 registry_domain(r), registry_repository(r), subject_digest);
	if (artifact_type && !(json_is_string(type) && streq(json_string_value(type), artifact_type)))
		return error_set(-EBADMSG, "artifact %s in %s/%s is not of type %s", digest,
				 registry_domain(r), registry_repository(r), artifact_type);
	e = list_add(&l, json_object_get(root, "layers"), NULL);
	if (e < 0) {
		artifact_list_done(&l);
		return e == -EPROTO ? error_set(e, "artifact %s has malformed layers", digest) : e;
	}
	*ret_blobs = l;
	return 0;
}

int artifact_fetch_blob(struct registry *r, const struct artifact_desc *d, size_t max,
			char **ret_buf, size_t *ret_len)
{
	_cleanup_free_ char *buf = NULL;
	size_t len;
	int e;

	if (d->size > max)
		return error_set(-EFBIG, "artifact blob %s declares %llu bytes, over the limit of %zu",
				 d->digest, (unsigned long long)d->size, max);
	/* The declared size bounds the download; the digest checks the bytes. */
	e = registry_get_blob(r, d->digest, d->size, &buf, &len);
	if (e == -EFBIG)
		return error_set(e, "artifact blob %s is larger than the %llu bytes it declares",
				 d->digest, (unsigned long long)d->size);
	if (e < 0)
		return e;
	if (len != d->size)
		return error_set(-EBADMSG, "artifact blob %s has %zu bytes, not the %llu declared",
				 d->digest, len, (unsigned long long)d->size);
	*ret_buf = TAKE_PTR(buf);
	*ret_len = len;
	return 0;
}
