/*
 * cache/registry/http.c: the only file that talks to libcurl.  One easy handle per struct http,
 * reset before every exchange (the connection, DNS and TLS session caches survive reset), so
 * no option leaks from one request into the next.  Every byte the network sends lands in a
 * buffer with a ceiling: headers 256 KiB, error bodies 64 KiB, 2xx bodies the caller's
 * max_body, unless a sink takes them.
 *
 * Redirects: blob GETs are commonly redirected to a CDN or object store.  libcurl (since
 * 7.58.0, and since 7.83.0 also for a different port or scheme) does not repeat headers set
 * with CURLOPT_HTTPHEADER that carry "Authorization:" or "Cookie:" on a redirect to another
 * host unless CURLOPT_UNRESTRICTED_AUTH is set; we set it to 0 explicitly, so a registry
 * token never reaches the redirect target.  Redirects are limited to http and https, and from
 * an https URL to https only unless the request allows a downgrade (insecure registries).
 *
 * Proxies, as docker and podman (Go's net/http) pick them: an https URL goes through
 * HTTPS_PROXY (else https_proxy), an http URL through HTTP_PROXY (else http_proxy), unless the
 * host matches NO_PROXY (else no_proxy) or is loopback (localhost, 127.0.0.0/8, ::1), which Go
 * never proxies.  libcurl reads the lower-case variables itself but ignores upper-case
 * HTTP_PROXY on purpose (the CGI "Proxy:" header attack), so both are read here and set
 * explicitly; an empty CURLOPT_PROXY keeps libcurl from reading the environment at all.  The
 * proxy chosen for the request's URL also carries its redirects (a CDN of the same scheme in
 * practice).  A proxy URL may hold user:password: it goes to libcurl only, never into a
 * message (http_proxy_describe() strips it).
 *
 * HTTP/2 is offered over TLS (ALPN) and used where the server takes it; plain HTTP stays 1.1.
 *
 * TLS: a request may carry its own CA bundle, client certificate and key as in-memory PEM
 * (CURLOPT_*_BLOB, not copied: the caller keeps them alive), or turn verification off.  TLS
 * failures are reported as their own transport kinds so that the registry client can tell "the
 * peer does not speak TLS" and "the certificate is not trusted" from other failures.
 */
#include "http.h"
#include "cache/registry/rate_limit.h"

#include <curl/curl.h>
#include <pthread.h>
#include <strings.h>
#include <time.h>

#include "cache/base/trace.h"
#include "cache/base/util.h"

#define HEADERS_MAX (256U * 1024)
#define ERROR_BODY_MAX (64U * 1024)
#define REDIRECTS_MAX 5L
#define CONNECT_TIMEOUT_MS_DEFAULT 10000L
#define STALL_TIMEOUT_S_DEFAULT 30L
#define STALL_SPEED_MIN 1024L

struct http {
	CURL *curl;
	char errbuf[CURL_ERROR_SIZE];

