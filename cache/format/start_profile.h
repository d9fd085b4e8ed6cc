/* cache/format/start_profile.h: a start profile (docs/formats.md, "Start profiles"): which
 * chunks of an image's lazy layers its first seconds read, in first-read order.  Each chunk is
 * named by its layer (a digest of the image's manifest), its compressed range in that layer's
 * blob, its uncompressed size and its digest, so that a later mount can fetch it with a Range
 * request before the file tree is asked, and can match it against the image's own chunk list
 * (a profile is a hint: a chunk the image does not have is skipped, and fetched bytes are
 * verified against the image's digest as for any read).  Bounded: START_PROFILE_MAX bytes of
 * JSON, START_PROFILE_CHUNKS_MAX chunks, START_PROFILE_LAYERS_MAX layers. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "cache/base/digest.h"

#define START_PROFILE_MEDIA_TYPE "application/vnd.lazyroot.start-profile.v1+json"
#define START_PROFILE_ARTIFACT_TYPE "application/vnd.lazyroot.start-profile.v1"
#define START_PROFILE_MAX (4u << 20)
#define START_PROFILE_CHUNKS_MAX 16384u
#define START_PROFILE_LAYERS_MAX 256u

struct start_profile_chunk {
	unsigned layer;            /* index into start_profile.layers */
	uint64_t blob_offset;      /* compressed range in the layer's blob */
	uint64_t blob_length;
	uint64_t size;             /* uncompressed */
	char digest[DIGEST_STRING_MAX];
};

struct start_profile {
	char image[DIGEST_STRING_MAX];   /* the image manifest's digest */
	uint64_t window_ms;              /* how long after the first read it recorded */
	char **layers;                   /* strv of layer digests, as the chunks index them */
	struct start_profile_chunk *chunks;
	size_t n_chunks;
};

void start_profile_done(struct start_profile *p);  /* frees the contents; NULL-safe */

/* Parses a profile; -EBADMSG (with error.h's message) unless it is a well-formed version 1
 * profile of image @image (NULL: any), -EFBIG past a bound. */
int start_profile_parse(const void *buf, size_t len, const char *image,
			struct start_profile *ret);

/* The profile as compact JSON (the bytes that are stored and pushed). */
int start_profile_format(const struct start_profile *p, char **ret, size_t *ret_len);
