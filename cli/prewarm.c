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

#include "cache/format/layer_lazy.h"
#include "cache/gc.h"
#include "cache/base/log.h"
#include "cache/prewarm.h"
#include "cache/registry/rate_limit.h"
#include "cache/base/util.h"
#include "cli/cli.h"
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
	int status;                 /* 0 or an exit status */
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
 * limit (NULL: none). */
static int item_fetcher(const struct prewarm_item *it, struct blob_store *bs,
			const struct mount_request *req, struct rate_limit *rl, struct fetcher **ret)
{
	struct registry_options ro = mount_request_registry_options(req);

	ro.scheme = it->img->registry_scheme;
	ro.rate_limit = rl;
	/* prewarm_run() sizes each call by the rate it sees: one request each. */
	return fetcher_new_for_image(it->ref, it->img->manifest, &ro,
				     &(struct fetcher_options) { .defer_sync = true,
								 .request_max = PREWARM_BATCH_LIMIT },
				     bs, ret);
}

static void item_pull(struct prewarm_item *it, struct cache *c, const struct mount_request *req,
		      struct rate_limit *rl, struct prewarm_progress *pp)
{
	struct pull_options po = {
		.platform = req->platform, .policy = PULL_ALWAYS,
		.registry = mount_request_registry_options(req),
		.progress = pull_progress, .progress_userdata = pp,
	};
	struct pull_error err;
	int r;

