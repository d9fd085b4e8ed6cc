/* tests/unit/test-layer_tar.c: indexes the real fixture layers (gzip, zstd, plain tar) and
 * checks the merged result against the oracle the reference unpacker produced
 * (tests/fixtures/<variant>/expected-*.tsv); then hostile and odd archives. */
#include "cache/format/layer_tar.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <locale.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "cache/base/error.h"
#include "cache/base/util.h"
#include "tap.h"

#define N_LAYERS 3

struct rec {
	char *path;
	enum entry_type type;
	uint32_t mode, uid, gid, major, minor, mtime_nsec;
	uint64_t size;
	int64_t mtime;
	char *target, *digest, *xattrs;  /* xattrs as the oracle writes them */
	size_t cap_size;                 /* size of security.capability, 0 if none */
};

struct layer {
	char digest[DIGEST_STRING_MAX];
	struct rec *v;
	size_t n, allocated;
	struct rec **sorted;
};

struct expected {
	char *path;     /* normalised: no leading "/", root "" */
	char **col;     /* type, mode, uid, gid, size, sha256, target, dev, xattrs */
	int64_t mtime;
	bool seen;
};

static struct expected *exp_v;
static size_t exp_n;

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st, (void)flag, (void)ftw;
	return remove(path);
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static char *xstrdup(const char *s)
{
	return s ? strdup(s) : NULL;
}

/* Undoes the oracle's escaping: \\ \t \n \r \xNN. */
static char *unescape(const char *s)
{
	char *out = malloc(strlen(s) + 1), *o = out;

	while (*s) {
		if (s[0] != '\\' || !s[1]) {
			*o++ = *s++;
			continue;
		}
		switch (s[1]) {
		case 't': *o++ = '\t'; s += 2; break;
		case 'n': *o++ = '\n'; s += 2; break;
		case 'r': *o++ = '\r'; s += 2; break;
		case '\\': *o++ = '\\'; s += 2; break;
		case 'x': {
			char hex[3] = { s[2], s[3], 0 };

			*o++ = (char)strtoul(hex, NULL, 16);
			s += 4;
			break;
		}
		default: *o++ = *s++;
		}
	}
	*o = 0;
	return out;
}

static int cmp_exp(const void *a, const void *b)
{
	return strcmp(((const struct expected *)a)->path, ((const struct expected *)b)->path);
}

static struct expected *exp_find(const char *path)
{
	struct expected key = { .path = (char *)path };

	return bsearch(&key, exp_v, exp_n, sizeof(*exp_v), cmp_exp);
}

