/*
 * cli/gc.c: `lazyroot gc` (remove what nothing uses, evict least recently used images down to
 * a size) and `lazyroot fsck` (check, optionally repair, a cache directory).  The work is in
 * cache/gc.c and cache/fsck.c; this file parses options and prints.
 */
#include <getopt.h>
#include <sys/stat.h>

#include "cache/config.h"
#include "cache/fsck.h"
#include "cache/gc.h"
#include "cache/base/log.h"
#include "cache/base/util.h"
#include "cli/cli.h"

int verb_gc(int argc, char **argv)
{
	static const struct option options[] = {
		{ "max-size", required_argument, NULL, 'm' },
		{ "cache-dir", required_argument, NULL, 'C' },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	_cleanup_(cache_freep) struct cache *cache = NULL;
	struct gc_options o = { .tmp_min_age = GC_TMP_MIN_AGE_SEC };
	struct gc_result res;
	const char *cache_dir = NULL;
	bool have_max = false;
	unsigned line = 0;
	int c, status, r;

	optind = 1;
	while ((c = getopt_long(argc, argv, "m:C:h", options, NULL)) >= 0) {
		switch (c) {
		case 'm':
			if (parse_size(optarg, &o.max_size) < 0) {
				log_error("invalid size '%s' (e.g. 10G, 500M, 1024K, 4096)", optarg);
				return EXIT_USAGE;
			}
			have_max = true;
			break;
		case 'C':
			cache_dir = optarg;
			break;
		case 'h':
			printf("Usage: lazyroot gc [--max-size=SIZE] [--cache-dir=DIR]\n\n"
			       "Remove blobs no layer uses and old temporary files; with a maximum size\n"
			       "(default: max-size in %s), evict the least recently used\n"
			       "images that are not mounted until the cache fits.\n", config_path());
			return 0;
		default:
			return EXIT_USAGE;
		}
	}
	if (optind != argc) {
		log_error("gc takes no arguments (see 'lazyroot gc --help')");
		return EXIT_USAGE;
	}
	if (!have_max) {
		r = config_max_size(&o.max_size, &line);
		if (r < 0) {
			log_error_errno(r, "cannot read '%s'%s: %m", config_path(),
					r == -EINVAL ? " (bad line)" : "");
			return EXIT_USAGE;
		}
	}
	status = cli_cache_open(cache_dir, &cache);
	if (status != 0)
		return status;
	r = cache_gc(cache, &o, &res);
	if (r < 0 && r != -ENOSPC) {
		log_error_errno(r, "cannot collect garbage in cache '%s': %m", cache->dir);
		return EXIT_CACHE;
	}
	for (char **d = res.evicted; d && *d; d++)
		printf("evicted %s\n", *d);
	printf("removed %llu orphan blobs (%llu bytes), %llu temporary files, %llu unused layers;"
	       " evicted %zu images (%llu bytes); cache now %llu blobs, %llu bytes\n",
	       (unsigned long long)res.orphans, (unsigned long long)res.orphan_bytes,
	       (unsigned long long)res.tmp_files, (unsigned long long)res.layers_dropped,
	       strv_length(res.evicted), (unsigned long long)res.evicted_bytes,
	       (unsigned long long)res.n_blobs, (unsigned long long)res.blob_bytes);
	gc_result_done(&res);
	if (r == -ENOSPC) {
		log_error("cache '%s' is still larger than %llu bytes: what is left is mounted",
			  cache->dir, (unsigned long long)o.max_size);
		return EXIT_FAILURE_OTHER;
	}
	(void)line;
	return 0;
}

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
		{ "cache-dir", required_argument, NULL, 'C' },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	_cleanup_(cache_freep) struct cache *cache = NULL;
	_cleanup_free_ char *dir = NULL;
	struct fsck_options o = {};
	struct fsck_result res;
	struct stat st;
	int c, r;

	optind = 1;
	while ((c = getopt_long(argc, argv, "rC:h", options, NULL)) >= 0) {
		switch (c) {
		case 'r':
			o.repair = true;
			break;
		case 'C':
			free(dir);
			dir = strdup(optarg);
			break;
		case 'h':
			printf("Usage: lazyroot fsck [--repair] [--cache-dir=DIR]\n\n"
			       "Check that every blob hashes to its name, that the index and the blobs\n"
			       "agree, and the index's integrity; --repair deletes what is wrong.\n");
			return 0;
		default:
			return EXIT_USAGE;
		}
	}
	if (optind != argc) {
		log_error("fsck takes no arguments (see 'lazyroot fsck --help')");
		return EXIT_USAGE;
	}
	if (!dir && cache_dir_default(&dir) < 0)
		dir = NULL;
	if (!dir) {
		log_error("cannot determine the cache directory; use --cache-dir");
		return EXIT_CACHE;
	}
	/* Checking must not create a cache where there is none. */
	if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
		log_error("cannot read cache '%s': no such directory", dir);
		return EXIT_CACHE;
	}
	r = cli_cache_open(dir, &cache);
	if (r != 0)
		return r;
	r = cache_fsck(cache, &o, print_problem, NULL, &res);
	if (r < 0) {
		log_error_errno(r, "cannot read cache '%s': %m", cache->dir);
		return EXIT_CACHE;
	}
	if (res.problems == 0)
		printf("cache %s: %llu blobs, %llu bytes, clean\n", cache->dir,
		       (unsigned long long)res.n_blobs, (unsigned long long)res.blob_bytes);
	return res.problems > res.repaired ? EXIT_FAILURE_OTHER : 0;
}
