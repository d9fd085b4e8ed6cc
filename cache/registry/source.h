/* cache/registry/source.h: where an image's manifests and blobs come from: a local image (oci:,
 * oci-archive:, docker-archive:, see source_local.h), or for the docker:// transport the
 * registry and the mirrors registries.conf names for it (registries_conf.h): each call tries
 * them in order and reports the origin's error when all fail.  image.c and fetch.c never need
 * to know which.
 *
 * The calls, their errors and their threading rules are those of registry.h: one thread at a
 * time per object; create one object per thread that needs one.  A failed call leaves the
 * thread's message (error.h): when every endpoint failed, the origin's, with the mirrors that
 * were tried first. */
#pragma once

#include "cache/registry/range_source.h"
#include "cache/registry/registry.h"

struct source;

/* Reads registries.conf (every time: objects are made a few per pull or mount).  -EPERM when
 * the registry is blocked there, -EINVAL when the file does not parse or a rewrite leaves no
 * repository, with the thread's message (error.h) saying why: "registry 'X' is blocked in
 * FILE", "FILE:LINE: reason".  @o->insecure applies to every endpoint; credentials go only to
 * endpoints on the reference's own registry; @o->scheme may be an earlier source_scheme(). */
int source_new(const struct reference *ref, const struct registry_options *o,
	       struct source **ret);
/* A client of the registry that serves the docker reference @ref, made as source_new() makes
 * the origin's: the location registries.conf rewrites @ref to, insecure if it or @o says so,
 * -EPERM if blocked, the same errors; its mirrors are not used.  For what only the origin
 * holds or takes: the artifacts that refer to an image (artifact_cache.h), pushes. */
int source_origin_new(const struct reference *ref, const struct registry_options *o,
		      struct registry **ret);
/* In *ret, "host[:port]/repository" of the origin that serves the docker reference @ref: its
 * own name, or the location registries.conf rewrites it to.  Errors as source_origin_new(). */
int source_origin_name(const struct reference *ref, char **ret);
struct source *source_free(struct source *s);  /* NULL-safe */
DEFINE_CLEANUP_FUNC(struct source *, source_free);

void source_get_counters(struct source *s, uint64_t *ret_requests, uint64_t *ret_bytes);
/* An opaque hint for registry_options.scheme of later objects of the same source (what an
 * earlier object learnt: which endpoint served last and its scheme; the later object starts
 * its calls by digest there, without a TLS probe), or NULL when there is none yet (always
 * for a local source).  Valid until the next call on @s. */
const char *source_scheme(struct source *s);

/* The client of endpoint @name ("host[:port]/repository") once it has spoken to it (pinged,
 * with a token where the registry wants one), for a caller that asks the same repository
 * something else between this source's calls (an artifact lookup); NULL when @s has no such
 * endpoint or has not reached it.  Borrowed: it lives as long as @s. */
struct registry *source_registry(struct source *s, const char *name);
/* source_registry() of @ref's origin (source_origin_name(): after registries.conf's rewrite):
 * the client a lookup of an artifact next to @ref shares with the pull, or NULL when the pull
 * has not spoken to that origin (a mirror served it) or @ref is not a docker reference. */
struct registry *source_origin_registry(struct source *s, const struct reference *ref);

int source_ping(struct source *s);
int source_get_manifest(struct source *s, const char *tag_or_digest, char **ret_buf,
			size_t *ret_len, char **ret_content_type, char ret_digest[72]);
int source_get_blob(struct source *s, const char *digest, size_t max, char **ret_buf,
		    size_t *ret_len);
/* registry_stream_blob() over the endpoints: bytes [offset, offset+len) (@len REGISTRY_TO_END:
 * to the end) to @sink, each once, in order; when an endpoint fails midway, the next is asked
 * only for the rest. */
int source_stream_blob(struct source *s, const char *digest, uint64_t offset, uint64_t len,
		       int (*sink)(void *userdata, const void *buf, size_t n), void *userdata);
/* Bytes of a blob that @s streamed failed verification (whole, or came short in a
 * well-framed answer): counts the try in @rt and makes @s's next calls by digest ask the
 * endpoint @rt chooses (struct blob_retry).  False when no try is left, and always for a
 * local source. */
bool source_retry_bad(struct source *s, struct blob_retry *rt);
/* The same into @buf: exactly @len bytes. */
int source_get_blob_range(struct source *s, const char *digest, uint64_t offset, size_t len,
			  void *buf);
/* HEAD of a manifest: its digest (and Content-Type) without its body, so that a tag whose
 * manifest is cached costs no GET (see registry_head_manifest()). */
int source_head_manifest(struct source *s, const char *tag_or_digest, char ret_digest[72],
			 char **ret_content_type);
/* The size the manifest declares for a blob: Content-Range totals must agree with it. */
void source_expect_blob_size(struct source *s, const char *digest, uint64_t size);

/* The range source of the image @ref names (range_source.h): each connection a source of its
 * own, so the registry's mirrors first, or its local layout or archive.  Copies @ref and @o
 * (its strings and credentials) once; @o->cancel is replaced by the source's own (see
 * range_source_cancel()), @o->rate_limit is shared.  Its timeout_ms is @o->timeout_ms. */
int source_range_new(const struct reference *ref, const struct registry_options *o,
		     struct range_source **ret);
