/*
 * cli/images.c: the inventory verbs, from the cache alone (no network): `images` lists what
 * the cache knows, `inspect` shows one image, `rm` forgets images and frees what nothing else
 * uses.  A reference is looked up as mount resolves it (canonical form, the refs table); an
 * image known only by digest is named "sha256:…".
 */
#include <getopt.h>
#include <jansson.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>

#include "cache/store/cache.h"
#include "cache/base/digest.h"
#include "cache/gc.h"
#include "cache/format/layer_lazy.h"
#include "cache/base/log.h"
#include "cache/format/manifest.h"
#include "cache/format/reference.h"
#include "cache/base/util.h"
#include "cli/cli.h"

int cli_cache_open(const char *dir, struct cache **ret)
{
	_cleanup_free_ char *d = NULL;
	int r;

	if (dir)
		d = strdup(dir);
	else if (cache_dir_default(&d) < 0)
		d = NULL;
	if (!d) {
		log_error("cannot determine the cache directory; use --cache-dir");
		return EXIT_CACHE;
	}
	r = cache_open(d, ret);
	if (r < 0) {
		log_error_errno(r, "cannot open cache '%s': %m", d);
		return EXIT_CACHE;
	}
	return 0;
}

/* One row of `images`. */
struct image_row {
	char *reference;     /* NULL: known only by digest */
	char *digest;
	char *platform;
	size_t layers;
	uint64_t size, cached;
	int64_t last_used;
	bool mounted;
};

struct inventory {
	struct cache *c;
	struct image_row *rows;
	size_t n, n_allocated;
	char **mounted;
	char **referenced;   /* digests some ref resolves to */
};

static void inventory_done(struct inventory *inv)
{
	for (size_t i = 0; i < inv->n; i++) {
		free(inv->rows[i].reference);
		free(inv->rows[i].digest);
		free(inv->rows[i].platform);
	}
	free(inv->rows);
	strv_free(inv->mounted);
	strv_free(inv->referenced);
}

static struct image_row *inventory_push(struct inventory *inv)
{
	if (inv->n == inv->n_allocated) {
		size_t n = inv->n_allocated ? inv->n_allocated * 2 : 16;
		struct image_row *nr = reallocarray(inv->rows, n, sizeof(*nr));

		if (!nr)
			return NULL;
		inv->rows = nr;
		inv->n_allocated = n;
	}
	inv->rows[inv->n] = (struct image_row) {};
	return &inv->rows[inv->n++];
}

static int add_ref(void *userdata, const struct index_db_ref_row *row)
{
	struct inventory *inv = userdata;
	struct image_row *ir = inventory_push(inv);

	if (!ir)
		return -ENOMEM;
	ir->reference = strdup(row->ref);
	ir->digest = strdup(row->digest);
	ir->platform = strdup(row->platform);
	if (!ir->reference || !ir->digest || !ir->platform)
		return -ENOMEM;
	if (!strv_contains(inv->referenced, row->digest))
		return strv_push(&inv->referenced, row->digest);
	return 0;
}

static int add_unreferenced(void *userdata, const struct index_db_image_row *row)
{
	struct inventory *inv = userdata;
	struct image_row *ir;

	if (strv_contains(inv->referenced, row->digest))
		return 0;
	ir = inventory_push(inv);
	if (!ir)
		return -ENOMEM;
	ir->digest = strdup(row->digest);
	ir->platform = strdup("");
	return ir->digest && ir->platform ? 0 : -ENOMEM;
}

struct blob_sum {
	int dir_fd;
	char **seen;
	uint64_t bytes;
};

