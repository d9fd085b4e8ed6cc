/*
 * cache/registry/source.c: see source.h.  For the docker transport a source is an ordered list of
 * endpoints, one registry client each: the mirrors registries.conf allows for the request,
 * then the origin (the reference's registry, or the location its prefix is rewritten to).
 * Every call goes through source_try(), which asks the endpoints in order and moves on when
 * one fails.  Calls by digest (and pings) start with the endpoint that last served one, so a
 * mirror that lacks an image costs one miss per object, not one per blob.
 *
 * What moves on to the next endpoint: every failure except -ENOMEM and -EINVAL (ours, the same
 * everywhere) and a failure of the caller's sink.  A stream (a range, or a whole blob: a range
 * open at its end) may move on after a part: the next endpoint is asked for the rest only, as
 * every endpoint serves the same bytes under one digest.
 * So a mirror that is down (-EHOSTUNREACH, -ETIMEDOUT), busy (-EAGAIN), lacks the image
 * (-ENOENT), refuses us (-EACCES), or serves bytes that fail verification (-EBADMSG, -EPROTO,
 * -EFBIG) does not fail the pull while the origin can serve it.  Bytes that a caller found
 * wrong after a call succeeded (a layer's digest, a chunk's) go through source_retry_bad(): the
 * same endpoint again, then the next.
 *
 * A local transport (oci:, oci-archive:, docker-archive:) has no endpoints: every call goes
 * to its source_local instead.
 */
#include "source.h"

#include "cache/base/error.h"
#include "cache/base/log.h"
#include "cache/registry/credentials.h"
#include "cache/registry/registries_conf.h"
#include "cache/registry/source_local.h"

struct endpoint {
	struct registry *registry;
	char *name;            /* "host[:port]/repository" */
	bool mirror, by_tag, by_digest;
};

struct source {
	struct endpoint *endpoints;  /* mirrors in order, the origin last */
	size_t n;
	size_t preferred;            /* served a call by digest last: those try it first */
	char *hint;                  /* source_scheme()'s answer, kept until it changes */
	size_t hint_endpoint;
	struct source_local *local;  /* instead of endpoints, for a local transport */
};

enum request { REQUEST_ANY, REQUEST_BY_TAG, REQUEST_BY_DIGEST };

static void endpoints_free(struct endpoint *e, size_t n)
{
	for (size_t i = 0; e && i < n; i++) {
		registry_free(e[i].registry);
		free(e[i].name);
	}
	free(e);
}

static void source_done(struct source *s)
{
	endpoints_free(s->endpoints, s->n);
	free(s->hint);
	source_local_free(s->local);
}
DEFINE_FREE_FUNC(struct source, source_free, source_done);

/* The hint is "SCHEME ENDPOINT-NAME"; a bare "http"/"https" (older callers) is the origin's. */
static bool hint_for(const char *hint, const char *name, bool origin, const char **ret_scheme)
{
	const char *sp;

	if (!hint)
		return false;
	sp = strchr(hint, ' ');
	if (!sp) {
		*ret_scheme = hint;
		return origin;
	}
	if (!streq(sp + 1, name))
		return false;
	if (startswith(hint, "https "))
		*ret_scheme = "https";
	else if (startswith(hint, "http "))
		*ret_scheme = "http";
	else
		return false;
	return true;
}

