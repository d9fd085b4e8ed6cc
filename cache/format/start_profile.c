/*
 * cache/format/start_profile.c: start profiles as JSON (start_profile.h, docs/formats.md).
 * A profile comes from the registry as much as from this host, so the parser bounds every
 * count before it allocates and checks every field; what a chunk claims is only checked
 * against the image later (fs/profile.c), where the image's own chunk list is known.
 */
#include "start_profile.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cache/base/error.h"
#include "cache/base/util.h"

/* jansson >= 2.11 provides json_decrefp(). */
#define _cleanup_json_ _cleanup_(json_decrefp)

void start_profile_done(struct start_profile *p)
{
	if (!p)
		return;
	p->layers = strv_free(p->layers);
	free(p->chunks);
	*p = (struct start_profile) {};
}

static int parse_u64(json_t *v, uint64_t *ret)
{
	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return -EBADMSG;
	*ret = (uint64_t)json_integer_value(v);
	return 0;
}

/* One chunk: [layer, offset, length, size, "sha256:..."]; the range ends within 2^63, as a
 * blob does. */
static int parse_chunk(json_t *a, size_t n_layers, struct start_profile_chunk *ret)
{
	uint64_t layer;
	const char *d;

	if (!json_is_array(a) || json_array_size(a) != 5 ||
	    parse_u64(json_array_get(a, 0), &layer) < 0 || layer >= n_layers ||
	    parse_u64(json_array_get(a, 1), &ret->blob_offset) < 0 ||
	    parse_u64(json_array_get(a, 2), &ret->blob_length) < 0 ||
	    parse_u64(json_array_get(a, 3), &ret->size) < 0 || ret->blob_length == 0 ||
	    ret->blob_length > (uint64_t)INT64_MAX - ret->blob_offset)
		return -EBADMSG;
	d = json_string_value(json_array_get(a, 4));
	if (!d || digest_validate(d) < 0)
		return -EBADMSG;
	ret->layer = (unsigned)layer;
	strcpy(ret->digest, d);
	return 0;
}

static int parse_layers(json_t *a, struct start_profile *p)
{
	size_t i;
	json_t *v;

	if (!json_is_array(a) || json_array_size(a) == 0)
		return error_set(-EBADMSG, "start profile: no layers");
	if (json_array_size(a) > START_PROFILE_LAYERS_MAX)
		return error_set(-EFBIG, "start profile: more than %u layers",
				 START_PROFILE_LAYERS_MAX);
	json_array_foreach(a, i, v) {
		const char *d = json_string_value(v);

		if (!d || digest_validate(d) < 0)
			return error_set(-EBADMSG, "start profile: layer %zu is no digest", i);
		if (strv_push(&p->layers, d) < 0)
			return -ENOMEM;
	}
	return 0;
}

static int parse_chunks(json_t *a, struct start_profile *p)
{
	size_t n = json_array_size(a), i;
	json_t *v;

	if (!json_is_array(a))
		return error_set(-EBADMSG, "start profile: no chunk list");
	if (n > START_PROFILE_CHUNKS_MAX)
		return error_set(-EFBIG, "start profile: %zu chunks, more than %u", n,
				 START_PROFILE_CHUNKS_MAX);
	p->chunks = calloc(n ?: 1, sizeof(*p->chunks));
	if (!p->chunks)
		return -ENOMEM;
	json_array_foreach(a, i, v)
		if (parse_chunk(v, strv_length(p->layers), &p->chunks[i]) < 0)
			return error_set(-EBADMSG, "start profile: chunk %zu is malformed", i);
	p->n_chunks = n;
	return 0;
}

int start_profile_parse(const void *buf, size_t len, const char *image,
			struct start_profile *ret)
{
	_cleanup_(start_profile_done) struct start_profile p = {};
	_cleanup_json_ json_t *root = NULL;
	const char *mt, *img;
	int r;

	if (len > START_PROFILE_MAX)
		return error_set(-EFBIG, "start profile: %zu bytes, more than %u", len,
				 START_PROFILE_MAX);
	root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, NULL);
	if (!json_is_object(root))
		return error_set(-EBADMSG, "start profile: not a JSON object");
	mt = json_string_value(json_object_get(root, "mediaType"));
	if (json_integer_value(json_object_get(root, "schemaVersion")) != 1 || !mt ||
	    !streq(mt, START_PROFILE_MEDIA_TYPE))
		return error_set(-EBADMSG, "start profile: not version 1 of %s",
				 START_PROFILE_MEDIA_TYPE);
	img = json_string_value(json_object_get(root, "image"));
	if (!img || digest_validate(img) < 0)
		return error_set(-EBADMSG, "start profile: no image digest");
	if (image && !streq(img, image))
		return error_set(-EBADMSG, "start profile: of image %s, not %s", img, image);
	strcpy(p.image, img);
	(void)parse_u64(json_object_get(root, "windowMs"), &p.window_ms);
	r = parse_layers(json_object_get(root, "layers"), &p);
	if (r >= 0)
		r = parse_chunks(json_object_get(root, "chunks"), &p);
	if (r < 0)
		return r;
	*ret = p;
	p = (struct start_profile) {};
	return 0;
}

static json_t *chunk_json(const struct start_profile_chunk *c)
{
	return json_pack("[I,I,I,I,s]", (json_int_t)c->layer, (json_int_t)c->blob_offset,
			 (json_int_t)c->blob_length, (json_int_t)c->size, c->digest);
}

int start_profile_format(const struct start_profile *p, char **ret, size_t *ret_len)
{
	_cleanup_json_ json_t *root = NULL, *layers = json_array(), *chunks = json_array();
	char *s;

	if (!layers || !chunks)
		return -ENOMEM;
	for (size_t i = 0; p->layers && p->layers[i]; i++)
		if (json_array_append_new(layers, json_string(p->layers[i])) < 0)
			return -ENOMEM;
	for (size_t i = 0; i < p->n_chunks; i++)
		if (json_array_append_new(chunks, chunk_json(&p->chunks[i])) < 0)
			return -ENOMEM;
	root = json_pack("{s:i,s:s,s:s,s:I,s:O,s:O}", "schemaVersion", 1,
			 "mediaType", START_PROFILE_MEDIA_TYPE, "image", p->image,
			 "windowMs", (json_int_t)p->window_ms, "layers", layers, "chunks", chunks);
	if (!root)
		return -ENOMEM;
	s = json_dumps(root, JSON_COMPACT);
	if (!s)
		return -ENOMEM;
	*ret = s;
	*ret_len = strlen(s);
	return 0;
}
