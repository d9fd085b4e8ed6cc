/*
 * cli/fsck.c: `lazyroot fsck`: check, optionally repair, a cache directory.  The work is in
 * cache/fsck.c; this file parses options and prints.  Checking never creates a cache.
 */
#include <getopt.h>
#include <sys/stat.h>

#include "cache/base/log.h"
#include "cache/base/util.h"
#include "cache/fsck.h"
#include "cli/cache_args.h"
#include "cli/cli.h"
#include "cli/verb_args.h"

static const char fsck_usage[] =
	"Usage: lazyroot fsck [--repair] [--cache-dir=DIR]\n\n"
	"Check that every blob hashes to its name, that the index and the blobs\n"
	"agree, and the index's integrity; --repair deletes what is wrong.\n";

static void print_problem(void *userdata, const char *line, bool repaired)
{
	(void)userdata;
	(void)repaired;
	printf("%s\n", line);
}

int verb_fsck(int argc, char **argv)
{
	static const struct option options[] = {
		{ "repair", no_argument, NULL, 'r' },
		CACHE_OPTIONS,
		{}
	};
	_cleanup_(cache_freep) struct cache *cache = NULL;
	_cleanup_free_ char *dir = NULL;
	const char *cache_dir = NULL;
	bool repair = false;
	struct fsck_result res;
	struct stat st;
	int r;
	const struct verb_arg args[] = { VERB_SWITCH('r', &repair), CACHE_DIR_ARG(&cache_dir), {} };

	r = verb_args_parse(argc, argv, &(struct verb_args) { .name = "fsck",
		.usage = fsck_usage, .operands = "takes no arguments", .optstring = "rC:h",
		.options = options, .args = args });
	if (r != 0)
		return r > 0 ? 0 : r;
	dir = cache_dir ? strdup(cache_dir) : NULL;
	if (!dir && cache_dir_default(&dir) < 0)
		dir = NULL;
	if (!dir)
		return log_error_errno(-ERR_CACHE, "cannot determine the cache directory; use "
				       "--cache-dir");
	/* Checking must not create a cache where there is none. */
	if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode))
		return log_error_errno(-ERR_CACHE, "cannot read cache '%s': no such directory", dir);
	r = cli_cache_open_writable(dir, "check", &cache);
	if (r < 0)
		return r;
	r = cache_fsck(cache, &(struct fsck_options) { .repair = repair }, print_problem, NULL,
		       &res);
	if (r < 0) {
		log_error_errno(r, "cannot read cache '%s': %m", cache->dir);
		return -ERR_CACHE;
	}
	if (res.problems == 0)
		printf("cache %s: %llu blobs, %llu bytes, clean\n", cache->dir,
		       (unsigned long long)res.n_blobs, (unsigned long long)res.blob_bytes);
	/* Problems left: the cache is readable, but not sound. */
	return res.problems > res.repaired ? -EUCLEAN : 0;
}