static int endpoint_open(struct endpoint *ep, const struct registries_endpoint *plan,
			 const struct reference *ref, const struct registry_options *o,
			 bool origin, bool *ret_hinted)
{
	_cleanup_free_ char *domain = NULL;
	struct registry_options ro = o ? *o : (struct registry_options) {};
	const char *slash = strchr(plan->name, '/');
	struct reference er;
	const char *scheme = NULL;

	domain = strndup(plan->name, (size_t)(slash - plan->name));
	if (!domain)
		return -ENOMEM;
	er = (struct reference) {
		.domain = domain, .repository = (char *)slash + 1, .tag = ref->tag,
		.digest = ref->digest,
	};
	ro.insecure = ro.insecure || plan->insecure;
	/* Credentials were given for the reference's registry: never send them elsewhere. */
	if (!streq(domain, ref->domain))
		ro.username = ro.password = NULL;
	*ret_hinted = hint_for(o ? o->scheme : NULL, plan->name, origin, &scheme);
	ro.scheme = *ret_hinted ? scheme : NULL;

	ep->name = strdup(plan->name);
	if (!ep->name)
		return -ENOMEM;
	ep->mirror = plan->mirror;
	ep->by_tag = plan->by_tag;
	ep->by_digest = plan->by_digest;
	return registry_new(&er, &ro, &ep->registry);
}

/* What registries.conf says of the docker reference @ref: where to ask (*ret_plan, the origin
 * last) and, in *ret_name, "host[:port]/repository" as @ref names it.  -EINVAL for a
 * reference of another transport. */
static int plan_for(const struct reference *ref, char **ret_name,
		    struct registries_endpoint **ret_plan, size_t *ret_n)
{
	_cleanup_(registries_conf_freep) struct registries_conf *conf = NULL;
	_cleanup_free_ char *name = NULL;
	int r;

	if (!ref || ref->transport != REFERENCE_DOCKER || !ref->domain || !ref->repository)
		return -EINVAL;
	r = registries_conf_load(&conf);
	if (r < 0)
		return r;
	if (asprintf(&name, "%s/%s", ref->domain, ref->repository) < 0)
		return -ENOMEM;
	r = registries_conf_endpoints(conf, name, ref->digest != NULL, ret_plan, ret_n);
	if (r < 0)
		return r;
	*ret_name = TAKE_PTR(name);
	return 0;
}

int source_origin_name(const struct reference *ref, char **ret)
{
	_cleanup_free_ char *name = NULL;
	struct registries_endpoint *plan = NULL;
	size_t n = 0;
	int r;

	r = plan_for(ref, &name, &plan, &n);
	if (r < 0)
		return r;
	*ret = TAKE_PTR(plan[n - 1].name);
	registries_endpoints_free(plan, n);
	return 0;
}

int source_origin_new(const struct reference *ref, const struct registry_options *o,
		      struct registry **ret)
{
	_cleanup_free_ char *name = NULL;
	struct registries_endpoint *plan = NULL;
	struct endpoint ep = {};
	bool hinted;
	size_t n = 0;
	int r;

	r = plan_for(ref, &name, &plan, &n);
	if (r < 0)
		return r;
	r = endpoint_open(&ep, &plan[n - 1], ref, o, true, &hinted);
	if (r >= 0 && !streq(plan[n - 1].name, name))
		log_debug("'%s' is served from '%s'", name, plan[n - 1].name);
	registries_endpoints_free(plan, n);
	free(ep.name);
	if (r < 0) {
		registry_free(ep.registry);
		return r;
	}
	*ret = ep.registry;
	return 0;
}

int source_new(const struct reference *ref, const struct registry_options *o,
	       struct source **ret)
{
	_cleanup_(source_freep) struct source *s = NULL;
	_cleanup_free_ char *name = NULL;
	struct registries_endpoint *plan = NULL;
	size_t n = 0;
	int r;

	if (ref && reference_is_local(ref)) {
		s = calloc(1, sizeof(*s));
		if (!s)
			return -ENOMEM;
		r = source_local_new(ref, &s->local);
		if (r < 0)
			return r;
		*ret = TAKE_PTR(s);
		return 0;
	}
	r = plan_for(ref, &name, &plan, &n);
	if (r < 0)
		return r;

