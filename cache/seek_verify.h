/* cache/seek_verify.h: prewarm's last step for a layer read through a seek index that came
 * from elsewhere (docs/security.md, "Seek indexes"): the layer is streamed whole, its digest
 * and diff_id verified, its index built from the stream and compared with the kept one.  The
 * same index is then trusted; a different one (it lied, or another builder wrote it) is
 * replaced by the one built here, and the layer's entries indexed from it again. */
#pragma once

#include <stdbool.h>

#include "cache/image.h"

/* @report(userdata, layer digest, same) once per such layer of @img.  Failures as
 * image_pull(). */
int seek_verify_image(struct cache *c, const struct reference *ref, const struct pull_options *o,
		      const struct image *img,
		      void (*report)(void *userdata, const char *layer, bool same), void *userdata,
		      enum pull_failure *err);
