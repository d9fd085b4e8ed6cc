/*
 * cache/share/seek_remote.c: published seek indexes found and kept for a pull (seek_remote.h).  A
 * pull that needs nothing asks nothing: only a tar+gzip layer that the cache has neither
 * indexed nor an index for makes a lookup, one per image (cached like a tag resolution by
 * artifact_lookup()), and only the blobs naming such a layer are fetched.  Indexes are keyed
 * by layer digest, so one fetched for an image serves every image with that layer.
 *
 * Where a fetched index came from is kept beside the referrers answers (index_db_referrers_*,
 * as artifact_cache.c keeps a registry's route there), under the pseudo-place ORIGIN_PLACE and
 * the layer digest: it is for people (stats, inspect), never for a decision.
 */
#include "seek_remote.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache/base/error.h"
#include "cache/base/log.h"
#include "cache/base/util.h"
#include "cache/config.h"
#include "cache/registry/artifact_cache.h"
#include "cache/registry/registries_conf.h"
#include "cache/seek.h"
#include "cache/store/index_db.h"

#define ORIGIN_PLACE "lazyroot.seek-index-origin"

/* A tar+gzip layer that neither the cache's entries nor a kept index serve. */
static bool layer_wanted(struct cache *c, const struct layer_desc *l)
{
	return seek_layer_eligible(l) && index_db_layer_is_indexed(c->db, l->digest) == 0 &&
	       index_db_seek_get(c->db, l->digest, NULL, NULL) == -ENOENT;
}

static size_t count_wanted(struct cache *c, const struct manifest *m)
{
	size_t n = 0;

	for (size_t i = 0; i < m->n_layers; i++)
		n += layer_wanted(c, &m->layers[i]);
	return n;
}

/* The layer of @m blob @d is the index of, if it is still wanted. */
static const struct layer_desc *blob_layer(struct cache *c, const struct manifest *m,
					   const struct artifact_desc *d)
{
	const char *layer = artifact_desc_annotation(d, SEEK_INDEX_LAYER_ANNOTATION);

	if (!layer || !d->media_type || !streq(d->media_type, SEEK_INDEX_MEDIA_TYPE))
		return NULL;
	for (size_t i = 0; i < m->n_layers; i++)
		if (streq(m->layers[i].digest, layer) && layer_wanted(c, &m->layers[i]))
			return &m->layers[i];
	return NULL;
}

static void origin_put(struct index_db *db, const char *layer, const char *place)
{
	int r = index_db_referrers_put(db, ORIGIN_PLACE, layer, SEEK_INDEX_ARTIFACT_TYPE, place);

	if (r < 0)
		log_debug_errno(r, "cannot remember where the index of %s came from, ignoring: %m",
				layer);
}

/* Fetches blob @d (the index of @l) from @f's place and keeps it, untrusted. */
static int blob_take(struct cache *c, const struct artifact_found *f,
		     const struct artifact_desc *d, const struct layer_desc *l)
{
	_cleanup_free_ char *buf = NULL;
	char digest[DIGEST_STRING_MAX];
	uint64_t max = SEEK_REMOTE_MAX(l->size);
	size_t len;
	int r;

	r = artifact_fetch_blob(f->registry, d, max < SEEK_INDEX_MAX ? max : SEEK_INDEX_MAX, &buf,
				&len);
	if (r >= 0)
		r = seek_index_import(c, buf, len, l->digest, l->size, digest);
	if (r < 0)
		return error_wrap(r, "seek index %s of layer %s from %s", d->digest, l->digest,
				  f->place);
	origin_put(c->db, l->digest, f->place);
	log_debug("seek index %s of layer %s fetched from %s", digest, l->digest, f->place);
	return 0;
}

/* Keeps what artifact @a of @f holds for the wanted layers of @m: how many indexes. */
static size_t artifact_take(struct cache *c, const struct artifact_found *f,
			    const struct artifact_desc *a, const struct manifest *m,
			    const char *manifest_digest)
{
	struct artifact_list blobs = {};
	size_t kept = 0;
	int r;

	r = artifact_get(f->registry, a->digest, manifest_digest, SEEK_INDEX_ARTIFACT_TYPE, &blobs);
	if (r < 0) {
		log_warning("cannot read seek index artifact %s in %s, reading its layers whole: %s",
			    a->digest, f->place, error_take(r));
		return 0;
	}
	for (size_t i = 0; i < blobs.n; i++) {
		const struct layer_desc *l = blob_layer(c, m, &blobs.items[i]);

		if (!l)
			continue;
		r = blob_take(c, f, &blobs.items[i], l);
		if (r < 0)
			log_warning("cannot use %s, reading the layer whole", error_take(r));
		else
			kept++;
	}
	artifact_list_done(&blobs);
	return kept;
}