static int load_expected(const char *dir)
{
	_cleanup_free_ char *tree = NULL, *mtimes = NULL;
	char path[512], *line, *save = NULL;
	int r;

	snprintf(path, sizeof(path), "%s/expected-tree.tsv", dir);
	r = read_full_file(path, 16 << 20, &tree, NULL);
	if (r < 0)
		return r;
	exp_v = calloc(100000, sizeof(*exp_v));
	for (line = strtok_r(tree, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *f[10], *s2 = NULL;
		int nf = 0;

		if (startswith(line, "path\t"))
			continue;
		for (char *t = strtok_r(line, "\t", &s2); t && nf < 10; t = strtok_r(NULL, "\t", &s2))
			f[nf++] = t;
		if (nf != 10)
			return -EBADMSG;
		exp_v[exp_n].path = unescape(f[0] + 1);
		exp_v[exp_n].col = calloc(9, sizeof(char *));
		for (int i = 0; i < 9; i++)
			exp_v[exp_n].col[i] = i == 6 ? unescape(f[7]) : strdup(f[i + 1]);
		exp_v[exp_n].mtime = INT64_MIN;
		exp_n++;
	}
	qsort(exp_v, exp_n, sizeof(*exp_v), cmp_exp);

	snprintf(path, sizeof(path), "%s/expected-mtimes.tsv", dir);
	r = read_full_file(path, 16 << 20, &mtimes, NULL);
	if (r < 0)
		return r;
	for (line = strtok_r(mtimes, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *tab = strrchr(line, '\t');
		_cleanup_free_ char *p = NULL;
		struct expected *x;

		if (!tab || startswith(line, "path\t"))
			continue;
		*tab = 0;
		p = unescape(line + 1);
		x = exp_find(p);
		if (x)
			x->mtime = strtoll(tab + 1, NULL, 10);
	}
	return 0;
}

/* Manifest layer digests, read through index.json, as the fixtures README asks. */
static int manifest_layers(const char *dir, char digests[N_LAYERS][DIGEST_STRING_MAX])
{
	char path[512];
	json_t *index, *manifest, *layers;
	const char *d;

	snprintf(path, sizeof(path), "%s/index.json", dir);
	index = json_load_file(path, 0, NULL);
	if (!index)
		return -EBADMSG;
	d = json_string_value(json_object_get(json_array_get(json_object_get(index, "manifests"), 0),
					      "digest"));
	if (!d)
		return -EBADMSG;
	snprintf(path, sizeof(path), "%s/blobs/sha256/%s", dir, d + 7);
	json_decref(index);
	manifest = json_load_file(path, 0, NULL);
	if (!manifest)
		return -EBADMSG;
	layers = json_object_get(manifest, "layers");
	if (json_array_size(layers) != N_LAYERS)
		return -EBADMSG;
	for (size_t i = 0; i < N_LAYERS; i++)
		snprintf(digests[i], DIGEST_STRING_MAX, "%s",
			 json_string_value(json_object_get(json_array_get(layers, i), "digest")));
	json_decref(manifest);
	return 0;
}

static int cmp_xattr(const void *a, const void *b)
{
	return strcmp(((const struct xattr *)a)->name, ((const struct xattr *)b)->name);
}

static int collect(void *userdata, const struct entry *e)
{
	struct layer *l = userdata;
	struct rec *r;

	if (l->n == l->allocated) {
		l->allocated = l->allocated ? l->allocated * 2 : 1024;
		l->v = realloc(l->v, l->allocated * sizeof(*l->v));
	}
	r = &l->v[l->n++];
	*r = (struct rec) {
		.path = strdup(e->path), .type = e->type, .mode = e->mode, .uid = e->uid,
		.gid = e->gid, .major = e->dev_major, .minor = e->dev_minor, .size = e->size,
		.mtime = e->mtime_sec, .mtime_nsec = e->mtime_nsec,
		.target = xstrdup(e->link_target), .digest = xstrdup(e->digest),
	};
	if (e->n_xattrs == 0) {
		r->xattrs = strdup("-");
	} else {
		struct xattr *x = malloc(e->n_xattrs * sizeof(*x));
		size_t len = 1;
		char *p;

		memcpy(x, e->xattrs, e->n_xattrs * sizeof(*x));
		qsort(x, e->n_xattrs, sizeof(*x), cmp_xattr);
		for (size_t i = 0; i < e->n_xattrs; i++)
			len += strlen(x[i].name) + 2 + 2 * x[i].size;
		p = r->xattrs = malloc(len);
		for (size_t i = 0; i < e->n_xattrs; i++) {
			p += sprintf(p, "%s%s=", i ? "," : "", x[i].name);
			for (size_t j = 0; j < x[i].size; j++)
				p += sprintf(p, "%02x", ((const unsigned char *)x[i].value)[j]);
			if (streq(x[i].name, "security.capability"))
				r->cap_size = x[i].size;
		}
		free(x);
	}
	return 0;
}

static int cmp_rec_ptr(const void *a, const void *b)
{
	return strcmp((*(struct rec *const *)a)->path, (*(struct rec *const *)b)->path);
}

static struct rec *layer_find(struct layer *l, const char *path)
{
	struct rec key = { .path = (char *)path }, *kp = &key, **hit;

	hit = bsearch(&kp, l->sorted, l->n, sizeof(*l->sorted), cmp_rec_ptr);
	return hit ? *hit : NULL;
}

static void layer_done(struct layer *l)
{
	for (size_t i = 0; i < l->n; i++) {
		free(l->v[i].path);
		free(l->v[i].target);
		free(l->v[i].digest);
		free(l->v[i].xattrs);
	}
	free(l->v);
	free(l->sorted);
	*l = (struct layer) {};
}

static const char *base_name(const char *p)
{
	const char *s = strrchr(p, '/');

	return s ? s + 1 : p;
}

/* Whether layer @j hides @path of a lower layer: same path, a whiteout of the path or of an
 * ancestor, an opaque marker in an ancestor, or an ancestor replaced by a non-directory. */
static bool hidden_by(struct layer *l, const char *path)
{
	char buf[4096], wh[4200];
	struct rec *r;

	if (layer_find(l, path))
		return true;
	snprintf(buf, sizeof(buf), "%s", path);
	for (;;) {
		char *slash = strrchr(buf, '/');

		if (slash) {
			*slash = 0;
			snprintf(wh, sizeof(wh), "%s/.wh.%s", buf, slash + 1);
		} else {
			snprintf(wh, sizeof(wh), ".wh.%s", buf);
		}
		if (layer_find(l, wh))
			return true;
		/* buf is now the parent (or, with no slash, the last component below the root). */
		if (!slash) {
			if (!*buf)
				break;
			if (layer_find(l, ".wh..wh..opq"))
				return true;
			break;
		}
		snprintf(wh, sizeof(wh), "%s/.wh..wh..opq", buf);
		if (layer_find(l, wh))
			return true;
		r = layer_find(l, buf);
		if (r && r->type != ENTRY_DIR)
			return true;
	}
	return false;
}

static struct rec *resolve_hardlink(struct layer *layers, int k, struct rec *r)
{
	for (int hops = 0; r && r->type == ENTRY_HARDLINK && hops < 16; hops++) {
		struct rec *t = NULL;

		for (int j = k; j >= 0 && !t; j--)
			t = layer_find(&layers[j], r->target);
		r = t;
	}
	return r;
}

static const char type_char[] = {
	[ENTRY_REG] = 'f', [ENTRY_DIR] = 'd', [ENTRY_SYMLINK] = 'l', [ENTRY_HARDLINK] = 'f',
	[ENTRY_CHR] = 'c', [ENTRY_BLK] = 'b', [ENTRY_FIFO] = 'p',
};

/* Compares the merged layers with the oracle; returns the number of differences (each
 * printed as a TAP comment, up to a limit). */
static size_t compare_with_oracle(struct layer *layers, size_t *ret_compared)
{
	size_t bad = 0, compared = 0;

	for (size_t i = 0; i < exp_n; i++)
		exp_v[i].seen = false;

#define MISMATCH(...) do { if (bad++ < 20) printf("# mismatch: " __VA_ARGS__); } while (0)
	for (int k = 0; k < N_LAYERS; k++) {
		for (size_t i = 0; i < layers[k].n; i++) {
			struct rec *r = &layers[k].v[i], *t;
			struct expected *x;
			char buf[64];
			bool hidden = false;

			if (startswith(base_name(r->path), ".wh."))
				continue;
			for (int j = k + 1; j < N_LAYERS && !hidden; j++)
				hidden = hidden_by(&layers[j], r->path);
			if (hidden)
				continue;

			x = exp_find(r->path);
			if (!x) {
				MISMATCH("'/%s' (layer %d) is not in the oracle\n", r->path, k + 1);
				continue;
			}
			x->seen = true;
			compared++;
			t = resolve_hardlink(layers, k, r);
			if (!t) {
				MISMATCH("'/%s': hard link target '%s' not found\n", r->path, r->target);
				continue;
			}
			if (x->col[0][0] != type_char[r->type])
				MISMATCH("'/%s': type %c, oracle %s\n", r->path, type_char[r->type], x->col[0]);
			snprintf(buf, sizeof(buf), "%04o", t->mode);
			if (t->type != ENTRY_SYMLINK && !streq(buf, x->col[1]))
				MISMATCH("'/%s': mode %s, oracle %s\n", r->path, buf, x->col[1]);
			if (t->uid != strtoul(x->col[2], NULL, 10) || t->gid != strtoul(x->col[3], NULL, 10))
				MISMATCH("'/%s': owner %u:%u, oracle %s:%s\n", r->path, t->uid, t->gid,
					 x->col[2], x->col[3]);
			if (t->type == ENTRY_REG &&
			    (t->size != strtoull(x->col[4], NULL, 10) || !t->digest ||
			     !streq(t->digest + 7, x->col[5])))
				MISMATCH("'/%s': size %llu digest %s, oracle %s %s\n", r->path,
					 (unsigned long long)t->size, t->digest, x->col[4], x->col[5]);
			if (t->type == ENTRY_SYMLINK && !streq(t->target, x->col[6]))
				MISMATCH("'/%s': target '%s', oracle '%s'\n", r->path, t->target, x->col[6]);
			if (t->type == ENTRY_CHR || t->type == ENTRY_BLK) {
				snprintf(buf, sizeof(buf), "%u:%u", t->major, t->minor);
				if (!streq(buf, x->col[7]))
					MISMATCH("'/%s': dev %s, oracle %s\n", r->path, buf, x->col[7]);
			}
			if (!streq(t->xattrs, x->col[8]))
				MISMATCH("'/%s': xattrs %s, oracle %s\n", r->path, t->xattrs, x->col[8]);
			/* The oracle was unpacked on ext4 with 128-byte inodes, which clamps times
			 * beyond 2038 to INT32_MIN; the layer itself says 10413792000. */
			if (t->mtime != x->mtime && !(x->mtime == INT32_MIN && t->mtime > INT32_MAX))
				MISMATCH("'/%s': mtime %lld, oracle %lld\n", r->path, (long long)t->mtime,
					 (long long)x->mtime);
		}
	}
	for (size_t i = 0; i < exp_n; i++)
		if (!exp_v[i].seen)
			MISMATCH("oracle entry '/%s' has no visible layer entry\n", exp_v[i].path);
#undef MISMATCH
	*ret_compared = compared;
	return bad;
}

/* Indexes one layer file from @dir into @db and @bs, then reads it back into @l. */
/* The diff_id of the last layer index_file() indexed. */
static char last_diff_id[DIGEST_STRING_MAX];

static int index_file(const char *path, const char *digest, struct blob_store *bs,
		      struct index_db *db, struct layer *l, char ***created, double *ret_secs)
{
	_cleanup_close_ int fd = -EBADF;
	struct layer_writer *w = NULL;
	double t0;
	int r;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	t0 = now();
	r = index_db_layer_begin(db, digest, NULL, &w);
	if (r < 0)
		return r;
	last_diff_id[0] = 0;
	r = layer_tar_index(fd, bs, NULL, w, created, last_diff_id);
	if (r < 0) {
		layer_writer_abort(w);
		return r;
	}
	r = layer_writer_commit(w);
	if (r < 0)
		return r;
	if (ret_secs)
		*ret_secs = now() - t0;
	if (!l)
		return 0;
	layer_done(l);
	snprintf(l->digest, sizeof(l->digest), "%s", digest);
	r = index_db_layer_foreach(db, digest, collect, l);
	if (r < 0)
		return r;
	l->sorted = malloc((l->n + 1) * sizeof(*l->sorted));
	for (size_t i = 0; i < l->n; i++)
		l->sorted[i] = &l->v[i];
	qsort(l->sorted, l->n, sizeof(*l->sorted), cmp_rec_ptr);
	return 0;
}

static bool layers_equal(struct layer *a, struct layer *b)
{
	if (a->n != b->n)
		return false;
	for (size_t i = 0; i < a->n; i++) {
		struct rec *x = &a->v[i], *y = &b->v[i];

		if (!streq(x->path, y->path) || x->type != y->type || x->mode != y->mode ||
		    x->uid != y->uid || x->gid != y->gid || x->size != y->size ||
		    x->mtime != y->mtime || x->mtime_nsec != y->mtime_nsec || x->major != y->major ||
		    x->minor != y->minor || !streq(x->xattrs, y->xattrs) ||
		    !!x->target != !!y->target || (x->target && !streq(x->target, y->target)) ||
		    !!x->digest != !!y->digest || (x->digest && !streq(x->digest, y->digest)))
			return false;
	}
	return true;
}

static void spot_checks(struct layer *layers)
{
	struct layer *l1 = &layers[0];
	struct rec *r;
	char longpath[400];
	size_t n_long = 0;

	r = layer_find(l1, "hardlinks/b");
	check(r && r->type == ENTRY_HARDLINK && streq(r->target, "hardlinks/a") && !r->digest &&
	      r->size == 0, "/hardlinks/b is a hard link to 'hardlinks/a' without data");
	r = layer_find(l1, "hardlinks/a");
	check(r && r->type == ENTRY_REG && r->digest &&
	      streq(r->digest, "sha256:38ccf918fbba457a7e321e9bac6d81663f9f4dcdb02c2a8e3742a69f60a60e1e"),
	      "/hardlinks/a is the regular file with the content");
	r = layer_find(l1, "xattr/cap-net-raw");
	check(r && r->cap_size == 20 &&
	      streq(r->xattrs, "security.capability=0100000200200000000000000000000000000000"),
	      "/xattr/cap-net-raw has a 20-byte security.capability");
	r = layer_find(l1, "xattr/user-two");
	check(r && streq(r->xattrs, "user.a=31,user.b=32"), "/xattr/user-two has user.a and user.b");
	r = layer_find(l1, "dev/loop7");
	check(r && r->type == ENTRY_BLK && r->major == 7 && r->minor == 7 && r->mode == 0660,
	      "/dev/loop7 is block 7:7");
	r = layer_find(l1, "dev/null");
	check(r && r->type == ENTRY_CHR && r->major == 1 && r->minor == 3, "/dev/null is char 1:3");
	r = layer_find(l1, "run/fifo");
	check(r && r->type == ENTRY_FIFO, "/run/fifo is a FIFO");
	r = layer_find(l1, "times/2300-01-01");
	check(r && r->mtime == 10413792000LL, "/times/2300-01-01 has mtime 10413792000 (pax mtime)");
	r = layer_find(l1, "times/epoch-0");
	check(r && r->mtime == 0, "/times/epoch-0 has mtime 0");
	r = layer_find(l1, "times/2038-01-19-after");
	check(r && r->mtime == 2147483648LL, "/times/2038-01-19-after has mtime 2^31");
	r = layer_find(l1, "perm/setuid-4755");
	check(r && r->mode == 04755, "setuid bit is kept");
	r = layer_find(l1, "perm/sticky-1777");
	check(r && r->type == ENTRY_DIR && r->mode == 01777, "sticky directory is 1777");
	r = layer_find(l1, "owners/nobody");
	check(r && r->uid == 65534 && r->gid == 65534, "/owners/nobody is 65534:65534");
	r = layer_find(l1, "names/ünïcødé-日本語.txt");
	check(r && r->type == ENTRY_REG, "the UTF-8 name comes through as raw UTF-8 bytes");
	r = layer_find(l1, "names/emoji-😀.txt");
	check(r && r->type == ENTRY_REG, "the emoji name comes through as raw UTF-8 bytes");
	r = layer_find(l1, "bin/busybox");
	check(r && r->size == 1982256 && r->digest &&
	      streq(r->digest, "sha256:3d9f2889d6782537624a4e1a10e68a2ddd53e0ee8bac02676f27308f42ec6bf6"),
	      "/bin/busybox has the oracle's size and sha256");
	r = layer_find(l1, "bin/sh");
	check(r && r->type == ENTRY_SYMLINK && streq(r->target, "busybox"), "/bin/sh -> busybox");
	r = layer_find(l1, "links/absolute");
	check(r && streq(r->target, "/etc/os-release"), "absolute symlink target kept as stored");
	r = layer_find(l1, "links/relative");
	check(r && streq(r->target, "../sizes/one"), "relative symlink target kept as stored");
	r = layer_find(l1, "links/long-target");
	check(r && r->target && strlen(r->target) == 286, "the 286-byte pax linkpath is whole");
	r = layer_find(l1, "");
	check(r && r->type == ENTRY_DIR, "umoci's './' entry is the root ''");

	for (size_t i = 0; i < l1->n; i++) {
		const char *b = base_name(l1->v[i].path);

		if (strlen(l1->v[i].path) == 285 && streq(b, "file-beyond-255-chars.txt")) {
			snprintf(longpath, sizeof(longpath), "%s", l1->v[i].path);
			n_long++;
		}
	}
	check(n_long == 1, "the 285-byte path is indexed whole");
	{
		size_t n255 = 0;

		for (size_t i = 0; i < l1->n; i++)
			n255 += startswith(l1->v[i].path, "names/") &&
				strlen(base_name(l1->v[i].path)) == 255;
		check(n255 == 1, "the 255-byte name is indexed whole");
	}
	for (size_t i = 0; i < l1->n; i++)
		if (l1->v[i].path[0] == '/' || strstr(l1->v[i].path, "//") ||
		    (l1->v[i].path[0] && l1->v[i].path[strlen(l1->v[i].path) - 1] == '/')) {
			check(false, "path '%s' is normalised", l1->v[i].path);
			break;
		}

	r = layer_find(&layers[1], "etc/.wh.delete-me");
	check(r && r->type == ENTRY_REG && r->mode == 0, "layer 2's whiteout is indexed as an entry");
	r = layer_find(&layers[1], "opt/opaque-dir/.wh..wh..opq");
	check(r != NULL, "layer 2's opaque marker is indexed as an entry");
	check(layers[2].n > 2000, "layer 3 has its 2000+ entries (%zu)", layers[2].n);
}

static int write_tar(const char *path, int format, const char *const *names, const char *hardlink)
{
	struct archive *a = archive_write_new();
	struct archive_entry *e;
	int r = 0;

	archive_write_set_format(a, format);
	if (archive_write_open_filename(a, path) != ARCHIVE_OK)
		return -EIO;
	for (size_t i = 0; names[i]; i++) {
		e = archive_entry_new();
		archive_entry_copy_pathname(e, names[i]);
		archive_entry_set_filetype(e, AE_IFREG);
		archive_entry_set_perm(e, 0644);
		archive_entry_set_size(e, 5);
		archive_entry_set_mtime(e, 1700000000, 0);
		if (archive_write_header(a, e) < ARCHIVE_WARN || archive_write_data(a, "hello", 5) != 5)
			r = -EIO;
		archive_entry_free(e);
	}
	if (hardlink) {
		e = archive_entry_new();
		archive_entry_copy_pathname(e, "link");
		archive_entry_copy_hardlink(e, hardlink);
		archive_entry_set_filetype(e, AE_IFREG);
		archive_entry_set_perm(e, 0644);
		if (archive_write_header(a, e) < ARCHIVE_WARN)
			r = -EIO;
		archive_entry_free(e);
	}
	archive_write_close(a);
	archive_write_free(a);
	return r;
}

static int index_path(const char *path, struct blob_store *bs, struct index_db *db,
		      struct layer *l, char ***created)
{
	return index_file(path, "sha256:0000000000000000000000000000000000000000000000000000000000000000",
			  bs, db, l, created, NULL);
}

/* Appends one gzip member holding @in to @f. */
static bool gzip_member(FILE *f, const void *in, size_t n)
{
	z_stream zs = {};
	static uint8_t out[1 << 20];
	bool ok = true;
	int zr;

	if (deflateInit2(&zs, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
		return false;
	zs.next_in = (Bytef *)in;
	zs.avail_in = (uInt)n;
	do {
		zs.next_out = out;
		zs.avail_out = sizeof(out);
		zr = deflate(&zs, Z_FINISH);
		ok = ok && fwrite(out, 1, sizeof(out) - zs.avail_out, f) == sizeof(out) - zs.avail_out;
	} while (zr == Z_OK);
	(void)deflateEnd(&zs);
	return ok && zr == Z_STREAM_END;
}

/* Writes @tar to @path as gzip members of at most @piece bytes each, then @tail. */
static bool write_gzip(const char *path, const char *tar, size_t len, size_t piece,
		       const void *tail, size_t tail_len)
{
	FILE *f = fopen(path, "we");
	bool ok = f != NULL;

	for (size_t off = 0; ok && off < len; off += piece)
		ok = gzip_member(f, tar + off, len - off < piece ? len - off : piece);
	if (ok && tail_len > 0)
		ok = fwrite(tail, 1, tail_len, f) == tail_len;
	if (f && fclose(f) != 0)
		ok = false;
	return ok;
}

/* Flips one byte @from_end bytes before the end of @path. */
static void flip_from_end(const char *path, off_t from_end)
{
	_cleanup_close_ int fd = open(path, O_RDWR | O_CLOEXEC);
	struct stat st;
	uint8_t b;

	if (fd < 0 || fstat(fd, &st) < 0 || pread(fd, &b, 1, st.st_size - from_end) != 1)
		return;
	b ^= 0x5a;
	(void)!pwrite(fd, &b, 1, st.st_size - from_end);
}

/* Gzip members are checked whole: CRC32, ISIZE, one after another, nothing after the last;
 * the diff_id is the sha256 of the uncompressed stream, however it is cut into members. */
static void gzip_integrity(const char *dir, struct blob_store *bs, struct index_db *db,
			   const char *tar_path, const char *diff_id)
{
	_cleanup_strv_free_ char **created = NULL;
	_cleanup_free_ char *tar = NULL;
	char path[512];
	size_t len;
	int r;

	snprintf(path, sizeof(path), "%s/members.tar.gz", dir);
	if (read_full_file(tar_path, 64 << 20, &tar, &len) < 0 ||
	    !write_gzip(path, tar, len, 100000, NULL, 0)) {
		check(false, "gzip layers are written");
		return;
	}
	r = index_path(path, bs, db, NULL, &created);
	check(r == 0 && streq(last_diff_id, diff_id),
	      "a layer of %zu gzip members indexes with the diff_id of its tar (r=%d)",
	      len / 100000 + 1, r);

	error_clear();
	flip_from_end(path, 8);
	r = index_path(path, bs, db, NULL, &created);
	check(r == -EBADMSG && error_message() && strstr(error_message(), "CRC32"),
	      "a wrong CRC32 in the last member's trailer is refused: %s", error_message());
	flip_from_end(path, 8);

	error_clear();
	flip_from_end(path, 2);
	r = index_path(path, bs, db, NULL, &created);
	check(r == -EBADMSG && error_message() && strstr(error_message(), "ISIZE"),
	      "a wrong ISIZE in the last member's trailer is refused: %s", error_message());

	error_clear();
	(void)write_gzip(path, tar, len, len, "\0\0\0\0garbage", 11);
	r = index_path(path, bs, db, NULL, &created);
	check(r == -EBADMSG && error_message() && strstr(error_message(), "after gzip member 1"),
	      "bytes after the last gzip member are refused: %s", error_message());

	error_clear();
	(void)write_gzip(path, tar, len, len, NULL, 0);
	flip_from_end(path, 4000);
	r = index_path(path, bs, db, NULL, &created);
	check(r == -EBADMSG, "a flipped byte in the deflate data is refused (r=%d): %s", r,
	      error_message() ?: "");
	error_clear();
}

static void odd_archives(const char *dir, struct blob_store *bs, struct index_db *db,
			 const char *layer_path)
{
	_cleanup_strv_free_ char **created = NULL;
	struct layer l = {};
	char path[512];
	int r;

	snprintf(path, sizeof(path), "%s/evil.tar", dir);
	write_tar(path, ARCHIVE_FORMAT_TAR_PAX_RESTRICTED, (const char *const[]) { "ok", "../evil", NULL },
		  NULL);
	r = index_path(path, bs, db, NULL, &created);
	check(r == -EBADMSG, "a '../' path is -EBADMSG (r=%d)", r);
	write_tar(path, ARCHIVE_FORMAT_TAR_PAX_RESTRICTED, (const char *const[]) { "a/../../etc/x", NULL },
		  NULL);
	check(index_path(path, bs, db, NULL, &created) == -EBADMSG, "an inner '..' is -EBADMSG");
	write_tar(path, ARCHIVE_FORMAT_TAR_PAX_RESTRICTED, (const char *const[]) { "a", NULL },
		  "../../etc/shadow");
	check(index_path(path, bs, db, NULL, &created) == -EBADMSG, "a '..' hard link target is -EBADMSG");
	write_tar(path, ARCHIVE_FORMAT_TAR_PAX_RESTRICTED, (const char *const[]) { "a", NULL }, "/./a/");
	r = index_path(path, bs, db, &l, &created);
	check(r == 0 && l.n == 2 && l.v[1].type == ENTRY_HARDLINK && streq(l.v[1].target, "a"),
	      "a hard link target is normalised (r=%d)", r);

	/* Raw, non-UTF-8 names: pax with hdrcharset=BINARY, and ustar with Latin-1 bytes. */
	write_tar(path, ARCHIVE_FORMAT_TAR_PAX_RESTRICTED,
		  (const char *const[]) { "raw-\xff\xfe", "lat-\xe9.txt", "utf-\xc3\xbc", NULL }, NULL);
	r = index_path(path, bs, db, &l, &created);
	check(r == 0 && l.n == 3 && streq(l.v[0].path, "raw-\xff\xfe") &&
	      streq(l.v[1].path, "lat-\xe9.txt") && streq(l.v[2].path, "utf-\xc3\xbc"),
	      "invalid UTF-8 names in a pax archive come through as raw bytes (r=%d)", r);
	write_tar(path, ARCHIVE_FORMAT_TAR_USTAR, (const char *const[]) { "lat-\xe9.txt", NULL }, NULL);
	r = index_path(path, bs, db, &l, &created);
	check(r == 0 && l.n == 1 && streq(l.v[0].path, "lat-\xe9.txt"),
	      "a Latin-1 ustar name comes through as raw bytes (r=%d)", r);

	{
		_cleanup_close_ int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		char junk[4096];

		for (size_t i = 0; i < sizeof(junk); i++)
			junk[i] = (char)(i * 31 + 7);
		memcpy(junk, "this is no tar", 14);
		(void)!write(fd, junk, sizeof(junk));
	}
	r = index_path(path, bs, db, NULL, &created);
	check(r == -EBADMSG, "random bytes are -EBADMSG (r=%d)", r);

	/* A truncated gzip layer fails, and reports the blobs it created before failing. */
	{
		_cleanup_free_ char *buf = NULL;
		size_t len;
		_cleanup_close_ int fd = -EBADF;

		strv_free(TAKE_PTR(created));
		r = read_full_file(layer_path, 64 << 20, &buf, &len);
		fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		(void)!write(fd, buf, len / 2);
		r = index_path(path, bs, db, NULL, &created);
		check(r == -EBADMSG, "a truncated gzip layer is -EBADMSG (r=%d)", r);
	}

	/* Bytes after the end-of-archive blocks are drained. */
	{
		_cleanup_close_ int fd = -EBADF;
		struct layer_writer *w = NULL;
		char junk[65536] = { 1 };
		struct stat st;

		write_tar(path, ARCHIVE_FORMAT_TAR_PAX_RESTRICTED, (const char *const[]) { "x", NULL }, NULL);
		fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
		for (int i = 0; i < 16; i++)
			(void)!write(fd, junk, sizeof(junk));
		close(TAKE_FD(fd));
		fd = open(path, O_RDONLY | O_CLOEXEC);
		(void)fstat(fd, &st);
		r = index_db_layer_begin(db, "sha256:0000000000000000000000000000000000000000000000000000000000000000", NULL, &w);
		r = layer_tar_index(fd, bs, NULL, w, &created, last_diff_id);
		layer_writer_abort(w);
		check(r == 0 && lseek(fd, 0, SEEK_CUR) == st.st_size,
		      "the fd is drained past 1 MiB of trailing bytes (r=%d)", r);
	}
	layer_done(&l);
}

int main(void)
{
	static const char *const variants[] = { "fixtures/oci-gzip", "fixtures/oci-zstd",
						"fixtures/oci-uncompressed" };
	struct layer ref[N_LAYERS] = {}, layers[N_LAYERS] = {};
	char diff_ids[N_LAYERS][DIGEST_STRING_MAX] = {};
	char dir[] = "/tmp/test-layer_tar-XXXXXX";
	char path[512], layer1_gzip[512] = "";
	_cleanup_(blob_store_freep) struct blob_store *bs = NULL;
	_cleanup_(index_db_freep) struct index_db *db = NULL;
	int r;

	if (!mkdtemp(dir)) {
		printf("Bail out! mkdtemp: %m\n");
		return 1;
	}
	r = load_expected("fixtures/oci-gzip");
	check(r == 0 && exp_n > 2000, "the oracle loads (%zu entries)", exp_n);
	snprintf(path, sizeof(path), "%s/cache", dir);
	check(blob_store_open(path, &bs) == 0, "store opens");
	snprintf(path, sizeof(path), "%s/index.db", dir);
	check(index_db_open(path, &db) == 0, "index opens");
	if (!bs || !db || exp_n == 0)
		return tap_done();

	for (size_t v = 0; v < ELEMENTSOF(variants); v++) {
		char digests[N_LAYERS][DIGEST_STRING_MAX];
		_cleanup_strv_free_ char **created = NULL;
		size_t n_reg = 0, compared = 0, bad;

		r = manifest_layers(variants[v], digests);
		check(r == 0, "%s: manifest lists %d layers", variants[v], N_LAYERS);
		if (r < 0)
			continue;
		for (int k = 0; k < N_LAYERS; k++) {
			double secs = 0;

			snprintf(path, sizeof(path), "%s/blobs/sha256/%s", variants[v], digests[k] + 7);
			if (v == 0 && k == 0)
				snprintf(layer1_gzip, sizeof(layer1_gzip), "%s", path);
			r = index_file(path, digests[k], bs, db, &layers[k], &created, &secs);
			check(r == 0, "%s: layer %d indexes (r=%d, %zu entries, %.3f s)", variants[v],
			      k + 1, r, layers[k].n, secs);
			/* The uncompressed variant's blob digests are the diff_ids of all three. */
			if (v == 0)
				snprintf(diff_ids[k], sizeof(diff_ids[k]), "%s", last_diff_id);
			else
				check(streq(diff_ids[k], last_diff_id),
				      "%s: layer %d has the diff_id of the gzip layer", variants[v], k + 1);
			if (v == ELEMENTSOF(variants) - 1)
				check(streq(last_diff_id, digests[k]),
				      "%s: layer %d's diff_id is its digest", variants[v], k + 1);
		}
		for (size_t i = 0; i < layers[0].n + layers[1].n + layers[2].n; i++) {
			struct rec *x = i < layers[0].n ? &layers[0].v[i] :
					i < layers[0].n + layers[1].n ? &layers[1].v[i - layers[0].n] :
					&layers[2].v[i - layers[0].n - layers[1].n];

			n_reg += x->type == ENTRY_REG;
		}

		if (v == 0) {
			check(strv_length(created) > 2000 && strv_length(created) <= n_reg,
			      "%s: new blobs are reported (%zu for %zu regular files)", variants[v],
			      strv_length(created), n_reg);
			for (size_t i = 0; created && created[i]; i++)
				if (blob_store_has(bs, created[i]) != 1) {
					check(false, "reported blob %s is stored", created[i]);
					break;
				}
			spot_checks(layers);
			{
				struct rec *bb = layer_find(&layers[0], "bin/busybox");
				_cleanup_close_ int fd = -EBADF;
				struct stat st;

				check(bb && blob_store_open_blob(bs, bb->digest, &fd) == 0 &&
				      fstat(fd, &st) == 0 && st.st_size == 1982256,
				      "the busybox blob is stored whole");
			}
			for (int k = 0; k < N_LAYERS; k++) {
				ref[k] = layers[k];
				layers[k] = (struct layer) {};
			}
			bad = compare_with_oracle(ref, &compared);
			check(bad == 0 && compared == exp_n,
			      "%s: the merged layers match every line of expected-tree.tsv and "
			      "expected-mtimes.tsv (%zu compared, %zu differences)", variants[v],
			      compared, bad);
		} else {
			check(strv_length(created) == 0,
			      "%s: the same content in another compression creates no new blob (%zu)",
			      variants[v], strv_length(created));
			for (int k = 0; k < N_LAYERS; k++)
				check(layers_equal(&ref[k], &layers[k]),
				      "%s: layer %d gives exactly the entries of the gzip layer",
				      variants[v], k + 1);
		}
	}

	/* Indexing again under a UTF-8 process locale gives the same bytes. */
	if (setlocale(LC_ALL, "C.UTF-8")) {
		_cleanup_strv_free_ char **created = NULL;

		r = index_file(layer1_gzip, ref[0].digest, bs, db, &layers[0], &created, NULL);
		check(r == 0 && layers_equal(&ref[0], &layers[0]),
		      "a UTF-8 process locale does not change any entry");
		setlocale(LC_ALL, "C");
	}

	odd_archives(dir, bs, db, layer1_gzip);
	{
		char tar_path[512];

		snprintf(tar_path, sizeof(tar_path), "%s/blobs/sha256/%s", variants[2],
			 diff_ids[0] + 7);
		gzip_integrity(dir, bs, db, tar_path, diff_ids[0]);
	}

	for (int k = 0; k < N_LAYERS; k++) {
		layer_done(&ref[k]);
		layer_done(&layers[k]);
	}
	(void)nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	return tap_done();
}
