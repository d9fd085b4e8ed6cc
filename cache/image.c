/*
 * cache/image.c: the pull pipeline.  A reference resolves to a platform manifest digest (from
 * the index when the cache already knows it and the policy allows, else from the registry);
 * each layer not yet indexed is streamed once from the registry through a pipe into
 * layer_tar_index(), hashed on the way, and its entries are committed only when the whole
 * blob matched its digest.  Layers of one digest are imported by one process at a time (a
 * lock file per layer); the others wait and then find the layer indexed.
 */
#include "image.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <sys/file.h>
#include <sys/stat.h>

#include "cache/config.h"
#include "cache/gc.h"
#include "cache/format/layer_lazy.h"
#include "cache/format/layer_tar.h"
#include "cache/seek.h"
#include "cache/base/error.h"
#include "cache/base/log.h"
#include "cache/base/trace.h"
#include "cache/registry/source.h"
#include "cache/base/util.h"

#define MANIFEST_MAX_DEPTH 4
#define CONFIG_MAX (4u << 20)

static void image_done(struct image *img)
{
	free(img->ref);
	free(img->manifest_digest);
	manifest_free(img->manifest);
	image_config_free(img->config);
	free(img->registry_scheme);
	profile_fetched_done(&img->profile_lookup.fetched);
}
DEFINE_FREE_FUNC(struct image, image_free, image_done);

