/*
 * cli/inspect.c: `lazyroot inspect REF`: one image from the cache (never the registry): its
 * manifest, config and layers, as JSON or as text.  The JSON document is built first and the
 * text printed from it, so that both always say the same.
 */
#include <getopt.h>
#include <jansson.h>

#include "cache/base/log.h"
#include "cache/base/util.h"
#include "cache/format/layer_lazy.h"
#include "cache/seek.h"
#include "cache/share/seek_remote.h"
#include "cache/format/manifest.h"
#include "cache/store/cache.h"
#include "cli/cache_args.h"
#include "cli/cli.h"
#include "cli/verb_args.h"

static bool arg_json;
static const char *arg_platform;

/* Picks the row to show when a reference resolved for several platforms: the host's first. */
static size_t pick_platform(const struct ref_query *q)
{
	struct platform host = {};
	_cleanup_free_ char *h = NULL;
	size_t n = strv_length(q->digests);

	if (q->platforms && platform_host(&host) >= 0) {
		h = platform_to_string(&host);
		platform_done(&host);
		for (size_t i = 0; h && i < n; i++)
			if (streq(q->platforms[i], h))
				return i;
	}
	return 0;
}

static json_t *strv_json(char **l)
{
	json_t *a;

	if (!l)
		return json_null();
	a = json_array();
	for (char **p = l; a && *p; p++)
		json_array_append_new(a, json_string(*p));
	return a;
}

static void print_strv(const char *label, char **l)
{
	printf("%-12s", label);
	if (!l)
		printf(" -");
	for (char **p = l; p && *p; p++)
		printf(" %s", *p);
	printf("\n");
}

/* The image @digest of the cache, parsed. */
struct inspected {
	struct manifest *manifest;
	struct image_config *config;
	char *platform;
};

static void inspected_done(struct inspected *in)
{
	manifest_free(in->manifest);
	image_config_free(in->config);
	free(in->platform);
}

static int inspected_load(struct cache *c, const char *digest, struct inspected *ret)
{
	_cleanup_free_ char *media_type = NULL, *manifest = NULL, *config = NULL;
	size_t manifest_len, config_len;
	int r;

	r = index_db_image_get(c->db, digest, &media_type, &manifest, &manifest_len, &config,
			       &config_len);
	if (r >= 0)
		r = manifest_parse(manifest, manifest_len, media_type, &ret->manifest);
	if (r >= 0)
		r = image_config_parse(config, config_len, &ret->config);
	if (r >= 0)
		ret->platform = platform_to_string(&ret->config->platform);
	return r;
}

/* Where the layer's seek index came from (seek_index_origin()), null when it has none. */
static json_t *origin_json(struct cache *c, const struct layer_desc *l)
{
	_cleanup_free_ char *origin = NULL;

	if (!seek_layer_eligible(l) || seek_index_origin(c, l->digest, &origin) < 0)
		return json_null();
	return json_string(origin);
}

static json_t *layers_json(struct cache *c, const struct manifest *m)
{
	json_t *layers = json_array();

	for (size_t i = 0; layers && i < m->n_layers; i++) {
		const struct layer_desc *l = &m->layers[i];
		_cleanup_free_ char *format = NULL;
		int indexed = index_db_layer_is_indexed(c->db, l->digest);

		if (indexed <= 0 || index_db_layer_get_format(c->db, l->digest, &format) < 0)
			format = strdup(layer_format_to_string(layer_format_detect(l)));
		json_array_append_new(layers, json_pack("{s:s, s:I, s:s, s:s, s:b, s:o}",
			"digest", l->digest, "size", (json_int_t)l->size, "media_type", l->media_type,
			"format", format ? format : "?", "indexed", indexed > 0,
			"seek_index", origin_json(c, l)));
	}
	return layers;
}

static json_t *inspect_json(struct cache *c, const char *canonical, const char *digest,
			    const struct inspected *in)
{
	const struct image_config *cfg = in->config;
	const char *plat = in->platform ? in->platform : "";

	return json_pack("{s:s, s:s, s:s, s:s, s:{s:s, s:s, s:o, s:o, s:o, s:o, s:o}, s:o}",
		"reference", canonical, "digest", digest, "media_type", in->manifest->media_type,
		"platform", plat,
		"config", "digest", in->manifest->config_digest, "platform", plat,
		"entrypoint", strv_json(cfg->entrypoint), "cmd", strv_json(cfg->cmd),
		"env", strv_json(cfg->env),
		"working_dir", cfg->working_dir ? json_string(cfg->working_dir) : json_null(),
		"user", cfg->user ? json_string(cfg->user) : json_null(),
		"layers", layers_json(c, in->manifest));
}

