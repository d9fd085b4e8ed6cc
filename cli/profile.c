/*
 * cli/profile.c: `lazyroot profile [--push] REF`: prints the start profile the cache keeps for
 * an image (recorded by `mount --record-profile`, or fetched by an earlier mount), or publishes
 * it as an artifact that refers to the image, in the image's repository and the configured
 * artifact repository (cache/profile.h), for mounts on other hosts to fetch.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cache/base/error.h"
#include "cache/base/log.h"
#include "cache/config.h"
#include "cache/image.h"
#include "cache/share/artifact_image.h"
#include "cache/registry/profile_cache.h"
#include "cache/store/index_db.h"
#include "cli/cache_args.h"
#include "cli/cli.h"
#include "cli/exit_status.h"
#include "cli/image_request.h"
#include "cli/verb_args.h"

static const char usage[] =
	"Usage: lazyroot profile [OPTIONS] REF\n"
	"Print the start profile the cache keeps for image REF, or publish it.\n\n"
	"      --push             publish it in REF's repository and the artifact repository\n"
	IMAGE_OPTIONS_HELP
	"  -v, --verbose          debug output\n"
	"  -h, --help             this help\n";

enum { OPT_PUSH = 0x3b0 };

/* Publishes the profile kept for @image as an artifact that refers to it (its manifest's
 * descriptor, from the cache).  Returns how many places took it; -ENOENT when none is kept. */
static int profile_publish(struct cache *c, const struct reference *ref,
			   const struct registry_options *ro, const struct artifact_config *cfg,
			   const char *image)
{
	_cleanup_free_ char *buf = NULL, *media_type = NULL, *manifest = NULL;
	struct artifact_desc subject = {};
	size_t len, manifest_len;
	int r;

	r = profile_load(c, image, &buf, &len, NULL);
	if (r < 0)
		return r;
	r = index_db_image_get(c->db, image, &media_type, &manifest, &manifest_len, NULL, NULL);
	if (r < 0)
		return error_set(r, "image %s is not in the cache", image);
	strcpy(subject.digest, image);
	subject.size = manifest_len;
	subject.media_type = media_type;
	return artifact_publish_image(c->db, ref, ro, cfg, &subject, START_PROFILE_ARTIFACT_TYPE,
				      &(struct artifact_blob) {
					      .media_type = START_PROFILE_MEDIA_TYPE,
					      .data = buf, .size = len,
				      }, 1);
}

static int profile_push(struct cache *c, const struct reference *ref,
			const struct mount_request *req, const struct image *img)
{
	struct registry_options ro = mount_request_registry_options(req);
	struct config cfg = {};
	unsigned line = 0;
	int r;

	r = config_read(&cfg, &line);
	if (r < 0)
		return log_error_errno(-ERR_USAGE, "invalid configuration file '%s' (line %u)",
				       config_path(), line);
	r = profile_publish(c, ref, &ro, &cfg.artifacts, img->manifest_digest);
	if (r == -ENOENT)
		return log_error_errno(-ERR_OTHER, "no start profile of '%s' in cache '%s' (record "
				       "one with 'lazyroot mount --record-profile')", req->ref, c->dir);
	if (r < 0)
		return log_error_errno(-ERR_REGISTRY, "cannot publish the start profile of '%s': %s",
				       req->ref, error_take(r));
	printf("published the start profile of %s in %d place%s\n", img->manifest_digest, r,
	       r == 1 ? "" : "s");
	return 0;
}

static int profile_print(struct cache *c, const struct mount_request *req, const struct image *img)
{
	_cleanup_free_ char *buf = NULL;
	size_t len;
	int r;

	r = profile_load(c, img->manifest_digest, &buf, &len, NULL);
	if (r == -ENOENT)
		return log_error_errno(-ERR_OTHER, "no start profile of '%s' in cache '%s' (record "
				       "one with 'lazyroot mount --record-profile')", req->ref, c->dir);
	if (r < 0)
		return log_error_errno(-ERR_CACHE, "cannot read the start profile of '%s': %s",
				       req->ref, error_take(r));
	fwrite(buf, 1, len, stdout);
	putchar('\n');
	return 0;
}

int verb_profile(int argc, char **argv)
{
	static const struct option options[] = {
		{ "push", no_argument, NULL, OPT_PUSH },
		IMAGE_OPTIONS,
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	_cleanup_(mount_request_done) struct mount_request req = {};
	_cleanup_(cache_freep) struct cache *cache = NULL;
	_cleanup_(image_freep) struct image *img = NULL;
	_cleanup_(reference_freep) struct reference *ref = NULL;
	struct pull_options po;
	enum pull_failure failure;
	bool push = false;
	int r;

	r = verb_args_parse(argc, argv, &(struct verb_args) {
		.name = "profile", .usage = usage, .optstring = "vh", .options = options,
		.args = (const struct verb_arg[]) { VERB_SWITCH(OPT_PUSH, &push), {} },
		.image = &req, .min_operands = 1, .max_operands = 1,
		.operands = "needs an image reference",
	});
	if (r != 0)
		return r > 0 ? 0 : r;
	req.ref = argv[optind];
	r = reference_parse(req.ref, &ref);
	if (r < 0)
		return log_error_errno(-ERR_USAGE, "invalid image reference '%s'", req.ref);
	r = push ? cli_cache_open_writable(req.cache_dir, "profile --push", &cache) :
		   cli_cache_open(req.cache_dir, &cache);
	if (r < 0)
		return r;
	/* The image as a mount resolves it: from the cache when it is there. */
	po = (struct pull_options) { .platform = req.platform, .policy = req.policy,
				     .registry = mount_request_registry_options(&req) };
	r = image_pull(cache, ref, &po, &img, &failure);
	if (r < 0)
		return log_error_errno(pull_failure_errno(failure), "cannot resolve '%s': %s",
				       req.ref, error_take(r));
	return push ? profile_push(cache, ref, &req, img) : profile_print(cache, &req, img);
}
