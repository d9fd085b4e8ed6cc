/*
 * cache/share/seek_publish.c: one artifact per image manifest (seek_publish.h): a blob per tar+gzip
 * layer with a trusted index, in the manifest's layer order (so that the same indexes always
 * make the same artifact manifest), each annotated with its layer's digest.  Blobs are
 * content-addressed: images sharing a base layer share its index blob in the registry.
 */
#include "seek_publish.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cache/share/artifact_image.h"
#include "cache/base/error.h"
#include "cache/base/log.h"
#include "cache/base/util.h"
#include "cache/seek.h"
#include "cache/store/index_db.h"

/* What is published: blobs[i] is bufs[i], annotated with annotations[i]. */
struct seek_set {
	struct artifact_blob *blobs;
	struct annotation *annotations;
	char **bufs;
	size_t n;
};

static void seek_set_done(struct seek_set *s)
{
	for (size_t i = 0; i < s->n; i++)
		free(s->bufs[i]);
	free(s->bufs);
	free(s->blobs);
	free(s->annotations);
}

static bool seek_set_has(const struct seek_set *s, const char *layer)
{
	for (size_t i = 0; i < s->n; i++)
		if (streq(s->annotations[i].value, layer))
			return true;
	return false;
}

/* Adds the index of layer @l when it was built here. */
static int seek_set_add(struct seek_set *s, struct cache *c, const struct layer_desc *l)
{
	_cleanup_free_ char *buf = NULL;
	bool trusted = false;
	size_t len;
	int r;

	if (!seek_layer_eligible(l) || seek_set_has(s, l->digest))
		return 0;
	r = seek_index_read(c, l->digest, &buf, &len, NULL, &trusted);
	if (r == -ENOENT || (r >= 0 && !trusted))
		return 0;  /* a fetched index is not ours to vouch for */
	if (r < 0)
		return error_set(r, "the seek index of layer %s in '%s' is unreadable", l->digest,
				 c->dir);
	s->annotations[s->n] = (struct annotation) {
		.key = (char *)SEEK_INDEX_LAYER_ANNOTATION, .value = l->digest,
	};
	s->blobs[s->n] = (struct artifact_blob) {
		.media_type = SEEK_INDEX_MEDIA_TYPE, .data = buf, .size = len,
		.annotations = &s->annotations[s->n], .n_annotations = 1,
	};
	s->bufs[s->n++] = TAKE_PTR(buf);
	return 0;
}

static int seek_set_collect(struct seek_set *s, struct cache *c, const struct manifest *m)
{
	int r;

	s->blobs = calloc(m->n_layers ?: 1, sizeof(*s->blobs));
	s->annotations = calloc(m->n_layers ?: 1, sizeof(*s->annotations));
	s->bufs = calloc(m->n_layers ?: 1, sizeof(*s->bufs));
	if (!s->blobs || !s->annotations || !s->bufs)
		return -ENOMEM;
	for (size_t i = 0; i < m->n_layers; i++) {
		r = seek_set_add(s, c, &m->layers[i]);
		if (r < 0)
			return r;
	}
	return 0;
}

/* The descriptor of @img's manifest, as the cache keeps its bytes. */
static int subject_of(struct cache *c, const struct image *img, struct artifact_desc *ret)
{
	_cleanup_free_ char *media_type = NULL, *manifest = NULL;
	size_t len;
	int r;

	r = index_db_image_get(c->db, img->manifest_digest, &media_type, &manifest, &len, NULL,
			       NULL);
	if (r < 0)
		return error_set(r, "image %s is not in '%s'", img->manifest_digest, c->dir);
	*ret = (struct artifact_desc) { .size = len, .media_type = TAKE_PTR(media_type) };
	strncpy(ret->digest, img->manifest_digest, sizeof(ret->digest) - 1);
	return 0;
}

int seek_publish(struct cache *c, const struct reference *ref, const struct registry_options *ro,
		 const struct artifact_config *cfg, const struct image *img)
{
	_cleanup_(seek_set_done) struct seek_set set = {};
	struct artifact_desc subject = {};
	int r;

	r = seek_set_collect(&set, c, img->manifest);
	if (r < 0 || set.n == 0)
		return r;
	r = subject_of(c, img, &subject);
	if (r < 0)
		return r;
	r = artifact_publish_image(c->db, ref, ro, cfg, &subject, SEEK_INDEX_ARTIFACT_TYPE,
				   set.blobs, set.n);
	free(subject.media_type);
	return r;
}
