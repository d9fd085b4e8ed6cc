/*
 * cli/index.c: `lazyroot index REF`: builds the seek index of every tar+gzip layer of an image
 * that has none in the cache (cache/seek.h), so that later mounts read those layers lazily.
 * The image is pulled first (a layer read whole builds its index on the way); a layer already
 * in the cache is streamed once more, verified, and only its index kept.
 */
#include <getopt.h>

#include "cache/base/error.h"
#include "cache/base/log.h"
#include "cache/image.h"
#include "cache/seek.h"
#include "cli/cache_args.h"
#include "cli/cli.h"
#include "cli/exit_status.h"
#include "cli/image_request.h"
#include "cli/index_publish.h"
#include "cli/verb_args.h"

static const char usage[] =
	"Usage: lazyroot index [OPTIONS] REF\n"
	"Build the seek index of each tar+gzip layer of REF that has none in the cache, so\n"
	"that mounts read those layers lazily.\n\n"
	"      --push             publish the indexes built here for the image, in its\n"
	"                         repository and the configured artifact-repository\n"
	IMAGE_OPTIONS_HELP
	"  -v, --verbose          debug output\n"
	"  -h, --help             this help\n";

/* One line per layer: how it will be served, and its index. */
static int report(struct cache *c, const struct image *img)
{
	const struct manifest *m = img->manifest;

	for (size_t i = 0; i < m->n_layers; i++) {
		const struct layer_desc *l = &m->layers[i];
		_cleanup_(seek_index_freep) struct seek_index *si = NULL;
		_cleanup_free_ char *digest = NULL;
		struct seek_index_info info;
		bool trusted = false;

		if (!seek_layer_eligible(l)) {
			printf("%s %s\n", l->digest, layer_format_to_string(layer_format_detect(l)));
			continue;
		}
		if (index_db_seek_get(c->db, l->digest, &digest, &trusted) < 0 ||
		    seek_load(c, l, &si, NULL) < 0)
			return log_error_errno(-ERR_CACHE, "layer '%s' has no usable seek index: %s",
					       l->digest, error_take(-EBADMSG));
		seek_index_get_info(si, &info);
		printf("%s gzip-index %s entries=%zu checkpoints=%zu chunks=%zu%s\n", l->digest,
		       digest, info.n_entries, info.n_checkpoints, info.n_chunks,
		       trusted ? "" : " (untrusted)");
	}
	return 0;
}

enum { OPT_PUSH = 0x100 };

/* --push: one line saying where the indexes went, or why nowhere. */
static int push_indexes(struct cache *c, const struct reference *ref,
			const struct registry_options *ro, const struct image *img,
			const char *arg)
{
	int class, r;

	r = index_publish(c, ref, ro, img, &class);
	if (r < 0)
		return log_error_errno(class, "cannot publish the seek indexes of '%s': %s", arg,
				       error_take(r));
	if (r == 0)
		printf("no seek index to publish\n");
	else
		printf("published in %d place%s\n", r, r > 1 ? "s" : "");
	return 0;
}

int verb_index(int argc, char **argv)
{
	static const struct option options[] = {
		IMAGE_OPTIONS,
		{ "push", no_argument, NULL, OPT_PUSH },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	struct mount_request req = {};
	bool push = false;
	const struct verb_args v = {
		.name = "index", .usage = usage, .optstring = "vh", .options = options,
		.args = (const struct verb_arg[]) { VERB_SWITCH(OPT_PUSH, &push), { 0 } },
		.image = &req,
		.min_operands = 1, .max_operands = 1, .operands = "needs an image reference",
	};
	_cleanup_(cache_freep) struct cache *cache = NULL;
	_cleanup_(image_freep) struct image *img = NULL;
	_cleanup_(reference_freep) struct reference *ref = NULL;
	struct pull_options po = {};
	enum pull_failure failure;
	int r;

	r = verb_args_parse(argc, argv, &v);
	if (r != 0)
		goto finish;
	r = reference_parse(argv[optind], &ref);
	if (r < 0) {
		r = log_error_errno(-ERR_USAGE, "invalid image reference '%s'", argv[optind]);
		goto finish;
	}
	r = cli_cache_open_writable(req.cache_dir, "index", &cache);
	if (r < 0)
		goto finish;
	po = (struct pull_options) { .platform = req.platform, .policy = req.policy,
				     .registry = mount_request_registry_options(&req),
				     .build_seek_index = true };
	r = image_pull(cache, ref, &po, &img, &failure);
	if (r >= 0)
		r = image_index_layers(cache, ref, &po, img, &failure);
	if (r < 0) {
		r = log_error_errno(pull_failure_errno(failure), "cannot index '%s': %s",
				    argv[optind], error_take(r));
		goto finish;
	}
	r = report(cache, img);
	if (r >= 0 && push)
		r = push_indexes(cache, ref, &po.registry, img, argv[optind]);
finish:
	mount_request_done(&req);
	return r > 0 ? 0 : r;
}
