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
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache/base/error.h"
#include "cache/base/log.h"
#include "cache/base/util.h"
#include "cache/config.h"
#include "cache/registry/artifact_cache.h"
#include "cache/registry/registries_conf.h"
#include "cache/registry/registry_job.h"
#include "cache/registry/source.h"
#include "cache/seek.h"
#include "cache/store/index_db.h"

#define ORIGIN_PLACE "lazyroot.seek-index-origin"
/* Index blobs fetched at once, a connection each: an image of many layers opens no more. */
#define BLOBS_AT_ONCE 8

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

/* One index blob on its way: fetched on a client of its own, kept by the calling thread. */
struct blob_fetch {
	const struct artifact_desc *d;
	const struct layer_desc *l;
	size_t max;
	char *buf;
	size_t len;
	struct registry_job *job;
};

static int blob_fetch_call(struct registry *r, void *userdata)
{
	struct blob_fetch *b = userdata;

	return artifact_fetch_blob(r, b->d, b->max, &b->buf, &b->len);
}

/* Keeps the fetched blob @b (or says why it cannot), untrusted: 1 when it was kept. */
static int blob_keep(struct cache *c, const struct artifact_found *f, struct blob_fetch *b, int r)
{
	char digest[DIGEST_STRING_MAX];

	if (r >= 0)
		r = seek_index_import(c, b->buf, b->len, b->l->digest, b->l->size, digest);
	if (r < 0) {
		log_warning("cannot use seek index %s of layer %s from %s, reading the layer "
			    "whole: %s", b->d->digest, b->l->digest, f->place, error_take(r));
		return 0;
	}
	origin_put(c->db, b->l->digest, f->place);
	log_debug("seek index %s of layer %s fetched from %s", digest, b->l->digest, f->place);
	return 1;
}

static int blob_fetch_cmp(const void *a, const void *b)
{
	const struct blob_fetch *x = a, *y = b;

	return x->d->size < y->d->size ? -1 : x->d->size > y->d->size;
}

/* Fetches the blobs @b[0..n) all at once, each on a connection of its own (the first on
 * @f's client), and keeps them smallest first: the small ones arrive first, and each is
 * parsed and kept while the bigger ones still come.  How many were kept. */
static size_t blobs_take(struct cache *c, const struct artifact_found *f, struct blob_fetch *b,
			 size_t n)
{
	size_t kept = 0;
	int r0;

	qsort(b, n, sizeof(*b), blob_fetch_cmp);
	for (size_t i = 1; i < n; i++)
		if (registry_job_start(f->registry, blob_fetch_call, &b[i], &b[i].job) < 0)
			b[i].job = NULL;  /* -ENOMEM: asked below, after the others */
	r0 = blob_fetch_call(f->registry, &b[0]);
	kept += blob_keep(c, f, &b[0], r0);
	for (size_t i = 1; i < n; i++) {
		int r = b[i].job ? registry_job_join(b[i].job) : blob_fetch_call(f->registry, &b[i]);

		kept += blob_keep(c, f, &b[i], r);
	}
	return kept;
}

/* The blobs of @blobs that are indexes of wanted layers of @m, one per layer, into @ret (room
 * for blobs->n): how many. */
static size_t blobs_wanted(struct cache *c, const struct manifest *m,
			   const struct artifact_list *blobs, struct blob_fetch *ret)
{
	size_t n = 0;

	for (size_t i = 0; i < blobs->n; i++) {
		const struct layer_desc *l = blob_layer(c, m, &blobs->items[i]);
		uint64_t max;
		bool dup = false;

		for (size_t k = 0; l && k < n; k++)
			dup = dup || streq(ret[k].l->digest, l->digest);
		if (!l || dup)
			continue;
		max = SEEK_REMOTE_MAX(l->size);
		ret[n++] = (struct blob_fetch) {
			.d = &blobs->items[i], .l = l,
			.max = max < SEEK_INDEX_MAX ? max : SEEK_INDEX_MAX,
		};
	}
	return n;
}