	s = calloc(1, sizeof(*s));
	if (s)
		s->endpoints = calloc(n, sizeof(*s->endpoints));
	if (!s || !s->endpoints) {
		registries_endpoints_free(plan, n);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n && r >= 0; i++) {
		bool hinted = false;

		s->n++;
		r = endpoint_open(&s->endpoints[i], &plan[i], ref, o, i == n - 1, &hinted);
		if (hinted)
			s->preferred = i;
		if (plan[i].mirror)
			log_debug("'%s': mirror '%s'%s%s", name, plan[i].name,
				  plan[i].by_tag ? " by tag" : "", plan[i].by_digest ? " by digest" : "");
	}
	if (r >= 0 && !streq(plan[n - 1].name, name))
		log_debug("'%s' is served from '%s'", name, plan[n - 1].name);
	registries_endpoints_free(plan, n);
	if (r < 0)
		return r;
	*ret = TAKE_PTR(s);
	return 0;
}

void source_get_counters(struct source *s, uint64_t *ret_requests, uint64_t *ret_bytes)
{
	uint64_t requests = 0, bytes = 0;

	if (s->local)
		return source_local_get_counters(s->local, ret_requests, ret_bytes);
	for (size_t i = 0; i < s->n; i++) {
		uint64_t q, b;

		registry_get_counters(s->endpoints[i].registry, &q, &b);
		requests += q;
		bytes += b;
	}
	*ret_requests = requests;
	*ret_bytes = bytes;
}

const char *source_scheme(struct source *s)
{
	const struct endpoint *ep;
	const char *scheme;

	if (s->local)
		return NULL;
	ep = &s->endpoints[s->preferred];
	scheme = registry_scheme(ep->registry);
	if (!scheme)
		return NULL;
	if (s->hint && s->hint_endpoint == s->preferred && startswith(s->hint, scheme) &&
	    s->hint[strlen(scheme)] == ' ')
		return s->hint;
	free(s->hint);
	if (asprintf(&s->hint, "%s %s", scheme, ep->name) < 0) {
		s->hint = NULL;
		return NULL;
	}
	s->hint_endpoint = s->preferred;
	return s->hint;
}

struct registry *source_registry(struct source *s, const char *name)
{
	if (!s || s->local)
		return NULL;
	for (size_t i = 0; i < s->n; i++)
		if (streq(s->endpoints[i].name, name))
			return registry_scheme(s->endpoints[i].registry) ? s->endpoints[i].registry
									   : NULL;
	return NULL;
}

struct registry *source_origin_registry(struct source *s, const struct reference *ref)
{
	_cleanup_free_ char *name = NULL;

	if (!s || source_origin_name(ref, &name) < 0) {
		error_clear();
		return NULL;
	}
	return source_registry(s, name);
}

static bool endpoint_serves(const struct endpoint *ep, enum request kind)
{
	return kind == REQUEST_ANY || (kind == REQUEST_BY_TAG ? ep->by_tag : ep->by_digest);
}

/* Calls @call on each endpoint that may serve @kind until one succeeds (see the top of the
 * file for what moves on).  When all fail, the origin's error is returned, and its message
 * says which mirrors were tried first.  A success leaves no message: a mirror's miss was
 * handled. */
