/* cache/share/artifact_image.h: publishing an artifact for an image where a fleet looks for it: the
 * image's own repository and the artifact repository the configuration names
 * (artifact_cache.h).  One policy for every kind of artifact (seek indexes, start profiles):
 * a place that refuses (no push rights, a registry that takes no artifacts) while another
 * took the artifact is a warning; only when none took it is it a failure. */
#pragma once

#include <stddef.h>

#include "cache/registry/artifact_cache.h"

struct index_db;

/* Publishes an artifact of @artifact_type made of @blobs for @subject, the image manifest
 * @image (a docker reference) names, with artifact_publish(): in @image's repository and,
 * when @cfg names one, in the artifact repository.  Each place that refused while another
 * took it is one warning line naming the place and the cause.  Returns how many places took
 * it (1 or 2), or, when none did, the first place's error with error.h's message naming every
 * place and its cause.  -EINVAL for a configured artifact repository that is no repository
 * name. */
int artifact_publish_image(struct index_db *db, const struct reference *image,
			   const struct registry_options *ro, const struct artifact_config *cfg,
			   const struct artifact_desc *subject, const char *artifact_type,
			   const struct artifact_blob *blobs, size_t n);
