/* cache/share/seek_remote.h: seek indexes another host published for an image (seek_publish.h),
 * found when a pull meets tar+gzip layers the cache has neither read nor indexed, and kept
 * (untrusted) so that the pull indexes those layers lazily instead of reading them whole.
 * Where each fetched index came from is remembered for stats and inspect. */
#pragma once

#include <stdbool.h>

#include "cache/store/cache.h"
#include "cache/format/manifest.h"
#include "cache/format/reference.h"
#include "cache/registry/registry.h"

struct source;

/* The largest index blob fetched for a layer of @size compressed bytes: an honest index is
 * about 1% of a large layer (docs/formats.md), a small layer's is dominated by its windows
 * (up to 32 KiB each); past a quarter of the layer plus 1 MiB it saves too little to be
 * worth fetching, and the layer is read whole. */
#define SEEK_REMOTE_MAX(size) ((size) / 4 + (1ULL << 20))

/* For the tar+gzip layers of manifest @m (digest @manifest_digest, of registry image @ref)
 * with neither entries nor an index in @c: ONE artifact_lookup() (in the repository the image
 * is served from, then the artifact repository; only the latter when registries.conf gives
 * the registry mirrors; through the pull's own client of that repository when @src (may be
 * NULL) has one; answers cached as
 * artifact-ttl and artifact-miss-ttl say; @ask_again: asked anyway, as --pull=always and
 * prewarm re-resolve tags), then each published index of such a layer is fetched (bounded)
 * and kept with seek_index_import(), the blobs of all layers fetched at once.  Never fails a pull: a failed lookup or a bad index is
 * one warning line, and the layers it concerns are read whole as before.  Nothing for a
 * local image or a read-only cache.  Returns how many indexes were kept. */
int seek_remote_fetch(struct cache *c, const struct reference *ref, struct source *src,
		      const struct registry_options *ro, bool ask_again, const struct manifest *m,
		      const char *manifest_digest, int (*meanwhile)(void *userdata),
		      void *userdata);

/* Where the index kept for layer @layer_digest came from: "built here", "fetched from
 * HOST/REPOSITORY" or "imported" (untrusted, from no known place), in *@ret (to free).
 * -ENOENT when none is kept. */
int seek_index_origin(struct cache *c, const char *layer_digest, char **ret);
/* Appends seek_index_origin() of layer @l to strv *@strv, "" when it has none (for stats).
 * -ENOMEM only. */
int seek_layer_origin_append(struct cache *c, const struct layer_desc *l, char ***strv);
