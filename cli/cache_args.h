/* cli/cache_args.h: what the cache verbs (images, inspect, rm, gc, fsck) share: opening the
 * cache, their --cache-dir (verb_args.h parses it), and what a REF argument names in the
 * cache.  A reference is looked up as mount resolves it (canonical form, the refs table); an
 * image known only by digest is named "sha256:…". */
#pragma once

#include <getopt.h>

#include "cache/store/cache.h"

struct option;

/* The last entries of every cache verb's option table. */
#define CACHE_OPTIONS                                               \
	{ "cache-dir", required_argument, NULL, 'C' },              \
	{ "help", no_argument, NULL, 'h' }

/* The verb_arg entry that sets @p from --cache-dir. */
#define CACHE_DIR_ARG(p) VERB_VALUE('C', (p))

/* Opens @dir (NULL: the default cache); 0 or -ERR_CACHE (logged). */
int cli_cache_open(const char *dir, struct cache **ret);
/* The same for a verb that writes the cache (@verb: "gc", "rm from", ...): a read-only cache
 * is refused with one line. */
int cli_cache_open_writable(const char *dir, const char *verb, struct cache **ret);

struct ref_query {
	const char *want, *platform;
	char **refs, **platforms, **digests;
};
void ref_query_done(struct ref_query *q);

/* What @arg names: "sha256:…" is an image row itself (no refs); a reference is looked up in its
 * canonical form in the refs table (one platform's row with @platform).  -ENOENT if unknown,
 * -EINVAL if @arg is neither.  On success *q holds parallel strvs refs/platforms/digests
 * (refs and platforms NULL for a digest). */
int ref_query_resolve(struct cache *c, const char *arg, const char *platform,
		      struct ref_query *q, char **ret_canonical);