/* A failure of the pull, of class @kind, with its message (error.h) set from @fmt. */
static int pull_fail(enum pull_failure *err, enum pull_failure kind, int r, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int pull_fail(enum pull_failure *err, enum pull_failure kind, int r, const char *fmt, ...)
{
	va_list ap;

	*err = kind;
	va_start(ap, fmt);
	(void)error_setv(r, fmt, ap);
	va_end(ap);
	return r;
}

/* The same, keeping the message of the call that failed (the registry's, the parser's). */
static int pull_kept(enum pull_failure *err, enum pull_failure kind, int r)
{
	*err = kind;
	return r;
}

/* The source of the pull's registry requests.  A blocked registry is the registry's refusal
 * (-EPERM); a registries.conf that does not parse is the user's to fix (-EINVAL). */
static int pull_source_new(const struct reference *ref, const struct registry_options *ro,
			   struct source **ret, enum pull_failure *err)
{
	int r;

	error_clear();
	r = source_new(ref, ro, ret);
	if (r < 0 && error_message())
		return pull_kept(err, r == -EPERM ? PULL_FAILURE_REGISTRY : PULL_FAILURE_USAGE, r);
	if (r < 0)
		return pull_fail(err, PULL_FAILURE_REGISTRY, r, "cannot set up registry client");
	return 0;
}

/* A config names one diff_id for each layer of the manifest, or the image is refused. */
static int image_check_diff_id_count(const struct image *img, enum pull_failure *err)
{
	size_t n = strv_length(img->config->diff_ids);

	if (n == img->manifest->n_layers)
		return 0;
	return pull_fail(err, PULL_FAILURE_REGISTRY, -EBADMSG,
			 "config %s lists %zu diff_ids for the manifest's %zu layers",
			 img->manifest->config_digest, n, img->manifest->n_layers);
}

/* The image as the cache knows it, or -ENOENT. */
static int image_load_local(struct cache *c, const char *digest, struct image **ret)
{
	_cleanup_(image_freep) struct image *img = NULL;
	_cleanup_free_ char *media_type = NULL, *manifest = NULL, *config = NULL;
	size_t manifest_len, config_len;
	int r;

	r = index_db_image_get(c->db, digest, &media_type, &manifest, &manifest_len, &config,
			       &config_len);
	if (r < 0)
		return r;

	img = calloc(1, sizeof(*img));
	if (!img)
		return -ENOMEM;
	img->manifest_digest = strdup(digest);
	if (!img->manifest_digest)
		return -ENOMEM;
	r = manifest_parse(manifest, manifest_len, media_type, &img->manifest);
	if (r < 0)
		return r;
	r = image_config_parse(config, config_len, &img->config);
	if (r < 0)
		return r;

	*ret = TAKE_PTR(img);
	return 0;
}

/* Fetches the manifest for @tag_or_digest, following indexes to @want's entry. */
static int fetch_platform_manifest(struct source *reg, const char *tag_or_digest,
				   const struct platform *want, char **ret_buf, size_t *ret_len,
				   char **ret_media_type, char **ret_digest,
				   char ret_top_digest[DIGEST_STRING_MAX], enum pull_failure *err)
{
	_cleanup_free_ char *next = strdup(tag_or_digest);

	if (!next)
		return -ENOMEM;

	for (unsigned depth = 0; depth < MANIFEST_MAX_DEPTH; depth++) {
		_cleanup_free_ char *buf = NULL, *content_type = NULL, *media_type = NULL;
		_cleanup_free_ char *child = NULL, *child_type = NULL, *available = NULL;
		char digest[DIGEST_STRING_MAX];
		size_t len;
		int r;

		r = source_get_manifest(reg, next, &buf, &len, &content_type, digest);
		if (r < 0)
			return pull_kept(err, PULL_FAILURE_REGISTRY, r);
		if (depth == 0)
			memcpy(ret_top_digest, digest, DIGEST_STRING_MAX);

		r = manifest_detect_media_type(buf, len, content_type, &media_type);
		if (r < 0)
			return pull_fail(err, PULL_FAILURE_REGISTRY, r,
					 "manifest '%s' has an unknown media type '%s'", digest,
					 content_type ? content_type : "");

		if (media_type_is_manifest(media_type)) {
			*ret_buf = TAKE_PTR(buf);
			*ret_len = len;
			*ret_media_type = TAKE_PTR(media_type);
			*ret_digest = strdup(digest);
			return *ret_digest ? 0 : -ENOMEM;
		}

		r = index_select_platform(buf, len, want, &child, &child_type, &available);
		if (r == -ENOENT) {
			_cleanup_free_ char *p = platform_to_string(want);

			return pull_fail(err, PULL_FAILURE_REGISTRY, r,
					 "image index '%s' has no manifest for platform '%s' (it has: %s)",
					 digest, p ? p : "?", available ? available : "none");
		}
		if (r < 0)
			return pull_fail(err, PULL_FAILURE_REGISTRY, r,
					 "cannot parse image index '%s'", digest);
		free(next);
		next = TAKE_PTR(child);
	}
	return pull_fail(err, PULL_FAILURE_REGISTRY, -ELOOP,
			 "image indexes nested deeper than %d levels", MANIFEST_MAX_DEPTH);
}

/* What a pull fetched and records only once every layer is in, so that a refused layer leaves
 * no image and no tag behind (docs/security.md, "Integrity rules"). */
struct pulled {
	char *media_type, *manifest, *config;
	size_t manifest_len, config_len;
	char top_digest[DIGEST_STRING_MAX];  /* what the reference resolved to first */
};

static void pulled_done(struct pulled *f)
{
	free(f->media_type);
	free(f->manifest);
	free(f->config);
	*f = (struct pulled){};
}

/* The manifest alone: the config comes while the TOCs do (image_fetch_config()). */
static int image_fetch_remote(struct source *reg, const char *tag_or_digest,
			      const struct platform *want, struct image **ret,
			      struct pulled *ret_pulled, enum pull_failure *err)
{
	_cleanup_(image_freep) struct image *img = NULL;
	_cleanup_free_ char *buf = NULL, *media_type = NULL;
	size_t len = 0;
	int r;

	img = calloc(1, sizeof(*img));
	if (!img)
		return -ENOMEM;

	r = fetch_platform_manifest(reg, tag_or_digest, want, &buf, &len, &media_type,
				    &img->manifest_digest, ret_pulled->top_digest, err);
	if (r < 0)
		return r;

	error_clear();
	r = manifest_parse(buf, len, media_type, &img->manifest);
	if (r < 0)
		return pull_kept(err, PULL_FAILURE_REGISTRY,
				 error_wrap(r, "manifest %s", img->manifest_digest));

	ret_pulled->media_type = TAKE_PTR(media_type);
	ret_pulled->manifest = TAKE_PTR(buf);
	ret_pulled->manifest_len = len;
	*ret = TAKE_PTR(img);
	return 0;
}

/* The config of @img, whose manifest came from @reg: parsed into img->config, its bytes kept
 * in @pulled for pull_record(). */
static int image_fetch_config(struct source *reg, struct image *img, struct pulled *pulled,
			      enum pull_failure *err)
{
	_cleanup_free_ char *config = NULL;
	size_t config_len = 0;
	int r;

	r = source_get_blob(reg, img->manifest->config_digest, CONFIG_MAX, &config, &config_len);
	if (r < 0)
		return pull_kept(err, PULL_FAILURE_REGISTRY,
				 error_wrap(r, "config %s", img->manifest->config_digest));
	r = image_config_parse(config, config_len, &img->config);
	if (r < 0)
		return pull_fail(err, PULL_FAILURE_REGISTRY, r, "cannot parse image config '%s'",
				 img->manifest->config_digest);
	r = image_check_diff_id_count(img, err);
	if (r < 0)
		return r;
	pulled->config = TAKE_PTR(config);
	pulled->config_len = config_len;
	return 0;
}

/* "host/repo@DIGEST": the index row that maps a top-level digest (an image index, or the
 * manifest itself) and a platform to the platform manifest's digest. */
static char *ref_by_digest(const struct reference *ref, const char *digest)
{
	struct reference d = {
		.domain = ref->domain, .repository = ref->repository, .digest = (char *)digest,
	};

	return reference_to_string(&d);
}

/* Resolves @ref's tag with a HEAD, as Docker Hub counts only manifest GETs against its pull
 * limit: an unchanged tag whose image the cache holds costs one HEAD and nothing else.
 * Returns 1 with *ret_img when the cache has the image the tag names; 0 with @ret_digest set
 * to GET the manifest by that digest (verified against it); 0 with @ret_digest empty to GET by
 * tag (the registry refused HEAD or sent no digest, 429/5xx outlasted the retries; or it
 * answered 404, which the GET confirms with an error document that says whether the tag or
 * the repository is unknown); < 0 when access is refused after authenticating or the
 * registry cannot be reached. */
static int resolve_tag(struct cache *c, struct source *reg, const struct reference *ref,
		       const char *platform, struct image **ret_img,
		       char ret_digest[DIGEST_STRING_MAX], enum pull_failure *err)
{
	_cleanup_free_ char *by_digest = NULL, *manifest_digest = NULL;
	char digest[DIGEST_STRING_MAX];
	int r;

	ret_digest[0] = 0;
	r = source_head_manifest(reg, ref->tag, digest, NULL);
	/* Refused, unreachable or out of time after the retries: a GET would not fare better. */
	if (r == -EACCES || r == -EHOSTUNREACH || r == -ETIMEDOUT || r == -ENOMEM)
		return pull_kept(err, PULL_FAILURE_REGISTRY, r);
	if (r < 0) {
		log_debug("cannot resolve tag '%s' with HEAD (%s), getting it by tag", ref->tag,
			  error_message() ?: strerror(-r));
		error_clear();
		return 0;
	}

	by_digest = ref_by_digest(ref, digest);
	if (!by_digest)
		return -ENOMEM;
	r = index_db_ref_get(c->db, by_digest, platform, &manifest_digest);
	if (r < 0 && r != -ENOENT)
		return pull_fail(err, PULL_FAILURE_CACHE, r, "cannot read index in '%s'", c->dir);
	r = image_load_local(c, manifest_digest ?: digest, ret_img);
	if (r >= 0) {
		log_debug("tag '%s' is %s, which the cache has", ref->tag, digest);
		return 1;
	}
	if (r != -ENOENT)
		log_debug_errno(r, "cached image '%s' unusable, refetching: %m",
				manifest_digest ?: digest);
	error_clear();
	memcpy(ret_digest, digest, DIGEST_STRING_MAX);
	return 0;
}

struct layer_stream {
	struct source *reg;
	const struct layer_desc *layer;
	const struct pull_options *opts;
	unsigned index, n_layers;
	int fd;                      /* write end of the pipe to the indexer */
	struct digest_ctx *hash;
	uint64_t received;
	uint64_t over;               /* bytes seen when they passed the descriptor's size, or 0 */
	bool bad;                    /* the bytes failed verification (layer_verdict()) */
	int r;
	struct error_carry error;    /* the thread's message about r */
};

static int layer_stream_sink(void *userdata, const void *buf, size_t n)
{
	struct layer_stream *s = userdata;

	if (s->received + n > s->layer->size) {
		s->over = s->received + n;
		return -EFBIG;  /* the manifest's size is a limit, not a hint */
	}
	digest_ctx_update(s->hash, buf, n);
	s->received += n;
	if (s->opts->progress)
		s->opts->progress(s->opts->progress_userdata, s->index, s->n_layers, s->received,
				  s->layer->size);
	return write_all(s->fd, buf, n);
}

static void *layer_stream_thread(void *userdata)
{
	struct layer_stream *s = userdata;

	s->r = source_stream_blob(s->reg, s->layer->digest, 0, REGISTRY_TO_END, layer_stream_sink,
				  s);
	error_save(&s->error);
	(void)close(TAKE_FD(s->fd));
	return NULL;
}

static void drain_fd(int fd)
{
	char buf[64 * 1024];

	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));

		if (n == 0 || (n < 0 && errno != EINTR))
			return;
	}
}

