/*
 * cli/images.c: `lazyroot images`: what the cache knows, from the cache alone (no network):
 * one row per reference and platform resolved, plus the images known only by digest.
 */
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <sys/stat.h>
#include <time.h>

#include "cache/base/digest.h"
#include "cache/base/log.h"
#include "cache/base/util.h"
#include "cache/format/manifest.h"
#include "cache/store/blob_store.h"
#include "cache/store/cache.h"
#include "cache/store/mount_records.h"
#include "cli/cache_args.h"
#include "cli/cli.h"
#include "cli/verb_args.h"

static const char images_usage[] =
	"Usage: lazyroot images [--json] [--cache-dir=DIR]\n\n"
	"List the images in the cache: reference, manifest digest, platform, layers,"
	" size,\nbytes cached, last use, and whether a mount uses it.\n";

/* One row of `images`. */
struct image_row {
	char *reference;     /* NULL: known only by digest */
	char *digest;
	char *platform;
	size_t layers;
	uint64_t size, cached;
	uint64_t seek_index_bytes;  /* of cached: the seek indexes of its gzip layers */
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
	if (GREEDY_REALLOC(inv->rows, inv->n_allocated, inv->n + 1) < 0)
		return NULL;
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
	bs->bytes += blob_disk_bytes(&st);
	return strv_push(&bs->seen, digest);
}

/* A gzip layer's seek index (cache/seek.h) is disk the image holds too, gone with it. */
static int sum_seek_index(struct cache *c, const char *layer, struct blob_sum *bs)
{
	_cleanup_free_ char *digest = NULL;
	int r;

	r = index_db_seek_get(c->db, layer, &digest, NULL);
	if (r == -ENOENT)
		return 0;
	return r < 0 ? r : sum_blob(bs, digest, false);
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
	uint64_t files;
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
	files = bs.bytes;
	r = 0;
	for (size_t i = 0; i < m->n_layers && r >= 0; i++)
		r = sum_seek_index(inv->c, m->layers[i].digest, &bs);
	strv_free(bs.seen);
	if (r < 0)
		return r;
	ir->cached = bs.bytes;
	ir->seek_index_bytes = bs.bytes - files;
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
			o = json_pack("{s:o, s:s, s:s, s:I, s:I, s:I, s:I, s:o, s:b}",
				      "reference", ir->reference ? json_string(ir->reference) : json_null(),
				      "digest", ir->digest, "platform", ir->platform,
				      "layers", (json_int_t)ir->layers, "size", (json_int_t)ir->size,
				      "cached_bytes", (json_int_t)ir->cached,
				      "seek_index_bytes", (json_int_t)ir->seek_index_bytes,
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

int verb_images(int argc, char **argv)
{
	static const struct option options[] = {
		{ "json", no_argument, NULL, 'j' },
		CACHE_OPTIONS,
		{}
	};
	_cleanup_(cache_freep) struct cache *c = NULL;
	_cleanup_free_ char *blobs = NULL;
	_cleanup_close_ int dir_fd = -EBADF;
	struct inventory inv = {};
	const char *cache_dir = NULL;
	bool json = false;
	int status, r;
	const struct verb_arg args[] = { VERB_SWITCH('j', &json), CACHE_DIR_ARG(&cache_dir), {} };

	status = verb_args_parse(argc, argv, &(struct verb_args) { .name = "images",
		.usage = images_usage, .operands = "takes no arguments", .optstring = "jC:h",
		.options = options, .args = args });
	if (status != 0)
		return status > 0 ? 0 : status;
	status = cli_cache_open(cache_dir, &c);
	if (status != 0)
		return status;
	inv.c = c;
	if (asprintf(&blobs, "%s/blobs/sha256", c->dir) < 0)
		return -ENOMEM;
	dir_fd = open(blobs, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	r = dir_fd < 0 ? -errno : mount_records_mounted_digests(c->dir, &inv.mounted);
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
		return -ERR_CACHE;
	}
	r = print_images(&inv, json);
	inventory_done(&inv);
	return r;
}
