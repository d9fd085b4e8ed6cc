/* cli/index_publish.h: what `lazyroot index --push` and `lazyroot prewarm --publish-index`
 * share: the seek indexes built here for an image published for the fleet
 * (cache/seek_publish.h), the configuration read for where, and the one line that says what
 * failed. */
#pragma once

#include "cache/image.h"

/* Publishes @img's trusted seek indexes (pulled into @c for @ref) in its repository and the
 * configured artifact repository.  Returns how many places took them (0: no index to
 * publish), or -errno with error.h's message set and *@ret_class the class to report it as
 * (-ERR_USAGE for the configuration, -ERR_REGISTRY for what a registry did). */
int index_publish(struct cache *c, const struct reference *ref,
		  const struct registry_options *ro, const struct image *img, int *ret_class);
