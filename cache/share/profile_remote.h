/* cache/share/profile_remote.h: the start profile another host published for an image
 * (profile_cache.h), looked up while the pull fetches the image's config and TOCs instead of
 * after the layers are indexed: the lookup needs only the manifest digest, and a mount that
 * waited for it paid its round trips (the referrers API and the referrers tag, then the
 * profile's manifest and blob when there is one) on top of the pull's (issue 17). */
#pragma once

#include "cache/format/reference.h"
#include "cache/image.h"
#include "cache/registry/registry.h"
#include "cache/store/cache.h"

struct source;

/* Runs @meanwhile (if not NULL; its result is the call's) while a thread looks up and fetches
 * the start profile of @manifest_digest, pulled for @ref through @src, into *@ret
 * (profile_fetch_bytes() on a connection to @c of its own, with a copy of @src's client of
 * @ref's repository: no second ping, the same token).  The mount then finds there the
 * profile to keep and use (profile_keep_fetched(): the image is in the cache by then), that
 * there is none, or why the lookup failed, and asks nothing more.  Looks up nothing
 * (and only runs @meanwhile) for a local image, a read-only cache, or when @src has not
 * spoken to @ref's own repository (a mirror served it: the mount decides, as before).  A
 * failed lookup is the mount's to report, from *@ret (set only when the lookup was made). */
int profile_remote_fetch(struct cache *c, const struct reference *ref, struct source *src,
			 const struct registry_options *ro, const char *manifest_digest,
			 int (*meanwhile)(void *userdata), void *userdata,
			 struct profile_lookup_outcome *ret);
