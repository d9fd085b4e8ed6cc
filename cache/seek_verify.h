/* cache/seek_verify.h: prewarm's step for a layer read through a seek index that came from
 * elsewhere (docs/security.md, "Seek indexes"), before its chunks are fetched: the layer is
 * streamed whole (its chunks stored on the way, so that nothing is fetched twice), its digest
 * and diff_id verified, its index built from the stream and compared with the kept one.  The
 * same index is then trusted; a different one (it lied, or another builder wrote it) is
 * replaced by the one built here, and the layer's entries indexed from it again. */
#pragma once

#include <stdbool.h>

#include "cache/image.h"

/* Streams whole every layer of @img read through a seek index that came from elsewhere, and
 * those @fill marks (may be NULL; one per layer: most of its chunks are missing), storing
 * every chunk on the way (image_stream_seek_layers()); @report(userdata, layer digest, same)
 * once per layer whose index came from elsewhere.  Failures as image_pull(). */
int seek_verify_image(struct cache *c, const struct reference *ref, const struct pull_options *o,
		      const struct image *img, const bool *fill,
		      void (*report)(void *userdata, const char *layer, bool same), void *userdata,
		      enum pull_failure *err);
