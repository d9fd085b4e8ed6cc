/*
 * cli/rm.c: `lazyroot rm REF…`: forgets images and frees what nothing else uses, from the cache
 * alone.  An image a mount of this cache reads from is refused (--force: only its reference
 * goes); the cache lock is held exclusively throughout, so no pull imports meanwhile.
 */
#include <getopt.h>
#include <sys/file.h>

#include "cache/base/log.h"
#include "cache/base/util.h"
#include "cache/gc.h"
#include "cache/store/cache.h"
#include "cache/store/mount_records.h"
#include "cli/cache_args.h"
#include "cli/cli.h"
#include "cli/machine.h"
#include "cli/verb_args.h"

static const char *arg_platform;
static bool arg_force;
static const char *arg_machine;
static bool arg_keep_writes;

struct ref_count {
	const char *digest;
	unsigned n;
};

/* Counts the refs that still resolve to an image, after the ones rm forgot. */
static int count_refs(void *userdata, const struct index_db_ref_row *row)
{
	struct ref_count *rc = userdata;

	if (streq(row->digest, rc->digest))
		rc->n++;
	return 0;
}

static int rm_one(struct cache *c, const char *arg, char **mounted, uint64_t *freed)
{
	_cleanup_free_ char *canonical = NULL;
	struct ref_query q = {};
	int status = 0, r;

	r = ref_query_resolve(c, arg, arg_platform, &q, &canonical);
	if (r == -EINVAL) {
		log_error("invalid image reference '%s'", arg);
		return -ERR_USAGE;
	}
	if (r == -ENOENT) {
		log_error("image '%s' is not in the cache", arg);
		return -ERR_REGISTRY;
	}
	if (r < 0)
		goto fail;

	for (size_t i = 0; q.digests[i]; i++)
		if (strv_contains(mounted, q.digests[i]) && !arg_force) {
			log_error("image '%s' is mounted; unmount it first or use --force to forget "
				  "only the reference", arg);
			status = -EBUSY;
			goto finish;
		}

	/* The reference goes first; an image goes when nothing else names it. */
	for (size_t i = 0; q.refs && q.refs[i]; i++) {
		r = index_db_ref_delete(c->db, q.refs[i], q.platforms[i]);
		if (r < 0)
			goto fail;
	}
	for (size_t i = 0; q.digests[i]; i++) {
		struct ref_count rc = { .digest = q.digests[i] };

		if (strv_contains(mounted, q.digests[i]))
			continue;  /* --force: the mount keeps its image */
		if (q.refs) {
			r = index_db_ref_foreach(c->db, count_refs, &rc);
			if (r < 0)
				goto fail;
			if (rc.n > 0)
				continue;
		}
		r = cache_image_remove(c, q.digests[i], freed);
		if (r < 0)
			goto fail;
	}
	printf("removed %s\n", canonical);
	goto finish;
fail:
	log_error_errno(r, "cannot remove '%s' from cache '%s': %m", arg, c->dir);
	status = -ERR_CACHE;
finish:
	ref_query_done(&q);
	return status;
}

int verb_rm(int argc, char **argv)
{
	static const struct option options[] = {
		{ "force", no_argument, NULL, 'f' },
		{ "platform", required_argument, NULL, 'P' },
		{ "machine", required_argument, NULL, 'M' },
		{ "keep-writes", no_argument, NULL, 'K' },
		CACHE_OPTIONS,
		{}
	};
	_cleanup_(cache_freep) struct cache *c = NULL;
	_cleanup_strv_free_ char **mounted = NULL;
	_cleanup_close_ int lock_fd = -EBADF;
	const char *cache_dir = NULL;
	uint64_t freed = 0;
	int status, r;

	arg_force = arg_keep_writes = false;
	arg_platform = arg_machine = NULL;
	status = verb_args_parse(argc, argv, &(struct verb_args) {
		.name = "rm", .max_operands = -1,
		.usage = "Usage: lazyroot rm [--force] [--platform=OS/ARCH] [--cache-dir=DIR] REF...\n"
			 "       lazyroot rm --machine=NAME [--keep-writes]\n\n"
			 "Forget images: the reference, and the image, its layers and blobs when nothing\n"
			 "else uses them.  A mounted image is refused; --force forgets only its"
			 " reference.\n"
			 "With --machine: unmount machine NAME and remove its settings, its drop-in and\n"
			 "its writes (kept with --keep-writes); the image stays in the cache.\n",
		.optstring = "fP:M:C:h", .options = options,
		.args = (const struct verb_arg[]) {
			VERB_SWITCH('f', &arg_force), VERB_VALUE('P', &arg_platform), CACHE_DIR_ARG(&cache_dir),
			VERB_VALUE('M', &arg_machine), VERB_SWITCH('K', &arg_keep_writes), {}
		},
	});
	if (status != 0)
		return status > 0 ? 0 : status;
	if (arg_machine && optind < argc)
		return log_error_errno(-ERR_USAGE, "rm --machine takes no image reference");
	if (arg_machine)
		return machine_remove(arg_machine, arg_keep_writes);
	if (arg_keep_writes)
		return log_error_errno(-ERR_USAGE, "--keep-writes goes with --machine");
	if (optind >= argc)
		return log_error_errno(-ERR_USAGE, "rm needs an image reference (see 'lazyroot rm "
				       "--help')");
	status = cli_cache_open_writable(cache_dir, "remove images from", &c);
	if (status != 0)
		return status;
	r = cache_lock(c, LOCK_EX, &lock_fd);
	if (r >= 0)
		r = mount_records_mounted_digests(c->dir, &mounted);
	if (r < 0) {
		log_error_errno(r, "cannot lock cache '%s': %m", c->dir);
		return -ERR_CACHE;
	}
	for (int i = optind; i < argc; i++) {
		int k = rm_one(c, argv[i], mounted, &freed);

		if (k != 0 && status == 0)
			status = k;
	}
	return status;
}