static int sum_blob(void *userdata, const char *digest, bool chunk)
{
	struct blob_sum *bs = userdata;
	char rel[3 + DIGEST_HEX_LEN + 1];
	struct stat st;

	(void)chunk;
	if (digest_validate(digest) < 0 || strv_contains(bs->seen, digest))
		return 0;
	snprintf(rel, sizeof(rel), "%.2s/%s", digest + 7, digest + 7);
	if (fstatat(bs->dir_fd, rel, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
		return 0;
	bs->bytes += (uint64_t)st.st_size;
	return strv_push(&bs->seen, digest);
}

/* Fills in what the image row and its layers say; the platform from the config when the ref
 * did not name one. */
static int inventory_fill(struct inventory *inv, struct image_row *ir, int dir_fd)
{
	_cleanup_free_ char *media_type = NULL, *manifest = NULL, *config = NULL;
	_cleanup_(manifest_freep) struct manifest *m = NULL;
	_cleanup_(image_config_freep) struct image_config *cfg = NULL;
	struct blob_sum bs = { .dir_fd = dir_fd };
	size_t manifest_len, config_len;
	int r;

	r = index_db_image_get(inv->c->db, ir->digest, &media_type, &manifest, &manifest_len,
			       &config, &config_len);
	if (r == -ENOENT)
		return 0;  /* a resolution whose image was removed: nothing cached */
	if (r < 0)
		return r;
	r = manifest_parse(manifest, manifest_len, media_type, &m);
	if (r < 0)
		return 0;
	ir->layers = m->n_layers;
	for (size_t i = 0; i < m->n_layers; i++) {
		ir->size += m->layers[i].size;
		r = index_db_layer_foreach_blob(inv->c->db, m->layers[i].digest, sum_blob, &bs);
		if (r < 0 && r != -ENOENT) {
			strv_free(bs.seen);
			return r;
		}
	}
	strv_free(bs.seen);
	ir->cached = bs.bytes;
	if (!*ir->platform && image_config_parse(config, config_len, &cfg) >= 0) {
		char *p = platform_to_string(&cfg->platform);

		if (p) {
			free(ir->platform);
			ir->platform = p;
		}
	}
	ir->mounted = strv_contains(inv->mounted, ir->digest);
	return 0;
}

/* images.last_used of each row, read in one pass. */
static int fill_last_used(void *userdata, const struct index_db_image_row *row)
{
	struct inventory *inv = userdata;

	for (size_t i = 0; i < inv->n; i++)
		if (streq(inv->rows[i].digest, row->digest))
			inv->rows[i].last_used = row->last_used;
	return 0;
}

static void format_time(int64_t t, char *buf, size_t n)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (t <= 0 || !gmtime_r(&tt, &tm))
		snprintf(buf, n, "%s", "");
	else
		strftime(buf, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void format_size(uint64_t v, char *buf, size_t n)
{
	static const char *const units[] = { "B", "kB", "MB", "GB", "TB" };
	double d = (double)v;
	size_t u = 0;

	while (d >= 1000 && u + 1 < ELEMENTSOF(units)) {
		d /= 1000;
		u++;
	}
	if (u == 0)
		snprintf(buf, n, "%llu B", (unsigned long long)v);
	else
		snprintf(buf, n, "%.3g %s", d, units[u]);
}

static int print_images(struct inventory *inv, bool json)
{
	if (json) {
		json_t *a = json_array();
		char *text;

		if (!a)
			return -ENOMEM;
		for (size_t i = 0; i < inv->n; i++) {
			const struct image_row *ir = &inv->rows[i];
			char when[32];
			json_t *o;

			format_time(ir->last_used, when, sizeof(when));
			o = json_pack("{s:o, s:s, s:s, s:I, s:I, s:I, s:o, s:b}",
				      "reference", ir->reference ? json_string(ir->reference) : json_null(),
				      "digest", ir->digest, "platform", ir->platform,
				      "layers", (json_int_t)ir->layers, "size", (json_int_t)ir->size,
				      "cached_bytes", (json_int_t)ir->cached,
				      "last_used", *when ? json_string(when) : json_null(),
				      "mounted", ir->mounted);
			if (!o || json_array_append_new(a, o) < 0) {
				json_decref(a);
				return -ENOMEM;
			}
		}
		text = json_dumps(a, JSON_INDENT(2));
		json_decref(a);
		if (!text)
			return -ENOMEM;
		printf("%s\n", text);
		free(text);
		return 0;
	}

	printf("%-50s %-19s %-14s %6s %10s %10s %-20s %s\n", "REFERENCE", "DIGEST", "PLATFORM",
	       "LAYERS", "SIZE", "CACHED", "LAST USED", "MOUNTED");
	for (size_t i = 0; i < inv->n; i++) {
		const struct image_row *ir = &inv->rows[i];
		char when[32], size[32], cached[32];

		format_time(ir->last_used, when, sizeof(when));
		format_size(ir->size, size, sizeof(size));
		format_size(ir->cached, cached, sizeof(cached));
		printf("%-50s %.19s %-14s %6zu %10s %10s %-20s %s\n",
		       ir->reference ? ir->reference : "<none>", ir->digest,
		       *ir->platform ? ir->platform : "-", ir->layers, size, cached,
		       *when ? when : "-", ir->mounted ? "yes" : "no");
	}
	return 0;
}

static int parse_cache_opts(int argc, char **argv, const char *usage, const char *optstring,
			    const struct option *options, int (*opt)(int c, const char *arg),
			    const char **ret_cache_dir)
{
	int c, r;

	optind = 1;
	while ((c = getopt_long(argc, argv, optstring, options, NULL)) >= 0) {
		switch (c) {
		case 'C':
			*ret_cache_dir = optarg;
			break;
		case 'h':
			printf("%s", usage);
			return -1;
		case '?':
			return EXIT_USAGE;
		default:
			r = opt ? opt(c, optarg) : EXIT_USAGE;
			if (r != 0)
				return r;
		}
	}
	return 0;
}

static bool arg_json;
static const char *arg_platform;
static bool arg_force;

static int common_opt(int c, const char *arg)
{
	switch (c) {
	case 'j':
		arg_json = true;
		return 0;
	case 'P':
		arg_platform = arg;
		return 0;
	case 'f':
		arg_force = true;
		return 0;
	}
	(void)arg;
	return EXIT_USAGE;
}

int verb_images(int argc, char **argv)
{
	static const struct option options[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "cache-dir", required_argument, NULL, 'C' },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	_cleanup_(cache_freep) struct cache *c = NULL;
	_cleanup_free_ char *blobs = NULL;
	_cleanup_close_ int dir_fd = -EBADF;
	struct inventory inv = {};
	const char *cache_dir = NULL;
	int status, r;

	arg_json = false;
	status = parse_cache_opts(argc, argv,
		"Usage: lazyroot images [--json] [--cache-dir=DIR]\n\n"
		"List the images in the cache: reference, manifest digest, platform, layers, size,\n"
		"bytes cached, last use, and whether a mount uses it.\n",
		"jC:h", options, common_opt, &cache_dir);
	if (status != 0)
		return status < 0 ? 0 : status;
	if (optind != argc) {
		log_error("images takes no arguments (see 'lazyroot images --help')");
		return EXIT_USAGE;
	}
	status = cli_cache_open(cache_dir, &c);
	if (status != 0)
		return status;
	inv.c = c;
	if (asprintf(&blobs, "%s/blobs/sha256", c->dir) < 0)
		return EXIT_FAILURE_OTHER;
	dir_fd = open(blobs, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	r = dir_fd < 0 ? -errno : cache_mounted_digests(&inv.mounted);
	if (r >= 0)
		r = index_db_ref_foreach(c->db, add_ref, &inv);
	if (r >= 0)
		r = index_db_image_foreach(c->db, add_unreferenced, &inv);
	if (r >= 0)
		r = index_db_image_foreach(c->db, fill_last_used, &inv);
	for (size_t i = 0; r >= 0 && i < inv.n; i++)
		r = inventory_fill(&inv, &inv.rows[i], dir_fd);
	if (r < 0) {
		inventory_done(&inv);
		log_error_errno(r, "cannot read cache '%s': %m", c->dir);
		return EXIT_CACHE;
	}
	r = print_images(&inv, arg_json);
	inventory_done(&inv);
	return r < 0 ? EXIT_FAILURE_OTHER : 0;
}

struct ref_query {
	const char *want, *platform;
	char **refs, **platforms, **digests;
};

static void ref_query_done(struct ref_query *q)
{
	strv_free(q->refs);
	strv_free(q->platforms);
	strv_free(q->digests);
}

static int ref_query_match(void *userdata, const struct index_db_ref_row *row)
{
	struct ref_query *q = userdata;
	int r;

	if (!streq(row->ref, q->want) || (q->platform && !streq(row->platform, q->platform)))
		return 0;
	r = strv_push(&q->refs, row->ref);
	if (r >= 0)
		r = strv_push(&q->platforms, row->platform);
	if (r >= 0)
		r = strv_push(&q->digests, row->digest);
	return r;
}

/* What @arg names: "sha256:…" is an image row itself (no refs); a reference is looked up in its
 * canonical form in the refs table (one platform's row with @platform).  -ENOENT if unknown,
 * -EINVAL if @arg is neither.  On success *q holds parallel strvs refs/platforms/digests
 * (refs and platforms NULL for a digest). */
static int resolve_arg(struct cache *c, const char *arg, const char *platform,
		       struct ref_query *q, char **ret_canonical)
{
	_cleanup_(reference_freep) struct reference *ref = NULL;
	_cleanup_free_ char *canonical = NULL;
	int r;

	*q = (struct ref_query) { .platform = platform };
	if (startswith(arg, "sha256:")) {
		if (digest_validate(arg) < 0)
			return -EINVAL;
		r = index_db_image_get(c->db, arg, NULL, NULL, NULL, NULL, NULL);
		if (r < 0)
			return r;
		canonical = strdup(arg);
		if (!canonical)
			return -ENOMEM;
		r = strv_push(&q->digests, arg);
		if (r < 0)
			return r;
		*ret_canonical = TAKE_PTR(canonical);
		return 0;
	}
	r = reference_parse(arg, &ref);
	if (r < 0)
		return -EINVAL;
	canonical = reference_to_string(ref);
	if (!canonical)
		return -ENOMEM;
	q->want = canonical;
	r = index_db_ref_foreach(c->db, ref_query_match, q);
	q->want = NULL;
	if (r >= 0 && !q->digests)
		r = -ENOENT;
	if (r < 0) {
		ref_query_done(q);
		return r;
	}
	*ret_canonical = TAKE_PTR(canonical);
	return 0;
}

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

int verb_inspect(int argc, char **argv)
{
	static const struct option options[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "platform", required_argument, NULL, 'P' },
		{ "cache-dir", required_argument, NULL, 'C' },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	_cleanup_(cache_freep) struct cache *c = NULL;
	_cleanup_free_ char *canonical = NULL, *media_type = NULL, *manifest = NULL, *config = NULL;
	_cleanup_(manifest_freep) struct manifest *m = NULL;
	_cleanup_(image_config_freep) struct image_config *cfg = NULL;
	_cleanup_free_ char *plat = NULL;
	struct ref_query q = {};
	const char *cache_dir = NULL, *digest;
	size_t manifest_len, config_len;
	json_t *layers = NULL, *o;
	int status, r;

	arg_json = false;
	arg_platform = NULL;
	status = parse_cache_opts(argc, argv,
		"Usage: lazyroot inspect [--json] [--platform=OS/ARCH] [--cache-dir=DIR] REF\n\n"
		"Show an image from the cache (never the registry): manifest, config and layers.\n",
		"jP:C:h", options, common_opt, &cache_dir);
	if (status != 0)
		return status < 0 ? 0 : status;
	if (argc - optind != 1) {
		log_error("inspect needs one image reference (see 'lazyroot inspect --help')");
		return EXIT_USAGE;
	}
	status = cli_cache_open(cache_dir, &c);
	if (status != 0)
		return status;
	r = resolve_arg(c, argv[optind], arg_platform, &q, &canonical);
	if (r == -EINVAL) {
		log_error("invalid image reference '%s'", argv[optind]);
		return EXIT_USAGE;
	}
	if (r == -ENOENT) {
		log_error("image '%s' is not in the cache", argv[optind]);
		return EXIT_REGISTRY;
	}
	if (r < 0) {
		log_error_errno(r, "cannot read cache '%s': %m", c->dir);
		return EXIT_CACHE;
	}
	digest = q.digests[pick_platform(&q)];
	r = index_db_image_get(c->db, digest, &media_type, &manifest, &manifest_len, &config,
			       &config_len);
	if (r == -ENOENT) {
		log_error("image '%s' is not in the cache", argv[optind]);
		status = EXIT_REGISTRY;
		goto finish;
	}
	if (r >= 0)
		r = manifest_parse(manifest, manifest_len, media_type, &m);
	if (r >= 0)
		r = image_config_parse(config, config_len, &cfg);
	if (r < 0) {
		log_error_errno(r, "cannot read image '%s' from cache '%s': %m", digest, c->dir);
		status = EXIT_CACHE;
		goto finish;
	}
	plat = platform_to_string(&cfg->platform);

	layers = json_array();
	for (size_t i = 0; layers && i < m->n_layers; i++) {
		const struct layer_desc *l = &m->layers[i];
		_cleanup_free_ char *format = NULL;
		int indexed = index_db_layer_is_indexed(c->db, l->digest);

		if (indexed <= 0 || index_db_layer_get_format(c->db, l->digest, &format) < 0)
			format = strdup(layer_format_to_string(layer_format_detect(l)));
		json_array_append_new(layers, json_pack("{s:s, s:I, s:s, s:s, s:b}",
			"digest", l->digest, "size", (json_int_t)l->size, "media_type", l->media_type,
			"format", format ? format : "?", "indexed", indexed > 0));
	}
	o = json_pack("{s:s, s:s, s:s, s:s, s:{s:s, s:s, s:o, s:o, s:o, s:o, s:o}, s:o}",
		"reference", canonical, "digest", digest, "media_type", m->media_type,
		"platform", plat ? plat : "",
		"config", "digest", m->config_digest, "platform", plat ? plat : "",
		"entrypoint", strv_json(cfg->entrypoint), "cmd", strv_json(cfg->cmd),
		"env", strv_json(cfg->env),
		"working_dir", cfg->working_dir ? json_string(cfg->working_dir) : json_null(),
		"user", cfg->user ? json_string(cfg->user) : json_null(),
		"layers", layers);
	if (!o) {
		log_error("out of memory");
		status = EXIT_FAILURE_OTHER;
		goto finish;
	}
	if (arg_json) {
		char *text = json_dumps(o, JSON_INDENT(2));

		if (text)
			printf("%s\n", text);
		free(text);
	} else {
		json_t *l;
		size_t i;

		printf("%-12s %s\n", "reference", canonical);
		printf("%-12s %s\n", "digest", digest);
		printf("%-12s %s\n", "media type", m->media_type);
		printf("%-12s %s\n", "config", m->config_digest);
		printf("%-12s %s\n", "platform", plat ? plat : "-");
		print_strv("entrypoint", cfg->entrypoint);
		print_strv("cmd", cfg->cmd);
		print_strv("env", cfg->env);
		printf("%-12s %s\n", "workingdir", cfg->working_dir ? cfg->working_dir : "-");
		printf("%-12s %s\n", "user", cfg->user ? cfg->user : "-");
		printf("layers:\n");
		json_array_foreach(json_object_get(o, "layers"), i, l)
			printf("  %zu %s %12" JSON_INTEGER_FORMAT " %-13s %-8s %s\n", i + 1,
			       json_string_value(json_object_get(l, "digest")),
			       json_integer_value(json_object_get(l, "size")),
			       json_string_value(json_object_get(l, "format")),
			       json_is_true(json_object_get(l, "indexed")) ? "indexed" : "-",
			       json_string_value(json_object_get(l, "media_type")));
	}
	json_decref(o);
	status = 0;
finish:
	ref_query_done(&q);
	return status;
}

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

	r = resolve_arg(c, arg, arg_platform, &q, &canonical);
	if (r == -EINVAL) {
		log_error("invalid image reference '%s'", arg);
		return EXIT_USAGE;
	}
	if (r == -ENOENT) {
		log_error("image '%s' is not in the cache", arg);
		return EXIT_REGISTRY;
	}
	if (r < 0)
		goto fail;

	for (size_t i = 0; q.digests[i]; i++)
		if (strv_contains(mounted, q.digests[i]) && !arg_force) {
			log_error("image '%s' is mounted; unmount it first or use --force to forget "
				  "only the reference", arg);
			status = EXIT_FAILURE_OTHER;
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
	status = EXIT_CACHE;
finish:
	ref_query_done(&q);
	return status;
}

int verb_rm(int argc, char **argv)
{
	static const struct option options[] = {
		{ "force", no_argument, NULL, 'f' },
		{ "platform", required_argument, NULL, 'P' },
		{ "cache-dir", required_argument, NULL, 'C' },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	_cleanup_(cache_freep) struct cache *c = NULL;
	_cleanup_strv_free_ char **mounted = NULL;
	_cleanup_close_ int lock_fd = -EBADF;
	const char *cache_dir = NULL;
	uint64_t freed = 0;
	int status, r;

	arg_force = false;
	arg_platform = NULL;
	status = parse_cache_opts(argc, argv,
		"Usage: lazyroot rm [--force] [--platform=OS/ARCH] [--cache-dir=DIR] REF...\n\n"
		"Forget images: the reference, and the image, its layers and blobs when nothing\n"
		"else uses them.  A mounted image is refused; --force forgets only its reference.\n",
		"fP:C:h", options, common_opt, &cache_dir);
	if (status != 0)
		return status < 0 ? 0 : status;
	if (optind >= argc) {
		log_error("rm needs an image reference (see 'lazyroot rm --help')");
		return EXIT_USAGE;
	}
	status = cli_cache_open(cache_dir, &c);
	if (status != 0)
		return status;
	r = cache_lock(c, LOCK_EX, &lock_fd);
	if (r >= 0)
		r = cache_mounted_digests(&mounted);
	if (r < 0) {
		log_error_errno(r, "cannot lock cache '%s': %m", c->dir);
		return EXIT_CACHE;
	}
	for (int i = optind; i < argc; i++) {
		int k = rm_one(c, argv[i], mounted, &freed);

		if (k != 0 && status == 0)
			status = k;
	}
	return status;
}
