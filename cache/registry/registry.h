/* cache/registry/registry.h: the OCI distribution API over libcurl: /v2/ ping, the anonymous Bearer
 * token challenge flow, manifests, blobs, Range.  One struct registry per (host, repository);
 * it keeps one curl handle and the current token.  Not thread-safe: one thread at a time.
 *
 * Errors: -ENOENT unknown repository, tag, manifest or blob (404, MANIFEST_UNKNOWN…);
 * -EACCES refused (401/403 after auth); -EHOSTUNREACH connection failed, DNS, TLS;
 * -EAGAIN 429/5xx; -EPROTO protocol violation; -EBADMSG verification failed; -EFBIG over a
 * size limit; -ETIMEDOUT deadline passed.  A failure leaves the thread's message (error.h)
 * describing it in one line that names the registry, the URL and the status or transport
 * error, never a token or a password (e.g. "manifest unknown: host/repo:x (GET https://…:
 * 404 MANIFEST_UNKNOWN)").
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cache/format/reference.h"
#include "cache/base/util.h"

struct registry;
struct credentials_options;
struct rate_limit;

struct registry_options {
	/* HTTPS without certificate verification (unless cert_dir names CAs), then plain HTTP
	 * if TLS fails; always so for localhost, 127.0.0.0/8 and ::1.  See registry.c. */
	bool insecure;
	long connect_timeout_ms;  /* 0: default 10 s */
	/* Deadline of one call, its retries included (streams: of the retries only); 0: the
	 * seconds in $LAZYROOT_REGISTRY_TIMEOUT, else 60 s. */
	long timeout_ms;
	/* Optional credentials, sent only to the token realm (as Basic) or to a registry that
	 * asks for Basic authentication; both or neither.  Copied by registry_new(). */
	const char *username;
	const char *password;
	/* Without username and password: where to look for credentials when the registry asks
	 * for authentication (cache/registry/credentials.h), once per object; NULL: stay anonymous.
	 * Copied by registry_new(). */
	const struct credentials_options *credentials;
	/* Directory with this registry's CA certificates (*.crt) and client certificate
	 * (*.cert + *.key), as in /etc/containers/certs.d/HOST[:PORT]/ (skopeo's --cert-dir).
	 * NULL: /etc/containers/certs.d/HOST[:PORT], then /etc/docker/certs.d/HOST[:PORT]. */
	const char *cert_dir;
	/* "http" or "https" when an earlier client of this registry found it (registry_scheme()):
	 * skips the HTTPS probe of insecure registries.  "http" is ignored for secure ones. */
	const char *scheme;
	/* Every body byte received is charged to this budget (shared with whoever else holds
	 * it; not copied, must outlive the object); NULL: unlimited. */
	struct rate_limit *rate_limit;
	/* Optional flag that, once set (atomically, from any thread), ends the exchange in
	 * progress within about a second and every retry and later call at once: they fail
	 * with -ECANCELED.  Not copied: it must outlive the object. */
	const bool *cancel;
	/* Ask the token service for push access to the repository as well as pull
	 * (registry_put_blob(), registry_put_manifest()); Basic credentials are sent as they are. */
	bool push;
	/* With push: a repository of the same registry whose blobs registry_mount_blob() mounts;
	 * tokens ask for pull access to it too.  Copied by registry_new(). */
	const char *mount_from;
};

int registry_new(const struct reference *ref, const struct registry_options *o,
		 struct registry **ret);
struct registry *registry_free(struct registry *r);  /* NULL-safe */
/* A second client of @r's (host, repository) for another thread to work beside @r: the same
 * options, the scheme @r settled on (no ping of its own), its token and credentials; its own
 * connection.  What either learns later (a renewed token) stays its own. */
int registry_dup(struct registry *r, struct registry **ret);

DEFINE_CLEANUP_FUNC(struct registry *, registry_free);
/* Requests sent to the registry by this client and the body bytes they brought back. */
void registry_get_counters(struct registry *r, uint64_t *ret_requests, uint64_t *ret_bytes);
/* The scheme the ping settled on, or NULL before a successful ping. */
const char *registry_scheme(struct registry *r);

/* GET /v2/: checks that the host speaks the distribution API and, on a 401, fetches a token
 * for pulling the repository (anonymously without credentials).  Every other call does this
 * first when it has not been done; tokens that expire later are renewed on the next 401.
 * -EACCES for a Basic challenge without credentials, or for credentials the registry or its
 * token service refuses; -EPROTO if the answer is no registry.  A client for @ref with an
 * empty repository asks the token service for no scope (to check a login).
 * The first ping decides the scheme (HTTPS, or plain HTTP for an insecure registry whose TLS
 * fails) for the object's life and reads the certificate directory; a TLS failure of a secure
 * registry is -EHOSTUNREACH ("TLS certificate of HOST not trusted: …"). */
