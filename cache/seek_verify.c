/*
 * cache/seek_verify.c: an untrusted seek index checked against the whole layer
 * (seek_verify.h).  Indexes are content-addressed and the builder is deterministic, so the
 * index built from the verified stream has the kept one's digest exactly when entries,
 * checkpoints, windows and chunk digests are all the same.
 *
 * Load: once per prewarm of an image, one stream per layer with an untrusted index or most of
 * its chunks missing.
 */
#include "seek_verify.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cache/base/util.h"
#include "cache/seek.h"
#include "cache/store/index_db.h"

/* The kept index digests, one per layer (NULL: not an untrusted one). */
struct digests {
	char **d;
	size_t n;
};

static void digests_done(struct digests *ds)
{
	for (size_t i = 0; ds->d && i < ds->n; i++)
		free(ds->d[i]);
	free(ds->d);
}

int seek_verify_image(struct cache *c, const struct reference *ref, const struct pull_options *o,
		      const struct image *img, const bool *fill,
		      void (*report)(void *userdata, const char *layer, bool same), void *userdata,
		      enum pull_failure *err)
{
	const struct manifest *m = img->manifest;
	_cleanup_(digests_done) struct digests ds = { .n = m->n_layers };
	_cleanup_free_ bool *pick = NULL;
	char **before;
	size_t n = 0;
	int r;

	*err = PULL_FAILURE_NONE;
	before = ds.d = calloc(m->n_layers + 1, sizeof(*before));
	pick = calloc(m->n_layers + 1, sizeof(*pick));
	if (!before || !pick)
		return -ENOMEM;
	for (size_t i = 0; i < m->n_layers; i++) {
		_cleanup_free_ char *digest = NULL;
		bool trusted = true;

		if (!seek_layer_is_lazy(c->db, &m->layers[i]) ||
		    index_db_seek_get(c->db, m->layers[i].digest, &digest, &trusted) < 0)
			continue;
		if (!trusted)
			before[i] = TAKE_PTR(digest);
		pick[i] = !trusted || (fill && fill[i]);
		n += pick[i];
	}
	if (n == 0)
		return 0;
	r = image_stream_seek_layers(c, ref, o, img, pick, err);
	if (r < 0)
		return r;
	for (size_t i = 0; i < m->n_layers; i++) {
		_cleanup_free_ char *after = NULL;
		bool trusted = false;

		if (!before[i])
			continue;
		r = index_db_seek_get(c->db, m->layers[i].digest, &after, &trusted);
		report(userdata, m->layers[i].digest, r >= 0 && trusted && streq(after, before[i]));
	}
	return 0;
}