static int source_try(struct source *s, enum request kind,
		      int (*call)(struct registry *r, void *args), void *args,
		      bool (*may_retry)(void *args))
{
	struct error_carry origin_error = {};
	char tried[512] = "";
	size_t order[s->n + 1], n_order = 0, origin = s->n - 1;
	int r = -EHOSTUNREACH, r_origin = 0;

	/* By tag, the configured order decides; by digest, the one that served last goes first. */
	if (kind != REQUEST_BY_TAG && endpoint_serves(&s->endpoints[s->preferred], kind))
		order[n_order++] = s->preferred;
	for (size_t i = 0; i < s->n; i++)
		if ((kind == REQUEST_BY_TAG || i != s->preferred) &&
		    endpoint_serves(&s->endpoints[i], kind))
			order[n_order++] = i;

	for (size_t k = 0; k < n_order; k++) {
		struct endpoint *ep = &s->endpoints[order[k]];

		error_clear();
		r = call(ep->registry, args);
		if (r >= 0) {
			/* Only calls by digest teach the order for calls by digest: a tag that
			 * must be resolved at the origin says nothing about where blobs are. */
			if (kind != REQUEST_BY_TAG && ep->by_digest)
				s->preferred = order[k];
			error_clear();
			return r;
		}
		if (r == -ENOMEM || r == -EINVAL || (may_retry && !may_retry(args)))
			return r;
		if (order[k] == origin) {
			r_origin = r;
			error_save(&origin_error);
		} else {
			size_t used = strlen(tried);

			log_debug("mirror '%s' failed, trying the next endpoint: %s", ep->name,
				  error_message() ?: strerror(-r));
			(void)snprintf(tried + used, sizeof(tried) - used, "%s'%s'",
				       used ? ", " : "", ep->name);
		}
	}
	/* The origin is always asked, so its error is the one to report. */
	if (r_origin < 0) {
		(void)error_restore(r_origin, &origin_error);
		if (*tried)
			(void)error_set(r_origin, "%s (mirrors tried first: %s)",
					error_message() ?: strerror(-r_origin), tried);
		return r_origin;
	}
	return r;
}

bool source_retry_bad(struct source *s, struct blob_retry *rt)
{
	size_t serving = 0, k;

	if (s->local)
		return false;  /* one copy: reading it again gives the same bytes */
	for (size_t i = 0; i < s->n; i++)
		serving += s->endpoints[i].by_digest;
	if (!rt->chosen) {
		rt->endpoint = s->preferred;
		rt->chosen = true;
	}
	if (++rt->tries >= RANGE_BAD_TRIES) {
		if (++rt->moves >= serving)
			return false;
		k = rt->endpoint;
		do
			k = (k + 1) % s->n;
		while (!s->endpoints[k].by_digest);
		log_debug("blob bytes from '%s' failed verification %u times, asking '%s'",
			  s->endpoints[rt->endpoint].name, rt->tries, s->endpoints[k].name);
		rt->endpoint = k;
		rt->tries = 0;
	}
	s->preferred = rt->endpoint;
	return true;
}

static int call_ping(struct registry *r, void *userdata)
{
	(void)userdata;
	return registry_ping(r);
}

int source_ping(struct source *s)
{
	if (s->local)
		return source_local_ping(s->local);
	return source_try(s, REQUEST_ANY, call_ping, NULL, NULL);
}

struct get_manifest_args {
	const char *tag_or_digest;
	char **ret_buf;
	size_t *ret_len;
	char **ret_content_type;
	char *ret_digest;
};

static int call_get_manifest(struct registry *r, void *userdata)
{
	struct get_manifest_args *a = userdata;

	return registry_get_manifest(r, a->tag_or_digest, a->ret_buf, a->ret_len,
				     a->ret_content_type, a->ret_digest);
}

int source_get_manifest(struct source *s, const char *tag_or_digest, char **ret_buf,
			size_t *ret_len, char **ret_content_type, char ret_digest[72])
{
	struct get_manifest_args a = { tag_or_digest, ret_buf, ret_len, ret_content_type,
				       ret_digest };

	if (s->local)
		return source_local_get_manifest(s->local, tag_or_digest, ret_buf, ret_len,
						 ret_content_type, ret_digest);

	/* A tag has no ':'; a digest is "algorithm:hex". */
	return source_try(s, strchr(tag_or_digest, ':') ? REQUEST_BY_DIGEST : REQUEST_BY_TAG,
			  call_get_manifest, &a, NULL);
}

struct get_blob_args {
	const char *digest;
	size_t max;
	char **ret_buf;
	size_t *ret_len;
};

static int call_get_blob(struct registry *r, void *userdata)
{
	struct get_blob_args *a = userdata;

	return registry_get_blob(r, a->digest, a->max, a->ret_buf, a->ret_len);
}