int registry_ping(struct registry *r);
/* What every call does first: registry_ping() unless it was done or the scheme was given.  For
 * a caller about to registry_dup() @r, so that the copy starts with what the ping learns. */
int registry_ensure_pinged(struct registry *r);

/* GETs a manifest by tag or digest, accepting OCI + Docker manifest and index types.  When
 * @tag_or_digest is a digest the bytes must hash to it (-EBADMSG otherwise).  Returns the
 * bytes (NUL-terminated), the Content-Type (NULL if the registry sent none) and the bytes'
 * digest.  Limit 4 MiB.  -EINVAL if @tag_or_digest is neither a valid tag nor a digest. */
int registry_get_manifest(struct registry *r, const char *tag_or_digest, char **ret_buf,
			  size_t *ret_len, char **ret_content_type,
			  char ret_digest[72]);

/* HEADs a manifest (with the Accept header of registry_get_manifest()) and returns its
 * Docker-Content-Digest and Content-Type (NULL if none; @ret_content_type may be NULL).
 * Docker Hub counts only manifest GETs against its pull limit, so this is how a known tag is
 * checked.  -ENODATA when the answer carries no valid digest; other errors as above (a
 * registry that refuses HEAD gives -EPROTO). */
int registry_head_manifest(struct registry *r, const char *tag_or_digest,
			   char ret_digest[72], char **ret_content_type);

/* GETs a small blob (a config) whole into memory and verifies its digest.  -EFBIG over @max. */
int registry_get_blob(struct registry *r, const char *digest, size_t max, char **ret_buf,
		      size_t *ret_len);

/* registry_stream_blob()'s length of a range that runs to the blob's end. */
#define REGISTRY_TO_END UINT64_MAX

/* Streams bytes [offset, offset+len) of a blob to @sink as they arrive (redirects followed), in
 * order, each byte once: a transfer that breaks is resumed with a request for the bytes @sink
 * has not had, and a 206 is handed on only once its Content-Range names the bytes asked for.
 * @len REGISTRY_TO_END: to the blob's end; a whole blob (offset 0 to the end) is asked for
 * without a Range header and, being a download of its own, its deadline starts again whenever
 * it made progress.  Does not verify: the caller hashes.  A negative return from @sink aborts
 * the transfer and is returned.  -EPROTO unless exactly the range comes back (a 200 with the
 * whole blob is cut to the range), -EBADMSG if the Content-Range total contradicts the blob's
 * known size; @sink may have had part of the range by then: how much is up to it to count. */
int registry_stream_blob(struct registry *r, const char *digest, uint64_t offset, uint64_t len,
			 int (*sink)(void *userdata, const void *buf, size_t n), void *userdata);

/* The size the manifest declares for blob @digest: later Content-Range totals of its ranges
 * must agree (-EBADMSG).  One blob at a time per client. */
void registry_expect_blob_size(struct registry *r, const char *digest, uint64_t size);

/* The registry and repository the client was made for, as the reference named them. */
const char *registry_domain(struct registry *r);
const char *registry_repository(struct registry *r);

/* ---- Push (needs registry_options.push on token-authenticated registries) ---------------- */

/* HEAD of a blob: 1 if the repository has it, -ENOENT if not. */
int registry_has_blob(struct registry *r, const char *digest);
/* Uploads @buf as blob @digest (monolithic: POST, then PUT ?digest=), unless the repository
 * has it already.  -EINVAL if @buf does not hash to @digest. */
int registry_put_blob(struct registry *r, const char *digest, const void *buf, size_t len);
/* Cross-repository mount: makes blob @digest of repository registry_options.mount_from
 * appear in this one without uploading it.  -ENOENT when the registry did not mount it (it
 * lacks the blob there, or refuses us access to it); the upload it opened instead is
 * cancelled. */
int registry_mount_blob(struct registry *r, const char *digest);
/* PUTs a manifest under a tag or its digest with Content-Type @media_type.  *@ret_subject
 * (may be NULL) says whether the answer carried OCI-Subject, i.e. whether the registry
 * indexes the manifest's subject for the referrers API.  -EPROTO if the registry says it
 * stored other bytes. */
int registry_put_manifest(struct registry *r, const char *tag_or_digest, const char *media_type,
			  const void *buf, size_t len, bool *ret_subject);

/* GET /v2/<name>/referrers/<digest>[?artifactType=…] (or @page_url, a previous page's next
 * link): the image index it returns, and in *@ret_next the next page's URL from a Link
 * header (NULL on the last page; caller frees).  -EOPNOTSUPP when the registry has no
 * referrers API (a 404 without a distribution error document), -ENOENT for a 404 with one
 * (an unknown repository). */
int registry_get_referrers(struct registry *r, const char *digest, const char *artifact_type,
			   const char *page_url, char **ret_buf, size_t *ret_len, char **ret_next);
