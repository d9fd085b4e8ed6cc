/*
 * cache/registry/artifact_cache.c: the places artifacts are looked up in, and the answers kept
 * in the index database (artifact_cache.h).  An answer is the JSON list artifact_list_to_json()
 * writes, keyed by ("host/repository", subject digest, artifact type); it is fresh for
 * artifact-ttl when it lists artifacts and for artifact-miss-ttl when it lists none, so that
 * a host that looked before the first host of a fleet published sees the artifact soon, and a
 * mount of an image whose artifacts are known costs no request for them.  Pushing through
 * artifact_publish() forgets the answers about its subject there.
 */
#include "artifact_cache.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cache/base/error.h"
#include "cache/base/log.h"
#include "cache/base/util.h"
#include "cache/registry/source.h"
#include "cache/store/index_db.h"

/* The artifact type under which how a registry lists referrers is remembered. */
#define ROUTE_KEY "lazyroot.referrers-route"

int artifact_config_place(const struct artifact_config *cfg, struct reference **ret)
{
	_cleanup_(reference_freep) struct reference *ref = NULL;
	int r;

	*ret = NULL;
	if (!cfg || !cfg->repository[0])
		return 0;
	r = reference_parse(cfg->repository, &ref);
	if (r < 0 || ref->transport != REFERENCE_DOCKER || ref->digest ||
	    (ref->tag && !streq(ref->tag, "latest")) || strchr(cfg->repository, '@'))
		return error_set(-EINVAL, "artifact-repository '%s' is not a repository name",
				 cfg->repository);
	*ret = TAKE_PTR(ref);
	return 0;
}

static char *place_of(struct registry *r)
{
	char *s;

	return asprintf(&s, "%s/%s", registry_domain(r), registry_repository(r)) < 0 ? NULL : s;
}

/* The stored answer when it is still fresh: 1 with *ret, 0 when there is none to use. */
static int cached_answer(struct index_db *db, const char *place, const char *subject,
			 const char *artifact_type, const struct artifact_config *cfg,
			 struct artifact_list *ret)
{
	_cleanup_free_ char *answer = NULL;
	int64_t updated, age;
	int r;

	r = index_db_referrers_get(db, place, subject, artifact_type, &answer, &updated);
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return r;
	r = artifact_list_from_json(answer, strlen(answer), ret);
	if (r < 0) {
		error_clear();
		return 0;  /* not ours to trust: ask again */
	}
	age = (int64_t)time(NULL) - updated;
	if (age >= 0 && age < (ret->n > 0 ? cfg->ttl_s : cfg->miss_ttl_s)) {
		log_debug("artifacts %s of %s in %s: %zu, as answered %llds ago",
			  artifact_type ?: "(any)", subject, place, ret->n, (long long)age);
		return 1;
	}
	artifact_list_done(ret);
	return 0;
}

static void answer_store(struct index_db *db, const char *place, const char *subject,
			 const char *artifact_type, const struct artifact_list *l)
{
	_cleanup_free_ char *json = NULL;
	int r;

	r = artifact_list_to_json(l, &json);
	if (r >= 0)
		r = index_db_referrers_put(db, place, subject, artifact_type, json);
	if (r < 0)
		log_debug_errno(r, "cannot remember the artifacts of %s in %s, ignoring: %m",
				subject, place);
}

/* What is known of how @r's registry lists referrers, remembered (as the answer "tag" or "api"
 * about subject "" in place "HOST", for artifact-ttl): on a registry without the referrers
 * API a lookup asks the tag alone, on one with it the API alone; unknown, both at once. */
