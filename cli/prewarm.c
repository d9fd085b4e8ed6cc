/*
 * cli/prewarm.c: `lazyroot prewarm [OPTIONS] REF…`: fills the cache with everything the REFs
 * need, so that later mounts need no registry.  Each REF is resolved at the registry on every
 * run (a tag that moved is a new image), its layers are imported (tar layers whole, lazy layers'
 * TOCs), then every chunk of its lazy layers that is not stored yet is fetched (cache/prewarm.c).
 *
 * One prewarm per cache at a time: CACHE/locks/prewarm.lock is held (flock) for the whole
 * run, so two overlapping prewarms never fetch the same bytes twice; the second one exits at
 * once, or waits with --wait.  Made for cron: silent unless something fails, one error line
 * per failing REF, and the exit status says what kind of failure it was.
 */
#include <fcntl.h>
#include <getopt.h>
#include <stdarg.h>
#include <limits.h>
#include <sys/file.h>

#include "cache/config.h"
#include "cache/seek.h"
#include "cache/seek_verify.h"
#include "cache/share/seek_remote.h"
#include "cache/format/layer_lazy.h"
#include "cache/gc.h"
#include "cache/base/error.h"
#include "cache/base/log.h"
#include "cache/prewarm.h"
#include "cache/registry/rate_limit.h"
#include "cache/base/util.h"
#include "cli/cache_args.h"
#include "cli/cli.h"
#include "cli/index_publish.h"
#include "cli/progress.h"

#define JOBS_DEFAULT 4U
#define JOBS_MAX 64U
#define RATE_MIN 4096ULL
#define BATCH_MAX (8ULL << 20)
#define BATCH_MIN (64ULL << 10)
/* With a rate limit, a job's share should stay large enough that a chunk of a few MiB fits in
 * the fetcher's per-request timeout, and a batch should take about this long. */
#define RATE_PER_JOB_MIN (256ULL << 10)
#define BATCH_SECONDS 2ULL

struct prewarm_item {
	const char *arg;
	struct reference *ref;
	struct image *img;
	struct prewarm_plan *plan;
	int status;                 /* 0 or -errno (its class, see exit_status.h) */
	char *error;                /* the one line to print, when status != 0 */
};

struct prewarm_progress {
	struct progress *bar;
	uint64_t done, total;       /* bytes of the whole run */
	unsigned layer;             /* image_pull()'s layer being streamed */
	uint64_t layer_done;
};

