/*
 * cache/share/profile_remote.c: a start profile's lookup beside the pull (profile_remote.h).
 * The thread works on its own connection to the cache and its own copy of the pull's client:
 * SQLite connections and registry clients are single-threaded, and the pull keeps using its
 * own meanwhile (its writes wait for the layers' TOCs, so the two rarely meet; WAL and the
 * busy timeout cover it when they do).
 */
#include "profile_remote.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "cache/base/error.h"
#include "cache/base/log.h"
#include "cache/base/util.h"
#include "cache/config.h"
#include "cache/registry/profile_cache.h"
#include "cache/registry/source.h"

struct profile_lookup {
	const char *cache_dir;
	struct cache *c;             /* the thread's connection, freed by the caller */
	struct registry *own;        /* the thread's copy of the pull's client, freed by the caller */
	const struct reference *ref;
	const struct registry_options *ro;
	struct artifact_config cfg;
	const char *image;
	struct profile_lookup_outcome *out;  /* the caller's, set when the thread ends */
	pthread_t thread;
};

/* The configuration and the cache are opened here, not before the thread starts: the pull's
 * config request waits for the spawn (several ms on a loaded machine), not for the lookup. */
static void *lookup_thread(void *userdata)
{
	struct profile_lookup *l = userdata;
	struct config cfg;
	int r;

	r = config_read(&cfg, NULL);
	if (r >= 0) {
		l->cfg = cfg.artifacts;
		r = cache_open(l->cache_dir, &l->c);
	}
	if (r >= 0)
		r = profile_fetch_bytes(l->c, l->ref, l->own, l->ro, &l->cfg, l->image,
					&l->out->fetched);
	l->out->r = r;
	error_save(&l->out->error);
	return NULL;
}

/* The copy of @own is made here: the pull goes on using @own once the thread runs. */
static int lookup_spawn(struct profile_lookup *l, struct registry *own)
{
	int r;

	r = registry_dup(own, &l->own);
	if (r >= 0)
		r = -pthread_create(&l->thread, NULL, lookup_thread, l);
	return r;
}

int profile_remote_fetch(struct cache *c, const struct reference *ref, struct source *src,
			 const struct registry_options *ro, const char *manifest_digest,
			 int (*meanwhile)(void *userdata), void *userdata,
			 struct profile_lookup_outcome *ret)
{
	struct profile_lookup l = {
		.cache_dir = c->dir, .ref = ref, .ro = ro, .image = manifest_digest, .out = ret,
	};
	struct registry *own = NULL;
	bool spawned = false;
	int r;

	if (ref->transport == REFERENCE_DOCKER && !c->read_only)
		own = source_origin_registry(src, ref);
	if (own) {
		r = lookup_spawn(&l, own);
		spawned = r >= 0;
		if (r < 0)
			log_debug_errno(r, "start profile lookup not started beside the pull: %m");
		error_clear();
	}
	r = meanwhile ? meanwhile(userdata) : 0;
	if (spawned)
		(void)pthread_join(l.thread, NULL);
	ret->looked = spawned;
	registry_free(l.own);
	cache_free(l.c);
	return r;
}