int source_get_blob(struct source *s, const char *digest, size_t max, char **ret_buf,
		    size_t *ret_len)
{
	struct get_blob_args a = { digest, max, ret_buf, ret_len };

	if (s->local)
		return source_local_get_blob(s->local, digest, max, ret_buf, ret_len);

	return source_try(s, REQUEST_BY_DIGEST, call_get_blob, &a, NULL);
}

/* One stream over the endpoints: the caller's sink, counting what it took over every
 * endpoint tried, so that the next endpoint is asked only for what the sink has not had. */
struct stream_blob_args {
	const char *digest;
	uint64_t offset, len;   /* len REGISTRY_TO_END: to the end */
	int (*sink)(void *userdata, const void *buf, size_t n);
	void *userdata;
	uint64_t delivered;     /* bytes the sink took */
	bool sink_failed;
};

static int counted_sink_write(void *userdata, const void *buf, size_t n)
{
	struct stream_blob_args *a = userdata;
	int r;

	r = a->sink(a->userdata, buf, n);
	if (r < 0)
		a->sink_failed = true;
	else
		a->delivered += n;
	return r;
}

static int call_stream_blob(struct registry *r, void *userdata)
{
	struct stream_blob_args *a = userdata;

	return registry_stream_blob(r, a->digest, a->offset + a->delivered,
				    a->len == REGISTRY_TO_END ? a->len : a->len - a->delivered,
				    counted_sink_write, a);
}

static bool stream_may_retry(void *userdata)
{
	struct stream_blob_args *a = userdata;

	return !a->sink_failed && (a->len == REGISTRY_TO_END || a->delivered < a->len);
}

int source_stream_blob(struct source *s, const char *digest, uint64_t offset, uint64_t len,
		       int (*sink)(void *userdata, const void *buf, size_t n), void *userdata)
{
	struct stream_blob_args a = {
		.digest = digest, .offset = offset, .len = len, .sink = sink, .userdata = userdata,
	};

	if (s->local)
		return source_local_stream_blob(s->local, digest, offset, len, sink, userdata);
	if (len == 0)
		return 0;
	return source_try(s, REQUEST_BY_DIGEST, call_stream_blob, &a, stream_may_retry);
}

struct range_buffer {
	uint8_t *buf;
	size_t filled;
};

static int range_buffer_write(void *userdata, const void *buf, size_t n)
{
	struct range_buffer *b = userdata;

	memcpy(b->buf + b->filled, buf, n);
	b->filled += n;
	return 0;
}

int source_get_blob_range(struct source *s, const char *digest, uint64_t offset, size_t len,
			  void *buf)
{
	struct range_buffer b = { .buf = buf };

	/* The stream hands over exactly the range's bytes, each once: the buffer cannot
	 * overflow. */
	return source_stream_blob(s, digest, offset, len, range_buffer_write, &b);
}

struct head_manifest_args {
	const char *tag_or_digest;
	char *ret_digest;
	char **ret_content_type;
};

static int call_head_manifest(struct registry *r, void *userdata)
{
	struct head_manifest_args *a = userdata;

	return registry_head_manifest(r, a->tag_or_digest, a->ret_digest, a->ret_content_type);
}

int source_head_manifest(struct source *s, const char *tag_or_digest, char ret_digest[72],
			 char **ret_content_type)
{
	struct head_manifest_args a = { tag_or_digest, ret_digest, ret_content_type };

	/* image.c does not HEAD local images: they are read from disk anyway. */
	if (s->local)
		return -EOPNOTSUPP;
	return source_try(s, strchr(tag_or_digest, ':') ? REQUEST_BY_DIGEST : REQUEST_BY_TAG,
			  call_head_manifest, &a, NULL);
}

void source_expect_blob_size(struct source *s, const char *digest, uint64_t size)
{
	/* Every endpoint serves the same blob; a local source checks sizes itself. */
	for (size_t i = 0; i < s->n; i++)
		registry_expect_blob_size(s->endpoints[i].registry, digest, size);
}

/* ---- an image's range source (range_source.h): a source per connection ---- */

