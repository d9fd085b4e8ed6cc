/* cache/image.h: turns a reference into an image whose every layer is indexed in the cache:
 * resolve (tag -> manifest digest, through an index to the platform's manifest), fetch the
 * config, import the layers that are not indexed yet.  A mount is pinned to the manifest
 * digest this returns. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "cache/base/error.h"
#include "cache/store/cache.h"
#include "cache/format/manifest.h"
#include "cache/format/reference.h"
#include "cache/registry/profile_cache.h"
#include "cache/registry/registry.h"

struct source;

enum pull_policy {
	PULL_MISSING,  /* use the cached resolution and layers when present: no network at all */
	PULL_ALWAYS,   /* re-resolve the tag at the registry */
	PULL_NEVER,    /* never contact the registry */
};

enum pull_failure {
	PULL_FAILURE_NONE,
	PULL_FAILURE_USAGE,     /* bad platform string */
	PULL_FAILURE_REGISTRY,  /* unknown image, unreachable or refusing registry, bad data */
	PULL_FAILURE_CACHE,     /* local disk or index failure */
};

/* What the pull's lookup of the image's start profile came to (find_start_profile below). */
struct profile_lookup_outcome {
	bool looked;               /* it was made: the mount asks the registry nothing more */
	int r;                     /* profile_fetch_bytes()'s: 0 found, -ENOENT none, else failed */
	struct error_carry error;  /* the message about a failure */
	struct profile_fetched fetched;  /* what it found, for the mount to keep and use */
};

struct pull_options {
	const char *platform;      /* "os/arch[/variant]", NULL for the host's */
	enum pull_policy policy;
	/* How to reach the image's source: TLS, credentials, rate (see registry.h). */
	struct registry_options registry;
	/* Called as layer bytes arrive (from a fetching thread); may be NULL. */
	void (*progress)(void *userdata, unsigned layer, unsigned n_layers, uint64_t done,
			 uint64_t total);
	void *progress_userdata;
	/* Keep the seek index of every tar+gzip layer read whole (as the config file's
	 * seek-index-on-pull does): `lazyroot index` sets it. */
	bool build_seek_index;
	/* Called before the layers are imported, unless the policy is PULL_NEVER, to find seek
	 * indexes for gzip layers the cache lacks (cache/share/seek_remote.h's
	 * seek_remote_fetch(), which the image verbs pass); never fails the pull.  May be NULL. */
	int (*find_seek_indexes)(struct cache *c, const struct reference *ref, struct source *src,
				 const struct registry_options *ro, bool ask_again,
				 const struct manifest *m, const char *manifest_digest,
				 int (*meanwhile)(void *userdata), void *userdata);
	/* Called beside the config and the TOCs, when the pull spoke to the registry and every
	 * layer of the image has a TOC, to look up the image's start profile before the mount
	 * asks for it (cache/share/profile_remote.h's profile_remote_fetch(), which a mount that
	 * uses profiles passes); runs @meanwhile, whose result is its own, and leaves what the
	 * lookup came to in *@ret (image.profile_lookup).  Left to the mount for an image
	 * with gzip layers: their seek index lookup asks the registry for the same answer, and
	 * two lookups at once would both send it.  May be NULL. */
	int (*find_start_profile)(struct cache *c, const struct reference *ref, struct source *src,
				  const struct registry_options *ro, const char *manifest_digest,
				  int (*meanwhile)(void *userdata), void *userdata,
				  struct profile_lookup_outcome *ret);
};

struct image {
	char *ref;               /* canonical reference, e.g. "127.0.0.1:5000/demo:latest" */
	char *manifest_digest;   /* the platform's image manifest */
	struct manifest *manifest;
	struct image_config *config;
	char *registry_scheme;   /* what the registry spoke, when it was contacted; else NULL */
	uint64_t pull_requests;  /* requests this pull sent to the registry */
	uint64_t pull_bytes;     /* body bytes they brought back */
	struct profile_lookup_outcome profile_lookup;
};

/* On failure, *ret_failure says whose failure it is (for the exit status) and the thread's
 * message (error.h) names the object and the reason, e.g. "manifest sha256:…: layer sha256:…:
 * unsupported media type application/x"; the message is cleared when the pull starts. */
int image_pull(struct cache *c, const struct reference *ref, const struct pull_options *o,
	       struct image **ret, enum pull_failure *ret_failure);
/* Builds the seek index of every tar+gzip layer of @img (pulled) that has none in the cache,
 * streaming each such layer once, its digest and diff_id verified on the way
 * (cache/seek.h).  Layers a full pull imported have theirs already (built on the way).
 * Failures as image_pull(); -EOPNOTSUPP (with the reason) for a layer that cannot have one. */
int image_index_layers(struct cache *c, const struct reference *ref, const struct pull_options *o,
		       const struct image *img, enum pull_failure *err);
/* Streams each layer @pick marks (one per layer of @img's manifest) whole, as
 * image_index_layers() does, with every chunk of the index built on the way stored in the
 * blob store (cache/seek.h, seek_chunk_store): prewarm reads a gzip layer read through a seek
 * index this way when most of it is missing, or when its index came from elsewhere (it is
 * then verified and trusted, or replaced: seek_verify.h).  Failures as image_pull(). */
int image_stream_seek_layers(struct cache *c, const struct reference *ref,
			     const struct pull_options *o, const struct image *img,
			     const bool *pick, enum pull_failure *err);
struct image *image_free(struct image *img);  /* NULL-safe */
DEFINE_CLEANUP_FUNC(struct image *, image_free);
