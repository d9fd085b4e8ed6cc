/*
 * cli/gc.c: `lazyroot gc`: remove what nothing uses, and evict least recently used images down
 * to a size.  The work is in cache/gc.c; this file parses options and prints.
 */
#include <getopt.h>

#include "cache/base/log.h"
#include "cache/base/util.h"
#include "cache/config.h"
#include "cache/gc.h"
#include "cli/cache_args.h"
#include "cli/cli.h"
#include "cli/verb_args.h"

static uint64_t arg_max_size;
static bool arg_have_max;

static int gc_opt(int c, char *arg, void *userdata)
{
	(void)userdata;
	if (c != 'm')
		return -ERR_USAGE;
	if (parse_size(arg, &arg_max_size) < 0)
		return log_error_errno(-ERR_USAGE, "invalid size '%s' (e.g. 10G, 500M, 1024K, 4096)",
				       arg);
	arg_have_max = true;
	return 0;
}

static void print_result(const struct gc_result *res)
{
	for (char **d = res->evicted; d && *d; d++)
		printf("evicted %s\n", *d);
	printf("removed %llu orphan blobs (%llu bytes), %llu temporary files, %llu unused layers,"
	       " %llu unused seek indexes; evicted %zu images (%llu bytes); cache now %llu blobs,"
	       " %llu bytes\n",
	       (unsigned long long)res->orphans, (unsigned long long)res->orphan_bytes,
	       (unsigned long long)res->tmp_files, (unsigned long long)res->layers_dropped,
	       (unsigned long long)res->seek_indexes_dropped,
	       strv_length(res->evicted), (unsigned long long)res->evicted_bytes,
	       (unsigned long long)res->n_blobs, (unsigned long long)res->blob_bytes);
}

int verb_gc(int argc, char **argv)
{
	static const struct option options[] = {
		{ "max-size", required_argument, NULL, 'm' },
		CACHE_OPTIONS,
		{}
	};
	_cleanup_(cache_freep) struct cache *cache = NULL;
	_cleanup_free_ char *usage = NULL;
	struct gc_options o = { .tmp_min_age = GC_TMP_MIN_AGE_SEC };
	struct gc_result res;
	const char *cache_dir = NULL;
	int r;

	arg_max_size = 0;
	arg_have_max = false;
	if (asprintf(&usage, "Usage: lazyroot gc [--max-size=SIZE] [--cache-dir=DIR]\n\n"
		     "Remove blobs no layer uses and old temporary files; with a maximum size\n"
		     "(default: max-size in %s), evict the least recently used\n"
		     "images that are not mounted until the cache fits.\n", config_path()) < 0)
		return -ENOMEM;
	r = verb_args_parse(argc, argv, &(struct verb_args) {
		.name = "gc", .operands = "takes no arguments", .usage = usage,
		.optstring = "m:C:h", .options = options, .opt = gc_opt,
		.args = (const struct verb_arg[]) { CACHE_DIR_ARG(&cache_dir), {} },
	});
	if (r != 0)
		return r > 0 ? 0 : r;
	o.max_size = arg_max_size;
	if (!arg_have_max) {
		r = config_max_size(&o.max_size, NULL);
		if (r < 0) {
			log_error_errno(r, "cannot read '%s'%s: %m", config_path(),
					r == -EINVAL ? " (bad line)" : "");
			return -ERR_USAGE;
		}
	}
	r = cli_cache_open_writable(cache_dir, "collect garbage in", &cache);
	if (r < 0)
		return r;
	r = cache_gc(cache, &o, &res);
	if (r < 0 && r != -ENOSPC) {
		log_error_errno(r, "cannot collect garbage in cache '%s': %m", cache->dir);
		return -ERR_CACHE;
	}
	print_result(&res);
	gc_result_done(&res);
	if (r == -ENOSPC)
		return log_error_errno(-ENOSPC, "cache '%s' is still larger than %llu bytes: what is "
				       "left is mounted", cache->dir, (unsigned long long)o.max_size);
	return 0;
}