/* Where to look and for how long an answer holds: the configuration's, or none.  -EPERM when
 * the operator turned fetched indexes off (seek-index-fetch = no): nothing is asked. */
static int lookup_config(bool ask_again, struct artifact_config *ret)
{
	struct config cfg;
	int r;

	r = config_read(&cfg, NULL);
	if (r < 0)
		return r;  /* the pull reports a bad file where it reads it */
	if (!cfg.seek_index_fetch) {
		log_debug("seek-index-fetch = no: not looking up published seek indexes");
		return -EPERM;
	}
	*ret = cfg.artifacts;
	if (ask_again)
		ret->ttl_s = ret->miss_ttl_s = 0;
	return 0;
}

/* Where the lookup starts: the repository @ref is served from (after a registries.conf
 * rewrite), then the artifact repository; when mirrors stand in front of it, only the artifact
 * repository (mirrors exist to keep traffic off the origin, and a pull-through mirror keeps
 * no referrers).  *ret NULL: nowhere to look. */
static int lookup_start(const struct reference *ref, struct artifact_config *cfg,
			struct reference **ret)
{
	_cleanup_(registries_conf_freep) struct registries_conf *conf = NULL;
	_cleanup_free_ char *name = NULL;
	struct registries_endpoint *plan = NULL;
	size_t n = 0;
	int r;

	*ret = NULL;
	if (asprintf(&name, "%s/%s", ref->domain, ref->repository) < 0)
		return -ENOMEM;
	r = registries_conf_load(&conf);
	if (r >= 0)
		r = registries_conf_endpoints(conf, name, true, &plan, &n);
	if (r < 0)
		return r;
	if (n > 1 && plan[0].mirror) {
		r = artifact_config_place(cfg, ret);
		cfg->repository[0] = '\0';  /* asked as the "image's own" place, once */
	} else {
		r = reference_parse(name, ret);  /* rewritten where it is asked (artifact_lookup) */
	}
	registries_endpoints_free(plan, n);
	return r;
}

int seek_remote_fetch(struct cache *c, const struct reference *ref,
		      const struct registry_options *ro, bool ask_again, const struct manifest *m,
		      const char *manifest_digest)
{
	_cleanup_(artifact_found_done) struct artifact_found f = {};
	_cleanup_(reference_freep) struct reference *start = NULL;
	struct artifact_config cfg;
	size_t kept = 0;
	int r;

	if (ref->transport != REFERENCE_DOCKER || c->read_only || count_wanted(c, m) == 0 ||
	    lookup_config(ask_again, &cfg) < 0 || lookup_start(ref, &cfg, &start) < 0 || !start) {
		error_clear();
		return 0;
	}
	r = artifact_lookup(c->db, start, ro, &cfg, manifest_digest, SEEK_INDEX_ARTIFACT_TYPE, &f);
	if (r < 0) {
		log_warning("cannot look up the seek indexes of '%s/%s', reading its gzip layers "
			    "whole: %s", ref->domain, ref->repository, error_take(r));
		return 0;
	}
	for (size_t i = 0; i < f.list.n && count_wanted(c, m) > 0; i++)
		kept += artifact_take(c, &f, &f.list.items[i], m, manifest_digest);
	error_clear();
	return (int)kept;
}

int seek_index_origin(struct cache *c, const char *layer_digest, char **ret)
{
	_cleanup_free_ char *place = NULL;
	bool trusted = false;
	int64_t updated;
	int r;

	r = index_db_seek_get(c->db, layer_digest, NULL, &trusted);
	if (r < 0)
		return r;
	if (trusted)
		return (*ret = strdup("built here")) ? 0 : -ENOMEM;
	r = index_db_referrers_get(c->db, ORIGIN_PLACE, layer_digest, SEEK_INDEX_ARTIFACT_TYPE,
				   &place, &updated);
	if (r == -ENOENT)
		return (*ret = strdup("imported")) ? 0 : -ENOMEM;
	if (r < 0)
		return r;
	return asprintf(ret, "fetched from %s", place) < 0 ? -ENOMEM : 0;
}

int seek_layer_origin_append(struct cache *c, const struct layer_desc *l, char ***strv)
{
	char *origin = NULL;

	if (!seek_layer_eligible(l) || seek_index_origin(c, l->digest, &origin) < 0)
		origin = strdup("");
	if (!origin)
		return -ENOMEM;
	if (strv_consume(strv, origin) < 0) {
		free(origin);
		return -ENOMEM;
	}
	return 0;
}