static enum artifact_route route_get(struct index_db *db, struct registry *r,
				     const struct artifact_config *cfg)
{
	_cleanup_free_ char *answer = NULL;
	int64_t updated, age;

	if (index_db_referrers_get(db, registry_domain(r), "", ROUTE_KEY, &answer,
				   &updated) < 0)
		return ARTIFACT_ROUTE_UNKNOWN;
	age = (int64_t)time(NULL) - updated;
	if (age < 0 || age >= cfg->ttl_s)
		return ARTIFACT_ROUTE_UNKNOWN;
	/* Known to have the API: the referrers tag is asked only if the API 404s after all. */
	return streq(answer, "tag") ? ARTIFACT_ROUTE_TAG :
	       streq(answer, "api") ? ARTIFACT_ROUTE_API : ARTIFACT_ROUTE_UNKNOWN;
}

static void route_store(struct index_db *db, struct registry *r, enum artifact_route route)
{
	int e;

	if (route == ARTIFACT_ROUTE_UNKNOWN)
		return;
	e = index_db_referrers_put(db, registry_domain(r), "", ROUTE_KEY,
				   route == ARTIFACT_ROUTE_TAG ? "tag" : "api");
	if (e < 0)
		log_debug_errno(e, "cannot remember how %s lists referrers, ignoring: %m",
				registry_domain(r));
}

int artifact_find_cached(struct index_db *db, struct registry *r, const char *subject,
			 const char *artifact_type, const struct artifact_config *cfg,
			 struct artifact_list *ret)
{
	_cleanup_free_ char *place = place_of(r);
	struct artifact_config def = ARTIFACT_CONFIG_DEFAULT;
	enum artifact_route route = ARTIFACT_ROUTE_UNKNOWN, known;
	int e;

	if (!place)
		return -ENOMEM;
	cfg = cfg ?: &def;
	/* Every kind is asked for and kept at once, and the one wanted picked here: a mount that
	 * looks for a seek index and a start profile of one image sends one request, not two. */
	if (db) {
		e = cached_answer(db, place, subject, NULL, cfg, ret);
		if (e < 0)
			return e;
		if (e > 0) {
			artifact_list_keep_type(ret, artifact_type);
			return 0;
		}
		route = route_get(db, r, cfg);
	}
	known = route;
	e = artifact_find(r, subject, NULL, &route, ret);
	if (e < 0)
		return e;
	if (db) {
		answer_store(db, place, subject, NULL, ret);
		if (route != known)
			route_store(db, r, route);
	}
	artifact_list_keep_type(ret, artifact_type);
	return 0;
}

void artifact_found_done(struct artifact_found *f)
{
	if (!f)
		return;
	artifact_list_done(&f->list);
	if (!f->borrowed)
		registry_free(f->registry);
	free(f->place);
	*f = (struct artifact_found) {};
}

/* The client to ask @place with: @own itself when it is the client of the repository
 * registries.conf sends @place to (its connection and token), else a new one, told @own's
 * scheme when it is the same registry (no second HTTPS probe) but with a token of its own:
 * another repository is another scope, and maybe other credentials. */
static int place_client(const struct reference *place, struct registry *own,
			const struct registry_options *ro, struct registry **ret, bool *ret_borrowed)
{
	struct registry_options o = ro ? *ro : (struct registry_options) {};
	_cleanup_free_ char *origin = NULL;
	size_t domain_len;
	int e;

	*ret_borrowed = false;
	e = source_origin_name(place, &origin);
	if (e < 0)
		return e;
	domain_len = strcspn(origin, "/");
	if (own && origin[domain_len] == '/' && strlen(registry_domain(own)) == domain_len &&
	    strncmp(registry_domain(own), origin, domain_len) == 0) {
		*ret_borrowed = streq(registry_repository(own), origin + domain_len + 1);
		o.scheme = registry_scheme(own);
	}
	if (*ret_borrowed) {
		*ret = own;
		return 0;
	}
	/* registries.conf applies as for the pull: rewrite, insecure, blocked. */
	return source_origin_new(place, &o, ret);
}

