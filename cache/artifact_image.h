/* cache/artifact_image.h: publishing an artifact for an image where artifact_lookup() finds it:
 * the image's own repository and the configured artifact repository.  Shared by every kind of
 * artifact (gzip seek indexes, start profiles): the kind is @artifact_type. */
#pragma once

#include <stddef.h>

#include "cache/registry/artifact.h"
#include "cache/registry/artifact_cache.h"

struct index_db;

/* Publishes an artifact of @artifact_type holding @blobs for @subject (the image manifest's
 * descriptor) with artifact_publish(), in @image's own repository (a docker reference) and,
 * when @cfg names one, in the artifact repository.  A place that refuses is a warning when the
 * other took it.  Returns how many places took it (1 or 2), or, when none did, the error of
 * the first (error.h's message says which place and why). */
int artifact_publish_image(struct index_db *db, const struct reference *image,
			   const struct registry_options *ro, const struct artifact_config *cfg,
			   const struct artifact_desc *subject, const char *artifact_type,
			   const struct artifact_blob *blobs, size_t n);
