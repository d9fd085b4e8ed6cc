/* cache/share/seek_publish.h: the seek indexes of an image's tar+gzip layers published as one
 * artifact for its manifest (docs/formats.md, "Seek index artifacts"), so that other hosts
 * read those layers lazily without indexing them (cache/share/seek_remote.h).  Only indexes built
 * here from the verified layer (trusted) are ever published, never one that came from
 * elsewhere. */
#pragma once

#include "cache/image.h"
#include "cache/registry/artifact_cache.h"

/* Publishes the trusted seek indexes of @img's tar+gzip layers (@img pulled into @c for @ref,
 * a registry image) as one artifact of type SEEK_INDEX_ARTIFACT_TYPE whose subject is @img's
 * manifest, with artifact_publish_image() (@cfg: the artifact repository).  The same indexes
 * give the same artifact: publishing again adds nothing.  Returns how many places took it, 0
 * when no layer has an index built here (nothing is published), or -errno with error.h's
 * message. */
int seek_publish(struct cache *c, const struct reference *ref, const struct registry_options *ro,
		 const struct artifact_config *cfg, const struct image *img);