/* Keeps what artifact @a of @f holds for the wanted layers of @m: how many indexes. */
static size_t artifact_take(struct cache *c, const struct artifact_found *f,
			    const struct artifact_desc *a, const struct manifest *m,
			    const char *manifest_digest)
{
	struct artifact_list blobs = {};
	struct blob_fetch *b;
	size_t kept = 0, n;
	int r;

	r = artifact_get(f->registry, a->digest, manifest_digest, SEEK_INDEX_ARTIFACT_TYPE, &blobs);
	if (r < 0) {
		log_warning("cannot read seek index artifact %s in %s, reading its layers whole: %s",
			    a->digest, f->place, error_take(r));
		return 0;
	}
	b = calloc(blobs.n ?: 1, sizeof(*b));
	if (b) {
		n = blobs_wanted(c, m, &blobs, b);
		for (size_t i = 0; i < n; i += BLOBS_AT_ONCE)
			kept += blobs_take(c, f, b + i, n - i < BLOBS_AT_ONCE ? n - i : BLOBS_AT_ONCE);
		for (size_t i = 0; i < n; i++)
			free(b[i].buf);
		free(b);
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

/* One lookup: where it starts and with what, and (made beside the pull's other requests) the
 * thread it runs in. */
struct lookup {
	const char *cache_dir;
	struct cache *c;            /* the thread's connection to the cache, freed by the caller */
	const struct reference *ref;
	const struct reference *start;
	struct registry *own;       /* the pull's client of start's repository, or a copy; or NULL */
	struct registry *own_copy;  /* the thread's copy of it, freed by the caller */
	const struct registry_options *ro;
	struct artifact_config cfg;
	const struct manifest *m;
	const char *manifest_digest;
	pthread_t thread;
};

/* The lookup, and the blobs of what it found kept in @c. */
static void lookup_run(struct cache *c, struct lookup *l)
{
	_cleanup_(artifact_found_done) struct artifact_found f = {};
	int r;

	r = artifact_lookup(c->db, l->start, l->own, l->ro, &l->cfg, l->manifest_digest,
			    SEEK_INDEX_ARTIFACT_TYPE, &f);
	if (r < 0) {
		log_warning("cannot look up the seek indexes of '%s/%s', reading its gzip layers "
			    "whole: %s", l->ref->domain, l->ref->repository, error_take(r));
		return;
	}
	for (size_t i = 0; i < f.list.n && count_wanted(c, l->m) > 0; i++)
		(void)artifact_take(c, &f, &f.list.items[i], l->m, l->manifest_digest);
	error_clear();
}

static void *lookup_thread(void *arg)
{
	struct lookup *l = arg;

	lookup_run(l->c, l);
	return NULL;
}

/* Starts @l in a thread, on a copy of the pull's client (the pull goes on using its own) and a
 * connection to the cache of its own (SQLite's WAL lets the pull's go on meanwhile, and what
 * the lookup keeps is committed when the pull looks). */
static int lookup_spawn(struct lookup *l)
{
	int r;

	r = cache_open(l->cache_dir, &l->c);
	if (r < 0)
		return r;
	if (l->own) {
		r = registry_dup(l->own, &l->own_copy);
		if (r < 0)
			return r;
		l->own = l->own_copy;
	}
	return -pthread_create(&l->thread, NULL, lookup_thread, l);
}

int seek_remote_fetch(struct cache *c, const struct reference *ref, struct source *src,
		      const struct registry_options *ro, bool ask_again, const struct manifest *m,
		      const char *manifest_digest, int (*meanwhile)(void *userdata),
		      void *userdata)
{
	_cleanup_(reference_freep) struct reference *start = NULL;
	struct lookup l = {
		.cache_dir = c->dir, .ref = ref, .ro = ro, .m = m,
		.manifest_digest = manifest_digest,
	};
	bool spawned = false;
	int r;

	if (ref->transport != REFERENCE_DOCKER || c->read_only || count_wanted(c, m) == 0 ||
	    lookup_config(ask_again, &l.cfg) < 0 || lookup_start(ref, &l.cfg, &start) < 0 ||
	    !start) {
		error_clear();
		return meanwhile ? meanwhile(userdata) : 0;
	}
	l.start = start;
	l.own = source_origin_registry(src, start);
	if (meanwhile) {
		r = lookup_spawn(&l);
		spawned = r >= 0;
		if (r < 0)
			log_debug_errno(r, "seek index lookup not started beside the pull: %m");
		error_clear();
	}
	r = meanwhile ? meanwhile(userdata) : 0;
	if (spawned)
		(void)pthread_join(l.thread, NULL);
	else if (r >= 0)
		lookup_run(c, &l);
	registry_free(l.own_copy);
	cache_free(l.c);
	return r;
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