struct lazy_source {
	struct source *reg;
	const struct layer_desc *layer;
	bool failed_at_registry;
};

static int layer_lock(struct cache *c, const char *digest, int *ret_fd)
{
	_cleanup_free_ char *name = NULL;

	if (c->read_only)
		return error_set(-EROFS, "layer '%s' is not in read-only cache '%s'", digest, c->dir);
	if (asprintf(&name, "%s.lock", digest + strlen("sha256:")) < 0)
		return -ENOMEM;
	return cache_lock_file(c->dir, name, LOCK_EX, ret_fd);
}

static void remove_blobs(struct cache *c, char **digests)
{
	for (char **d = digests; d && *d; d++) {
		int r = blob_store_remove(c->bs, *d);

		if (r < 0 && r != -ENOENT)
			log_debug_errno(r, "cannot remove blob '%s': %m", *d);
	}
}

static int registry_range_read(void *userdata, uint64_t offset, size_t len, void *buf)
{
	struct lazy_source *src = userdata;
	int r;

	r = source_get_blob_range(src->reg, src->layer->digest, offset, len, buf);
	if (r < 0)
		src->failed_at_registry = true;
	return r;
}

/* One lazy layer whose TOC is being fetched: only its footer and TOC are read at mount;
 * contents come later, chunk by chunk. */
struct toc_job {
	const struct layer_desc *layer;
	enum layer_format format;
	struct source *reg;        /* a client of its own: clients are single-threaded */
	struct layer_writer *w;
	int lock_fd;
	bool started;
	pthread_t thread;
	struct lazy_source src;
	size_t n_entries;          /* added to w so far */
	int r;
	struct error_carry error;  /* the thread's message about r */
};

static int toc_job_add(void *userdata, const struct entry *e)
{
	struct toc_job *j = userdata;

	j->n_entries++;
	return layer_writer_add(j->w, e);
}

/* The footer and TOC are read with Range requests; bytes that fail verification (wrong, or a
 * well-framed answer cut short) are fetched again as blobs are (layer_import()): before the
 * TOC verified, no entry was added, so a try leaves nothing to undo.  A TOC that verified and
 * does not parse is the image's, and is not fetched again. */
static void *toc_job_thread(void *userdata)
{
	struct toc_job *j = userdata;
	struct blob_range_reader rd = { .read = registry_range_read, .userdata = &j->src };
	struct blob_retry rt = {};
	int64_t t0 = trace_enabled() ? trace_now_us() : 0;

	for (;;) {
		j->src.failed_at_registry = false;
		j->r = layer_lazy_parse(j->layer, j->format, &rd, toc_job_add, j);
		if (j->r >= 0 || (j->r != -EBADMSG && j->r != -EPROTO) || j->n_entries > 0 ||
		    !source_retry_bad(j->reg, &rt))
			break;
		log_debug("the TOC of layer %s failed verification (%s), fetching it again",
			  j->layer->digest, error_message() ?: strerror(-j->r));
		error_clear();
	}
	if (j->r >= 0)
		error_clear();  /* a failed try's message is no failure of the pull */
	error_save(&j->error);
	trace_step("toc", j->layer->digest, t0, j->n_entries);
	return NULL;
}

/* Commits a finished job's entries, or turns its failure into the pull's error. */
static int toc_job_finish(struct cache *c, struct toc_job *j, enum pull_failure *err)
{
	const char *fmt = layer_format_to_string(j->format);
	int64_t t0 = trace_enabled() ? trace_now_us() : 0;
	int r = j->r;

	if (r < 0) {
		(void)error_restore(r, &j->error);
		if (j->src.failed_at_registry)
			return pull_kept(err, PULL_FAILURE_REGISTRY,
					 error_wrap(r, "cannot fetch the TOC of layer %s",
						    j->layer->digest));
		if (error_message())
			return pull_kept(err, PULL_FAILURE_REGISTRY,
					 error_wrap(r, "layer %s (%s)", j->layer->digest, fmt));
		if (r == -EBADMSG)
			return pull_fail(err, PULL_FAILURE_REGISTRY, r,
					 "the %s TOC of layer '%s' failed verification or is malformed",
					 fmt, j->layer->digest);
		return pull_fail(err, PULL_FAILURE_REGISTRY, r, "cannot read the %s TOC of layer '%s'",
				 fmt, j->layer->digest);
	}
	r = layer_writer_commit(TAKE_PTR(j->w));
	if (r < 0)
		return pull_fail(err, PULL_FAILURE_CACHE, r, "cannot index layer '%s' in '%s'",
				 j->layer->digest, c->dir);
	trace_step("commit", j->layer->digest, t0, j->n_entries);
	return 0;
}

static int toc_job_prepare(struct cache *c, const struct reference *ref,
			   const struct registry_options *ro, struct toc_job *j,
			   enum pull_failure *err)
{
	int r;

	r = layer_lock(c, j->layer->digest, &j->lock_fd);
	if (r < 0)
		return pull_fail(err, PULL_FAILURE_CACHE, r, "cannot lock layer '%s' in '%s'",
				 j->layer->digest, c->dir);
	/* Another process may have indexed it while we waited for the lock. */
	r = index_db_layer_is_indexed(c->db, j->layer->digest);
	if (r != 0)
		return r < 0 ? pull_fail(err, PULL_FAILURE_CACHE, r, "cannot read index") : 0;
	r = index_db_layer_begin_format(c->db, j->layer->digest, j->layer->media_type,
					layer_format_to_string(j->format), &j->w);
	if (r < 0)
		return pull_fail(err, PULL_FAILURE_CACHE, r, "cannot index layer '%s' in '%s'",
				 j->layer->digest, c->dir);
	r = source_new(ref, ro, &j->reg);
	if (r < 0)
		return pull_fail(err, PULL_FAILURE_REGISTRY, r, "cannot set up registry client");
	source_expect_blob_size(j->reg, j->layer->digest, j->layer->size);
	j->src = (struct lazy_source) { .reg = j->reg, .layer = j->layer };
	return 0;
}

/* Indexes every lazy layer of @img that is not indexed yet, their TOCs fetched in parallel,
 * a registry client each: on a registry that takes ~10 ms per request, an image of many
 * layers would otherwise wait for two round trips per layer one after the other.  @reg has
 * pinged, so the others start from its scheme. */
