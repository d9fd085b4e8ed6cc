/* cache/source.h: where an image's manifests and blobs come from.  Today one registry (the
 * docker:// transport); the same calls will serve registry mirrors and local sources (oci:,
 * oci-archive:, docker-archive:), so image.c and fetch.c never need to know which.
 *
 * The calls, their errors and their threading rules are those of registry.h: one thread at a
 * time per object; create one object per thread that needs one. */
#pragma once

#include "registry.h"

struct source;

int source_new(const struct reference *ref, const struct registry_options *o,
	       struct source **ret);
struct source *source_free(struct source *s);  /* NULL-safe */
DEFINE_CLEANUP_FUNC(struct source *, source_free);

const char *source_last_error(struct source *s);
void source_get_counters(struct source *s, uint64_t *ret_requests, uint64_t *ret_bytes);
/* An opaque hint for registry_options.scheme of later objects of the same source (what an
 * earlier object learnt: which scheme, which endpoint), or NULL when there is none yet. */
const char *source_scheme(struct source *s);

int source_ping(struct source *s);
int source_get_manifest(struct source *s, const char *tag_or_digest, char **ret_buf,
			size_t *ret_len, char **ret_content_type, char ret_digest[72]);
int source_get_blob(struct source *s, const char *digest, size_t max, char **ret_buf,
		    size_t *ret_len);
int source_stream_blob(struct source *s, const char *digest,
		       int (*sink)(void *userdata, const void *buf, size_t n), void *userdata);
int source_get_blob_range(struct source *s, const char *digest, uint64_t offset, size_t len,
			  void *buf);
int source_head_manifest(struct source *s, const char *tag_or_digest, char ret_digest[72],
			 char **ret_content_type);
void source_expect_blob_size(struct source *s, const char *digest, uint64_t size);
