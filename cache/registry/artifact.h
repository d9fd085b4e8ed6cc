/* cache/registry/artifact.h: artifacts that refer to an image (OCI image-spec and
 * distribution-spec 1.1).  An artifact is an image manifest with an artifactType, the empty
 * config (application/vnd.oci.empty.v1+json) and one or more layer blobs, whose subject is the
 * descriptor of an image manifest.  It is found through the registry's referrers API, or, on
 * registries without one (Debian's docker-registry 2.8), through the referrers tag schema: an
 * image index tagged "sha256-<hex of the subject digest>" that lists the referrers, which the
 * pusher maintains.  One mechanism for every kind (the gzip seek index, the start profile):
 * the kind is the artifactType.
 *
 * Nothing in an artifact is trusted: its manifest is fetched by digest and must name the
 * subject asked for, its blobs are verified by digest and bounded in size, and what they say is
 * for the caller to check.  Errors as registry.h. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cache/base/digest.h"
#include "cache/format/manifest.h"

struct registry;

#define ARTIFACT_EMPTY_MEDIA_TYPE "application/vnd.oci.empty.v1+json"
/* At most this many referrers are read for one subject (pages and tag index together). */
#define ARTIFACT_REFERRERS_MAX 1024

/* A descriptor: of a referrer (an artifact manifest) in a listing, of a blob in an
 * artifact, or of the subject given to artifact_push(). */
struct artifact_desc {
	char digest[DIGEST_STRING_MAX];
	uint64_t size;
	char *media_type;
	char *artifact_type;             /* NULL when none */
	struct annotation *annotations;  /* key/value pairs; NULL when none */
	size_t n_annotations;
};

struct artifact_list {
	struct artifact_desc *items;
	size_t n;
};
void artifact_list_done(struct artifact_list *l);  /* frees the contents; NULL-safe */
/* Drops the items whose artifactType is not @artifact_type (NULL: keeps all). */
void artifact_list_keep_type(struct artifact_list *l, const char *artifact_type);

/* The value of annotation @key of @d, or NULL. */
const char *artifact_desc_annotation(const struct artifact_desc *d, const char *key);

/* One blob to publish: its bytes (not copied), media type and annotations. */
struct artifact_blob {
	const char *media_type;
	const void *data;
	size_t size;
	const struct annotation *annotations;
	size_t n_annotations;
};

/* Publishes an artifact of @artifact_type for @subject (digest, size and media type of an image
 * manifest; it need not be in @r's repository: registries must accept a subject they do not
 * have) in @r's repository, which must have been made with registry_options.push: the blobs,
 * the empty config, the manifest by digest; then, unless the registry answered with
 * OCI-Subject (it has the referrers API), the referrers tag, re-read and updated until it
 * lists the artifact (ARTIFACT_TAG_ATTEMPTS attempts; -EAGAIN when writers kept racing).  The
 * same blobs and type give the same manifest, so pushing again adds nothing.  The artifact's
 * digest goes to @ret_digest (may be NULL). */
#define ARTIFACT_TAG_ATTEMPTS 5
int artifact_push(struct registry *r, const struct artifact_desc *subject,
		  const char *artifact_type, const struct artifact_blob *blobs, size_t n,
		  char ret_digest[DIGEST_STRING_MAX]);

/* Copies image manifest @subject_digest from @src's repository into @dst's, on the same
 * registry, so that an artifact pushed to @dst refers to a manifest that is there (registries
 * must accept a missing subject but may garbage-collect such referrers): its config and
 * layers by cross-repository mount (@dst made with registry_options.push and mount_from =
 * @src's repository), then the manifest bytes by digest.  Nothing to do when @dst has it.
 * -ENOENT when the registry would not mount a blob; -EOPNOTSUPP for a subject that is an
 * image index. */
int artifact_copy_subject(struct registry *dst, struct registry *src, const char *subject_digest);

/* How a registry lists referrers. */
enum artifact_route {
	ARTIFACT_ROUTE_UNKNOWN,  /* try the API, fall back to the tag */
	ARTIFACT_ROUTE_API,      /* it answered the referrers API */
	ARTIFACT_ROUTE_TAG,      /* it has no referrers API: the tag schema only */
};

/* Lists the artifacts that refer to @subject_digest in @r's repository, of @artifact_type
 * (NULL: all), through the referrers API (every page, filtered here too, as servers may
 * ignore the filter), or through the referrers tag when the registry has no API.  *@route
 * (may be NULL: unknown) says what is known of the registry, and is set to what it turned
 * out to be; ARTIFACT_ROUTE_TAG goes to the tag at once.  No artifact is an empty list, not
 * an error.  -EPROTO for a listing that is no image index or holds malformed descriptors;
 * -EFBIG past ARTIFACT_REFERRERS_MAX. */
int artifact_find(struct registry *r, const char *subject_digest, const char *artifact_type,
		  enum artifact_route *route, struct artifact_list *ret);

/* Fetches artifact manifest @digest (verified) and lists its blobs.  -EBADMSG unless it is
 * an image manifest whose subject is @subject_digest and, when @artifact_type is not NULL,
 * whose artifactType is that (a listing may say otherwise). */
int artifact_get(struct registry *r, const char *digest, const char *subject_digest,
		 const char *artifact_type, struct artifact_list *ret_blobs);

/* Fetches the blob @d describes into memory, verified against its digest and size.  -EFBIG
 * if it declares (or turns out) larger than @max. */
int artifact_fetch_blob(struct registry *r, const struct artifact_desc *d, size_t max,
			char **ret_buf, size_t *ret_len);

/* A list as a JSON array of descriptors (the shape of an image index's "manifests"), and back
 * (-EPROTO if malformed), for keeping answers in the cache. */
int artifact_list_to_json(const struct artifact_list *l, char **ret);
int artifact_list_from_json(const char *buf, size_t len, struct artifact_list *ret);