static void count_registry(struct image *img, struct source *reg)
{
	uint64_t requests, bytes;

	if (!reg)
		return;
	source_get_counters(reg, &requests, &bytes);
	img->pull_requests += requests;
	img->pull_bytes += bytes;
}

/* Starts the thread that fetches and indexes lazy layer @j's TOC, unless the cache has the
 * layer; the first layer to fetch sets up *@reg (and @ro's scheme, which the jobs' own clients
 * start from). */
static int toc_job_start(struct cache *c, const struct reference *ref,
			 const struct pull_options *o, const struct registry_options *base,
			 struct source **reg, struct registry_options *ro, struct toc_job *j,
			 enum pull_failure *err)
{
	int r;

	r = index_db_layer_is_indexed(c->db, j->layer->digest);
	if (r < 0)
		return pull_fail(err, PULL_FAILURE_CACHE, r, "cannot read index in '%s'", c->dir);
	if (r > 0)
		return 0;
	if (o->policy == PULL_NEVER)
		return pull_fail(err, PULL_FAILURE_REGISTRY, -ENOENT,
				 "layer '%s' is not in the cache and pulling is disabled",
				 j->layer->digest);
	if (!*reg) {
		r = pull_source_new(ref, base, reg, err);
		if (r < 0)
			return r;
	}
	if (!ro->scheme) {
		r = source_scheme(*reg) ? 0 : source_ping(*reg);
		if (r < 0)
			return pull_kept(err, PULL_FAILURE_REGISTRY, r);
		ro->scheme = source_scheme(*reg);
	}
	r = toc_job_prepare(c, ref, ro, j, err);
	if (r >= 0 && j->w) {
		r = -pthread_create(&j->thread, NULL, toc_job_thread, j);
		j->started = r >= 0;
	}
	return r;
}

/* @meanwhile (if not NULL) runs on the calling thread while the TOCs are fetched; its failure
 * is the call's, and then no layer is indexed. */
static int import_lazy_layers(struct cache *c, const struct reference *ref,
			      const struct pull_options *o, const struct registry_options *base,
			      struct source **reg, struct image *img,
			      int (*meanwhile)(void *userdata), void *userdata,
			      enum pull_failure *err)
{
	const struct manifest *m = img->manifest;
	struct registry_options ro = *base;
	struct toc_job *jobs;
	int r = 0;

	jobs = calloc(m->n_layers, sizeof(*jobs));
	if (!jobs)
		return -ENOMEM;

	for (size_t i = 0; i < m->n_layers && r >= 0; i++) {
		struct toc_job *j = &jobs[i];

		j->lock_fd = -EBADF;
		j->layer = &m->layers[i];
		j->format = layer_format_detect(j->layer);
		if (j->format == LAYER_FORMAT_TAR)
			continue;
		r = toc_job_start(c, ref, o, base, reg, &ro, j, err);
	}
	if (r >= 0 && meanwhile)
		r = meanwhile(userdata);
	for (size_t i = 0; i < m->n_layers; i++)
		if (jobs[i].started)
			(void)pthread_join(jobs[i].thread, NULL);
	/* In layer order, so the first failing layer is the one reported. */
	for (size_t i = 0; i < m->n_layers; i++) {
		struct toc_job *j = &jobs[i];

		if (r >= 0 && j->started)
			r = toc_job_finish(c, j, err);
		layer_writer_abort(j->w);
		count_registry(img, j->reg);
		source_free(j->reg);
		closep(&j->lock_fd);
	}
	free(jobs);
	return r;
}

/* What a streamed layer came to: its stream's failure (the thread's @s->r), its size and
 * digest against the descriptor's, then the indexer's @r.  A layer that fails verification
 * is the registry's failure even when the indexer stopped first (bytes that are not what the
 * digest says rarely parse). */
static int layer_verdict(struct cache *c, struct layer_stream *s, int r, enum pull_failure *err)
{
	const struct layer_desc *layer = s->layer;
	char got[DIGEST_STRING_MAX];

	if (s->r < 0 && s->r != -EPIPE) {
		(void)error_restore(s->r, &s->error);
		s->bad = s->over > 0;
		if (s->over > 0)
			return pull_fail(err, PULL_FAILURE_REGISTRY, -EBADMSG,
					 "layer %s failed verification: the blob is larger than the "
					 "manifest says (%llu bytes; %llu arrived): nothing of it was "
					 "kept", layer->digest, (unsigned long long)layer->size,
					 (unsigned long long)s->over);
		return pull_kept(err, PULL_FAILURE_REGISTRY,
				 error_wrap(s->r, "cannot fetch layer %s", layer->digest));
	}
	digest_ctx_final(s->hash, got);
	s->bad = (r >= 0 || r == -EBADMSG) &&
		 (s->received != layer->size || !streq(got, layer->digest));
	if ((r >= 0 || r == -EBADMSG) && s->received != layer->size)
		return pull_fail(err, PULL_FAILURE_REGISTRY, -EBADMSG,
				 "layer %s failed verification: the blob is %llu bytes, the manifest "
				 "says %llu: nothing of it was kept", layer->digest,
				 (unsigned long long)s->received, (unsigned long long)layer->size);
	if ((r >= 0 || r == -EBADMSG) && !streq(got, layer->digest))
		return pull_fail(err, PULL_FAILURE_REGISTRY, -EBADMSG,
				 "layer '%s' failed verification (got %s, %llu bytes): nothing of "
				 "it was kept", layer->digest, got, (unsigned long long)s->received);
	if (r == -EBADMSG && error_message())
		return pull_kept(err, PULL_FAILURE_REGISTRY,
				 error_wrap(r, "layer '%s' is not a valid tar archive", layer->digest));
	if (r == -EBADMSG)
		return pull_fail(err, PULL_FAILURE_REGISTRY, r,
				 "layer '%s' is not a valid tar archive", layer->digest);
	/* The bytes were what the digest says (or the stream stopped early): the layer itself
	 * is over a limit of layer_tar.h, not the network's fault. */
	if (r == -EFBIG)
		return pull_kept(err, PULL_FAILURE_REGISTRY,
				 error_wrap(r, "layer '%s' is refused", layer->digest));
	if (r < 0)
		return pull_fail(err, PULL_FAILURE_CACHE, r, "cannot store layer '%s' in '%s'",
				 layer->digest, c->dir);
	return 0;
}

/* A whole layer's uncompressed stream must be what the config's diff_id says; the writer
 * records it, for the next image that names this layer. */