/* Asks one place; *ret keeps the client when it has artifacts. */
static int lookup_in(struct index_db *db, const struct reference *place, struct registry *own,
		     const struct registry_options *ro, const struct artifact_config *cfg,
		     const char *subject, const char *artifact_type, struct artifact_found *ret)
{
	struct registry *r = NULL;
	struct artifact_list l = {};
	bool borrowed;
	int e;

	e = place_client(place, own, ro, &r, &borrowed);
	if (e >= 0)
		e = artifact_find_cached(db, r, subject, artifact_type, cfg, &l);
	if (e >= 0 && l.n > 0) {
		ret->place = place_of(r);
		e = ret->place ? 1 : -ENOMEM;
	}
	if (e > 0) {
		ret->list = l;
		ret->registry = r;
		ret->borrowed = borrowed;
		return 1;
	}
	artifact_list_done(&l);
	if (!borrowed)
		registry_free(r);
	return e;
}

int artifact_lookup(struct index_db *db, const struct reference *image, struct registry *own,
		    const struct registry_options *ro, const struct artifact_config *cfg,
		    const char *subject, const char *artifact_type, struct artifact_found *ret)
{
	_cleanup_(reference_freep) struct reference *repo = NULL;
	struct artifact_found f = {};
	int e, first;

	if (image->transport != REFERENCE_DOCKER)
		return -EINVAL;
	first = lookup_in(db, image, own, ro, cfg, subject, artifact_type, &f);
	if (first < 0)
		log_debug("cannot list artifacts of %s in its repository: %s", subject,
			  error_message() ?: strerror(-first));
	if (first <= 0) {
		e = artifact_config_place(cfg, &repo);
		if (e < 0)
			return e;
		e = repo ? lookup_in(db, repo, own, ro, cfg, subject, artifact_type, &f) : 0;
		/* The first failure is the one to report when no place answered. */
		if (e < 0 && first < 0)
			return first;
		if (e < 0)
			return e;
		if (e == 0 && first < 0)
			return first;
		error_clear();
	}
	*ret = f;
	return 0;
}

/* Copies the subject from @image's repository into @dst's when they are two repositories of
 * one registry; a failure is only logged. */
static void copy_subject(struct registry *dst, const struct reference *image,
			 const struct registry_options *ro, const char *subject)
{
	_cleanup_(registry_freep) struct registry *src = NULL;
	int e;

	e = source_origin_new(image, ro, &src);
	if (e >= 0)
		e = artifact_copy_subject(dst, src, subject);
	if (e < 0)
		log_debug("subject %s not copied to %s/%s, pushing without it: %s", subject,
			  registry_domain(dst), registry_repository(dst),
			  error_message() ?: strerror(-e));
	error_clear();
}

static bool same_registry(const struct reference *a, const struct reference *b)
{
	return a && b && a->transport == REFERENCE_DOCKER && b->transport == REFERENCE_DOCKER &&
	       streq(a->domain, b->domain) && !streq(a->repository, b->repository);
}

int artifact_publish(struct index_db *db, const struct reference *place,
		     const struct reference *image,
		     const struct registry_options *ro, const struct artifact_desc *subject,
		     const char *artifact_type, const struct artifact_blob *blobs, size_t n,
		     char ret_digest[DIGEST_STRING_MAX])
{
	_cleanup_(registry_freep) struct registry *r = NULL;
	_cleanup_free_ char *where = NULL;
	struct registry_options o = ro ? *ro : (struct registry_options) {};
	bool copy = same_registry(place, image);
	int e;

	o.push = true;
	o.mount_from = copy ? image->repository : NULL;
	e = source_origin_new(place, &o, &r);
	if (e < 0)
		return e;
	if (copy)
		copy_subject(r, image, ro, subject->digest);
	e = artifact_push(r, subject, artifact_type, blobs, n, ret_digest);
	if (e < 0 || !db)
		return e;
	where = place_of(r);
	if (!where)
		return -ENOMEM;
	e = index_db_referrers_forget(db, where, subject->digest);
	if (e < 0)
		log_debug_errno(e, "cannot forget the artifacts of %s in %s, ignoring: %m",
				subject->digest, where);
	return 0;
}