static void print_text(const char *canonical, const char *digest, const struct inspected *in,
		       json_t *o)
{
	const struct image_config *cfg = in->config;
	json_t *l;
	size_t i;

	printf("%-12s %s\n", "reference", canonical);
	printf("%-12s %s\n", "digest", digest);
	printf("%-12s %s\n", "media type", in->manifest->media_type);
	printf("%-12s %s\n", "config", in->manifest->config_digest);
	printf("%-12s %s\n", "platform", in->platform ? in->platform : "-");
	print_strv("entrypoint", cfg->entrypoint);
	print_strv("cmd", cfg->cmd);
	print_strv("env", cfg->env);
	printf("%-12s %s\n", "workingdir", cfg->working_dir ? cfg->working_dir : "-");
	printf("%-12s %s\n", "user", cfg->user ? cfg->user : "-");
	printf("layers:\n");
	json_array_foreach(json_object_get(o, "layers"), i, l)
		printf("  %zu %s %12" JSON_INTEGER_FORMAT " %-13s %-8s %s%s%s\n", i + 1,
		       json_string_value(json_object_get(l, "digest")),
		       json_integer_value(json_object_get(l, "size")),
		       json_string_value(json_object_get(l, "format")),
		       json_is_true(json_object_get(l, "indexed")) ? "indexed" : "-",
		       json_string_value(json_object_get(l, "media_type")),
		       json_is_string(json_object_get(l, "seek_index")) ? ", seek index " : "",
		       json_string_value(json_object_get(l, "seek_index")) ?: "");
}

/* The image @arg names in @c, loaded; errors logged. */
static int inspect_resolve(struct cache *c, const char *arg, char **ret_canonical,
			   char **ret_digest, struct inspected *ret)
{
	_cleanup_(ref_query_done) struct ref_query q = {};
	int r;

	r = ref_query_resolve(c, arg, arg_platform, &q, ret_canonical);
	if (r == -EINVAL)
		return log_error_errno(-ERR_USAGE, "invalid image reference '%s'", arg);
	if (r == -ENOENT)
		return log_error_errno(-ERR_REGISTRY, "image '%s' is not in the cache", arg);
	if (r < 0)
		return log_error_errno(-ERR_CACHE, "cannot read cache '%s': %s", c->dir, strerror(-r));
	*ret_digest = strdup(q.digests[pick_platform(&q)]);
	if (!*ret_digest)
		return log_error_errno(-ENOMEM, "out of memory");
	r = inspected_load(c, *ret_digest, ret);
	if (r == -ENOENT)
		return log_error_errno(-ERR_REGISTRY, "image '%s' is not in the cache", arg);
	if (r < 0)
		return log_error_errno(-ERR_CACHE, "cannot read image '%s' from cache '%s': %s",
				       *ret_digest, c->dir, strerror(-r));
	return 0;
}

int verb_inspect(int argc, char **argv)
{
	static const struct option options[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "platform", required_argument, NULL, 'P' },
		CACHE_OPTIONS,
		{}
	};
	_cleanup_(cache_freep) struct cache *c = NULL;
	_cleanup_free_ char *canonical = NULL, *digest = NULL;
	_cleanup_(inspected_done) struct inspected in = {};
	const char *cache_dir = NULL;
	json_t *o;
	int r;

	arg_json = false;
	arg_platform = NULL;
	r = verb_args_parse(argc, argv, &(struct verb_args) {
		.name = "inspect", .operands = "needs one image reference",
		.min_operands = 1, .max_operands = 1,
		.usage = "Usage: lazyroot inspect [--json] [--platform=OS/ARCH] [--cache-dir=DIR] REF"
			 "\n\nShow an image from the cache (never the registry): manifest, config and"
			 " layers.\n",
		.optstring = "jP:C:h", .options = options,
		.args = (const struct verb_arg[]) {
			VERB_SWITCH('j', &arg_json), VERB_VALUE('P', &arg_platform), CACHE_DIR_ARG(&cache_dir), {}
		},
	});
	if (r != 0)
		return r > 0 ? 0 : r;
	r = cli_cache_open(cache_dir, &c);
	if (r >= 0)
		r = inspect_resolve(c, argv[optind], &canonical, &digest, &in);
	if (r < 0)
		return r;
	o = inspect_json(c, canonical, digest, &in);
	if (!o)
		return log_error_errno(-ENOMEM, "out of memory");
	if (arg_json) {
		char *text = json_dumps(o, JSON_INDENT(2));

		if (text)
			printf("%s\n", text);
		free(text);
	} else {
		print_text(canonical, digest, &in, o);
	}
	json_decref(o);
	return 0;
}