static int layer_diff_id_verdict(struct layer_writer *w, const struct layer_desc *layer,
				 const char *config_digest, const char *want, const char *got,
				 enum pull_failure *err)
{
	if (!streq(got, want))
		return pull_fail(err, PULL_FAILURE_REGISTRY, -EBADMSG,
				 "layer %s failed verification: its uncompressed content is %s, the "
				 "config %s says %s: nothing of it was kept", layer->digest, got,
				 config_digest, want);
	return w ? layer_writer_set_diff_id(w, got) : 0;
}

/* The indexer stored the files unsynced: one syncfs makes them all durable before the index
 * names them in one transaction.  Always frees @w. */
static int layer_commit(struct cache *c, struct layer_writer *w, const struct layer_desc *layer,
			enum pull_failure *err)
{
	int r;

	r = blob_store_sync(c->bs);
	if (r < 0) {
		layer_writer_abort(w);
		return pull_fail(err, PULL_FAILURE_CACHE, r, "cannot sync cache '%s'", c->dir);
	}
	r = layer_writer_commit(w);
	if (r < 0)
		return pull_fail(err, PULL_FAILURE_CACHE, r, "cannot index layer '%s' in '%s'",
				 layer->digest, c->dir);
	return 0;
}

/* Whether the cache holds a seek index of @layer built here. */
static bool seek_trusted(struct cache *c, const struct layer_desc *layer)
{
	bool trusted = false;

	return index_db_seek_get(c->db, layer->digest, NULL, &trusted) == 0 && trusted;
}

/* Keeps the seek index a layer's import built on the way (no extra download): a failure only
 * means the layer gets none. */
static int seek_finish(struct cache *c, const struct layer_desc *layer, struct seek_builder *sb,
		       uint64_t tar_size, bool seek_only, enum pull_failure *err)
{
	_cleanup_free_ void *buf = NULL;
	char digest[DIGEST_STRING_MAX];
	size_t len;
	int r;

	r = seek_builder_finish(sb, layer->digest, layer->size, tar_size, &buf, &len);
	if (r >= 0)
		r = seek_store_built(c, layer->digest, buf, len, digest);
	if (r >= 0 && seek_only)
		r = seek_layer_reindex(c, layer);
	if (r >= 0 || !seek_only) {
		if (r < 0)
			log_debug_errno(r, "layer '%s' gets no seek index: %s", layer->digest,
					error_message() ?: "cannot store it");
		error_clear();
		return 0;
	}
	if (error_message())
		return pull_kept(err, PULL_FAILURE_CACHE,
				 error_wrap(r, "cannot index layer '%s'", layer->digest));
	return pull_fail(err, PULL_FAILURE_CACHE, r, "cannot keep the seek index of layer '%s' in "
			 "'%s'", layer->digest, c->dir);
}

/* What a layer's import does with its seek index. */
enum seek_mode {
	SEEK_OFF,       /* nothing */
	SEEK_ALSO,      /* builds and keeps it on the way, when it is a gzip tar layer */
	SEEK_ONLY,      /* only that: the layer's files are hashed, not stored or indexed */
	SEEK_STORE,     /* as SEEK_ONLY, and every chunk of the index stored (prewarm) */
};

/* Where layer_tar_index_seek() puts what it reads from a layer stream. */
struct layer_index_to {
	struct blob_store *bs;           /* NULL: index only, keep no file */
	const struct layer_limits *limits;
	struct layer_writer *w;
	char ***created;
	struct seek_builder *sb;
	char *diff_id;
	uint64_t *tar_size;
};

/* Streams @s's layer (a thread writing into a pipe) into the tar reader; returns the reader's
 * result once the stream ended (*ret_ran true), or why no stream could start. */
static int layer_stream_index(struct layer_stream *s, const struct layer_index_to *to,
			      bool *ret_ran)
{
	_cleanup_close_ int read_fd = -EBADF;
	pthread_t thread;
	int pipe_fds[2], r;

	*ret_ran = false;
	if (pipe2(pipe_fds, O_CLOEXEC) < 0)
		return -errno;
	read_fd = pipe_fds[0];
	s->fd = pipe_fds[1];
	r = -pthread_create(&thread, NULL, layer_stream_thread, s);
	if (r < 0) {
		(void)close(TAKE_FD(s->fd));
		return r;
	}
	*ret_ran = true;
	error_clear();
	r = layer_tar_index_seek(read_fd, to->bs, to->limits, to->w, to->created, to->sb,
				 to->diff_id, to->tar_size);
	/* A layer that does not parse is usually one whose bytes are not what the digest says:
	 * read it to the end so the error can say which.  Any other failure stops the fetch (its
	 * next write fails with EPIPE). */
	if (r == -EBADMSG)
		drain_fd(read_fd);
	(void)close(TAKE_FD(read_fd));
	(void)pthread_join(thread, NULL);
	return r;
}

/* One try at importing @layer: streamed through the indexer, verified, committed, its seek
 * index built on the way as @seek says.  On failure nothing of it is kept; *ret_bad: its
 * bytes failed verification. */
static int layer_import_try(struct cache *c, struct source *reg, const struct pull_options *o,
			    const struct layer_limits *limits, const struct layer_desc *layer,
			    const char *config_digest,
			    const char *diff_id, unsigned index, unsigned n_layers, enum seek_mode seek,
			    enum pull_failure *err, bool *ret_bad)
{
	bool seek_only = seek == SEEK_ONLY || seek == SEEK_STORE;
	struct seek_chunk_store chunks;
	char got_diff_id[DIGEST_STRING_MAX] = "";
	_cleanup_strv_free_ char **created = NULL;
	_cleanup_(seek_builder_freep) struct seek_builder *sb = NULL;
	struct layer_writer *w = NULL;
	uint64_t tar_size = 0;
	struct layer_stream s = {
		.reg = reg, .layer = layer, .opts = o, .index = index, .n_layers = n_layers,
		.fd = -EBADF,
	};
	bool ran;
	int r;