	/* State of the exchange in progress, valid during http_perform() only. */
	const struct http_request *req;
	struct http_response *resp;
	size_t body_cap;
	size_t header_bytes;
	int abort_error;
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_result;

static void curl_init_once(void)
{
	curl_init_result = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static inline void curl_slist_free_allp(struct curl_slist **l)
{
	if (*l)
		curl_slist_free_all(*l);
}

int http_new(struct http **ret)
{
	struct http *h;

	(void)pthread_once(&curl_once, curl_init_once);
	if (curl_init_result != CURLE_OK)
		return -ENOMEM;

	h = calloc(1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	h->curl = curl_easy_init();
	if (!h->curl) {
		free(h);
		return -ENOMEM;
	}
	*ret = h;
	return 0;
}

static void http_done(struct http *h)
{
	curl_easy_cleanup(h->curl);
}
DEFINE_FREE_FUNC(struct http, http_free, http_done);

static void response_headers_clear(struct http_response *resp)
{
	free_many(resp->content_type, resp->www_authenticate, resp->docker_content_digest,
		  resp->content_range, resp->location, resp->link);
	resp->content_type = resp->www_authenticate = resp->docker_content_digest = NULL;
	resp->content_range = resp->location = resp->link = NULL;
	resp->oci_subject = false;
	resp->content_length = -1;
	resp->retry_after_s = -1;
}

void http_response_done(struct http_response *resp)
{
	if (!resp)
		return;
	response_headers_clear(resp);
	free(resp->body);
	*resp = (struct http_response) { .content_length = -1, .retry_after_s = -1 };
}

int http_errno(int curl_code, long status)
{
	switch (curl_code) {
	case CURLE_OK:
		break;
	case CURLE_OPERATION_TIMEDOUT:
		return -ETIMEDOUT;
	case CURLE_OUT_OF_MEMORY:
		return -ENOMEM;
	case CURLE_FILESIZE_EXCEEDED:
		return -EFBIG;
	case CURLE_URL_MALFORMAT:
	case CURLE_UNSUPPORTED_PROTOCOL:
	case CURLE_TOO_MANY_REDIRECTS:
	case CURLE_WEIRD_SERVER_REPLY:
	case CURLE_BAD_CONTENT_ENCODING:
	case CURLE_RANGE_ERROR:
		return -EPROTO;
	default:
		/* DNS, connect, TLS, resets, truncated transfers: the transport failed. */
		return -EHOSTUNREACH;
	}

	if (status >= 200 && status < 300)
		return 0;
	if (status == 404)
		return -ENOENT;
	if (status == 401 || status == 403)
		return -EACCES;
	if (status == 408 || status == 429 || (status >= 500 && status < 600))
		return -EAGAIN;
	return -EPROTO;
}

static enum http_transport transport_kind(CURLcode rc)
{
	switch (rc) {
	case CURLE_OK:
		return HTTP_TRANSPORT_OK;
	case CURLE_WRITE_ERROR:
	case CURLE_FILESIZE_EXCEEDED:
	case CURLE_ABORTED_BY_CALLBACK:
		return HTTP_TRANSPORT_ABORTED;
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
		return HTTP_TRANSPORT_RESOLVE;
	case CURLE_COULDNT_CONNECT:
		return HTTP_TRANSPORT_CONNECT;
	case CURLE_OPERATION_TIMEDOUT:
		return HTTP_TRANSPORT_TIMEOUT;
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_ISSUER_ERROR:
	case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
	case CURLE_SSL_INVALIDCERTSTATUS:
		return HTTP_TRANSPORT_TLS_UNTRUSTED;
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_SSL_ENGINE_NOTFOUND:
	case CURLE_SSL_ENGINE_SETFAILED:
	case CURLE_SSL_ENGINE_INITFAILED:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_SSL_CIPHER:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_SSL_SHUTDOWN_FAILED:
	case CURLE_SSL_CRL_BADFILE:
	case CURLE_SSL_CLIENTCERT:
		return HTTP_TRANSPORT_TLS;
	default:
		return HTTP_TRANSPORT_OTHER;
	}
}

long http_current_status(struct http *h)
{
	return h->resp ? h->resp->status : 0;
}

const struct http_response *http_current_response(struct http *h)
{
	return h->resp;
}

static bool status_ok(long status)
{
	return status >= 200 && status < 300;
}

char *http_escape(const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	char *out, *o;

	out = malloc(strlen(s) * 3 + 1);
	if (!out)
		return NULL;
	o = out;
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
		    strchr("-._~", *p)) {
			*o++ = *p;
		} else {
			*o++ = '%';
			*o++ = hex[*p >> 4];
			*o++ = hex[*p & 15];
		}
	}
	*o = 0;
	return out;
}

static int header_store(char **field, const char *value, size_t n)
{
	char *s = strndup(value, n);

	if (!s)
		return -ENOMEM;
	free(*field);
	*field = s;
	return 0;
}

/* Retry-After: delta-seconds or an HTTP-date (RFC 9110 10.2.3); anything else is ignored. */
static int retry_after_parse(struct http_response *resp, const char *v, size_t n)
{
	char buf[64];
	long s = 0;
	time_t t;

	if (n == 0 || n >= sizeof(buf))
		return 0;
	if (v[0] >= '0' && v[0] <= '9') {
		for (size_t i = 0; i < n; i++) {
			if (v[i] < '0' || v[i] > '9')
				return 0;
			if (s < 1000000000L)
				s = s * 10 + (v[i] - '0');
		}
		resp->retry_after_s = s;
		return 0;
	}
	memcpy(buf, v, n);
	buf[n] = 0;
	t = curl_getdate(buf, NULL);
	if (t == (time_t)-1)
		return 0;
	t -= time(NULL);
	resp->retry_after_s = t > 0 ? (t < 1000000000L ? (long)t : 1000000000L) : 0;
	return 0;
}

static int header_line(struct http *h, const char *line, size_t n)
{
	struct http_response *resp = h->resp;
	const char *colon, *v;
	size_t name_len, vlen;

	while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
		n--;

	if (n >= 5 && strncmp(line, "HTTP/", 5) == 0) {
		/* A new response (after a redirect or an interim 1xx): forget the previous one. */
		const char *sp = memchr(line, ' ', n);
		long status = 0;

		response_headers_clear(resp);
		resp->body_len = 0;
		if (sp)
			for (const char *p = sp + 1; p < line + n && *p >= '0' && *p <= '9'; p++)
				status = status * 10 + (*p - '0');
		resp->status = status;
		return 0;
	}

	colon = memchr(line, ':', n);
	if (!colon)
		return 0;
	name_len = colon - line;
	v = colon + 1;
	while (v < line + n && (*v == ' ' || *v == '\t'))
		v++;
	vlen = line + n - v;
	while (vlen > 0 && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
		vlen--;

#define IS(name) (name_len == strlen(name) && strncasecmp(line, name, name_len) == 0)
	if (IS("Content-Type"))
		return header_store(&resp->content_type, v, vlen);
	if (IS("Docker-Content-Digest"))
		return header_store(&resp->docker_content_digest, v, vlen);
	if (IS("Content-Range"))
		return header_store(&resp->content_range, v, vlen);
	if (IS("Location"))
		return header_store(&resp->location, v, vlen);
	if (IS("Link"))
		return resp->link ? 0 : header_store(&resp->link, v, vlen);
	if (IS("OCI-Subject")) {
		resp->oci_subject = true;
		return 0;
	}
	if (IS("WWW-Authenticate")) {
		bool bearer = vlen >= 7 && strncasecmp(v, "Bearer ", 7) == 0;

		/* Prefer a Bearer challenge when the server offers several schemes. */
		if (!resp->www_authenticate ||
		    (bearer && strncasecmp(resp->www_authenticate, "Bearer ", 7) != 0))
			return header_store(&resp->www_authenticate, v, vlen);
		return 0;
	}
	if (IS("Retry-After"))
		return retry_after_parse(resp, v, vlen);
	if (IS("Content-Length")) {
		int64_t l = 0;

		if (vlen == 0 || vlen > 18)
			return 0;
		for (size_t i = 0; i < vlen; i++) {
			if (v[i] < '0' || v[i] > '9')
				return 0;
			l = l * 10 + (v[i] - '0');
		}
		resp->content_length = l;
	}
#undef IS
	return 0;
}

static size_t header_cb(char *buf, size_t size, size_t nitems, void *userdata)
{
	struct http *h = userdata;
	size_t n = size * nitems;
	int r;

	h->header_bytes += n;
	if (h->header_bytes > HEADERS_MAX) {
		h->abort_error = -EFBIG;
		return 0;
	}
	r = header_line(h, buf, n);
	if (r < 0) {
		h->abort_error = r;
		return 0;
	}
	return n;
}

/* libcurl calls this at least once a second while a transfer waits, and on every block. */
static int progress_cb(void *userdata, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
		       curl_off_t ulnow)
{
	struct http *h = userdata;

	(void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
	if (!http_cancelled(h->req->cancel))
		return 0;
	h->abort_error = -ECANCELED;
	return 1;
}

static int body_append(struct http *h, const char *buf, size_t n)
{
	struct http_response *resp = h->resp;

	if (resp->body_len + n + 1 > h->body_cap) {
		size_t cap = h->body_cap ? h->body_cap : 16384;
		char *nb;

		while (cap < resp->body_len + n + 1)
			cap *= 2;
		nb = realloc(resp->body, cap);
		if (!nb)
			return -ENOMEM;
		resp->body = nb;
		h->body_cap = cap;
	}
	memcpy(resp->body + resp->body_len, buf, n);
	resp->body_len += n;
	resp->body[resp->body_len] = 0;
	return 0;
}

/* Waits until the @n bytes just taken are paid for at the request's rate limit. */
static int pay_rate_limit(struct http *h, size_t n)
{
	int64_t wait_us;

	if (!h->req->rate_limit)
		return 0;
	wait_us = rate_limit_charge(h->req->rate_limit, n);
	while (wait_us > 0) {
		long step_ms = wait_us > 100000 ? 100 : (long)((wait_us + 999) / 1000);

		if (http_cancelled(h->req->cancel))
			return -ECANCELED;
		sleep_ms(step_ms);
		wait_us -= (int64_t)step_ms * 1000;
	}
	return 0;
}

static size_t write_cb(char *buf, size_t size, size_t nmemb, void *userdata)
{
	struct http *h = userdata;
	struct http_response *resp = h->resp;
	size_t n = size * nmemb;
	int r;

	if (!status_ok(resp->status)) {
		/* An error document (or a redirect's body): keep the start for the message. */
		size_t room = resp->body_len < ERROR_BODY_MAX ? ERROR_BODY_MAX - resp->body_len : 0;

		r = body_append(h, buf, n < room ? n : room);
		if (r < 0) {
			h->abort_error = r;
			return 0;
		}
		return n;
	}

	if (h->req->sink) {
		r = h->req->sink(h->req->userdata, buf, n);
		if (r < 0) {
			h->abort_error = r;
			return 0;
		}
		resp->sink_bytes += n;
	} else {
		if (resp->body_len + n > h->req->max_body) {
			h->abort_error = -EFBIG;
			return 0;
		}
		r = body_append(h, buf, n);
		if (r < 0) {
			h->abort_error = r;
			return 0;
		}
	}

	r = pay_rate_limit(h, n);
	if (r < 0) {
		h->abort_error = r;
		return 0;
	}
	return n;
}

static int build_header_list(char *const *headers, struct curl_slist **ret)
{
	struct curl_slist *l = NULL;

	for (char *const *i = headers; i && *i; i++) {
		struct curl_slist *n = curl_slist_append(l, *i);

		if (!n) {
			curl_slist_free_all(l);
			return -ENOMEM;
		}
		l = n;
	}
	*ret = l;
	return 0;
}

static CURLcode setup_tls(CURL *c, const struct http_tls *tls)
{
	struct curl_blob ca = { .data = (void *)tls->ca_pem, .len = tls->ca_pem_len,
				.flags = CURL_BLOB_NOCOPY };
	struct curl_blob cert = { .data = (void *)tls->cert_pem, .len = tls->cert_pem_len,
				  .flags = CURL_BLOB_NOCOPY };
	struct curl_blob key = { .data = (void *)tls->key_pem, .len = tls->key_pem_len,
				 .flags = CURL_BLOB_NOCOPY };
	CURLcode rc = CURLE_OK;

#define SET(opt, val) do { if (rc == CURLE_OK) rc = curl_easy_setopt(c, opt, val); } while (0)
	if (tls->ca_pem)
		SET(CURLOPT_CAINFO_BLOB, &ca);  /* the blob struct is read here, the data later */
	if (tls->cert_pem && tls->key_pem) {
		SET(CURLOPT_SSLCERT_BLOB, &cert);
		SET(CURLOPT_SSLCERTTYPE, "PEM");
		SET(CURLOPT_SSLKEY_BLOB, &key);
		SET(CURLOPT_SSLKEYTYPE, "PEM");
	}
	if (tls->no_verify) {
		SET(CURLOPT_SSL_VERIFYPEER, 0L);
		SET(CURLOPT_SSL_VERIFYHOST, 0L);
	}
#undef SET
	return rc;
}

/* Go's httpproxy.FromEnvironment: the upper-case name wins, then the lower-case one. */
static const char *env_either(const char *upper, const char *lower)
{
	const char *v = getenv(upper);

	if (!v || !*v)
		v = getenv(lower);
	return v && *v ? v : NULL;
}

/* An entry "*" in NO_PROXY turns proxies off (libcurl knows "*" only as the whole list). */
static bool noproxy_all(void)
{
	const char *np = env_either("NO_PROXY", "no_proxy");

	while (np && *np) {
		size_t n;

		np += strspn(np, " ,");
		n = strcspn(np, ",");
		while (n > 0 && np[n - 1] == ' ')
			n--;
		if (n == 1 && np[0] == '*')
			return true;
		np += strcspn(np, ",");
	}
	return false;
}

static const char *proxy_for_url(const char *url)
{
	if (noproxy_all())
		return NULL;
	if (strncasecmp(url, "https://", 8) == 0)
		return env_either("HTTPS_PROXY", "https_proxy");
	return env_either("HTTP_PROXY", "http_proxy");
}

/* NO_PROXY plus the loopback hosts Go never proxies, for CURLOPT_NOPROXY.  Caller frees. */
static char *noproxy_list(void)
{
	const char *np = env_either("NO_PROXY", "no_proxy");
	char *s;

	if (asprintf(&s, "%s%slocalhost,127.0.0.0/8,::1", np ?: "", np ? "," : "") < 0)
		return NULL;
	return s;
}

char *http_proxy_describe(const char *url)
{
	const char *p = proxy_for_url(url), *rest, *at, *end;
	char *s;

	if (!p)
		return NULL;
	rest = strstr(p, "://");
	rest = rest ? rest + 3 : p;
	end = rest + strcspn(rest, "/?#");
	at = memrchr(rest, '@', end - rest);
	/* scheme, then host[:port] only: user:password and any path stay out. */
	if (asprintf(&s, "%.*s%.*s", (int)(rest - p), p, (int)(end - (at ? at + 1 : rest)),
		     at ? at + 1 : rest) < 0)
		return NULL;
	return s;
}

static int setup(struct http *h, const struct http_request *req, struct curl_slist *headers)
{
	_cleanup_free_ char *noproxy = noproxy_list();
	const char *proxy = proxy_for_url(req->url);
	CURL *c = h->curl;
	char range[64];
	bool https = strncasecmp(req->url, "https://", 8) == 0;
	CURLcode rc = CURLE_OK;

#define SET(opt, val) do { if (rc == CURLE_OK) rc = curl_easy_setopt(c, opt, val); } while (0)
	SET(CURLOPT_URL, req->url);
	SET(CURLOPT_PROTOCOLS_STR, "http,https");
	SET(CURLOPT_REDIR_PROTOCOLS_STR, https && !req->allow_http_redirect ? "https" : "http,https");
	SET(CURLOPT_NOSIGNAL, 1L);
	SET(CURLOPT_ERRORBUFFER, h->errbuf);
	SET(CURLOPT_USERAGENT, "lazyroot/" LAZYROOT_VERSION);
	SET(CURLOPT_HTTPHEADER, headers);
	SET(CURLOPT_HEADERFUNCTION, header_cb);
	SET(CURLOPT_HEADERDATA, h);
	SET(CURLOPT_WRITEFUNCTION, write_cb);
	SET(CURLOPT_WRITEDATA, h);
	if (req->cancel) {
		SET(CURLOPT_XFERINFOFUNCTION, progress_cb);
		SET(CURLOPT_XFERINFODATA, h);
		SET(CURLOPT_NOPROGRESS, 0L);
	}
	SET(CURLOPT_TCP_KEEPALIVE, 1L);
	SET(CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
	/* libcurl copies both strings; "" turns its own reading of the environment off. */
	SET(CURLOPT_PROXY, proxy ?: "");
	if (!noproxy)
		rc = CURLE_OUT_OF_MEMORY;
	SET(CURLOPT_NOPROXY, noproxy);
	SET(CURLOPT_CONNECTTIMEOUT_MS,
	    req->connect_timeout_ms > 0 ? req->connect_timeout_ms : CONNECT_TIMEOUT_MS_DEFAULT);
	SET(CURLOPT_TIMEOUT_MS, req->timeout_ms > 0 ? req->timeout_ms : 0L);
	SET(CURLOPT_LOW_SPEED_LIMIT, STALL_SPEED_MIN);
	SET(CURLOPT_LOW_SPEED_TIME,
	    req->stall_timeout_s > 0 ? req->stall_timeout_s : STALL_TIMEOUT_S_DEFAULT);
	SET(CURLOPT_FOLLOWLOCATION, req->follow_redirects ? 1L : 0L);
	SET(CURLOPT_MAXREDIRS, REDIRECTS_MAX);
	/* Never hand the registry's Authorization header to a redirect target on another host. */
	SET(CURLOPT_UNRESTRICTED_AUTH, 0L);
	if (req->method && streq(req->method, "HEAD"))
		SET(CURLOPT_NOBODY, 1L);
	if (req->method && (streq(req->method, "POST") || streq(req->method, "PUT"))) {
		/* POSTFIELDS under another verb sends the buffer as that verb's body; "" keeps
		 * an empty POST from reading stdin. */
		SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
		SET(CURLOPT_POSTFIELDS, req->body ?: "");
		SET(CURLOPT_CUSTOMREQUEST, req->method);
	}
	if (req->method && streq(req->method, "DELETE"))
		SET(CURLOPT_CUSTOMREQUEST, "DELETE");
	if (!req->sink && !(req->method && streq(req->method, "HEAD")))
		SET(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)req->max_body);
	if (req->range && req->range_open) {
		(void)snprintf(range, sizeof(range), "%llu-", (unsigned long long)req->range_offset);
		SET(CURLOPT_RANGE, range);
	} else if (req->range) {
		(void)snprintf(range, sizeof(range), "%llu-%llu",
			       (unsigned long long)req->range_offset,
			       (unsigned long long)(req->range_offset + req->range_len - 1));
		SET(CURLOPT_RANGE, range);  /* libcurl copies the string */
	}
#undef SET
	if (rc == CURLE_OK && req->tls)
		rc = setup_tls(c, req->tls);

	if (rc == CURLE_OUT_OF_MEMORY)
		return -ENOMEM;
	return rc == CURLE_OK ? 0 : -EPROTO;
}

/* Where the final response came from and in which protocol version. */
static void response_info(struct http *h, struct http_response *resp)
{
	long version = 0, redirects = 0;
	const char *url = NULL;
	CURLU *u;

	if (curl_easy_getinfo(h->curl, CURLINFO_HTTP_VERSION, &version) == CURLE_OK)
		resp->http_version = version == CURL_HTTP_VERSION_1_0 ? 10 :
				     version == CURL_HTTP_VERSION_1_1 ? 11 :
				     version == CURL_HTTP_VERSION_2_0 ? 20 :
				     version == CURL_HTTP_VERSION_3 ? 30 : 0;
	if (curl_easy_getinfo(h->curl, CURLINFO_REDIRECT_COUNT, &redirects) == CURLE_OK)
		resp->redirected = redirects > 0;
	if (curl_easy_getinfo(h->curl, CURLINFO_EFFECTIVE_URL, &url) != CURLE_OK || !url)
		return;
	u = curl_url();
	if (!u)
		return;
	if (curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK) {
		char *host = NULL, *port = NULL;

		(void)curl_url_get(u, CURLUPART_HOST, &host, 0);
		(void)curl_url_get(u, CURLUPART_PORT, &port, 0);
		if (host)
			(void)snprintf(resp->effective_host, sizeof(resp->effective_host), "%s%s%s",
				       host, port ? ":" : "", port ?: "");
		curl_free(host);
		curl_free(port);
	}
	curl_url_cleanup(u);
}

/* One trace line per exchange (cache/base/trace.h): what went out, when its first byte and
 * its end came, and over which connection (a new one, or one kept from an earlier exchange). */
static void trace_exchange(struct http *h, const struct http_request *req, int64_t t0, int r)
{
	curl_off_t first = 0, connect = 0, bytes = 0;
	long connects = 0, lport = 0, status = h->resp ? h->resp->status : 0;
	char url[512], range[64] = "";
	int64_t t1 = trace_now_us();

	(void)curl_easy_getinfo(h->curl, CURLINFO_STARTTRANSFER_TIME_T, &first);
	(void)curl_easy_getinfo(h->curl, CURLINFO_CONNECT_TIME_T, &connect);
	(void)curl_easy_getinfo(h->curl, CURLINFO_SIZE_DOWNLOAD_T, &bytes);
	(void)curl_easy_getinfo(h->curl, CURLINFO_NUM_CONNECTS, &connects);
	(void)curl_easy_getinfo(h->curl, CURLINFO_LOCAL_PORT, &lport);
	/* No query: a redirect target's may carry a signature. */
	(void)trace_json_str(req->url, url, sizeof(url));
	url[strcspn(url, "?")] = '\0';
	if (req->range && req->range_open)
		(void)snprintf(range, sizeof(range), "%llu-", (unsigned long long)req->range_offset);
	else if (req->range)
		(void)snprintf(range, sizeof(range), "%llu-%llu",
			       (unsigned long long)req->range_offset,
			       (unsigned long long)(req->range_offset + req->range_len - 1));
	trace_emit("http", "\"call\":%llu,\"method\":\"%s\",\"url\":\"%s\",\"range\":\"%s\","
		   "\"status\":%ld,\"r\":%d,\"t0\":%lld,\"connect\":%lld,\"first\":%lld,"
		   "\"t1\":%lld,\"bytes\":%lld,\"new_conn\":%s,\"lport\":%ld",
		   (unsigned long long)trace_call_current(), req->method ?: "GET", url, range,
		   status, r, (long long)t0, (long long)(t0 + connect),
		   (long long)(first > 0 ? t0 + first : 0), (long long)t1, (long long)bytes,
		   connects > 0 ? "true" : "false", lport);
}

int http_perform(struct http *h, const struct http_request *req, struct http_response *ret)
{
	int64_t trace_t0 = 0;
	_cleanup_(curl_slist_free_allp) struct curl_slist *headers = NULL;
	CURLcode rc;
	long os_errno = 0;
	int r;

	*ret = (struct http_response) { .content_length = -1, .retry_after_s = -1 };

	if (req->range && req->range_len == 0 && !req->range_open)
		return -EINVAL;

	r = build_header_list(req->headers, &headers);
	if (r < 0)
		return r;

	curl_easy_reset(h->curl);
	h->errbuf[0] = 0;
	h->req = req;
	h->resp = ret;
	h->body_cap = 0;
	h->header_bytes = 0;
	h->abort_error = 0;

	r = http_cancelled(req->cancel) ? -ECANCELED : setup(h, req, headers);
	if (r >= 0) {
		if (trace_enabled())
			trace_t0 = trace_now_us();
		rc = curl_easy_perform(h->curl);
		ret->transport = transport_kind(rc);
		if (rc != CURLE_OK) {
			(void)snprintf(ret->error, sizeof(ret->error), "%s",
				       h->errbuf[0] ? h->errbuf : curl_easy_strerror(rc));
			if (curl_easy_getinfo(h->curl, CURLINFO_OS_ERRNO, &os_errno) == CURLE_OK)
				ret->os_errno = (int)os_errno;
		}

		response_info(h, ret);

		if (h->abort_error < 0)
			r = h->abort_error;
		else if (ret->status >= 300 && ret->transport == HTTP_TRANSPORT_OTHER)
			/* An error status whose body was cut short (some registries announce
			 * the blob's Content-Length on a 416): the status is the answer. */
			r = http_errno(CURLE_OK, ret->status);
		else
			r = http_errno(rc, ret->status);
		if (trace_t0)
			trace_exchange(h, req, trace_t0, r);
	}

	/* A buffer is always there, so callers may treat the body as a string. */
	if (!ret->body && body_append(h, "", 0) < 0 && r >= 0)
		r = -ENOMEM;

	h->req = NULL;
	h->resp = NULL;
	return r;
}
