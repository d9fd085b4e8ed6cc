/* cache/registry/artifact_cache.h: where artifacts that refer to an image are published and
 * looked up, and the cache of the answers.  Two places: the image's own repository, and the
 * artifact repository the operator names in the configuration (artifact-repository) for images
 * nobody can push next to.  A lookup asks the registry at most once per place until its answer
 * expires (artifact-ttl for a found artifact, artifact-miss-ttl for none), like a tag
 * resolution: the answer is kept in the index database (index_db_referrers_*). */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "cache/format/reference.h"
#include "cache/registry/artifact.h"
#include "cache/registry/registry.h"

struct index_db;

#define ARTIFACT_TTL_DEFAULT_S (24 * 3600)
#define ARTIFACT_MISS_TTL_DEFAULT_S (10 * 60)

struct artifact_config {
	/* "host/path/name" of the artifact repository, "" when none is configured. */
	char repository[512];
	int64_t ttl_s;       /* how long a listing with artifacts is trusted; 0: ask every time */
	int64_t miss_ttl_s;  /* how long "none" is; 0: ask every time */
};
#define ARTIFACT_CONFIG_DEFAULT \
	((struct artifact_config) { .ttl_s = ARTIFACT_TTL_DEFAULT_S, \
				    .miss_ttl_s = ARTIFACT_MISS_TTL_DEFAULT_S })

/* The artifact repository as a reference (its tag is irrelevant); *ret NULL when none is
 * configured.  -EINVAL if the configured name is no repository. */
int artifact_config_place(const struct artifact_config *cfg, struct reference **ret);

/* artifact_find() through the cache @db (NULL: none): a fresh answer stored for @r's
 * repository, @subject and @artifact_type is returned without a request; otherwise the
 * registry is asked and its answer stored (a cache that cannot be written is no error). */
int artifact_find_cached(struct index_db *db, struct registry *r, const char *subject,
			 const char *artifact_type, const struct artifact_config *cfg,
			 struct artifact_list *ret);

/* What artifact_lookup() found, and a client of the repository it is in, to artifact_get()
 * and artifact_fetch_blob() with (NULL when nothing was found). */
struct artifact_found {
	struct artifact_list list;
	struct registry *registry;
	char *place;         /* "host/repository" of that repository */
	bool borrowed;       /* registry is the caller's @own, not freed here */
};
void artifact_found_done(struct artifact_found *f);

/* Looks for artifacts of @artifact_type referring to @subject in the image's own repository
 * (@image, a docker reference as named, before any registries.conf rewrite: every place is
 * asked through source_origin_new(), never its mirrors), then, when none is there, in the
 * configured artifact repository.
 * An empty list when neither has one.  Fails only when a place could not be asked and no
 * other place answered with artifacts.  A caller that re-resolves tags at the registry
 * (--pull=always, prewarm) may pass a @cfg with ttl_s and miss_ttl_s 0 to ask again too.
 * @own (may be NULL): a client the caller already spoke to the image's registry with (the
 * pull's); the place that is its repository is asked through it (no second ping, the same
 * connection and token), another place of its registry is told its scheme. */
int artifact_lookup(struct index_db *db, const struct reference *image, struct registry *own,
		    const struct registry_options *ro, const struct artifact_config *cfg,
		    const char *subject, const char *artifact_type, struct artifact_found *ret);

/* Publishes an artifact (artifact_push()) in the repository @place names (its registries.conf
 * settings applied: source_origin_new()), with push access asked for, and drops the cached answers about @subject there so that the next lookup asks.
 * When @place is another repository of @image's registry (an artifact repository), the
 * subject is first copied there (artifact_copy_subject()); a copy that fails is no error
 * (registries must accept a missing subject).  @image may be NULL: no copy. */
int artifact_publish(struct index_db *db, const struct reference *place,
		     const struct reference *image,
		     const struct registry_options *ro, const struct artifact_desc *subject,
		     const char *artifact_type, const struct artifact_blob *blobs, size_t n,
		     char ret_digest[DIGEST_STRING_MAX]);