	*ret_bad = false;
	seek_chunk_store_init(&chunks, c->bs);
	r = digest_ctx_new(&s.hash);
	if (r < 0)
		return r;
	r = seek != SEEK_OFF && seek_layer_eligible(layer) ? seek_builder_new(SEEK_SPAN_DEFAULT, &sb)
							      : 0;
	if (r >= 0 && !seek_only)
		r = index_db_layer_begin(c->db, layer->digest, layer->media_type, &w);
	if (r < 0)
		goto finish;
	if (sb && seek == SEEK_STORE)
		seek_builder_set_sink(sb, &chunks.sink);
	r = layer_stream_index(&s, &(struct layer_index_to) {
			.bs = seek_only ? NULL : c->bs, .limits = limits, .w = w,
			.created = &created, .sb = sb, .diff_id = got_diff_id,
			.tar_size = &tar_size,
		}, &ran);
	if (!ran)
		goto finish;
	r = layer_verdict(c, &s, r, err);
	*ret_bad = s.bad;
	if (r < 0)
		goto finish;
	r = layer_diff_id_verdict(w, layer, config_digest, diff_id, got_diff_id, err);
	/* The chunks are durable before the index that names them is. */
	if (r >= 0 && chunks.stored > 0)
		r = blob_store_sync(c->bs);
	if (r >= 0 && sb)
		r = seek_finish(c, layer, sb, tar_size, seek_only, err);
	if (r >= 0 && !seek_only)
		r = layer_commit(c, TAKE_PTR(w), layer, err);
finish:
	if (r < 0) {
		layer_writer_abort(w);
		remove_blobs(c, created);
		remove_blobs(c, chunks.created);
	}
	seek_chunk_store_done(&chunks);
	digest_ctx_free(s.hash);
	return r;
}

/* Imports @layer unless another process did while we waited for its lock.  A layer whose
 * bytes fail verification (wrong, or a well-framed answer cut short: a proxy's accident as
 * often as the registry's) is fetched again: RANGE_BAD_TRIES tries from an endpoint, then
 * from the next mirror (source_retry_bad()); nothing of a failed try is kept. */
static int layer_import(struct cache *c, struct source *reg, const struct pull_options *o,
			const struct layer_limits *limits, const struct layer_desc *layer,
			const char *config_digest, const char *diff_id, unsigned index,
			unsigned n_layers, enum seek_mode seek, enum pull_failure *err)
{
	bool seek_only = seek == SEEK_ONLY || seek == SEEK_STORE;
	_cleanup_close_ int lock_fd = -EBADF;
	struct blob_retry rt = {};
	bool bad;
	int r;

	r = layer_lock(c, layer->digest, &lock_fd);
	if (r < 0)
		return pull_fail(err, PULL_FAILURE_CACHE, r, "cannot lock layer '%s' in '%s'",
				 layer->digest, c->dir);
	/* Another process may have imported it (or its seek index) while we waited for the
	 * lock; a gzip layer with a seek index is indexed from it, lazily, with no download. */
	if (seek == SEEK_STORE)
		r = 0;  /* its chunks are wanted, whatever the index */
	else if (seek_only)
		r = seek_trusted(c, layer);
	else
		r = index_db_layer_is_indexed(c->db, layer->digest);
	if (r == 0 && !seek_only)
		r = seek_layer_import(c, layer);
	if (r != 0)
		return r < 0 ? pull_fail(err, PULL_FAILURE_CACHE, r, "cannot read index") : 0;
	for (;;) {
		r = layer_import_try(c, reg, o, limits, layer, config_digest, diff_id, index,
				     n_layers, seek, err, &bad);
		if (r >= 0 && rt.chosen)
			error_clear();  /* a failed try's message is no failure of the pull */
		if (r >= 0 || !bad || !source_retry_bad(reg, &rt))
			return r;
		log_debug("%s, fetching it again", error_message() ?: "layer failed verification");
	}
}

/* --pull=never and a layer not indexed: a gzip layer whose seek index the cache holds is
 * indexed from it, as an eStargz layer from its TOC (the tree needs no request, reads fetch
 * their chunks as they would); any other layer is an error, nothing fetched. */
static int layer_import_never(struct cache *c, const struct layer_desc *layer,
			      enum pull_failure *err)
{
	_cleanup_close_ int lock_fd = -EBADF;
	int r;

	if (seek_layer_eligible(layer) && !c->read_only &&
	    index_db_seek_get(c->db, layer->digest, NULL, NULL) >= 0) {
		r = layer_lock(c, layer->digest, &lock_fd);
		if (r >= 0)
			r = index_db_layer_is_indexed(c->db, layer->digest);
		if (r == 0)
			r = seek_layer_import(c, layer);
		if (r < 0)
			return pull_fail(err, PULL_FAILURE_CACHE, r, "cannot index layer '%s' in '%s'",
					 layer->digest, c->dir);
		if (r > 0)
			return 0;
	}
	return pull_fail(err, PULL_FAILURE_REGISTRY, -ENOENT,
			 "layer '%s' is not in the cache and pulling is disabled", layer->digest);
}

/* What one pull works with, from its start to its end. */
struct pull {
	struct cache *c;
	const struct reference *ref;
	const struct pull_options *o;
	struct registry_options ro;  /* o->registry; its scheme is learnt on the way */
	struct platform want;
	char *canonical;             /* reference_to_string(ref) */
	char *platform_str;          /* platform_to_string(&want) */
	struct source *reg;          /* made when the registry is first needed */
	int gc_lock_fd;              /* held shared from the first layer on */
	bool resolved;               /* the source was asked what the reference names */
	struct pulled fetched;       /* empty when the cache had the image */
	enum pull_failure *err;
};

static void pull_done(struct pull *p)
{
	source_free(p->reg);
	platform_done(&p->want);
	free(p->canonical);
	free(p->platform_str);
	pulled_done(&p->fetched);
	closep(&p->gc_lock_fd);
}

static int pull_init(struct pull *p)
{
	const char *platform = p->o->platform;
	int r;

	r = platform ? platform_parse(platform, &p->want) : platform_host(&p->want);
	if (r < 0)
		return pull_fail(p->err, PULL_FAILURE_USAGE, r, "invalid platform '%s'",
				 platform ? platform : "(host)");
	p->canonical = reference_to_string(p->ref);
	p->platform_str = platform_to_string(&p->want);
	return p->canonical && p->platform_str ? 0 : -ENOMEM;
}

/* The image as the cache knows it (*ret_img NULL when it does not), unless the policy says
 * to resolve again. */
static int pull_cached(struct pull *p, struct image **ret_img)
{
	_cleanup_free_ char *digest = NULL;
	int r;

	if (p->o->policy == PULL_ALWAYS)
		return 0;
	r = index_db_ref_get(p->c->db, p->canonical, p->platform_str, &digest);
	if (r == -ENOENT && p->ref->digest)
		digest = strdup(p->ref->digest);
	else if (r < 0 && r != -ENOENT)
		return pull_fail(p->err, PULL_FAILURE_CACHE, r, "cannot read index in '%s'",
				 p->c->dir);
	if (!digest)
		return 0;
	r = image_load_local(p->c, digest, ret_img);
	if (r < 0 && r != -ENOENT)
		log_debug_errno(r, "cached image '%s' unusable, refetching: %m", digest);
	error_clear();
	return 0;
}

