/* cache/registry/http.h: one HTTP exchange over a reused libcurl easy handle, internal to cache/.
 * Knows nothing of registries: a method, a URL, extra headers and an optional Range go out;
 * the status, the few response headers the registry client needs and the body (into a
 * bounded buffer, or to a sink) come back.  libcurl types stay inside http.c. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cache/base/util.h"

struct http;
struct rate_limit;

/* TLS settings of an https exchange.  The buffers are not copied and must outlive the
 * http_perform() call. */
struct http_tls {
	const char *ca_pem;            /* PEM bundle replacing libcurl's default CA file, or NULL */
	size_t ca_pem_len;
	const char *cert_pem;          /* client certificate (PEM), or NULL */
	size_t cert_pem_len;
	const char *key_pem;           /* its private key (PEM, a secret); set with cert_pem */
	size_t key_pem_len;
	bool no_verify;                /* accept any certificate and name (insecure registries) */
};

struct http_request {
	const char *method;            /* "GET" (default when NULL), "HEAD", "POST", "PUT", "DELETE" */
	/* The request body of a POST or PUT (not copied; may be NULL with body_len 0). */
	const void *body;
	size_t body_len;
	const char *url;
	char *const *headers;          /* strv of "Name: value", or NULL */
	bool range;                    /* send "Range: bytes=range_offset-(range_offset+range_len-1)" */
	uint64_t range_offset;
	uint64_t range_len;            /* > 0 when range is set, unless range_open */
	bool range_open;               /* with range: "bytes=range_offset-", to the end */
	bool follow_redirects;         /* at most 5, http(s) only; see http.c on Authorization */
	/* An https request is redirected only to https unless this is set (insecure registries):
	 * a redirect never silently drops TLS. */
	bool allow_http_redirect;
	const struct http_tls *tls;    /* NULL: libcurl's defaults (system CAs, verification on) */
	size_t max_body;               /* ceiling for a buffered body: -EFBIG beyond */
	/* With a sink, a 2xx body goes to @sink as it arrives instead of the buffer; a negative
	 * return aborts the transfer and becomes http_perform()'s result.  Other statuses'
	 * bodies (error documents) always go to the buffer, cut at 64 KiB. */
	int (*sink)(void *userdata, const void *buf, size_t n);
	void *userdata;
	long connect_timeout_ms;       /* 0: 10 s */
	long timeout_ms;               /* whole exchange; 0: none (streams rely on the stall limit) */
	long stall_timeout_s;          /* abort below 1 KiB/s for this long; 0: 30 s */
	/* Body bytes of a 2xx response are charged to it as they arrive, the transfer waiting
	 * when they come faster than its rate (cache/registry/rate_limit.h); NULL: unlimited. */
	struct rate_limit *rate_limit;
	/* When *cancel becomes true (another thread stores it atomically), the exchange stops
	 * within about a second, waiting for headers or body alike, and http_perform() returns
	 * -ECANCELED.  NULL: never. */
	const bool *cancel;
};

enum http_transport {
	HTTP_TRANSPORT_OK,             /* the exchange completed (whatever the status) */
	HTTP_TRANSPORT_ABORTED,        /* stopped by us: sink error, size limit */
	HTTP_TRANSPORT_RESOLVE,        /* host name did not resolve */
	HTTP_TRANSPORT_CONNECT,        /* connection refused / unreachable */
	HTTP_TRANSPORT_TIMEOUT,        /* a deadline or the stall limit passed */
	HTTP_TRANSPORT_TLS,            /* TLS handshake failed (e.g. the peer does not speak TLS) */
	HTTP_TRANSPORT_TLS_UNTRUSTED,  /* the peer's certificate failed verification */
	HTTP_TRANSPORT_OTHER,          /* resets, protocol errors… (see error) */
};

struct http_response {
	long status;                   /* 0 if no response arrived */
	enum http_transport transport;
	int os_errno;                  /* errno behind a connect failure, or 0 */
	char error[256];               /* libcurl's text when transport is not OK, else "" */
	/* Headers of the final response (after redirects), NULL when absent. */
	char *content_type;
	char *www_authenticate;        /* the first Bearer challenge if any, else the first one */
	char *docker_content_digest;
	char *content_range;
	char *location;
	char *link;                    /* the first Link header (pagination), e.g. `<url>; rel="next"` */
	bool oci_subject;              /* an OCI-Subject header came (distribution-spec 1.1) */
	int64_t content_length;        /* -1 when absent */
	/* Retry-After of the final response in seconds from now (an HTTP-date is converted),
	 * -1 when absent or unparsable. */
	long retry_after_s;
	int http_version;              /* of the final response: 10, 11, 20, 30; 0 if none */
	bool redirected;               /* the final response came from a redirect target */
	/* host[:port] that sent the final response (never a path or query, which may carry a
	 * signature); "" if none. */
	char effective_host[256];
	char *body;                    /* NUL-terminated; non-NULL after http_perform() */
	size_t body_len;
	uint64_t sink_bytes;           /* bytes handed to the sink */
};

int http_new(struct http **ret);
struct http *http_free(struct http *h);  /* NULL-safe */
DEFINE_CLEANUP_FUNC(struct http *, http_free);

/* Performs @req.  Returns http_errno() of the outcome (0 for a 2xx), or the sink's error,
 * -EFBIG over @max_body, -ENOMEM.  @ret is filled in every case (also on failure, so the
 * caller can describe it) and must be released with http_response_done(). */
int http_perform(struct http *h, const struct http_request *req, struct http_response *ret);

/* Whether the flag of http_request.cancel is set (NULL: no). */
static inline bool http_cancelled(const bool *cancel)
{
	return cancel && __atomic_load_n(cancel, __ATOMIC_RELAXED);
}
void http_response_done(struct http_response *resp);

/* The status of the response being received, for a sink that needs it (0 before headers). */
long http_current_status(struct http *h);
/* The response being received (its headers so far), for a sink; NULL outside http_perform(). */
const struct http_response *http_current_response(struct http *h);

/* The one place where libcurl results and HTTP statuses become errno:
 * CURLE_OK with 2xx -> 0; 404 -> -ENOENT; 401, 403 -> -EACCES; 408, 429, 5xx -> -EAGAIN;
 * other 3xx/4xx -> -EPROTO; connect, DNS, TLS, send/receive failures -> -EHOSTUNREACH;
 * timeouts -> -ETIMEDOUT; body over the limit -> -EFBIG; out of memory -> -ENOMEM. */
int http_errno(int curl_code, long status);

/* The proxy http_perform() uses for @url, as docker and podman pick it (see http.c), with
 * any user:password removed, for messages; NULL when the URL is reached directly.  Caller
 * frees. */
char *http_proxy_describe(const char *url);

/* Escapes @s for a URL query component ("%XX"); caller frees, NULL on OOM. */
char *http_escape(const char *s);