struct source_range {
	struct range_source base;
	struct reference *ref;
	struct registry_options ro;    /* strings owned by the fields below */
	char *username, *password, *cert_dir, *scheme;
	struct credentials_options *credentials;
	bool cancel;                   /* atomic; ro.cancel points here */
};

struct source_conn {
	struct range_conn base;
	struct source *source;
};

static int source_range_connect(struct range_source *rs, struct range_conn **ret)
{
	struct source_range *sr = (struct source_range *)rs;
	_cleanup_free_ struct source_conn *c = NULL;
	int r;

	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	r = source_new(sr->ref, &sr->ro, &c->source);
	if (r < 0)
		return r;
	c->base.source = rs;
	*ret = &TAKE_PTR(c)->base;
	return 0;
}

static int source_range_stream(struct range_conn *rc, const char *digest, uint64_t size,
			       uint64_t offset, uint64_t len,
			       int (*sink)(void *userdata, const void *buf, size_t n),
			       void *userdata)
{
	struct source_conn *c = (struct source_conn *)rc;

	/* Content-Range totals must then match the manifest's size. */
	if (size > 0)
		source_expect_blob_size(c->source, digest, size);
	return source_stream_blob(c->source, digest, offset, len, sink, userdata);
}

static bool source_range_retry_bad(struct range_conn *rc, struct blob_retry *rt)
{
	return source_retry_bad(((struct source_conn *)rc)->source, rt);
}

static void source_range_disconnect(struct range_conn *rc)
{
	struct source_conn *c = (struct source_conn *)rc;

	source_free(c->source);
	free(c);
}

static void source_range_cancel(struct range_source *rs)
{
	__atomic_store_n(&((struct source_range *)rs)->cancel, true, __ATOMIC_RELAXED);
}

static void source_range_free(struct range_source *rs)
{
	struct source_range *sr = (struct source_range *)rs;

	reference_free(sr->ref);
	free(sr->username);
	if (sr->password)
		explicit_bzero(sr->password, strlen(sr->password));
	free_many(sr->password, sr->cert_dir, sr->scheme);
	credentials_options_free(sr->credentials);
	free(sr);
}

static const struct range_source_ops source_range_ops = {
	.connect = source_range_connect,
	.stream = source_range_stream,
	.retry_bad = source_range_retry_bad,
	.disconnect = source_range_disconnect,
	.cancel = source_range_cancel,
	.free = source_range_free,
};

static int strdup_opt(const char *s, char **ret)
{
	*ret = NULL;
	if (!s)
		return 0;
	*ret = strdup(s);
	return *ret ? 0 : -ENOMEM;
}

int source_range_new(const struct reference *ref, const struct registry_options *o,
		     struct range_source **ret)
{
	struct source_range *sr;
	int r;

	sr = calloc(1, sizeof(*sr));
	if (!sr)
		return -ENOMEM;
	sr->base.ops = &source_range_ops;
	if (o)
		sr->ro = *o;
	r = reference_dup(ref, &sr->ref);
	if (r >= 0 && (strdup_opt(sr->ro.username, &sr->username) < 0 ||
		       strdup_opt(sr->ro.password, &sr->password) < 0 ||
		       strdup_opt(sr->ro.cert_dir, &sr->cert_dir) < 0 ||
		       strdup_opt(sr->ro.scheme, &sr->scheme) < 0 ||
		       credentials_options_dup(sr->ro.credentials, &sr->credentials) < 0))
		r = -ENOMEM;
	if (r < 0) {
		source_range_free(&sr->base);
		return r;
	}
	sr->ro.username = sr->username;
	sr->ro.password = sr->password;
	sr->ro.cert_dir = sr->cert_dir;
	sr->ro.scheme = sr->scheme;
	sr->ro.credentials = sr->credentials;
	sr->ro.cancel = &sr->cancel;
	sr->base.timeout_ms = sr->ro.timeout_ms > 0 ? sr->ro.timeout_ms : 0;
	*ret = &sr->base;
	return 0;
}
