/*
 * cache/registry/registry.c: the OCI distribution API for one (host, repository): /v2/ ping, the
 * Bearer token challenge, manifests, blobs (a whole blob is a range open at its end).  Owns one
 * struct http and the current Authorization header (a secret: it is never formatted into an
 * error or a log line, and is wiped on free).  A 401 on any request renews the token once.
 *
 * Retries, as skopeo does them: connection failures, 429 and 5xx are retried with exponential
 * backoff and jitter (five attempts at most; waits of 250 ms doubling, each drawn from the
 * upper half of its step so that clients that failed together do not return together), a
 * Retry-After (seconds or HTTP-date) lengthening the wait; everything inside the call's
 * deadline (registry_options.timeout_ms, else $LAZYROOT_REGISTRY_TIMEOUT seconds, else 60 s).
 * A wait that would end past the deadline is not started: the call fails at once, saying so.
 * A buffered request starts over; a stream or a range read that already handed bytes to its
 * sink resumes where it stopped with "Range: bytes=N-" (taking a 200's body from byte N when
 * the server ignores the Range), never delivering a byte twice.
 *
 * Redirects: blob GETs may be answered with a redirect to a CDN or an object store; libcurl
 * follows it without our Authorization header (http.c).  A 400, 401 or 403 from the redirect
 * target is an expired or refused signed URL: the registry is asked again for a fresh one, at
 * most twice per call.
 *
 * Ranges: one byte range per request (a multipart/byteranges answer would need parsing and
 * buys little).  A 206's Content-Range must name exactly the bytes asked for, and its total
 * the blob's size when it is known (registry_expect_blob_size(), or the first total seen).  A
 * server that ignores Range and sends the whole blob with 200 still works: the range is cut
 * out of the stream and the transfer stopped there; it is noted once per host and process.
 * Every blob call is one stream to a sink (registry_get_blob() is a sink into a buffer): the
 * Content-Range is checked before the first byte is handed on, and a retry asks only for the
 * bytes the sink has not had, so the sink sees each byte once.
 *
 * TLS, as docker and podman do it.  The scheme is decided once per object, at the first ping:
 * - Every registry is tried over HTTPS first, trusting the system CAs plus the *.crt files of
 *   its certificate directory (registry_options.cert_dir, else the first of
 *   /etc/containers/certs.d/HOST[:PORT] and /etc/docker/certs.d/HOST[:PORT] that exists); a
 *   *.cert with the *.key of the same name is the client certificate.
 * - A secure registry (the default) must complete the handshake with a trusted certificate: a
 *   TLS failure is -EHOSTUNREACH ("TLS certificate of HOST not trusted: …"), never a reason
 *   to use plain HTTP, and its redirects never go from https to http.
 * - An insecure registry (registry_options.insecure, and every loopback host, as docker's
 *   default insecure 127.0.0.0/8) is tried over HTTPS without verification (docker's
 *   InsecureSkipVerify), unless its certificate directory names CAs: then they are checked.
 *   If the HTTPS attempt fails in TLS (a plain-HTTP server answers the TLS hello with HTTP, or
 *   the configured CAs do not match), the registry is used over plain HTTP from then on; when
 *   that fails too, the error reports the TLS failure.
 * The certificate directory is read by cert_dir.c.
 */
#include "registry.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#include "cache/registry/cert_dir.h"
#include "cache/registry/credentials.h"
#include "cache/base/digest.h"
#include "cache/base/error.h"
#include "cache/registry/http.h"
#include "cache/registry/range_source.h"
#include "cache/base/log.h"
#include "cache/base/util.h"

#define MANIFEST_MAX (4U * 1024 * 1024)
#define TOKEN_RESPONSE_MAX (1U * 1024 * 1024)
#define TOKEN_MAX (64U * 1024)
#define CHALLENGE_PARAM_MAX 2048
#define TIMEOUT_MS_DEFAULT 60000L
#define TIMEOUT_ENV "LAZYROOT_REGISTRY_TIMEOUT"
#define ATTEMPTS_MAX 5
#define BACKOFF_MS_FIRST 250L
#define BACKOFF_MS_MAX 8000L
#define REDIRECT_REFRESHES_MAX 2
#define RANGE_IGNORERS_MAX 64

static const char accept_manifests[] =
	"Accept: " "application/vnd.oci.image.manifest.v1+json, "
	"application/vnd.oci.image.index.v1+json, "
	"application/vnd.docker.distribution.manifest.v2+json, "
	"application/vnd.docker.distribution.manifest.list.v2+json";

struct registry {
	struct http *http;
	char *domain;            /* as the reference names it, for messages */
	char *repository;
	char *host;              /* API host[:port], "registry-1.docker.io" */
	char *base_url;          /* "https://registry-1.docker.io"; NULL until the first ping */
	char *authorization;     /* "Authorization: …" for the registry, or NULL; secret */
	char *basic;             /* "Authorization: Basic …" from the options, or NULL; secret */
	struct credentials_options *credentials;  /* where to look up r->basic, or NULL */
	bool credentials_looked_up;
	char *credentials_source;  /* where r->basic came from, for messages; NULL: the options */
	bool pinged;
	bool scheme_given;       /* base_url came from registry_options.scheme */
	uint64_t requests;        /* HTTP requests sent, token requests excluded */
	uint64_t bytes_received;  /* body bytes of their answers */
	bool insecure_option;    /* registry_options.insecure */
	bool insecure;           /* insecure_option or a loopback host */
	bool push;               /* registry_options.push: tokens ask for push access too */
	char *mount_from;        /* registry_options.mount_from, or NULL */

	/* TLS material, read at the first ping; tls points into the buffers below. */
	char *cert_dir;          /* registry_options.cert_dir, or NULL */
	bool tls_loaded;
	struct cert_dir_tls certs;
	struct http_tls tls;     /* points into certs */

	long connect_timeout_ms;
	long timeout_ms;
	struct rate_limit *rate_limit;
	const bool *cancel;      /* registry_options.cancel */
	unsigned jitter_seed;    /* rand_r() state for backoff jitter */
	/* The size of one blob, from the manifest (registry_expect_blob_size()) or from the
	 * first Content-Range total seen; checked against every later Content-Range. */
	char size_digest[DIGEST_STRING_MAX];
	uint64_t size;
	bool size_from_manifest;
};

/* Hosts seen answering a Range request with the whole blob, so that it is said once per
 * process (a mount reads many ranges). */
static pthread_mutex_t range_ignorers_lock = PTHREAD_MUTEX_INITIALIZER;
static char range_ignorers[RANGE_IGNORERS_MAX][256];  /* guarded by range_ignorers_lock */
static size_t n_range_ignorers;                        /* guarded by range_ignorers_lock */

/* Records @host; true the first time it is seen (or when the table is full). */
static bool range_ignorer_add(const char *host)
{
	bool added = true;

	pthread_mutex_lock(&range_ignorers_lock);
	for (size_t i = 0; i < n_range_ignorers; i++)
		if (streq(range_ignorers[i], host)) {
			added = false;
			break;
		}
	if (added && n_range_ignorers < RANGE_IGNORERS_MAX)
		(void)snprintf(range_ignorers[n_range_ignorers++], sizeof(range_ignorers[0]), "%s",
			       host);
	pthread_mutex_unlock(&range_ignorers_lock);
	return added;
}

static void registry_done(struct registry *r)
{
	http_free(r->http);
	free_many(r->domain, r->repository, r->host, r->base_url, r->cert_dir, r->mount_from);
	cert_dir_tls_done(&r->certs);
	free_secret(r->authorization);
	free_secret(r->basic);
	credentials_options_free(r->credentials);
	free(r->credentials_source);
}
DEFINE_FREE_FUNC(struct registry, registry_free, registry_done);

/* A failure of @r's, described for the user as this thread's message (error.h): a client is
 * used by one thread at a time, so the message is that of its last call. */