	po.registry.rate_limit = rl;
	pp->layer = 0;
	r = image_pull(c, it->ref, &po, &it->img, &err);
	if (r < 0) {
		item_fail(it, exit_status_for(err.kind), "%s", err.message);
		return;
	}
	r = prewarm_plan_new(c->db, c->bs, it->img->manifest, &it->plan);
	if (r < 0) {
		errno = -r;
		item_fail(it, EXIT_CACHE, "cannot list its chunks in '%s': %m", c->dir);
	}
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
	if (r < 0) {
		errno = -r;
		item_fail(it, EXIT_FAILURE_OTHER, "cannot set up fetching: %m");
		return;
	}
	r = prewarm_run(it->plan, f, c->bs,
			&(struct prewarm_options) {
				.jobs = jobs, .batch_max = batch, .progress = chunk_progress,
				.userdata = pp,
			}, &failed);
	if (r == -EIO)
		item_fail(it, EXIT_REGISTRY,
			  "%zu of %zu chunks could not be fetched or verified (see --verbose)",
			  failed, n_chunks);
	else if (r < 0) {
		errno = -r;
		item_fail(it, r == -ENOMEM ? EXIT_FAILURE_OTHER : EXIT_CACHE,
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
	       "      --cache-dir=DIR    cache directory (default /var/cache/lazyroot)\n"
	       "      --platform=OS/ARCH[/VARIANT]  pick this platform from an image index\n"
	       "      --cert-dir=DIR     CA and client certificates for the registry\n"
	       CREDENTIAL_OPTIONS_HELP
	       TLS_OPTIONS_HELP
	       "  -v, --verbose          more messages\n"
	       "  -h, --help             this help\n");
}

int verb_prewarm(int argc, char **argv)
{
	enum { OPT_LIMIT_RATE = 0x100, OPT_WAIT };
	static const struct option options[] = {
		{ "cache-dir", required_argument, NULL, 'C' },
		{ "platform", required_argument, NULL, 'P' },
		{ "cert-dir", required_argument, NULL, 'c' },
		CREDENTIAL_OPTIONS,
		TLS_OPTIONS,
		{ "jobs", required_argument, NULL, 'j' },
		{ "limit-rate", required_argument, NULL, OPT_LIMIT_RATE },
		{ "wait", no_argument, NULL, OPT_WAIT },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	_cleanup_(cache_freep) struct cache *cache = NULL;
	_cleanup_free_ struct prewarm_item *items = NULL;
	_cleanup_close_ int lock_fd = -EBADF;
	struct prewarm_progress pp = {};
	_cleanup_(mount_request_done) struct mount_request req = {};
	struct platform want = {};
	unsigned jobs = JOBS_DEFAULT;
	_cleanup_(rate_limit_freep) struct rate_limit *limiter = NULL;
	uint64_t rate = 0;
	size_t n_items;
	bool wait = false, registry_failed = false, cache_failed = false, other_failed = false;
	int c, r;

	optind = 1;
	while ((c = getopt_long(argc, argv, "j:vh", options, NULL)) >= 0) {
		int k = image_option_apply(c, optarg, &req);
		char *end;
		unsigned long n;

		if (k == EXIT_USAGE)
			return k;
		if (k > 0)
			continue;
		switch (c) {
		case 'j':
			errno = 0;
			n = strtoul(optarg, &end, 10);
			if (errno != 0 || *end || end == optarg || n == 0 || n > JOBS_MAX) {
				log_error("invalid --jobs '%s': use 1 to %u", optarg, JOBS_MAX);
				return EXIT_USAGE;
			}
			jobs = (unsigned)n;
			break;
		case OPT_LIMIT_RATE:
			if (parse_rate(optarg, &rate) < 0 || rate < RATE_MIN) {
				log_error("invalid --limit-rate '%s': use bytes per second of at least 4k, "
					  "e.g. 500k or 10M", optarg);
				return EXIT_USAGE;
			}
			break;
		case OPT_WAIT:
			wait = true;
			break;
		case 'v':
			log_set_level(LOG_LEVEL_DEBUG);
			break;
		case 'h':
			prewarm_help();
			return 0;
		default:
			return EXIT_USAGE;
		}
	}
	if (optind >= argc) {
		log_error("prewarm needs at least one image reference (see 'lazyroot prewarm --help')");
		return EXIT_USAGE;
	}
	if (req.platform) {
		r = platform_parse(req.platform, &want);
		platform_done(&want);
		if (r < 0) {
			log_error("invalid platform '%s'", req.platform);
			return EXIT_USAGE;
		}
	}

	/* Every reference is checked before anything is fetched. */
	n_items = (size_t)(argc - optind);
	items = calloc(n_items, sizeof(*items));
	if (!items) {
		log_error("out of memory");
		return EXIT_FAILURE_OTHER;
	}
	for (size_t i = 0; i < n_items; i++) {
		const char *why = NULL;

		items[i].arg = argv[optind + i];
		r = reference_parse(items[i].arg, &items[i].ref, &why);
		if (r < 0) {
			log_error("invalid image reference '%s': %s", items[i].arg,
				  why ? why : "malformed");
			other_failed = true;
		}
	}
	if (other_failed) {
		r = EXIT_USAGE;
		goto finish;
	}

	/* One budget for every job and request of the run, pulls included. */
	if (rate > 0 && rate_limit_new(rate, &limiter) < 0) {
		log_error("out of memory");
		r = EXIT_FAILURE_OTHER;
		goto finish;
	}

	r = cli_cache_open(req.cache_dir, &cache);
	if (r != 0)
		goto finish;
	r = take_lock(cache->dir, wait, &lock_fd);
	if (r < 0) {
		log_error_errno(r, "cannot lock cache '%s': %m", cache->dir);
		r = EXIT_CACHE;
		goto finish;
	}
	if (r == 0) {
		log_info("another prewarm is running on '%s'", cache->dir);
		r = 0;
		goto finish;
	}

	pp.bar = progress_new("prewarm");
	/* First every REF's layers and TOCs, so the bar knows the whole amount of chunks. */
	for (size_t i = 0; i < n_items; i++) {
		uint64_t bytes;

		item_pull(&items[i], cache, &req, limiter, &pp);
		prewarm_plan_size(items[i].plan, NULL, &bytes);
		pp.total += bytes;
		progress_bytes(pp.bar, pp.done, pp.total);
	}
	for (size_t i = 0; i < n_items; i++)
		if (items[i].status == 0)
			item_fetch(&items[i], cache, &req, jobs, limiter, &pp);
	progress_free(pp.bar);
	/* The config file's max-size applies after every prewarm, as after every mount. */
	if (cache_gc_auto(cache) < 0)
		log_warning("automatic gc of cache '%s' failed, ignoring", cache->dir);

	for (size_t i = 0; i < n_items; i++) {
		if (items[i].status == 0)
			continue;
		log_error("%s", items[i].error ? items[i].error : "out of memory");
		registry_failed |= items[i].status == EXIT_REGISTRY;
		cache_failed |= items[i].status == EXIT_CACHE;
		other_failed |= items[i].status != EXIT_REGISTRY && items[i].status != EXIT_CACHE;
	}
	/* A cache that fails usually fails every REF: it is what to fix first. */
	r = cache_failed ? EXIT_CACHE : registry_failed ? EXIT_REGISTRY :
	    other_failed ? EXIT_FAILURE_OTHER : 0;

finish:
	for (size_t i = 0; items && i < n_items; i++) {
		reference_free(items[i].ref);
		image_free(items[i].img);
		prewarm_plan_free(items[i].plan);
		free(items[i].error);
	}
	return r;
}
