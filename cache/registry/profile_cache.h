/* cache/registry/profile_cache.h: start profiles (cache/format/start_profile.h) in the cache and in the
 * registry.  A profile is a blob of the store named per image in the index
 * (index_db_profile_*), recorded by a mount of this host or fetched once from the registry,
 * where it is an artifact of type START_PROFILE_ARTIFACT_TYPE that refers to the image's
 * manifest (cache/registry/artifact.h; looked up as artifact_lookup() does: one cached answer
 * per place, like a tag).  cli/profile.c publishes them with artifact_publish_image(). */
#pragma once

#include <stddef.h>

#include "cache/format/reference.h"
#include "cache/format/start_profile.h"
#include "cache/registry/artifact_cache.h"
#include "cache/store/cache.h"

struct registry;
struct registry_options;

#define PROFILE_ORIGIN_RECORDED "recorded"

/* Keeps @p (its image must be in the cache) under its digest, replacing any other profile of
 * that image; @origin: PROFILE_ORIGIN_RECORDED or the artifact it came as. */
int profile_store(struct cache *c, const struct start_profile *p, const char *origin,
		  char ret_digest[DIGEST_STRING_MAX]);

/* The profile kept for @image (a manifest digest), as its bytes (checked again against its
 * digest and parsed: the store may have been tampered with) and parsed (either may be NULL).
 * -ENOENT when none is kept. */
int profile_load(struct cache *c, const char *image, char **ret_buf, size_t *ret_len,
		 struct start_profile *ret);

/* Looks for a profile of @image (pulled for @ref, a docker reference) in the registry (one
 * cached lookup per place), fetches the first one listed (at most START_PROFILE_MAX bytes) and
 * keeps it when it parses as a profile of @image.  @own (may be NULL): a client that already
 * spoke to @ref's repository, used for it (artifact_lookup()).  -ENOENT when none is
 * published; -EBADMSG or -EFBIG (error.h's message says why) for a bad one; what the registry
 * did otherwise. */
int profile_fetch(struct cache *c, const struct reference *ref, struct registry *own,
		  const struct registry_options *ro, const struct artifact_config *cfg,
		  const char *image, struct start_profile *ret);

/* A profile fetched and not kept yet: a pull looks for one before it records the image, and
 * a profile is kept only for an image in the cache. */
struct profile_fetched {
	char *buf;                       /* checked to parse as a profile of the image */
	size_t len;
	char origin[DIGEST_STRING_MAX];  /* the artifact it came as */
};
void profile_fetched_done(struct profile_fetched *f);
/* profile_fetch() up to the keeping: the bytes in *@ret.  Failures as profile_fetch(). */
int profile_fetch_bytes(struct cache *c, const struct reference *ref, struct registry *own,
			const struct registry_options *ro, const struct artifact_config *cfg,
			const char *image, struct profile_fetched *ret);
/* Parses @f into *@ret and keeps it for @image (now in @c); a profile that cannot be kept is
 * still returned (a debug line). -EBADMSG for bytes that do not parse. */
int profile_keep_fetched(struct cache *c, const char *image, const struct profile_fetched *f,
			 struct start_profile *ret);