static void item_fail(struct prewarm_item *it, int status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void item_fail(struct prewarm_item *it, int status, const char *fmt, ...)
{
	_cleanup_free_ char *msg = NULL;
	va_list ap;
	int n;

	if (it->status != 0)
		return;  /* the first failure is the one to report */
	va_start(ap, fmt);
	n = vasprintf(&msg, fmt, ap);
	va_end(ap);
	it->status = status;
	if (n < 0 || asprintf(&it->error, "cannot prewarm '%s': %s", it->arg, msg) < 0)
		it->error = NULL;
}

/* pull_options.progress: one tar layer's bytes, folded into the run's bar. */
static void pull_progress(void *userdata, unsigned layer, unsigned n_layers, uint64_t done,
			  uint64_t total)
{
	struct prewarm_progress *pp = userdata;

	(void)n_layers;
	if (layer != pp->layer) {
		pp->layer = layer;
		pp->layer_done = 0;
		pp->total += total;
	}
	if (done > pp->layer_done) {
		pp->done += done - pp->layer_done;
		pp->layer_done = done;
	}
	progress_bytes(pp->bar, pp->done, pp->total);
}

/* prewarm_options.progress: a batch of chunks is stored. */
static void chunk_progress(void *userdata, uint64_t bytes)
{
	struct prewarm_progress *pp = userdata;

	pp->done += bytes;
	progress_bytes(pp->bar, pp->done, pp->total);
}

/* "10M", "500k", "1048576": bytes per second (k, M, G are powers of 1024, as curl's). */
static int parse_rate(const char *s, uint64_t *ret)
{
	unsigned long long v;
	char *end;

	if (!s || *s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0)
		return -EINVAL;
	switch (*end) {
	case 0:
		break;
	case 'k': case 'K':
		v = v > ULLONG_MAX >> 10 ? 0 : v << 10;
		end++;
		break;
	case 'm': case 'M':
		v = v > ULLONG_MAX >> 20 ? 0 : v << 20;
		end++;
		break;
	case 'g': case 'G':
		v = v > ULLONG_MAX >> 30 ? 0 : v << 30;
		end++;
		break;
	default:
		return -EINVAL;
	}
	if (*end || v == 0)
		return -EINVAL;
	*ret = v;
	return 0;
}

/* 1 with the lock taken, 0 if another prewarm holds it (and !@wait), or -errno. */
static int take_lock(const char *cache_dir, bool wait, int *ret_fd)
{
	int r;

	r = cache_lock_file(cache_dir, "prewarm.lock", LOCK_EX | (wait ? 0 : LOCK_NB), ret_fd);
	if (r == -EWOULDBLOCK)
		return 0;
	return r < 0 ? r : 1;
}

/* The fetcher for @img's lazy layers, as the mount daemon builds it, charging the run's rate
 * limit (NULL: none).  prewarm_run() sizes each call by the rate it sees: one request each. */
static int item_fetcher(const struct prewarm_item *it, struct blob_store *bs,
			const struct mount_request *req, struct rate_limit *rl, struct fetcher **ret)
{
	return mount_request_fetcher_new(req, it->ref, it->img, rl, &(struct fetcher_options) {
			.defer_sync = true, .request_max = PREWARM_BATCH_LIMIT, .store_only = true,
		}, bs, ret);
}

static void item_pull(struct prewarm_item *it, struct cache *c, const struct mount_request *req,
		      struct rate_limit *rl, struct prewarm_progress *pp)
{
	struct pull_options po = {
		.platform = req->platform, .policy = PULL_ALWAYS,
		.registry = mount_request_registry_options(req),
		.progress = pull_progress, .progress_userdata = pp,
		.find_seek_indexes = seek_remote_fetch,
	};
	enum pull_failure failure;
	int r;

	po.registry.rate_limit = rl;
	pp->layer = 0;
	r = image_pull(c, it->ref, &po, &it->img, &failure);
	if (r < 0) {
		item_fail(it, pull_failure_errno(failure), "%s", error_take(r));
		return;
	}
	r = prewarm_plan_new(c->db, c->bs, it->img->manifest, &it->plan);
	if (r < 0) {
		errno = -r;
		item_fail(it, -ERR_CACHE, "cannot list its chunks in '%s': %m", c->dir);
	}
}

static void verify_report(void *userdata, const char *layer, bool same)
{
	(void)userdata;
	if (same)
		log_info("seek index of layer '%s' verified against the whole layer, trusted now",
			 layer);
	else
		log_warning("seek index of layer '%s' is not the one the layer gives (it lied, or "
			    "another builder wrote it): replaced by the one built from the verified "
			    "layer", layer);
}

/* How the steps after the pull reach the registry: as the pull did, re-resolving. */
static struct pull_options item_pull_options(const struct mount_request *req,
					     struct rate_limit *rl)
{
	struct pull_options po = {
		.platform = req->platform, .policy = PULL_ALWAYS,
		.registry = mount_request_registry_options(req),
	};

	po.registry.rate_limit = rl;
	return po;
}

/* A layer read through a seek index is streamed whole, its chunks stored on the way, when
 * its index came from elsewhere (verified so, then trusted or replaced: cache/seek_verify.h)
 * or when fetching its missing chunks span by span would carry at least half of its
 * compressed bytes anyway: one stream moves them at the link's rate, spans each cost a round
 * trip and their prefixes. The plan is then made again from what is still missing. */
static void item_stream(struct prewarm_item *it, struct cache *c,
			const struct mount_request *req, struct rate_limit *rl,
			struct prewarm_progress *pp)
{
	const struct manifest *m = it->img->manifest;
	struct pull_options po = item_pull_options(req, rl);
	_cleanup_free_ bool *fill = calloc(m->n_layers + 1, sizeof(*fill));
	enum pull_failure failure;
	int r;

	if (!fill) {
		item_fail(it, -ENOMEM, "out of memory");
		return;
	}
	for (size_t i = 0; i < m->n_layers; i++)
		fill[i] = prewarm_plan_layer_bytes(it->plan, (unsigned)i) >= m->layers[i].size / 2;
	po.progress = pull_progress;
	po.progress_userdata = pp;
	pp->layer = 0;
	r = seek_verify_image(c, it->ref, &po, it->img, fill, verify_report, NULL, &failure);
	if (r < 0) {
		item_fail(it, pull_failure_errno(failure), "cannot verify its seek indexes: %s",
			  error_take(r));
		return;
	}
	it->plan = prewarm_plan_free(it->plan);
	r = prewarm_plan_new(c->db, c->bs, m, &it->plan);
	if (r < 0) {
		errno = -r;
		item_fail(it, -ERR_CACHE, "cannot list its chunks in '%s': %m", c->dir);
	}
}

/* --publish-index: the missing seek indexes of the image's gzip layers built (as `lazyroot
 * index`), then the ones built here published for the fleet. */
static void item_publish(struct prewarm_item *it, struct cache *c,
			 const struct mount_request *req, struct rate_limit *rl)
{
	struct pull_options po = item_pull_options(req, rl);
	enum pull_failure failure;
	int class, r;

	r = image_index_layers(c, it->ref, &po, it->img, &failure);
	if (r < 0) {
		item_fail(it, pull_failure_errno(failure), "cannot index it: %s", error_take(r));
		return;
	}
	r = index_publish(c, it->ref, &po.registry, it->img, &class);
	if (r < 0)
		item_fail(it, class, "cannot publish its seek indexes: %s", error_take(r));
}

static void item_fetch(struct prewarm_item *it, struct cache *c, const struct mount_request *req,
		       unsigned jobs, struct rate_limit *rl, struct prewarm_progress *pp)
{
	uint64_t rate = rl ? rate_limit_rate(rl) : 0;
	_cleanup_(fetcher_freep) struct fetcher *f = NULL;
	uint64_t rate_per_job = 0, batch = 0;   /* 0: prewarm.c follows the rate it sees */
	size_t n_chunks, failed = 0;
	int r;

	prewarm_plan_size(it->plan, &n_chunks, NULL);
	if (n_chunks == 0)
		return;
	if (rate > 0) {
		uint64_t fit = rate / RATE_PER_JOB_MIN;

		if (fit < jobs)
			jobs = fit > 0 ? (unsigned)fit : 1;
		rate_per_job = rate / jobs;
		batch = rate_per_job * BATCH_SECONDS;
		if (batch > BATCH_MAX)
			batch = BATCH_MAX;
		if (batch < BATCH_MIN)
			batch = BATCH_MIN;
	}

	r = item_fetcher(it, c->bs, req, rl, &f);
	if (r >= 0)
		r = seek_fetcher_attach(c, it->img->manifest, f);
	if (r < 0) {
		errno = -r;
		item_fail(it, -ERR_OTHER, "cannot set up fetching: %m");
		return;
	}
	r = prewarm_run(it->plan, f, c->bs,
			&(struct prewarm_options) {
				.jobs = jobs, .batch_max = batch, .progress = chunk_progress,
				.userdata = pp,
			}, &failed);
	if (r == -EIO)
		item_fail(it, -ERR_REGISTRY,
			  "%zu of %zu chunks could not be fetched or verified (see --verbose)",
			  failed, n_chunks);
	else if (r == -ENOSPC || r == -EDQUOT) {
		errno = -r;
		item_fail(it, -ERR_CACHE, "cache '%s' is full: %zu of %zu chunks not stored: %m",
			  c->dir, failed, n_chunks);
	} else if (r < 0) {
		errno = -r;
		item_fail(it, r == -ENOMEM ? -ENOMEM : -ERR_CACHE,
			  "cannot store chunks in '%s': %m", c->dir);
	}
}

static void prewarm_help(void)
{
	printf("Usage: lazyroot prewarm [OPTIONS] REF...\n\n"
	       "Fetch everything the images need into the cache: later mounts need no registry.\n"
	       "Each REF is resolved again at the registry; only what the cache lacks is fetched.\n\n"
	       "  -j, --jobs=N           parallel requests (default 4)\n"
	       "      --limit-rate=RATE  at most RATE bytes/s in all (e.g. 500k, 10M)\n"
	       "      --wait             wait for a prewarm already running on the cache\n"
	       "      --publish-index    build the seek indexes of the images' gzip layers and\n"
	       "                         publish them (as 'lazyroot index --push')\n"
	       "      --cache-dir=DIR    cache directory (default /var/cache/lazyroot)\n"
	       "      --platform=OS/ARCH[/VARIANT]  pick this platform from an image index\n"
	       "      --cert-dir=DIR     CA and client certificates for the registry\n"
	       CREDENTIAL_OPTIONS_HELP
	       TLS_OPTIONS_HELP
	       "  -v, --verbose          more messages\n"
	       "  -h, --help             this help\n");
}

struct prewarm_args {
	struct mount_request req;
	unsigned jobs;
	uint64_t rate;
	bool wait;
	bool publish_index;         /* --publish-index, or seek-index-publish = yes */
};

enum { OPT_LIMIT_RATE = 0x100, OPT_WAIT, OPT_PUBLISH_INDEX };

static int prewarm_opt(int c, struct prewarm_args *a)
{
	char *end;
	unsigned long n;

	switch (c) {
	case 'j':
		errno = 0;
		n = strtoul(optarg, &end, 10);
		if (errno != 0 || *end || end == optarg || n == 0 || n > JOBS_MAX)
			return log_error_errno(-ERR_USAGE, "invalid --jobs '%s': use 1 to %u", optarg,
					       JOBS_MAX);
		a->jobs = (unsigned)n;
		return 0;
	case OPT_LIMIT_RATE:
		if (parse_rate(optarg, &a->rate) < 0 || a->rate < RATE_MIN)
			return log_error_errno(-ERR_USAGE, "invalid --limit-rate '%s': use bytes per "
					       "second of at least 4k, e.g. 500k or 10M", optarg);
		return 0;
	case OPT_WAIT:
		a->wait = true;
		return 0;
	case OPT_PUBLISH_INDEX:
		a->publish_index = true;
		return 0;
	case 'v':
		log_set_level(LOG_LEVEL_DEBUG);
		return 0;
	case 'h':
		prewarm_help();
		return 1;
	default:
		return -ERR_USAGE;
	}
}

/* 0, 1 after --help, or -ERR_USAGE (logged). */
static int prewarm_parse(int argc, char **argv, struct prewarm_args *a)
{
	static const struct option options[] = {
		{ "cache-dir", required_argument, NULL, 'C' },
		{ "platform", required_argument, NULL, 'P' },
		{ "cert-dir", required_argument, NULL, 'c' },
		CREDENTIAL_OPTIONS,
		TLS_OPTIONS,
		{ "jobs", required_argument, NULL, 'j' },
		{ "limit-rate", required_argument, NULL, OPT_LIMIT_RATE },
		{ "wait", no_argument, NULL, OPT_WAIT },
		{ "publish-index", no_argument, NULL, OPT_PUBLISH_INDEX },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	struct platform want = {};
	int c, r;

	optind = 1;
	while ((c = getopt_long(argc, argv, "j:vh", options, NULL)) >= 0) {
		r = image_option_apply(c, optarg, &a->req);
		if (r == 0)
			r = prewarm_opt(c, a);
		if (r < 0 || (r > 0 && c == 'h'))
			return r;
	}
	if (optind >= argc)
		return log_error_errno(-ERR_USAGE, "prewarm needs at least one image reference (see "
				       "'lazyroot prewarm --help')");
	if (a->req.platform) {
		r = platform_parse(a->req.platform, &want);
		platform_done(&want);
		if (r < 0)
			return log_error_errno(-ERR_USAGE, "invalid platform '%s'", a->req.platform);
	}
	return 0;
}

/* seek-index-publish = yes in the configuration file (one it cannot read: no; the pulls say
 * what is wrong with it). */
static bool config_publish_index(void)
{
	struct config cfg;

	return config_read(&cfg, NULL) >= 0 && cfg.seek_index_publish;
}

/* Every reference is checked before anything is fetched. */
static int items_new(char **args, size_t n, struct prewarm_item **ret)
{
	struct prewarm_item *items;
	int r = 0;

	items = calloc(n, sizeof(*items));
	if (!items)
		return log_error_errno(-ENOMEM, "out of memory");
	for (size_t i = 0; i < n; i++) {
		int k;

		items[i].arg = args[i];
		k = reference_parse(items[i].arg, &items[i].ref);
		if (k < 0)
			r = log_error_errno(-ERR_USAGE, "invalid image reference '%s': %s",
					    items[i].arg, error_take(k));
	}
	*ret = items;   /* freed by items_free() either way */
	return r;
}

static void items_free(struct prewarm_item *items, size_t n)
{
	for (size_t i = 0; items && i < n; i++) {
		reference_free(items[i].ref);
		image_free(items[i].img);
		prewarm_plan_free(items[i].plan);
		free(items[i].error);
	}
	free(items);
}

/* Reports each failed item; the result of the run: a cache that fails usually fails every REF,
 * so it is what to fix first, then the registry. */
static int items_report(const struct prewarm_item *items, size_t n)
{
	bool registry_failed = false, cache_failed = false, other_failed = false;

	for (size_t i = 0; i < n; i++) {
		if (items[i].status == 0)
			continue;
		log_error("%s", items[i].error ? items[i].error : "out of memory");
		registry_failed |= items[i].status == -ERR_REGISTRY;
		cache_failed |= items[i].status == -ERR_CACHE;
		other_failed |= items[i].status != -ERR_REGISTRY && items[i].status != -ERR_CACHE;
	}
	return cache_failed ? -ERR_CACHE : registry_failed ? -ERR_REGISTRY :
	       other_failed ? -ERR_OTHER : 0;
}

static void items_run(struct prewarm_item *items, size_t n, struct cache *cache,
		      const struct prewarm_args *a, struct rate_limit *limiter)
{
	struct prewarm_progress pp = { .bar = progress_new("prewarm") };

	/* First every REF's layers and TOCs, so the bar knows the whole amount of chunks. */
	for (size_t i = 0; i < n; i++) {
		uint64_t bytes;

		item_pull(&items[i], cache, &a->req, limiter, &pp);
		/* Before publishing: a layer streamed here has a trusted index after it. */
		if (items[i].status == 0)
			item_stream(&items[i], cache, &a->req, limiter, &pp);
		if (items[i].status == 0 && a->publish_index)
			item_publish(&items[i], cache, &a->req, limiter);
		prewarm_plan_size(items[i].plan, NULL, &bytes);
		pp.total += bytes;
		progress_bytes(pp.bar, pp.done, pp.total);
	}
	for (size_t i = 0; i < n; i++)
		if (items[i].status == 0)
			item_fetch(&items[i], cache, &a->req, a->jobs, limiter, &pp);
	progress_free(pp.bar);
}

int verb_prewarm(int argc, char **argv)
{
	_cleanup_(cache_freep) struct cache *cache = NULL;
	_cleanup_close_ int lock_fd = -EBADF;
	_cleanup_(rate_limit_freep) struct rate_limit *limiter = NULL;
	struct prewarm_args a = { .jobs = JOBS_DEFAULT };
	struct prewarm_item *items = NULL;
	size_t n_items = 0;
	int r;

	r = prewarm_parse(argc, argv, &a);
	if (r != 0)
		goto finish;
	a.publish_index |= config_publish_index();
	n_items = (size_t)(argc - optind);
	r = items_new(argv + optind, n_items, &items);
	/* One budget for every job and request of the run, pulls included. */
	if (r >= 0 && a.rate > 0 && rate_limit_new(a.rate, &limiter) < 0)
		r = log_error_errno(-ENOMEM, "out of memory");
	if (r >= 0)
		r = cli_cache_open_writable(a.req.cache_dir, "prewarm", &cache);
	if (r < 0)
		goto finish;
	r = take_lock(cache->dir, a.wait, &lock_fd);
	if (r <= 0) {
		if (r < 0)
			r = log_error_errno(-ERR_CACHE, "cannot lock cache '%s': %s", cache->dir,
					    strerror(-r));
		else
			log_info("another prewarm is running on '%s'", cache->dir);
		goto finish;
	}
	items_run(items, n_items, cache, &a, limiter);
	/* The config file's max-size applies after every prewarm, as after every mount. */
	if (cache_gc_auto(cache) < 0)
		log_warning("automatic gc of cache '%s' failed, ignoring", cache->dir);
	r = items_report(items, n_items);
finish:
	items_free(items, n_items);
	mount_request_done(&a.req);
	return r > 0 ? 0 : r;
}