static void set_error(struct registry *r, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void set_error(struct registry *r, const char *fmt, ...)
{
	va_list ap;

	(void)r;
	va_start(ap, fmt);
	(void)error_setv(0, fmt, ap);
	va_end(ap);
}

/* localhost, 127.0.0.0/8 and ::1, with or without a port: insecure registries, as in docker. */
/* asprintf() that leaves NULL, not an undefined pointer, when it fails. */
static char *strf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static char *strf(const char *fmt, ...)
{
	va_list ap;
	char *s;
	int k;

	va_start(ap, fmt);
	k = vasprintf(&s, fmt, ap);
	va_end(ap);
	return k < 0 ? NULL : s;
}

static bool host_is_loopback(const char *host)
{
	char buf[INET6_ADDRSTRLEN + 1];
	struct in6_addr a6;
	struct in_addr a4;
	size_t n;

	if (host[0] == '[') {
		const char *close = strchr(host, ']');

		n = close ? (size_t)(close - host - 1) : 0;
		if (n == 0 || n >= sizeof(buf))
			return false;
		memcpy(buf, host + 1, n);
		buf[n] = 0;
		return inet_pton(AF_INET6, buf, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
	}

	n = strcspn(host, ":");
	if (n == 0 || n >= sizeof(buf))
		return false;
	memcpy(buf, host, n);
	buf[n] = 0;
	if (streq(buf, "localhost"))
		return true;
	return inet_pton(AF_INET, buf, &a4) == 1 && (ntohl(a4.s_addr) >> 24) == 127;
}

static int basic_header(const char *user, const char *password, char **ret)
{
	char *b64 = NULL, *h;
	int k;

	k = credentials_encode_auth(user, password, &b64);
	if (k < 0)
		return k;
	k = asprintf(&h, "Authorization: Basic %s", b64);
	free_secret(b64);
	if (k < 0)
		return -ENOMEM;
	*ret = h;
	return 0;
}

/* $LAZYROOT_REGISTRY_TIMEOUT: whole seconds, 1 to 86400; anything else means the default. */
static long timeout_from_env(void)
{
	const char *e = getenv(TIMEOUT_ENV);
	char *end;
	long v;

	if (!e || !*e)
		return TIMEOUT_MS_DEFAULT;
	errno = 0;
	v = strtol(e, &end, 10);
	if (errno != 0 || *end || v < 1 || v > 86400) {
		log_debug("ignoring %s='%.32s': not a number of seconds from 1 to 86400",
			  TIMEOUT_ENV, e);
		return TIMEOUT_MS_DEFAULT;
	}
	return v * 1000;
}

int registry_new(const struct reference *ref, const struct registry_options *o,
		 struct registry **ret)
{
	_cleanup_(registry_freep) struct registry *r = NULL;
	const char *host;
	int e;

	if (!ref || !ref->domain || !ref->repository)
		return -EINVAL;
	host = reference_api_host(ref);
	if (o && (!o->username != !o->password))
		return -EINVAL;

	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	e = http_new(&r->http);
	if (e < 0)
		return e;

	r->domain = strdup(ref->domain);
	r->repository = strdup(ref->repository);
	r->host = strdup(host);
	if (!r->domain || !r->repository || !r->host)
		return -ENOMEM;
	if (o && o->cert_dir) {
		r->cert_dir = strdup(o->cert_dir);
		if (!r->cert_dir)
			return -ENOMEM;
	}
	r->insecure_option = o && o->insecure;
	r->insecure = r->insecure_option || host_is_loopback(host);
	r->push = o && o->push;
	if (r->push && o->mount_from && !(r->mount_from = strdup(o->mount_from)))
		return -ENOMEM;
	/* A scheme another client already found saves the TLS probe; plain HTTP is taken from
	 * the hint only where it could have been found, on an insecure registry. */
	if (o && o->scheme && (streq(o->scheme, "https") || (streq(o->scheme, "http") && r->insecure)))
	{
		if (asprintf(&r->base_url, "%s://%s", o->scheme, host) < 0) {
			r->base_url = NULL;
			return -ENOMEM;
		}
		r->scheme_given = true;
	}

	if (o && o->username) {
		e = basic_header(o->username, o->password, &r->basic);
		if (e < 0)
			return e;
	} else if (o && o->credentials) {
		e = credentials_options_dup(o->credentials, &r->credentials);
		if (e < 0)
			return e;
	}

	r->connect_timeout_ms = o && o->connect_timeout_ms > 0 ? o->connect_timeout_ms : 0;
	r->timeout_ms = o && o->timeout_ms > 0 ? o->timeout_ms : timeout_from_env();
	r->jitter_seed = (unsigned)now_ms() ^ (unsigned)(uintptr_t)r;
	r->rate_limit = o ? o->rate_limit : NULL;
	r->cancel = o ? o->cancel : NULL;

	*ret = TAKE_PTR(r);
	return 0;
}

/* The secrets and what was learnt of them: the token, the Basic header, where it came from. */
static int copy_auth(struct registry *d, const struct registry *r)
{
	if ((r->authorization && !(d->authorization = strdup(r->authorization))) ||
	    (r->basic && !(d->basic = strdup(r->basic))) ||
	    (r->credentials_source && !(d->credentials_source = strdup(r->credentials_source))))
		return -ENOMEM;
	d->credentials_looked_up = r->credentials_looked_up;
	return 0;
}

int registry_dup(struct registry *r, struct registry **ret)
{
	_cleanup_(registry_freep) struct registry *d = NULL;
	struct reference ref = { .transport = REFERENCE_DOCKER, .domain = r->domain,
				 .repository = r->repository };
	/* The scheme another client settled on is taken as it is (registry_options.scheme), so
	 * that the copy sends no ping of its own. */
	const char *scheme = !r->base_url ? NULL :
			     startswith(r->base_url, "https:") ? "https" : "http";
	struct registry_options o = {
		.insecure = r->insecure_option, .connect_timeout_ms = r->connect_timeout_ms,
		.timeout_ms = r->timeout_ms, .credentials = r->credentials, .cert_dir = r->cert_dir,
		.scheme = scheme, .rate_limit = r->rate_limit, .cancel = r->cancel,
		.push = r->push, .mount_from = r->mount_from,
	};
	int e;

	e = registry_new(&ref, &o, &d);
	if (e < 0)
		return e;
	e = copy_auth(d, r);
	if (e < 0)
		return e;
	*ret = TAKE_PTR(d);
	return 0;
}

/* Reads the certificate directory once (cert_dir.c) and points r->tls into what it read. */
static int tls_load(struct registry *r)
{
	int e;

	if (r->tls_loaded)
		return 0;
	e = cert_dir_load(r->cert_dir, r->host, r->domain, &r->certs);
	if (e < 0)
		return e;
	r->tls.ca_pem = r->certs.ca_pem;
	r->tls.ca_pem_len = r->certs.ca_pem_len;
	r->tls.cert_pem = r->certs.cert_pem;
	r->tls.cert_pem_len = r->certs.cert_pem_len;
	r->tls.key_pem = r->certs.key_pem;
	r->tls.key_pem_len = r->certs.key_pem_len;
	r->tls_loaded = true;
	return 0;
}

/* Copies at most @max bytes of registry-supplied text, replacing anything unprintable. */
static void copy_sanitized(char *dst, size_t size, const char *src, size_t max)
{
	size_t i;

	for (i = 0; src[i] && i < max && i + 1 < size; i++)
		dst[i] = (src[i] >= 0x20 && src[i] < 0x7f) ? src[i] : '?';
	dst[i] = 0;
}

/* The first entry of a distribution error document: {"errors":[{"code":…,"message":…}]}. */
static void error_document(const char *body, size_t len, char *code, size_t code_size,
			   char *message, size_t message_size)
{
	json_t *root, *e;
	const char *s;

	code[0] = message[0] = 0;
	root = json_loadb(body, len, 0, NULL);
	if (!root)
		return;
	e = json_array_get(json_object_get(root, "errors"), 0);
	s = json_string_value(json_object_get(e, "code"));
	if (s)
		copy_sanitized(code, code_size, s, 64);
	s = json_string_value(json_object_get(e, "message"));
	if (s)
		copy_sanitized(message, message_size, s, 200);
	json_decref(root);
}

static const char *status_text(long status)
{
	if (status == 404)
		return "not found";
	if (status == 401)
		return "authentication required";
	if (status == 403)
		return "access denied";
	if (status == 429)
		return "too many requests";
	if (status >= 500)
		return "registry error";
	return "unexpected response";
}

/* " (credentials from …)" for messages about refused credentials. */
static const char *credentials_origin(struct registry *r, char *buf, size_t size)
{
	if (!r->credentials_source)
		return "";
	(void)snprintf(buf, size, " (credentials from %s)", r->credentials_source);
	return buf;
}

/* One line for a failed exchange.  @object names what was asked for ("host/repo:tag"); the
 * URL is the one we built (never a redirect target, which may carry a signature). */
static void describe_failure(struct registry *r, const struct http_request *req,
			     const char *object, const struct http_response *resp, int err)
{
	const char *method = req->method ?: "GET";
	char code[80], message[256], origin[200];

	if (resp->transport == HTTP_TRANSPORT_CONNECT) {
		set_error(r, "cannot connect to %s: %s (%s %s)", r->domain,
			  resp->os_errno ? strerror(resp->os_errno) : resp->error, method, req->url);
		return;
	}
	if (resp->transport == HTTP_TRANSPORT_RESOLVE) {
		set_error(r, "cannot resolve host of %s (%s %s)", r->domain, method, req->url);
		return;
	}
	if (resp->transport == HTTP_TRANSPORT_TIMEOUT) {
		set_error(r, "timed out talking to %s: %s (%s %s)", r->domain, resp->error, method,
			  req->url);
		return;
	}
	if (err == -EFBIG) {
		set_error(r, "%s %s: response larger than the limit", method, req->url);
		return;
	}
	if (resp->status == 0 || (resp->status < 300 && resp->transport == HTTP_TRANSPORT_OTHER)) {
		set_error(r, "%s %s: %s", method, req->url,
			  resp->error[0] ? resp->error : strerror(-err));
		return;
	}
	if (resp->status >= 200 && resp->status < 300) {
		set_error(r, "%s %s: %ld: %s", method, req->url, resp->status, strerror(-err));
		return;
	}

	if (resp->status >= 300 && resp->status < 400 && resp->location &&
	    strncasecmp(resp->location, "http:", 5) == 0 && startswith(req->url, "https:")) {
		set_error(r, "%s redirected %s from https to plain HTTP, refusing (%s %s: %ld)",
			  r->domain, object, method, req->url, resp->status);
		return;
	}
	error_document(resp->body ?: "", resp->body_len, code, sizeof(code), message,
		       sizeof(message));
	if (resp->status == 401 && r->authorization && r->basic &&
	    streq(r->authorization, r->basic))
		(void)snprintf(message, sizeof(message), "invalid username or password%s",
			       credentials_origin(r, origin, sizeof(origin)));
	else if (resp->status == 401 && r->authorization && !message[0])
		(void)snprintf(message, sizeof(message),
			       "access denied (the repository does not exist or needs a login)");
	set_error(r, "%s: %s (%s %s: %ld%s%s)", message[0] ? message : status_text(resp->status),
		  object, method, req->url, resp->status, code[0] ? " " : "", code);
}

/* Splits an auth-param list (realm="…",service="…") and returns the value of @key. */
static int challenge_param(const char *s, const char *key, char **ret)
{
	size_t klen = strlen(key);

	while (*s) {
		const char *name, *eq;
		char value[CHALLENGE_PARAM_MAX];
		size_t n = 0;

		while (*s == ' ' || *s == '\t' || *s == ',')
			s++;
		name = s;
		eq = strchr(s, '=');
		if (!eq)
			break;
		s = eq + 1;
		if (*s == '"') {
			s++;
			while (*s && *s != '"') {
				if (*s == '\\' && s[1])
					s++;
				if (n + 1 >= sizeof(value))
					return -EPROTO;
				value[n++] = *s++;
			}
			if (*s != '"')
				return -EPROTO;
			s++;
		} else {
			while (*s && *s != ',' && *s != ' ') {
				if (n + 1 >= sizeof(value))
					return -EPROTO;
				value[n++] = *s++;
			}
		}
		value[n] = 0;

		if ((size_t)(eq - name) == klen && strncasecmp(name, key, klen) == 0) {
			char *v = strdup(value);

			if (!v)
				return -ENOMEM;
			*ret = v;
			return 0;
		}
	}
	*ret = NULL;
	return 0;
}

static bool token_valid(const char *t)
{
	size_t n = strlen(t);

	if (n == 0 || n > TOKEN_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (t[i] <= 0x20 || t[i] >= 0x7f)
			return false;  /* it goes into a header line */
	return true;
}

static bool realm_is_loopback(const char *url)
{
	const char *auth = strstr(url, "://"), *end, *at;
	char host[256];
	size_t n;

	if (!auth)
		return false;
	auth += 3;
	end = auth + strcspn(auth, "/?#");
	at = memchr(auth, '@', end - auth);
	if (at)
		auth = at + 1;
	n = end - auth;
	if (n == 0 || n >= sizeof(host))
		return false;
	memcpy(host, auth, n);
	host[n] = 0;
	return host_is_loopback(host);
}

/* The first challenge looks for stored credentials: registries that never ask never make us
 * read a file or run a helper. */
static int lookup_credentials(struct registry *r)
{
	_cleanup_(credentials_freep) struct credentials *c = NULL;
	int e;

	e = credentials_lookup(r->credentials, r->domain, r->repository, &c);
	if (e < 0)
		/* Not marked as looked up: a caller that goes on after this failure (a HEAD
		 * falls back to GET) meets the same error again, not an anonymous attempt. */
		return e;
	r->credentials_looked_up = true;
	if (!c)
		return 0;
	r->credentials_source = strdup(c->source);
	if (!r->credentials_source)
		return -ENOMEM;
	return basic_header(c->username, c->password, &r->basic);
}

static bool retryable(int e, const struct http_response *resp);

/* Waits @ms between attempts; false, at once, when r->cancel is set (checked every 100 ms). */
static bool sleep_unless_cancelled(struct registry *r, long ms)
{
	for (;;) {
		if (http_cancelled(r->cancel))
			return false;
		if (ms <= 0)
			return true;
		sleep_ms(ms < 100 ? ms : 100);
		ms -= 100;
	}
}

static long retry_wait_ms(struct registry *r, unsigned attempt, const struct http_response *resp);

/* The scope a token is asked for: pull (and push) on the repository, and pull on the
 * repository blobs are mounted from (space-separated, as docker's token specification allows
 * in one parameter).  NULL in *ret for a login check, which needs no access to any. */
static int token_scope(struct registry *r, char **ret)
{
	*ret = NULL;
	if (!r->repository[0])
		return 0;
	if (r->mount_from)
		*ret = strf("repository:%s:%s repository:%s:pull", r->repository,
			    r->push ? "pull,push" : "pull", r->mount_from);
	else
		*ret = strf("repository:%s:%s", r->repository, r->push ? "pull,push" : "pull");
	return *ret ? 0 : -ENOMEM;
}

/* The token URL of a Bearer challenge's @params, in *ret_url, and its realm in *ret_realm;
 * -EPROTO (with the registry's message set) for a challenge we do not answer. */
static int token_url(struct registry *r, const char *params, char **ret_url, char **ret_realm)
{
	_cleanup_free_ char *realm = NULL, *service = NULL, *scope = NULL;
	_cleanup_free_ char *service_esc = NULL, *scope_esc = NULL;
	int e;

	e = challenge_param(params, "realm", &realm);
	if (e < 0 || !realm) {
		set_error(r, "registry %s sent a malformed Bearer challenge", r->domain);
		return -EPROTO;
	}
	if (!startswith(realm, "https://") && !startswith(realm, "http://")) {
		set_error(r, "registry %s names a token realm that is not http(s)", r->domain);
		return -EPROTO;
	}
	if (r->basic && !r->insecure && !startswith(realm, "https://")) {
		set_error(r, "registry %s names a plain-HTTP token realm; not sending credentials "
			  "there", r->domain);
		return -EPROTO;
	}
	e = challenge_param(params, "service", &service);
	if (e >= 0)
		e = token_scope(r, &scope);
	if (e < 0)
		return e;
	scope_esc = scope ? http_escape(scope) : NULL;
	service_esc = service ? http_escape(service) : NULL;
	if ((scope && !scope_esc) || (service && !service_esc))
		return -ENOMEM;
	*ret_url = strf("%s%c%s%s%s%s%s", realm, strchr(realm, '?') ? '&' : '?',
			scope ? "scope=" : "", scope_esc ?: "", scope && service ? "&" : "",
			service ? "service=" : "", service_esc ?: "");
	if (!*ret_url)
		return -ENOMEM;
	*ret_realm = TAKE_PTR(realm);
	return 0;
}

/* GETs @url from the token service at @realm into @resp, retrying what a registry would
 * retry; a failure is described in the registry's message. */
static int token_get(struct registry *r, const char *url, const char *realm,
		     struct http_response *resp)
{
	int64_t deadline = now_ms() + r->timeout_ms;
	char *headers[2] = { r->basic, NULL };
	struct http_tls tls = r->tls;
	struct http_request req = {};
	int e;

	/* The token service is another host: it is verified unless it is insecure as well. */
	tls.no_verify = r->tls.no_verify && (r->insecure_option || realm_is_loopback(realm));
	req = (struct http_request) {
		.url = url,
		.headers = r->basic ? headers : NULL,
		.follow_redirects = true,
		.allow_http_redirect = r->insecure,
		.tls = &tls,
		.max_body = TOKEN_RESPONSE_MAX,
		.connect_timeout_ms = r->connect_timeout_ms,
		.timeout_ms = r->timeout_ms,
		.cancel = r->cancel,
	};
	/* Token services (auth.docker.io…) answer 429 and 503 like registries do. */
	for (unsigned attempt = 1;; attempt++) {
		int64_t left = deadline - now_ms();
		long wait;

		req.timeout_ms = left > 1 ? left : 1;
		http_response_done(resp);
		e = http_perform(r->http, &req, resp);
		r->requests++;
		log_debug("GET %s: %ld", url, resp->status);
		if (!retryable(e, resp) || attempt >= ATTEMPTS_MAX)
			break;
		wait = retry_wait_ms(r, attempt, resp);
		if (now_ms() + wait >= deadline)
			break;
		log_debug("token request failed, retrying in %ld ms", wait);
		if (!sleep_unless_cancelled(r, wait)) {
			e = -ECANCELED;
			break;
		}
	}
	if (e < 0 && r->basic && resp->status == 401) {
		char origin[512];

		set_error(r, "invalid username or password for %s%s (token service refused them)",
			  r->domain, credentials_origin(r, origin, sizeof(origin)));
		return -EACCES;
	}
	if (e < 0) {
		_cleanup_free_ char *object = strf("token for %s/%s", r->domain, r->repository);

		describe_failure(r, &req, object ?: "token", resp, e);
	}
	return e;
}

/* GETs an anonymous (or, with credentials, Basic-authenticated) pull token from the realm. */
static int fetch_token(struct registry *r, const char *params)
{
	_cleanup_free_ char *realm = NULL, *url = NULL;
	_cleanup_(http_response_done) struct http_response resp = {};
	json_t *root, *v;
	const char *t;
	char *auth;
	int e;

	e = token_url(r, params, &url, &realm);
	if (e >= 0)
		e = token_get(r, url, realm, &resp);
	if (e < 0)
		return e;
	root = json_loadb(resp.body, resp.body_len, 0, NULL);
	v = json_object_get(root, "token");
	if (!json_is_string(v) || json_string_length(v) == 0)
		v = json_object_get(root, "access_token");
	t = json_string_value(v);
	if (!t || !token_valid(t)) {
		json_decref(root);
		set_error(r, "token service of %s answered without a usable token (GET %s)",
			  r->domain, url);
		return -EPROTO;
	}
	auth = strf("Authorization: Bearer %s", t);
	/* jansson keeps its own copy; it is freed, not wiped, with the document. */
	json_decref(root);
	if (!auth)
		return -ENOMEM;
	free_secret(r->authorization);
	r->authorization = auth;
	return 0;
}

/* Answers a WWW-Authenticate challenge: a Bearer token, or our Basic credentials. */
static int authenticate(struct registry *r, const char *challenge)
{
	char origin[512];
	int e;

	if (!r->basic && r->credentials && !r->credentials_looked_up) {
		e = lookup_credentials(r);
		if (e < 0)
			return e;
	}

	if (challenge && strncasecmp(challenge, "Bearer ", 7) == 0)
		return fetch_token(r, challenge + 7);

	if (challenge && strncasecmp(challenge, "Basic", 5) == 0) {
		if (!r->basic) {
			set_error(r, "registry %s requires a login (Basic authentication)",
				  r->domain);
			return -EACCES;
		}
		if (r->authorization && streq(r->authorization, r->basic)) {
			set_error(r, "invalid username or password for %s%s", r->domain,
				  credentials_origin(r, origin, sizeof(origin)));
			return -EACCES;
		}
		free_secret(r->authorization);
		r->authorization = strdup(r->basic);
		return r->authorization ? 0 : -ENOMEM;
	}

	set_error(r, "registry %s requires authentication of an unsupported kind", r->domain);
	return -EACCES;
}

static bool tls_failed(const struct http_response *resp)
{
	return resp->transport == HTTP_TRANSPORT_TLS ||
	       resp->transport == HTTP_TRANSPORT_TLS_UNTRUSTED;
}

struct exchange {
	const char *object;         /* for messages: "127.0.0.1:5000/demo:edge" */
	const char *accept;         /* an "Accept: …" header line, or NULL */
	const char *content_type;   /* a "Content-Type: …" header line of the body, or NULL */
	bool streaming;             /* no overall deadline; retried only before the first byte */
	void (*restart)(void *userdata);  /* resets the sink's state before a retry */
};

static const char *http_version_name(int v)
{
	switch (v) {
	case 10:
		return " HTTP/1.0";
	case 11:
		return " HTTP/1.1";
	case 20:
		return " HTTP/2";
	case 30:
		return " HTTP/3";
	default:
		return "";
	}
}

static bool retryable(int e, const struct http_response *resp)
{
	/* A TLS failure is no accident of the moment: it would fail again. */
	return (e == -EAGAIN || e == -EHOSTUNREACH) && !tls_failed(resp);
}

/* How long to wait before attempt @attempt + 1: the backoff step with jitter (its upper
 * half, so that clients that failed together do not come back together), or the server's
 * Retry-After when that is longer. */
static long retry_wait_ms(struct registry *r, unsigned attempt, const struct http_response *resp)
{
	long step = BACKOFF_MS_FIRST, wait;

	for (unsigned i = 1; i < attempt && step < BACKOFF_MS_MAX; i++)
		step *= 2;
	if (step > BACKOFF_MS_MAX)
		step = BACKOFF_MS_MAX;
	wait = step / 2 + (long)(rand_r(&r->jitter_seed) % (unsigned)(step / 2 + 1));
	if (resp->retry_after_s >= 0 && resp->retry_after_s * 1000 > wait)
		wait = resp->retry_after_s > 86400 ? 86400000L : resp->retry_after_s * 1000;
	return wait;
}

/* One attempt of registry_exchange(): @req sent with @x's headers and our Authorization, the
 * answer in @resp (emptied first) and counted. */
static int exchange_once(struct registry *r, struct http_request *req, const struct exchange *x,
			 struct http_response *resp, int64_t deadline)
{
	char *headers[5] = {};
	int64_t left = deadline - now_ms();
	size_t n = 0;
	int e;

	if (x->accept)
		headers[n++] = (char *)x->accept;
	if (x->content_type)
		headers[n++] = (char *)x->content_type;
	/* No "Expect: 100-continue" round trip before a body. */
	if (req->body_len > 0)
		headers[n++] = (char *)"Expect:";
	if (r->authorization)
		headers[n++] = r->authorization;
	req->headers = headers;
	req->tls = &r->tls;
	req->allow_http_redirect = r->insecure;
	req->connect_timeout_ms = r->connect_timeout_ms;
	req->rate_limit = r->rate_limit;
	req->cancel = r->cancel;
	if (!x->streaming)
		req->timeout_ms = left > 1 ? left : 1;

	if (x->restart)
		x->restart(req->userdata);
	http_response_done(resp);
	e = http_perform(r->http, req, resp);
	req->headers = NULL;
	r->requests++;
	r->bytes_received += resp->body_len + resp->sink_bytes;
	log_debug("%s %s: %ld%s%s%s%s%s", req->method ?: "GET", req->url, resp->status,
		  http_version_name(resp->http_version), resp->redirected ? " from " : "",
		  resp->redirected ? resp->effective_host : "", resp->error[0] ? " " : "",
		  resp->error);
	return e;
}

/* Performs @req with our Authorization header, renewing the token on a 401, asking again for
 * a redirect whose target refused it, and retrying transient failures inside the deadline.
 * On failure the thread's message (error.h) describes the last attempt. */
static int registry_exchange(struct registry *r, struct http_request *req,
			     const struct exchange *x, struct http_response *resp)
{
	int64_t deadline = now_ms() + r->timeout_ms;
	bool reauthenticated = false;
	unsigned refreshes = 0;
	long gave_up_wait = 0;
	int e;

	for (unsigned attempt = 1;;) {
		bool may_repeat;
		long wait;

		e = exchange_once(r, req, x, resp, deadline);

		/* Bytes that reached the sink can be taken back only by a sink that restarts. */
		may_repeat = !req->sink || x->restart || resp->sink_bytes == 0;

		/* A signed URL that expired (or was refused) at the redirect target: the
		 * registry hands out a fresh one. */
		if (resp->redirected && (resp->status == 400 || resp->status == 401 ||
					 resp->status == 403) &&
		    refreshes < REDIRECT_REFRESHES_MAX && may_repeat) {
			refreshes++;
			log_debug("%s refused the redirect (%ld), asking %s for a new one",
				  resp->effective_host, resp->status, r->domain);
			continue;
		}

		if (e == -EACCES && resp->status == 401 && !resp->redirected && !reauthenticated &&
		    resp->www_authenticate) {
			_cleanup_free_ char *challenge = strdup(resp->www_authenticate);

			if (!challenge)
				return -ENOMEM;
			reauthenticated = true;
			e = authenticate(r, challenge);
			if (e < 0)
				return e;
			continue;
		}

		if (!retryable(e, resp) || attempt >= ATTEMPTS_MAX || !may_repeat)
			break;
		/* A stream that made progress before it broke starts a new round: a layer that
		 * took minutes to get halfway still deserves its retries. */
		if (x->streaming && resp->sink_bytes > 0) {
			deadline = now_ms() + r->timeout_ms;
			attempt = 1;
		}
		wait = retry_wait_ms(r, attempt, resp);
		if (now_ms() + wait >= deadline) {
			gave_up_wait = wait;
			break;
		}
		log_debug("%s %s failed, retrying in %ld ms", req->method ?: "GET", req->url, wait);
		if (!sleep_unless_cancelled(r, wait)) {
			e = -ECANCELED;
			break;
		}
		attempt++;
	}

	if (e < 0) {
		describe_failure(r, req, x->object, resp, e);
		if (gave_up_wait > 0 && resp->retry_after_s >= 0)
			set_error(r, "%s; asked to retry after %ld s, past the %ld s deadline (%s)",
				  error_message() ?: "", resp->retry_after_s,
				  (r->timeout_ms + 999) / 1000, TIMEOUT_ENV);
	}
	return e;
}

/* GET /v2/ over @scheme; on success the scheme is kept for the object's life. */
static int ping_scheme(struct registry *r, const char *scheme, struct http_response *resp)
{
	_cleanup_free_ char *url = NULL;
	struct exchange x = { .object = r->domain };
	struct http_request req = {};
	int e;

	if (asprintf(&url, "%s://%s/v2/", scheme, r->host) < 0) {
		url = NULL;
		return -ENOMEM;
	}
	req = (struct http_request) { .url = url, .max_body = 64 * 1024 };
	if (!host_is_loopback(r->host)) {
		_cleanup_free_ char *proxy = http_proxy_describe(url);

		if (proxy)
			log_debug("proxy for %s: %s, unless NO_PROXY matches", url, proxy);
	}

	e = registry_exchange(r, &req, &x, resp);
	if (resp->status != 401 && (e == -ENOENT || (e == -EPROTO && resp->status >= 300))) {
		set_error(r, "%s does not serve the registry API (GET %s: %ld)", r->domain, url,
			  resp->status);
		return -EPROTO;
	}
	if (e < 0)
		return e;

	if (!r->base_url) {
		url[strlen(url) - strlen("/v2/")] = 0;
		r->base_url = TAKE_PTR(url);
	}
	r->pinged = true;
	return 0;
}

/* "TLS certificate of HOST not trusted: …", "TLS handshake with HOST failed: …" or, for a
 * connection that broke before any response (a server refusing our client certificate may
 * close it after the handshake), "TLS connection to HOST failed: …". */
static void describe_tls_failure(struct registry *r, const struct http_response *resp,
				 char *buf, size_t size)
{
	const char *error = resp->error[0] ? resp->error : "no response";

	if (resp->transport == HTTP_TRANSPORT_TLS_UNTRUSTED)
		(void)snprintf(buf, size, "TLS certificate of %s not trusted: %s (GET https://%s/v2/)",
			       r->host, error, r->host);
	else if (resp->transport == HTTP_TRANSPORT_TLS)
		(void)snprintf(buf, size, "TLS handshake with %s failed: %s (GET https://%s/v2/)",
			       r->host, error, r->host);
	else
		(void)snprintf(buf, size, "TLS connection to %s failed: %s (GET https://%s/v2/)",
			       r->host, error, r->host);
}

int registry_ping(struct registry *r)
{
	_cleanup_(http_response_done) struct http_response resp = {};
	char tls_error[ERROR_MESSAGE_MAX];
	int e;

	e = tls_load(r);
	if (e < 0)
		return e;

	if (r->base_url) {
		r->tls.no_verify = r->insecure && !r->certs.ca_pem;
		return ping_scheme(r, startswith(r->base_url, "https:") ? "https" : "http", &resp);
	}

	/* docker's InsecureSkipVerify for insecure registries, unless CAs were named for it. */
	r->tls.no_verify = r->insecure && !r->certs.ca_pem;
	e = ping_scheme(r, "https", &resp);
	if (e >= 0)
		return 0;
	if (!tls_failed(&resp) &&
	    !(r->insecure && resp.transport == HTTP_TRANSPORT_OTHER && resp.status == 0))
		return e;
	describe_tls_failure(r, &resp, tls_error, sizeof(tls_error));
	if (!r->insecure) {
		set_error(r, "%s", tls_error);
		return -EHOSTUNREACH;
	}

	/* An insecure registry that fails TLS: plain HTTP, as docker does. */
	log_debug("%s, trying plain HTTP", tls_error);
	http_response_done(&resp);
	e = ping_scheme(r, "http", &resp);
	if (e >= 0)
		return 0;
	if (resp.status == 0 || resp.status == 400) {
		/* No registry on plain HTTP either (a TLS-only server answers 400): the TLS
		 * failure is the one to report. */
		set_error(r, "%s; plain HTTP failed too: %s", tls_error, error_message() ?: "");
		return -EHOSTUNREACH;
	}
	return e;
}

void registry_get_counters(struct registry *r, uint64_t *ret_requests, uint64_t *ret_bytes)
{
	*ret_requests = r->requests;
	*ret_bytes = r->bytes_received;
}

const char *registry_scheme(struct registry *r)
{
	if (!r->pinged || !r->base_url)
		return NULL;
	return startswith(r->base_url, "https:") ? "https" : "http";
}

/* Before the first request.  With the scheme handed over by a client that pinged already
 * (registry_options.scheme), GET /v2/ would only cost a round trip on a new connection -- a
 * lazy read's, on a mount's fetch slots: the first request itself meets any authentication
 * challenge (registry_exchange() answers a 401) and any error the ping would have. */
static int ensure_pinged(struct registry *r)
{
	int e;

	if (r->pinged)
		return 0;
	if (!r->scheme_given)
		return registry_ping(r);
	e = tls_load(r);
	if (e < 0)
		return e;
	r->tls.no_verify = r->insecure && !r->certs.ca_pem;
	r->pinged = true;
	return 0;
}

int registry_ensure_pinged(struct registry *r)
{
	return ensure_pinged(r);
}

static bool tag_valid(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > 128)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');

		if (!alnum && c != '_' && !(i > 0 && (c == '.' || c == '-')))
			return false;
	}
	return true;
}

static int object_names(struct registry *r, const char *kind, const char *ref, char **ret_url,
			char **ret_object)
{
	bool digest = strchr(ref, ':') != NULL;
	char *url, *object;

	if (asprintf(&url, "%s/v2/%s/%s/%s", r->base_url, r->repository, kind, ref) < 0)
		return -ENOMEM;
	if (asprintf(&object, "%s/%s%s%s", r->domain, r->repository, digest ? "@" : ":",
		     ref) < 0) {
		free(url);
		return -ENOMEM;
	}
	*ret_url = url;
	*ret_object = object;
	return 0;
}

/* Checks @tag_or_digest, pings if needed and names the manifest's URL and object, for GET and
 * HEAD alike. */
static int manifest_names(struct registry *r, const char *tag_or_digest, char **ret_url,
			  char **ret_object)
{
	bool by_digest = strchr(tag_or_digest, ':') != NULL;
	int e;

	if (by_digest ? digest_validate(tag_or_digest) < 0 : !tag_valid(tag_or_digest)) {
		set_error(r, "invalid tag or digest '%.80s'", tag_or_digest);
		return -EINVAL;
	}
	e = ensure_pinged(r);
	if (e < 0)
		return e;
	return object_names(r, "manifests", tag_or_digest, ret_url, ret_object);
}

int registry_get_manifest(struct registry *r, const char *tag_or_digest, char **ret_buf,
			  size_t *ret_len, char **ret_content_type,
			  char ret_digest[72])
{
	_cleanup_(http_response_done) struct http_response resp = {};
	_cleanup_free_ char *url = NULL, *object = NULL, *content_type = NULL;
	bool by_digest = strchr(tag_or_digest, ':') != NULL;
	struct http_request req = {};
	struct exchange x = { .accept = accept_manifests };
	char got[DIGEST_STRING_MAX];
	int e;

	e = manifest_names(r, tag_or_digest, &url, &object);
	if (e < 0)
		return e;
	x.object = object;

	req = (struct http_request) { .url = url, .follow_redirects = true, .max_body = MANIFEST_MAX };
	e = registry_exchange(r, &req, &x, &resp);
	if (e < 0)
		return e;

	e = digest_buffer(resp.body, resp.body_len, got);
	if (e < 0)
		return e;
	if (by_digest && !streq(got, tag_or_digest)) {
		set_error(r, "manifest %s has the wrong digest %s (GET %s)", object, got, url);
		return -EBADMSG;
	}
	if (!by_digest && resp.docker_content_digest && !streq(resp.docker_content_digest, got))
		log_debug("Docker-Content-Digest of '%s' does not match its bytes (%s), ignoring",
			  object, got);

	if (resp.content_type) {
		content_type = strdup(resp.content_type);
		if (!content_type)
			return -ENOMEM;
	}

	*ret_buf = TAKE_PTR(resp.body);
	*ret_len = resp.body_len;
	*ret_content_type = TAKE_PTR(content_type);
	memcpy(ret_digest, got, DIGEST_STRING_MAX);
	return 0;
}

int registry_head_manifest(struct registry *r, const char *tag_or_digest,
			   char ret_digest[72], char **ret_content_type)
{
	_cleanup_(http_response_done) struct http_response resp = {};
	_cleanup_free_ char *url = NULL, *object = NULL, *content_type = NULL;
	bool by_digest = strchr(tag_or_digest, ':') != NULL;
	struct http_request req = {};
	struct exchange x = { .accept = accept_manifests };
	int e;

	e = manifest_names(r, tag_or_digest, &url, &object);
	if (e < 0)
		return e;
	x.object = object;

	req = (struct http_request) { .method = "HEAD", .url = url, .follow_redirects = true };
	e = registry_exchange(r, &req, &x, &resp);
	if (e < 0)
		return e;

	if (!resp.docker_content_digest || digest_validate(resp.docker_content_digest) < 0 ||
	    (by_digest && !streq(resp.docker_content_digest, tag_or_digest))) {
		set_error(r, "HEAD %s: no usable Docker-Content-Digest", url);
		return -ENODATA;
	}
	if (resp.content_type) {
		content_type = strdup(resp.content_type);
		if (!content_type)
			return -ENOMEM;
	}
	(void)snprintf(ret_digest, DIGEST_STRING_MAX, "%s", resp.docker_content_digest);
	if (ret_content_type)
		*ret_content_type = TAKE_PTR(content_type);
	return 0;
}

/* "bytes START-END/TOTAL": START and TOTAL (UINT64_MAX for "*"); false if malformed. */
static bool content_range_parse(const char *cr, uint64_t *ret_start, uint64_t *ret_end,
				uint64_t *ret_total)
{
	unsigned long long start, end, total;
	int consumed = 0;

	if (!cr || sscanf(cr, "bytes %llu-%llu/%n", &start, &end, &consumed) != 2 || consumed == 0)
		return false;
	if (end < start)
		return false;
	if (streq(cr + consumed, "*")) {
		total = UINT64_MAX;
	} else {
		char *e;

		errno = 0;
		total = strtoull(cr + consumed, &e, 10);
		if (errno != 0 || e == cr + consumed || *e || total <= end)
			return false;
	}
	*ret_start = start;
	*ret_end = end;
	*ret_total = total;
	return true;
}

void registry_expect_blob_size(struct registry *r, const char *digest, uint64_t size)
{
	(void)snprintf(r->size_digest, sizeof(r->size_digest), "%s", digest);
	r->size = size;
	r->size_from_manifest = true;
}

/* A blob, or a range of one, streamed to a sink.  Every attempt asks for the bytes the sink
 * has not had yet ([offset + delivered, offset + len), or to the end), and a 206's
 * Content-Range is checked before its first byte goes to the sink, so the sink sees each byte
 * once, in order, and never a byte of an answer that names other bytes.  A whole blob (from 0,
 * open-ended) is asked for without a Range header; a 200 to a request with one carries the
 * whole blob, whose head is skipped and whose tail is not waited for. */
struct blob_stream {
	struct registry *r;
	struct http_request *req;
	const char *digest;
	char *object, *url;    /* for messages, once known */
	uint64_t offset, len;  /* len REGISTRY_TO_END: to the blob's end */
	uint64_t delivered;    /* bytes handed to @sink over all attempts */
	uint64_t at;           /* blob offset of this attempt's next byte (a 200 starts at 0) */
	bool checked;          /* this attempt's status and Content-Range were looked at */
	int check_error;       /* what the check found wrong, for the caller */
	int (*sink)(void *userdata, const void *buf, size_t n);
	void *userdata;
};

/* Sentinel: a 200 delivered the range; the rest of the blob is not needed. */
#define RANGE_DONE (-ECANCELED)

static bool blob_stream_open_ended(const struct blob_stream *s)
{
	return s->len == REGISTRY_TO_END;
}

/* "OFFSET+LENGTH", or "OFFSET-" to the end, for messages. */
static const char *range_name(char buf[48], uint64_t offset, uint64_t len, bool open)
{
	if (open)
		(void)snprintf(buf, 48, "%llu-", (unsigned long long)offset);
	else
		(void)snprintf(buf, 48, "%llu+%llu", (unsigned long long)offset,
			       (unsigned long long)len);
	return buf;
}

static void blob_stream_restart(void *userdata)
{
	struct blob_stream *s = userdata;
	uint64_t from = s->offset + s->delivered, left;

	s->checked = false;
	s->check_error = 0;
	if (blob_stream_open_ended(s)) {
		s->req->range = s->req->range_open = from > 0;
		s->req->range_offset = from;
		if (s->delivered > 0)
			log_debug("resuming blob stream at byte %llu", (unsigned long long)from);
		return;
	}
	/* Nothing left would be a range of no bytes: ask for the last one again (skipped). */
	left = s->len - s->delivered;
	s->req->range = true;
	s->req->range_offset = from - (left == 0);
	s->req->range_len = left ?: 1;
}

/* A 206's Content-Range must name exactly the bytes asked for (any end for an open range), and
 * a total that agrees with the blob's known size; the first total seen becomes the known size. */
static int range_answer_check(struct blob_stream *s, const char *cr)
{
	const struct http_request *req = s->req;
	struct registry *r = s->r;
	uint64_t start, end, total;
	char range[48];

	if (!content_range_parse(cr, &start, &end, &total) || start != req->range_offset ||
	    (!req->range_open && end - start + 1 != req->range_len)) {
		set_error(r, "range %s of blob %s: the registry sent Content-Range %s (GET %s)",
			  range_name(range, req->range_offset, req->range_len, req->range_open),
			  s->object, cr ?: "none", s->url);
		return -EPROTO;
	}
	if (total == UINT64_MAX)
		return 0;
	if (!streq(r->size_digest, s->digest)) {
		(void)snprintf(r->size_digest, sizeof(r->size_digest), "%s", s->digest);
		r->size = total;
		r->size_from_manifest = false;
		return 0;
	}
	if (total != r->size) {
		set_error(r, "blob %s is %llu bytes at the registry, %s says %llu (GET %s)",
			  s->object, (unsigned long long)total,
			  r->size_from_manifest ? "the manifest" : "an earlier answer",
			  (unsigned long long)r->size, s->url);
		return -EBADMSG;
	}
	return 0;
}

/* A 200 to a Range request: noted once per host and process. */
static void range_ignored(struct registry *r, const struct http_response *resp)
{
	const char *host = resp->effective_host[0] ? resp->effective_host : r->host;

	if (range_ignorer_add(host))
		log_info("registry %s ignores Range requests: lazy reads download whole layers",
			 host);
}

/* The first bytes of an attempt: only a 200 or a 206 carries the blob's bytes, and a 206
 * only those it names. */
static int blob_stream_check(struct blob_stream *s, long status)
{
	const struct http_response *resp = http_current_response(s->r->http);
	int e;

	s->checked = true;
	s->at = 0;
	if (status != 200 && status != 206)
		return -EPROTO;
	if (status == 206) {
		e = range_answer_check(s, resp ? resp->content_range : NULL);
		if (e < 0)
			return e;
		s->at = s->req->range_offset;
	}
	return 0;
}

static int blob_stream_write(void *userdata, const void *buf, size_t n)
{
	struct blob_stream *s = userdata;
	long status = http_current_status(s->r->http);
	uint64_t want = s->offset + s->delivered;
	uint64_t end = blob_stream_open_ended(s) ? UINT64_MAX : s->offset + s->len;
	const uint8_t *p = buf;
	int e;

	if (!s->checked) {
		e = blob_stream_check(s, status);
		if (e < 0) {
			s->check_error = e;
			return e;
		}
	}
	if (n > end - s->at && status != 200)
		return -EPROTO;  /* a 206 longer than asked for (the check makes it unlikely) */

	/* Bytes before the ones the sink wants: a 200's head, or a byte asked for again. */
	if (s->at < want) {
		uint64_t skip = want - s->at;

		if (skip >= n) {
			s->at += n;
			return 0;
		}
		s->at += skip;
		p += skip;
		n -= skip;
	}
	if (n > end - s->at)
		n = end - s->at;  /* a 200: the range ends here */
	if (n > 0) {
		e = s->sink(s->userdata, p, n);
		if (e < 0)
			return e;
		s->at += n;
		s->delivered += n;
	}
	if (s->at == end && status == 200)
		return RANGE_DONE;
	return 0;
}

/* What the exchange of @s ended with, described. */
static int blob_stream_result(struct blob_stream *s, const struct http_request *req,
			      const struct http_response *resp, int e)
{
	struct registry *r = s->r;
	bool open = blob_stream_open_ended(s);
	char range[48];

	(void)range_name(range, s->offset, s->len, open);
	if (resp->status == 200 && req->range && !open && (e >= 0 || e == RANGE_DONE))
		range_ignored(r, resp);
	if (e == RANGE_DONE && s->delivered == s->len)
		return 0;
	if (e == -EPROTO && resp->status == 416) {
		set_error(r, "range %s lies outside blob %s (GET %s: 416)", range, s->object,
			  s->url);
		return -EPROTO;
	}
	if (e < 0 && e == s->check_error && resp->status == 206)
		/* registry_exchange() described the aborted transfer: say what was wrong. */
		return range_answer_check(s, resp->content_range);
	if (e < 0 && e == s->check_error)
		set_error(r, "range %s of blob %s: the registry answered %ld (GET %s)", range,
			  s->object, resp->status, s->url);
	if (e < 0)
		return e;

	/* A 206 with no body was not checked yet. */
	if (resp->status == 206 && !s->checked) {
		e = range_answer_check(s, resp->content_range);
		if (e < 0)
			return e;
	}
	if ((!open && s->delivered != s->len) || (resp->status != 200 && resp->status != 206)) {
		set_error(r, "range %s of blob %s: got %llu bytes (GET %s: %ld, Content-Range %s)",
			  range, s->object, (unsigned long long)s->delivered, s->url, resp->status,
			  resp->content_range ?: "none");
		return -EPROTO;
	}
	return 0;
}

/* Performs the exchange @s describes (its registry, digest, range, sink); @streaming: a
 * download of its own, bounded by the deadline only until it makes progress (struct exchange).
 * Leaves the URL and object name in @s for messages (blob_stream_done() frees them). */
static int blob_exchange(struct blob_stream *s, bool streaming)
{
	_cleanup_(http_response_done) struct http_response resp = {};
	struct http_request req = {
		.follow_redirects = true, .sink = blob_stream_write, .userdata = s,
	};
	struct exchange x = { .streaming = streaming, .restart = blob_stream_restart };
	struct registry *r = s->r;
	int e;

	if (digest_validate(s->digest) < 0) {
		set_error(r, "invalid digest '%.80s'", s->digest);
		return -EINVAL;
	}
	if (s->len == 0)
		return 0;
	if (s->len != REGISTRY_TO_END && s->offset > UINT64_MAX - s->len)
		return -EINVAL;
	e = ensure_pinged(r);
	if (e < 0)
		return e;
	e = object_names(r, "blobs", s->digest, &s->url, &s->object);
	if (e < 0)
		return e;
	x.object = s->object;
	req.url = s->url;
	s->req = &req;
	e = registry_exchange(r, &req, &x, &resp);
	e = blob_stream_result(s, &req, &resp, e);
	s->req = NULL;
	return e;
}

static void blob_stream_done(struct blob_stream *s)
{
	free(s->url);
	free(s->object);
}

int registry_stream_blob(struct registry *r, const char *digest, uint64_t offset, uint64_t len,
			 int (*sink)(void *userdata, const void *buf, size_t n), void *userdata)
{
	_cleanup_(blob_stream_done) struct blob_stream s = {
		.r = r, .digest = digest, .offset = offset, .len = len,
		.sink = sink, .userdata = userdata,
	};

	return blob_exchange(&s, len == REGISTRY_TO_END);
}

/* A whole small blob, in memory: at most @max bytes. */
struct blob_buffer {
	char *buf;
	size_t len, alloc, max;
};

static int blob_buffer_write(void *userdata, const void *buf, size_t n)
{
	struct blob_buffer *b = userdata;

	if (n > b->max - b->len)
		return -EFBIG;
	if (b->len + n + 1 > b->alloc) {
		size_t na = b->alloc * 2 > b->len + n + 1 ? b->alloc * 2 : b->len + n + 1;
		char *p = realloc(b->buf, na);

		if (!p)
			return -ENOMEM;
		b->buf = p;
		b->alloc = na;
	}
	memcpy(b->buf + b->len, buf, n);
	b->len += n;
	b->buf[b->len] = 0;
	return 0;
}

/* One try at a small blob: the bytes in *b, verified against @digest. */
static int get_blob_try(struct registry *r, const char *digest, struct blob_buffer *b)
{
	_cleanup_(blob_stream_done) struct blob_stream s = {
		.r = r, .digest = digest, .offset = 0, .len = REGISTRY_TO_END,
		.sink = blob_buffer_write, .userdata = b,
	};
	int e;

	/* A config, not a layer: the call's deadline bounds it whole. */
	e = blob_exchange(&s, false);
	if (e >= 0 && digest_verify_buffer(b->buf ?: "", b->len, digest) < 0) {
		set_error(r, "blob %s does not match its digest (GET %s)", s.object, s.url);
		e = -EBADMSG;
	}
	return e;
}

int registry_get_blob(struct registry *r, const char *digest, size_t max, char **ret_buf,
		      size_t *ret_len)
{
	struct blob_buffer b = { .max = max };
	int e;

	/* Wrong bytes (or a well-framed answer cut short) are asked for again, RANGE_BAD_TRIES
	 * times in all; then the source tries the next endpoint. */
	for (unsigned tries = 1;; tries++) {
		e = get_blob_try(r, digest, &b);
		if (e != -EBADMSG || tries >= RANGE_BAD_TRIES)
			break;
		log_debug("%s, fetching it again", error_message() ?: "blob does not match");
		b.len = 0;
		if (b.buf)
			b.buf[0] = 0;
	}
	if (e >= 0 && !b.buf) {
		b.buf = strdup("");
		if (!b.buf)
			e = -ENOMEM;
	}
	if (e < 0) {
		free(b.buf);
		return e;
	}
	*ret_buf = b.buf;
	*ret_len = b.len;
	return 0;
}

/* ---- Push and the referrers API (distribution-spec 1.1) ---------------------------------- */

const char *registry_domain(struct registry *r)
{
	return r->domain;
}

const char *registry_repository(struct registry *r)
{
	return r->repository;
}

/* A request with a body (or none) and the usual retries; @ctype_line "Content-Type: …". */
static int send_request(struct registry *r, const char *method, const char *url,
			const char *object, const char *ctype_line, const char *accept_line,
			const void *body, size_t len, size_t max_body, struct http_response *resp)
{
	struct exchange x = { .object = object, .accept = accept_line, .content_type = ctype_line };
	struct http_request req = {
		.method = method, .url = url, .body = body, .body_len = len,
		.max_body = max_body ?: 64 * 1024,
	};

	return registry_exchange(r, &req, &x, resp);
}

int registry_has_blob(struct registry *r, const char *digest)
{
	_cleanup_(http_response_done) struct http_response resp = {};
	_cleanup_free_ char *url = NULL, *object = NULL;
	int e;

	if (digest_validate(digest) < 0)
		return -EINVAL;
	e = ensure_pinged(r);
	if (e < 0)
		return e;
	e = object_names(r, "blobs", digest, &url, &object);
	if (e < 0)
		return e;
	e = send_request(r, "HEAD", url, object, NULL, NULL, NULL, 0, 0, &resp);
	if (e == -ENOENT)
		error_clear();
	return e < 0 ? e : 1;
}

/* The absolute URL of an upload session's Location (which may be a path) with "digest=D". */
static int upload_url(struct registry *r, const char *location, const char *digest, char **ret)
{
	_cleanup_free_ char *esc = http_escape(digest);
	bool relative = location[0] == '/';

	if (!esc)
		return -ENOMEM;
	if (!relative && !startswith(location, r->base_url)) {
		set_error(r, "registry %s sent an upload location on another host", r->domain);
		return -EPROTO;
	}
	*ret = strf("%s%s%cdigest=%s", relative ? r->base_url : "", location,
		    strchr(location, '?') ? '&' : '?', esc);
	return *ret ? 0 : -ENOMEM;
}

int registry_put_blob(struct registry *r, const char *digest, const void *buf, size_t len)
{
	_cleanup_(http_response_done) struct http_response resp = {};
	_cleanup_free_ char *url = NULL, *object = NULL, *put = NULL;
	int e;

	e = digest_verify_buffer(buf, len, digest);
	if (e < 0)
		return e == -EBADMSG ? -EINVAL : e;  /* the caller's bytes: our bug */
	e = registry_has_blob(r, digest);
	if (e != -ENOENT)
		return e < 0 ? e : 0;
	url = strf("%s/v2/%s/blobs/uploads/", r->base_url, r->repository);
	object = strf("%s/%s@%s", r->domain, r->repository, digest);
	if (!url || !object)
		return -ENOMEM;
	/* Monolithic upload: POST opens a session, one PUT with the digest closes it. */
	e = send_request(r, "POST", url, object, NULL, NULL, NULL, 0, 0, &resp);
	if (e < 0)
		return e;
	if (resp.status != 202 || !resp.location) {
		set_error(r, "POST %s: %ld without an upload location", url, resp.status);
		return -EPROTO;
	}
	e = upload_url(r, resp.location, digest, &put);
	if (e < 0)
		return e;
	http_response_done(&resp);
	return send_request(r, "PUT", put, object, "Content-Type: application/octet-stream", NULL,
			    buf, len, 0, &resp);
}

int registry_mount_blob(struct registry *r, const char *digest)
{
	_cleanup_(http_response_done) struct http_response resp = {};
	_cleanup_free_ char *url = NULL, *object = NULL, *esc_d = NULL, *esc_f = NULL;
	_cleanup_free_ char *cancel = NULL;
	int e;

	if (!r->mount_from || digest_validate(digest) < 0)
		return -EINVAL;
	e = ensure_pinged(r);
	if (e < 0)
		return e;
	esc_d = http_escape(digest);
	esc_f = http_escape(r->mount_from);
	if (!esc_d || !esc_f)
		return -ENOMEM;
	url = strf("%s/v2/%s/blobs/uploads/?mount=%s&from=%s", r->base_url, r->repository, esc_d,
		   esc_f);
	object = strf("%s/%s@%s", r->domain, r->repository, digest);
	if (!url || !object)
		return -ENOMEM;
	e = send_request(r, "POST", url, object, NULL, NULL, NULL, 0, 0, &resp);
	if (e < 0 || resp.status == 201)
		return e;
	/* 202: an upload session instead of the mount; close it rather than let it linger. */
	if (resp.location && resp.location[0] == '/')
		cancel = strf("%s%s", r->base_url, resp.location);
	else if (resp.location && startswith(resp.location, r->base_url))
		cancel = strdup(resp.location);
	http_response_done(&resp);
	if (cancel)
		(void)send_request(r, "DELETE", cancel, object, NULL, NULL, NULL, 0, 0, &resp);
	error_clear();
	return -ENOENT;
}

int registry_put_manifest(struct registry *r, const char *tag_or_digest, const char *media_type,
			  const void *buf, size_t len, bool *ret_subject)
{
	_cleanup_(http_response_done) struct http_response resp = {};
	_cleanup_free_ char *url = NULL, *object = NULL, *ctype = NULL;
	char digest[DIGEST_STRING_MAX];
	int e;

	e = manifest_names(r, tag_or_digest, &url, &object);
	if (e < 0)
		return e;
	e = digest_buffer(buf, len, digest);
	if (e < 0)
		return e;
	ctype = strf("Content-Type: %s", media_type);
	if (!ctype)
		return -ENOMEM;
	e = send_request(r, "PUT", url, object, ctype, NULL, buf, len, 0, &resp);
	if (e < 0)
		return e;
	if (resp.docker_content_digest && !streq(resp.docker_content_digest, digest)) {
		set_error(r, "PUT %s: the registry stored %s, not the manifest sent (%s)", url,
			  resp.docker_content_digest, digest);
		return -EPROTO;
	}
	if (ret_subject)
		*ret_subject = resp.oci_subject;
	return 0;
}

/* The target of `<URL>; rel="next"` (RFC 8288) made absolute, or NULL in *ret. */
static int link_next(struct registry *r, const char *link, char **ret)
{
	const char *lt, *gt;

	*ret = NULL;
	if (!link || !strstr(link, "rel=\"next\""))
		return 0;
	lt = strchr(link, '<');
	gt = lt ? strchr(lt, '>') : NULL;
	if (!gt || gt - lt < 2)
		return 0;
	if (lt[1] == '/') {
		*ret = strf("%s%.*s", r->base_url, (int)(gt - lt - 1), lt + 1);
		return *ret ? 0 : -ENOMEM;
	}
	if (strncmp(lt + 1, r->base_url, strlen(r->base_url)) != 0) {
		set_error(r, "registry %s links the next referrers page to another host", r->domain);
		return -EPROTO;
	}
	*ret = strndup(lt + 1, gt - lt - 1);
	return *ret ? 0 : -ENOMEM;
}

int registry_get_referrers(struct registry *r, const char *digest, const char *artifact_type,
			   const char *page_url, char **ret_buf, size_t *ret_len, char **ret_next)
{
	_cleanup_(http_response_done) struct http_response resp = {};
	_cleanup_free_ char *url = NULL, *object = NULL, *esc = NULL;
	int e;

	if (digest_validate(digest) < 0)
		return -EINVAL;
	e = ensure_pinged(r);
	if (e < 0)
		return e;
	if (artifact_type && !(esc = http_escape(artifact_type)))
		return -ENOMEM;
	url = strf("%s/v2/%s/referrers/%s%s%s", r->base_url, r->repository, digest,
		   esc ? "?artifactType=" : "", esc ?: "");
	object = strf("referrers of %s/%s@%s", r->domain, r->repository, digest);
	if (!url || !object)
		return -ENOMEM;
	e = send_request(r, "GET", page_url ?: url, object, NULL,
			 "Accept: application/vnd.oci.image.index.v1+json", NULL, 0, MANIFEST_MAX,
			 &resp);
	if (e == -ENOENT) {
		char code[80], message[256];

		/* A registry with the API answers an unknown repository with an error document;
		 * one without it does not know the path at all. */
		error_document(resp.body ?: "", resp.body_len, code, sizeof(code), message,
			       sizeof(message));
		if (!page_url && !code[0]) {
			error_clear();
			return -EOPNOTSUPP;
		}
	}
	if (e < 0)
		return e;
	e = link_next(r, resp.link, ret_next);
	if (e < 0)
		return e;
	*ret_buf = TAKE_PTR(resp.body);
	*ret_len = resp.body_len;
	return 0;
}