/* Whether a HEAD of the tag may spare the manifest's GET: only when the cache resolved this
 * reference before, so that the tag may still name the image it holds.  A reference the
 * cache never saw is got by tag at once: the digest a HEAD gave would be got next anyway, so
 * the registry counts the same GETs (Docker Hub's pull limit) and a cold mount waits one
 * round trip less.  (An image the cache holds under another tag of the repository then costs
 * a manifest GET that a HEAD would have spared.) */
static bool head_may_spare_get(const struct pull *p)
{
	_cleanup_free_ char *digest = NULL;

	return index_db_ref_get(p->c->db, p->canonical, p->platform_str, &digest) != -ENOENT;
}

/* Fetches the manifest from the source (the config comes with the TOCs, pull_layers());
 * pull_record() stores them. */
static int pull_remote(struct pull *p, struct image **ret_img)
{
	const struct reference *ref = p->ref;
	char head_digest[DIGEST_STRING_MAX] = "";
	int r;

	if (p->o->policy == PULL_NEVER)
		return pull_fail(p->err, PULL_FAILURE_REGISTRY, -ENOENT,
				 "image '%s' is not in the cache and pulling is disabled",
				 p->canonical);
	r = pull_source_new(ref, &p->ro, &p->reg, p->err);
	if (r < 0)
		return r;
	p->resolved = true;
	/* A local image is read from disk: HEAD saves nothing there. */
	if (!ref->digest && !reference_is_local(ref) && head_may_spare_get(p)) {
		r = resolve_tag(p->c, p->reg, ref, p->platform_str, ret_img, head_digest, p->err);
		if (r < 0)
			return r;
	}
	if (*ret_img)
		return 0;
	return image_fetch_remote(p->reg, ref->digest ?: head_digest[0] ? head_digest
								   : ref->tag ?: "",
				  &p->want, ret_img, &p->fetched, p->err);
}

/* Records the image and what the reference names, once all its layers are in: a refusal
 * before this leaves the index as it was. */
static int pull_record(struct pull *p, const struct image *img)
{
	const struct pulled *f = &p->fetched;
	_cleanup_free_ char *by_digest = NULL;
	int r;

	if (!p->resolved)
		return 0;  /* the index named the image already */
	if (f->manifest) {
		r = index_db_image_put(p->c->db, img->manifest_digest, f->media_type, f->manifest,
				       f->manifest_len, f->config, f->config_len);
		if (r < 0)
			return pull_fail(p->err, PULL_FAILURE_CACHE, r,
					 "cannot record image in '%s'", p->c->dir);
		/* Remember what an image index resolved to, so that the next HEAD of this tag
		 * finds the image by the index's digest. */
		if (!reference_is_local(p->ref) && !streq(f->top_digest, img->manifest_digest)) {
			by_digest = ref_by_digest(p->ref, f->top_digest);
			r = by_digest ? index_db_ref_put(p->c->db, by_digest, p->platform_str,
							 img->manifest_digest)
				      : -ENOMEM;
			if (r < 0)
				log_debug_errno(r, "cannot record '%s', ignoring: %m",
						by_digest ?: f->top_digest);
		}
	}
	r = index_db_ref_put(p->c->db, p->canonical, p->platform_str, img->manifest_digest);
	/* A read-only cache keeps its old resolution; this one serves the mount all the same. */
	if (r == -EROFS && p->c->read_only)
		r = 0;
	if (r < 0)
		return pull_fail(p->err, PULL_FAILURE_CACHE, r, "cannot record '%s' in '%s'",
				 p->canonical, p->c->dir);
	return 0;
}

/* A layer read whole keeps the diff_id it had when it was imported, and it must be the one
 * this image's config names: a layer shared with another image was checked against that
 * image's config, not this one's.  Lazy layers have none (docs/formats.md). */
static int layer_check_diff_id(struct pull *p, const struct image *img, size_t i)
{
	const struct manifest *m = img->manifest;
	_cleanup_free_ char *got = NULL;
	int r;

	r = index_db_layer_get_diff_id(p->c->db, m->layers[i].digest, &got);
	if (r < 0)
		return pull_fail(p->err, PULL_FAILURE_CACHE, r, "cannot read index in '%s'",
				 p->c->dir);
	if (!got || streq(got, img->config->diff_ids[i]))
		return 0;
	return pull_fail(p->err, PULL_FAILURE_REGISTRY, -EBADMSG,
			 "layer %s does not match the image's config: its uncompressed content "
			 "is %s, the config %s says %s", m->layers[i].digest, got,
			 m->config_digest, img->config->diff_ids[i]);
}

/* The config file, read when a layer is to be imported: its limits bound what one may cost. */
static int pull_config(struct pull *p, struct config *ret)
{
	unsigned line = 0;
	int r;

	r = config_read(ret, &line);
	if (r == -EINVAL)
		return pull_fail(p->err, PULL_FAILURE_USAGE, r, "bad line %u in '%s'", line,
				 config_path());
	if (r < 0)
		return pull_fail(p->err, PULL_FAILURE_USAGE, r, "cannot read '%s'", config_path());
	return 0;
}

struct pull_image {
	struct pull *p;
	struct image *img;
};

static int pull_fetch_config(void *userdata)
{
	struct pull_image *pi = userdata;

	return image_fetch_config(pi->p->reg, pi->img, &pi->p->fetched, pi->p->err);
}

static bool all_layers_lazy(const struct manifest *m)
{
	for (size_t i = 0; i < m->n_layers; i++)
		if (layer_format_detect(&m->layers[i]) == LAYER_FORMAT_TAR)
			return false;
	return true;
}

/* The config, and beside it the start profile's lookup (pull_options.find_start_profile). */
static int pull_config_and_profile(void *userdata)
{
	struct pull_image *pi = userdata;
	struct pull *p = pi->p;
	int (*config)(void *userdata) = pi->img->config ? NULL : pull_fetch_config;

	if (!p->o->find_start_profile || !p->reg || p->o->policy == PULL_NEVER ||
	    !all_layers_lazy(pi->img->manifest))
		return config ? config(pi) : 0;
	return p->o->find_start_profile(p->c, p->ref, p->reg, &p->ro, pi->img->manifest_digest,
					config, pi, &pi->img->profile_lookup);
}

/* While the lazy layers' TOCs come: the config, and beside it the lookup of seek indexes (a
 * gzip layer whose index it finds is then indexed lazily from it, below) or of the start
 * profile. */
