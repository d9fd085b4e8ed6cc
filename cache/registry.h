/* cache/registry.h: the OCI distribution API over libcurl: /v2/ ping, the anonymous Bearer
 * token challenge flow, manifests, blobs, Range.  One struct registry per (host, repository);
 * it keeps one curl handle and the current token.  Not thread-safe: one thread at a time.
 *
 * Errors: -ENOENT unknown repository, tag, manifest or blob (404, MANIFEST_UNKNOWN…);
 * -EACCES refused (401/403 after auth); -EHOSTUNREACH connection failed, DNS, TLS;
 * -EAGAIN 429/5xx; -EPROTO protocol violation; -EBADMSG verification failed; -EFBIG over a
 * size limit; -ETIMEDOUT deadline passed.  registry_last_error() gives a one-line human
 * description of the last failure (e.g. "GET https://…/manifests/x: 404 MANIFEST_UNKNOWN").
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "reference.h"

struct registry;

struct registry_options {
	bool insecure;            /* allow plain HTTP (always allowed for localhost/127.0.0.0/8/::1) */
	long connect_timeout_ms;  /* 0: default 10 s */
	long timeout_ms;          /* whole-request deadline for small requests; 0: default 60 s */
};

int registry_new(const struct reference *ref, const struct registry_options *o,
		 struct registry **ret);
struct registry *registry_free(struct registry *r);  /* NULL-safe */
const char *registry_last_error(struct registry *r);

/* GETs a manifest by tag or digest, accepting OCI + Docker manifest and index types.  When
 * @tag_or_digest is a digest the bytes must hash to it (-EBADMSG otherwise).  Returns the
 * bytes (NUL-terminated), the Content-Type and the bytes' digest.  Limit 4 MiB. */
int registry_get_manifest(struct registry *r, const char *tag_or_digest, char **ret_buf,
			  size_t *ret_len, char **ret_content_type,
			  char ret_digest[72]);

/* GETs a small blob (a config) whole into memory and verifies its digest.  -EFBIG over @max. */
int registry_get_blob(struct registry *r, const char *digest, size_t max, char **ret_buf,
		      size_t *ret_len);

/* Streams a blob to @sink as it arrives (redirects followed).  Does not verify: the caller
 * hashes.  A negative return from @sink aborts the transfer and is returned. */
int registry_stream_blob(struct registry *r, const char *digest,
			 int (*sink)(void *userdata, const void *buf, size_t n), void *userdata);

/* GETs bytes [offset, offset+len) of a blob into @buf; fails with -EPROTO unless exactly
 * @len bytes come back (a 200 with the whole body is sliced to the range). */
int registry_get_blob_range(struct registry *r, const char *digest, uint64_t offset,
			    size_t len, void *buf);
