/*
 * cache/share/artifact_image.c: an artifact for an image, published in each place a lookup
 * (artifact_lookup()) asks: the image's own repository first, then the artifact repository
 * (artifact_image.h).  Publishing is rare (`lazyroot index --push`, prewarm): the places are
 * asked one after the other, and what each said is kept until all answered, so that a refusal
 * is reported as a warning or as the failure depending on what the other place did.
 */
#include "artifact_image.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache/base/error.h"
#include "cache/base/log.h"
#include "cache/base/util.h"

#define PLACES_MAX 2

struct place_result {
	const struct reference *place;
	int r;
	char *why;  /* "host/repository: cause", when r < 0 */
};

static bool same_repository(const struct reference *a, const struct reference *b)
{
	return streq(a->domain, b->domain) && streq(a->repository, b->repository);
}

/* Publishes in one place; a refusal keeps its cause in @res. */
static void publish_in(struct place_result *res, struct index_db *db,
		       const struct reference *image, const struct registry_options *ro,
		       const struct artifact_desc *subject, const char *artifact_type,
		       const struct artifact_blob *blobs, size_t n)
{
	char digest[DIGEST_STRING_MAX];

	error_clear();
	res->r = artifact_publish(db, res->place, image, ro, subject, artifact_type, blobs, n,
				  digest);
	if (res->r >= 0) {
		log_debug("published %s for %s in %s/%s as %s", artifact_type, subject->digest,
			  res->place->domain, res->place->repository, digest);
		return;
	}
	if (asprintf(&res->why, "%s/%s: %s", res->place->domain, res->place->repository,
		     error_take(res->r)) < 0)
		res->why = NULL;
}

/* No place took it: the first place's errno, every place's cause in the message. */
static int none_took(const struct place_result *res, size_t n)
{
	return error_set(res[0].r, "no place took the artifact: %s%s%s",
			 res[0].why ?: strerror(-res[0].r), n > 1 ? "; " : "",
			 n > 1 ? res[1].why ?: strerror(-res[1].r) : "");
}

int artifact_publish_image(struct index_db *db, const struct reference *image,
			   const struct registry_options *ro, const struct artifact_config *cfg,
			   const struct artifact_desc *subject, const char *artifact_type,
			   const struct artifact_blob *blobs, size_t n)
{
	_cleanup_(reference_freep) struct reference *repo = NULL;
	struct place_result res[PLACES_MAX] = { { .place = image } };
	size_t n_places = 1, took = 0;
	int r;

	if (image->transport != REFERENCE_DOCKER)
		return error_set(-EOPNOTSUPP, "'%s' is no registry image: artifacts are published "
				 "next to images in a registry", image->path ?: "(local)");
	r = artifact_config_place(cfg, &repo);
	if (r < 0)
		return r;
	if (repo && !same_repository(repo, image))
		res[n_places++].place = repo;

	for (size_t i = 0; i < n_places; i++) {
		publish_in(&res[i], db, image, ro, subject, artifact_type, blobs, n);
		took += res[i].r >= 0;
	}
	r = took > 0 ? (int)took : none_took(res, n_places);
	for (size_t i = 0; i < n_places; i++) {
		if (took > 0 && res[i].r < 0)
			log_warning("cannot publish %s in %s, ignoring (published elsewhere)",
				    artifact_type, res[i].why ?: strerror(-res[i].r));
		free(res[i].why);
	}
	return r;
}