static int pull_meanwhile(void *userdata)
{
	struct pull_image *pi = userdata;
	struct pull *p = pi->p;

	if (!p->o->find_seek_indexes || p->o->policy == PULL_NEVER)
		return pull_config_and_profile(pi);
	return p->o->find_seek_indexes(p->c, p->ref, p->reg, &p->ro, p->o->policy == PULL_ALWAYS,
				       pi->img->manifest, pi->img->manifest_digest,
				       pull_config_and_profile, pi);
}

/* Indexes every layer of @img the cache does not have yet: lazy ones by their TOCs, the
 * others streamed whole. */
static int pull_layers(struct pull *p, struct image *img)
{
	const struct manifest *m = img->manifest;
	struct config cfg = {};
	bool have_cfg = false;
	int r;

	/* gc, rm and fsck take this lock exclusively: what the import writes is never deleted. */
	r = cache_lock(p->c, LOCK_SH, &p->gc_lock_fd);
	if (r < 0)
		return pull_fail(p->err, PULL_FAILURE_CACHE, r, "cannot lock cache '%s'", p->c->dir);
	/* Also for an image the cache already held (the count is checked before it is stored).
	 * A remote image's config is fetched while the lazy layers' TOCs are: one round trip
	 * less before the mount is ready (issue 17), and no layer is indexed unless it is
	 * good. */
	if (img->config) {
		r = image_check_diff_id_count(img, p->err);
		if (r < 0)
			return r;
	}
	r = import_lazy_layers(p->c, p->ref, p->o, &p->ro, &p->reg, img, pull_meanwhile,
			       &(struct pull_image) { p, img }, p->err);
	if (r < 0)
		return r;

	for (size_t i = 0; i < m->n_layers; i++) {
		const struct layer_desc *l = &m->layers[i];

		r = index_db_layer_is_indexed(p->c->db, l->digest);
		if (r < 0)
			return pull_fail(p->err, PULL_FAILURE_CACHE, r, "cannot read index in '%s'",
					 p->c->dir);
		if (r > 0)
			continue;
		if (p->o->policy == PULL_NEVER) {
			r = layer_import_never(p->c, l, p->err);
			if (r < 0)
				return r;
			continue;
		}
		if (!p->reg) {
			r = pull_source_new(p->ref, &p->ro, &p->reg, p->err);
			if (r < 0)
				return r;
		}
		if (!have_cfg) {
			r = pull_config(p, &cfg);
			if (r < 0)
				return r;
			have_cfg = true;
		}
		r = layer_import(p->c, p->reg, p->o, &cfg.layer, l, m->config_digest,
				 img->config->diff_ids[i], i + 1, m->n_layers,
				 p->o->build_seek_index || cfg.seek_index_on_pull ? SEEK_ALSO :
										    SEEK_OFF,
				 p->err);
		if (r < 0)
			return r;
	}
	for (size_t i = 0; i < m->n_layers; i++) {
		r = layer_check_diff_id(p, img, i);
		if (r < 0)
			return r;
	}
	return 0;
}

/* What the pull leaves on the image: its use recorded, the registry's counters and scheme. */
static int pull_finish(struct pull *p, struct image *img)
{
	int r;

	r = index_db_image_touch(p->c->db, img->manifest_digest);
	if (r < 0)
		log_debug_errno(r, "cannot record the use of image '%s', ignoring: %m",
				img->manifest_digest);
	count_registry(img, p->reg);
	if (p->reg && source_scheme(p->reg)) {
		img->registry_scheme = strdup(source_scheme(p->reg));
		if (!img->registry_scheme)
			return -ENOMEM;
	}
	img->ref = TAKE_PTR(p->canonical);
	return 0;
}

int image_pull(struct cache *c, const struct reference *ref, const struct pull_options *o,
	       struct image **ret, enum pull_failure *err)
{
	_cleanup_(pull_done) struct pull p = {
		.c = c, .ref = ref, .o = o, .ro = o->registry, .gc_lock_fd = -EBADF, .err = err,
	};
	_cleanup_(image_freep) struct image *img = NULL;
	int r;

	*err = PULL_FAILURE_NONE;
	error_clear();

	r = pull_init(&p);
	if (r >= 0)
		r = pull_cached(&p, &img);
	if (r >= 0 && !img)
		r = pull_remote(&p, &img);
	if (r >= 0)
		r = pull_layers(&p, img);
	if (r >= 0)
		r = pull_record(&p, img);
	if (r >= 0)
		r = pull_finish(&p, img);
	if (r < 0) {
		/* What failed without a class of its own is the cache's (the message, if any,
		 * is that of the call that failed). */
		if (*err == PULL_FAILURE_NONE)
			*err = PULL_FAILURE_CACHE;
		return r;
	}
	*ret = TAKE_PTR(img);
	return 0;
}

/* Streams the layers of @img that @pick (NULL: every gzip layer without a trusted seek index)
 * marks through layer_import() in seek mode @seek. */
static int index_layers(struct cache *c, const struct reference *ref, const struct pull_options *o,
			const struct image *img, const bool *pick, enum seek_mode seek,
			enum pull_failure *err)
{
	_cleanup_(pull_done) struct pull p = {
		.c = c, .ref = ref, .o = o, .ro = o->registry, .gc_lock_fd = -EBADF, .err = err,
	};
	const struct manifest *m = img->manifest;
	struct config cfg = {};
	int r;

	*err = PULL_FAILURE_NONE;
	r = pull_init(&p);
	if (r >= 0)
		r = cache_lock(c, LOCK_SH, &p.gc_lock_fd);
	if (r >= 0)
		r = pull_config(&p, &cfg);
	for (size_t i = 0; i < m->n_layers && r >= 0; i++) {
		const struct layer_desc *l = &m->layers[i];

		if (!seek_layer_eligible(l) || (pick ? !pick[i] : seek_trusted(c, l)))
			continue;
		r = p.reg ? 0 : pull_source_new(ref, &p.ro, &p.reg, err);
		if (r >= 0)
			r = layer_import(c, p.reg, o, &cfg.layer, l, m->config_digest,
					 img->config->diff_ids[i], i + 1, m->n_layers, seek, err);
	}
	if (r < 0 && *err == PULL_FAILURE_NONE)
		*err = PULL_FAILURE_CACHE;
	return r;
}

int image_index_layers(struct cache *c, const struct reference *ref, const struct pull_options *o,
		       const struct image *img, enum pull_failure *err)
{
	return index_layers(c, ref, o, img, NULL, SEEK_ONLY, err);
}

int image_stream_seek_layers(struct cache *c, const struct reference *ref,
			     const struct pull_options *o, const struct image *img,
			     const bool *pick, enum pull_failure *err)
{
	return index_layers(c, ref, o, img, pick, SEEK_STORE, err);
}
