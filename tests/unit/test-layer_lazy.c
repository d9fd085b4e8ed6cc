/* tests/unit/test-layer_lazy.c: indexes the lazy fixture layers (eStargz, ctr-remote and
 * containers-storage zstd:chunked) from local blob files, fetches and verifies every chunk as
 * cache/fetch.c would, merges the layers and compares the tree with the reference unpacker's
 * oracle (tests/fixtures/<variant>/expected-tree.tsv); then prefetch landmarks on a synthetic
 * eStargz blob and tampered footers, TOCs and annotations. */
#include "cache/format/layer_lazy.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include "cache/base/digest.h"
#include "cache/base/util.h"
#include "tap.h"

/* ---- readers ---------------------------------------------------------------------------- */

static int fd_read(void *userdata, uint64_t offset, size_t len, void *buf)
{
	int fd = *(int *)userdata;
	size_t done = 0;

	while (done < len) {
		ssize_t n = pread(fd, (char *)buf + done, len - done, (off_t)(offset + done));

		if (n < 0)
			return -errno;
		if (n == 0)
			return -EIO;
		done += (size_t)n;
	}
	return 0;
}

struct mem {
	const uint8_t *p;
	size_t len;
};

static int mem_read(void *userdata, uint64_t offset, size_t len, void *buf)
{
	struct mem *m = userdata;

	if (offset > m->len || len > m->len - offset)
		return -EIO;
	memcpy(buf, m->p + offset, len);
	return 0;
}

/* ---- the merged tree -------------------------------------------------------------------- */

struct rec {
	char *path;
	enum entry_type type;
	uint32_t mode, uid, gid, major, minor;
	uint64_t size;
	char *target;
	char sha[DIGEST_STRING_MAX];     /* of the decompressed chunks */
	char *xattrs;                    /* "name=hex,..." sorted, or "-" */
	bool prefetch;
};

struct tree {
	struct rec *v;
	size_t n, allocated;
};

static void rec_done(struct rec *r)
{
	free(r->path);
	free(r->target);
	free(r->xattrs);
}

static void tree_done(struct tree *t)
{
	for (size_t i = 0; i < t->n; i++)
		rec_done(&t->v[i]);
	free(t->v);
	*t = (struct tree) {};
}

static struct rec *tree_find(struct tree *t, const char *path)
{
	for (size_t i = 0; i < t->n; i++)
		if (streq(t->v[i].path, path))
			return &t->v[i];
	return NULL;
}

static bool is_under(const char *path, const char *dir)
{
	size_t n = strlen(dir);

	if (n == 0)
		return *path != '\0';
	return strncmp(path, dir, n) == 0 && path[n] == '/';
}

/* Removes @path (if @self) and everything below it. */
static void tree_remove(struct tree *t, const char *path, bool self)
{
	for (size_t i = 0; i < t->n;) {
		if ((self && streq(t->v[i].path, path)) || is_under(t->v[i].path, path)) {
			rec_done(&t->v[i]);
			t->v[i] = t->v[--t->n];
		} else {
			i++;
		}
	}
}

static void tree_put(struct tree *t, struct rec *r)
{
	struct rec *old = tree_find(t, r->path);

	if (old) {
		if (old->type == ENTRY_DIR && r->type != ENTRY_DIR)
			tree_remove(t, r->path, false);
		old = tree_find(t, r->path);
		rec_done(old);
		*old = *r;
		return;
	}
	if (t->n == t->allocated) {
		t->allocated = t->allocated ? t->allocated * 2 : 256;
		t->v = reallocarray(t->v, t->allocated, sizeof(*t->v));
		if (!t->v)
			abort();
	}
	t->v[t->n++] = *r;
}

static const char *basename_of(const char *path)
{
	const char *s = strrchr(path, '/');

	return s ? s + 1 : path;
}

/* ---- indexing one layer ----------------------------------------------------------------- */

struct layer_run {
	enum layer_compression compression;
	const struct blob_range_reader *rd;
	struct tree entries;        /* this layer's, in TOC order */
	size_t n_chunks, n_chunk_ok, n_zero_chunks, n_digest_ok, n_prefetch;
	size_t n_bookkeeping;
	bool chunks_cover;
	char *first_failure;
};

static int xattr_cmp(const void *a, const void *b)
{
	return strcmp(((const struct xattr *)a)->name, ((const struct xattr *)b)->name);
}

static char *xattrs_format(const struct entry *e)
{
	struct xattr *x;
	char *s;
	size_t len = 2;

	if (e->n_xattrs == 0)
		return strdup("-");
	x = calloc(e->n_xattrs, sizeof(*x));
	memcpy(x, e->xattrs, e->n_xattrs * sizeof(*x));
	qsort(x, e->n_xattrs, sizeof(*x), xattr_cmp);
	for (size_t i = 0; i < e->n_xattrs; i++)
		len += strlen(x[i].name) + 2 + 2 * x[i].size;
	s = calloc(1, len);
	for (size_t i = 0; i < e->n_xattrs; i++) {
		char *p = s + strlen(s);

		p += sprintf(p, "%s%s=", i ? "," : "", x[i].name);
		for (size_t j = 0; j < x[i].size; j++)
			p += sprintf(p, "%02x", ((const uint8_t *)x[i].value)[j]);
	}
	free(x);
	return s;
}

static int collect(void *userdata, const struct entry *e)
{
	struct layer_run *run = userdata;
	struct rec r = {
		.path = strdup(e->path), .type = e->type, .mode = e->mode, .uid = e->uid,
		.gid = e->gid, .major = e->dev_major, .minor = e->dev_minor, .size = e->size,
		.target = e->link_target ? strdup(e->link_target) : NULL,
		.xattrs = xattrs_format(e), .prefetch = e->prefetch,
	};

	if (streq(basename_of(e->path), "stargz.index.json") ||
	    strstr(e->path, "prefetch.landmark"))
		run->n_bookkeeping++;
	if (e->prefetch)
		run->n_prefetch++;

	if (e->type == ENTRY_REG) {
		_cleanup_(digest_ctx_freep) struct digest_ctx *file = NULL;
		uint64_t pos = 0;

		assert(digest_ctx_new(&file) >= 0);
		for (size_t i = 0; i < e->n_chunks; i++) {
			const struct chunk *c = &e->chunks[i];
			_cleanup_free_ uint8_t *in = NULL, *out = NULL;
			char d[DIGEST_STRING_MAX];
			int k;

			run->n_chunks++;
			if (c->file_offset != pos)
				run->chunks_cover = false;
			pos = c->file_offset + c->size;
			out = calloc(1, c->size ? c->size : 1);
			if (!c->digest) {
				run->n_zero_chunks++;
				digest_ctx_update(file, out, c->size);
				continue;
			}
			in = malloc(c->blob_length ? c->blob_length : 1);
			k = run->rd->read(run->rd->userdata, c->blob_offset, c->blob_length, in);
			if (k >= 0)
				k = chunk_decompress(run->compression, in, c->blob_length, out, c->size);
			if (k >= 0) {
				digest_buffer(out, c->size, d);
				if (streq(d, c->digest))
					run->n_chunk_ok++;
				else
					k = -EBADMSG;
			}
			if (k < 0 && !run->first_failure)
				(void)asprintf(&run->first_failure, "%s chunk %zu @%" PRIu64 "+%" PRIu64
					       ": %s", e->path, i, c->blob_offset, c->blob_length,
					       strerror(-k));
			digest_ctx_update(file, out, c->size);
		}
		if (pos != e->size)
			run->chunks_cover = false;
		digest_ctx_final(file, r.sha);
		if (e->digest && streq(r.sha, e->digest))
			run->n_digest_ok++;
		else if (!run->first_failure)
			(void)asprintf(&run->first_failure, "%s: content digest mismatch", e->path);
	}
	tree_put(&run->entries, &r);
	return 0;
}

/* Applies one layer's entries on top of @t as an overlay would: whiteouts first, against the
 * lower layers only, then the entries; a hard link takes its target's inode attributes. */
static void tree_apply(struct tree *t, struct tree *layer)
{
	for (size_t i = 0; i < layer->n; i++) {
		const char *path = layer->v[i].path, *base = basename_of(path);
		_cleanup_free_ char *dir = strndup(path, (size_t)(base - path) ? (size_t)(base - path) - 1 : 0);

		if (streq(base, ".wh..wh..opq")) {
			tree_remove(t, dir, false);
		} else if (startswith(base, ".wh.")) {
			_cleanup_free_ char *victim = NULL;

			(void)asprintf(&victim, "%s%s%s", dir, *dir ? "/" : "", base + 4);
			tree_remove(t, victim, true);
		}
	}
	for (size_t i = 0; i < layer->n; i++) {
		struct rec r = layer->v[i];

		if (startswith(basename_of(r.path), ".wh.")) {
			rec_done(&r);
			continue;
		}
		if (r.type == ENTRY_HARDLINK) {
			struct rec *target = tree_find(t, r.target);

			if (target) {
				r.type = target->type;
				r.mode = target->mode;
				r.uid = target->uid;
				r.gid = target->gid;
				r.size = target->size;
				memcpy(r.sha, target->sha, sizeof(r.sha));
				free(r.xattrs);
				r.xattrs = strdup(target->xattrs);
				free(r.target);
				r.target = NULL;
			}
		}
		tree_put(t, &r);
	}
	free(layer->v);
	*layer = (struct tree) {};
}

static char *escape(const char *s)
{
	char *out = malloc(strlen(s) * 4 + 2), *p = out;

	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '\\')
			p += sprintf(p, "\\\\");
		else if (c == '\t')
			p += sprintf(p, "\\t");
		else if (c == '\n')
			p += sprintf(p, "\\n");
		else if (c == '\r')
			p += sprintf(p, "\\r");
		else if (c < 0x20 || c == 0x7f)
			p += sprintf(p, "\\x%02x", c);
		else
			*p++ = (char)c;
	}
	*p = '\0';
	return out;
}

static char *rec_line(const struct rec *r)
{
	static const char types[] = { [ENTRY_REG] = 'f', [ENTRY_DIR] = 'd', [ENTRY_SYMLINK] = 'l',
				      [ENTRY_HARDLINK] = 'h', [ENTRY_CHR] = 'c',
				      [ENTRY_BLK] = 'b', [ENTRY_FIFO] = 'p' };
	_cleanup_free_ char *path = escape(r->path), *target = NULL;
	char size[32] = "-", dev[32] = "-";
	char *line;

	if (r->type == ENTRY_REG)
		snprintf(size, sizeof(size), "%" PRIu64, r->size);
	else if (r->type == ENTRY_SYMLINK)
		snprintf(size, sizeof(size), "%zu", strlen(r->target));
	if (r->type == ENTRY_CHR || r->type == ENTRY_BLK)
		snprintf(dev, sizeof(dev), "%u:%u", r->major, r->minor);
	target = r->type == ENTRY_SYMLINK ? escape(r->target) : strdup("-");
	(void)asprintf(&line, "/%s\t%c\t%04o\t%u\t%u\t%s\t%s\t%s\t%s\t%s", path, types[r->type],
		       r->mode, r->uid, r->gid, size, r->type == ENTRY_REG ? r->sha + 7 : "-",
		       target, dev, r->xattrs);
	return line;
}

static int str_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Compares @t with the oracle line by line; prints the first differences as TAP comments. */
static bool tree_matches_oracle(const struct tree *t, const char *variant)
{
	_cleanup_free_ char *path = NULL, *buf = NULL;
	char **want = NULL, **have = NULL;
	size_t n_want = 0, len, shown = 0, i = 0, j = 0;
	bool ok;

	(void)asprintf(&path, "fixtures/%s/expected-tree.tsv", variant);
	if (read_full_file(path, 64 << 20, &buf, &len) < 0)
		return false;
	want = calloc(len / 8 + 2, sizeof(char *));
	for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n"))
		if (!startswith(line, "path\t"))
			want[n_want++] = line;
	have = calloc(t->n + 1, sizeof(char *));
	for (size_t k = 0; k < t->n; k++)
		have[k] = rec_line(&t->v[k]);   /* the root "" is "/" */
	qsort(want, n_want, sizeof(char *), str_cmp);
	qsort(have, t->n, sizeof(char *), str_cmp);
	ok = n_want == t->n;
	while (i < n_want || j < t->n) {
		int c = i >= n_want ? 1 : j >= t->n ? -1 : strcmp(want[i], have[j]);

		if (c == 0) {
			i++, j++;
			continue;
		}
		ok = false;
		if (shown++ < 8)
			printf("# %s: %s\n", c < 0 ? "missing" : "unexpected", c < 0 ? want[i] : have[j]);
		if (c < 0)
			i++;
		else
			j++;
	}
	for (size_t k = 0; k < t->n; k++)
		free(have[k]);
	free(have);
	free(want);
	return ok;
}

/* ---- fixtures --------------------------------------------------------------------------- */

static int load_manifest(const char *variant, struct manifest **ret)
{
	_cleanup_free_ char *path = NULL, *buf = NULL, *mpath = NULL, *mbuf = NULL;
	const char *digest;
	json_t *idx;
	size_t len, mlen;
	int r;

	(void)asprintf(&path, "fixtures/%s/index.json", variant);
	r = read_full_file(path, 1 << 20, &buf, &len);
	if (r < 0)
		return r;
	idx = json_loadb(buf, len, 0, NULL);
	if (!idx)
		return -EBADMSG;
	digest = json_string_value(json_object_get(json_array_get(json_object_get(idx, "manifests"), 0),
						   "digest"));
	if (!digest) {
		json_decref(idx);
		return -EBADMSG;
	}
	(void)asprintf(&mpath, "fixtures/%s/blobs/sha256/%s", variant, digest + 7);
	json_decref(idx);
	r = read_full_file(mpath, 1 << 20, &mbuf, &mlen);
	if (r < 0)
		return r;
	return manifest_parse(mbuf, mlen, MEDIA_TYPE_OCI_MANIFEST, ret);
}

static int open_blob(const char *variant, const char *digest)
{
	_cleanup_free_ char *path = NULL;

	(void)asprintf(&path, "fixtures/%s/blobs/sha256/%s", variant, digest + 7);
	return open(path, O_RDONLY | O_CLOEXEC);
}

static int read_blob(const char *variant, const char *digest, char **ret, size_t *ret_len)
{
	_cleanup_free_ char *path = NULL;

	(void)asprintf(&path, "fixtures/%s/blobs/sha256/%s", variant, digest + 7);
	return read_full_file(path, 64 << 20, ret, ret_len);
}

static void test_variant(const char *variant, enum layer_format want_format, const char *tmpdir)
{
	_cleanup_(manifest_freep) struct manifest *m = NULL;
	_cleanup_(index_db_freep) struct index_db *db = NULL;
	_cleanup_free_ char *dbpath = NULL;
	struct tree merged = {};
	int r;

	r = load_manifest(variant, &m);
	check(r >= 0 && m->n_layers == 3, "%s: manifest has 3 layers", variant);
	if (r < 0)
		return;
	(void)asprintf(&dbpath, "%s/%s.db", tmpdir, variant);
	r = index_db_open(dbpath, &db);
	check(r >= 0, "%s: index db opened", variant);
	if (r < 0)
		return;

	for (size_t i = 0; i < m->n_layers; i++) {
		const struct layer_desc *l = &m->layers[i];
		_cleanup_close_ int fd = open_blob(variant, l->digest);
		struct blob_range_reader rd = { .read = fd_read, .userdata = &fd };
		struct layer_run run = { .compression = l->compression, .rd = &rd,
					 .chunks_cover = true };
		struct layer_writer *w = NULL;

		check(layer_format_detect(l) == want_format, "%s layer %zu: detected as %s", variant,
		      i + 1, layer_format_to_string(want_format));

		r = index_db_layer_begin(db, l->digest, l->media_type, &w);
		if (r >= 0) {
			r = layer_lazy_index(l, want_format, &rd, w);
			if (r >= 0)
				r = layer_writer_commit(w);
			else
				layer_writer_abort(w);
		}
		check(r >= 0, "%s layer %zu: indexed into the database (%s)", variant, i + 1,
		      r < 0 ? strerror(-r) : "ok");
		check(index_db_layer_is_indexed(db, l->digest) == 1, "%s layer %zu: committed",
		      variant, i + 1);

		r = layer_lazy_parse(l, want_format, &rd, collect, &run);
		check(r >= 0, "%s layer %zu: TOC parsed, %zu entries", variant, i + 1,
		      run.entries.n);
		check(run.n_chunks > 0 && run.n_chunk_ok + run.n_zero_chunks == run.n_chunks,
		      "%s layer %zu: all %zu chunks (%zu zeros) decompress to their digest%s%s",
		      variant, i + 1, run.n_chunks, run.n_zero_chunks,
		      run.first_failure ? "; first failure: " : "",
		      run.first_failure ? run.first_failure : "");
		check(run.chunks_cover, "%s layer %zu: chunks cover each file without gaps", variant,
		      i + 1);
		check(run.n_bookkeeping == 0, "%s layer %zu: no stargz.index.json or landmark entries",
		      variant, i + 1);
		check(run.n_prefetch == 0, "%s layer %zu: no prefetch entries (no .prefetch.landmark)",
		      variant, i + 1);
		free(run.first_failure);
		tree_apply(&merged, &run.entries);
	}
	check(tree_matches_oracle(&merged, variant), "%s: merged tree (%zu entries) matches "
	      "expected-tree.tsv", variant, merged.n);
	tree_done(&merged);
}

/* ---- a synthetic eStargz blob with a prefetch landmark ----------------------------------- */

struct buf {
	uint8_t *p;
	size_t len;
};

static void buf_add(struct buf *b, const void *p, size_t n)
{
	b->p = realloc(b->p, b->len + n + 1);
	memcpy(b->p + b->len, p, n);
	b->len += n;
}

static void gzip_member(struct buf *b, const void *p, size_t n)
{
	z_stream zs = {};
	uint8_t out[65536];

	assert(deflateInit2(&zs, 9, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) == Z_OK);
	zs.next_in = (Bytef *)p;
	zs.avail_in = (uInt)n;
	zs.next_out = out;
	zs.avail_out = sizeof(out);
	assert(deflate(&zs, Z_FINISH) == Z_STREAM_END);
	buf_add(b, out, sizeof(out) - zs.avail_out);
	deflateEnd(&zs);
}

static void tar_header(uint8_t h[512], const char *name, size_t size)
{
	unsigned sum = 0;

	memset(h, 0, 512);
	strcpy((char *)h, name);
	sprintf((char *)h + 100, "%07o", 0644);
	sprintf((char *)h + 124, "%011zo", size);
	h[156] = '0';
	memcpy(h + 257, "ustar", 6);
	memcpy(h + 263, "00", 2);
	memset(h + 148, ' ', 8);
	for (size_t i = 0; i < 512; i++)
		sum += h[i];
	sprintf((char *)h + 148, "%06o", sum);
}

/* Builds a blob: payload members for a.txt, ./.prefetch.landmark, b.txt, then the TOC member
 * and the footer.  @footer_kind: 51, 47, or 0 for garbage.  @toc_offset_delta moves the
 * offset the footer names.  Returns the TOC JSON digest in @ret_digest. */
static void synth_estargz(struct buf *b, int footer_kind, uint64_t toc_offset_delta,
			  char ret_digest[DIGEST_STRING_MAX])
{
	static const char a[] = "prefetch me\n", bb[] = "lazy\n";
	char da[DIGEST_STRING_MAX], dl[DIGEST_STRING_MAX], db[DIGEST_STRING_MAX];
	size_t off_a, off_l, off_b, toc_offset;
	_cleanup_free_ char *json = NULL;
	uint8_t h[512], zeros[1024] = {};
	struct buf toc = {};
	char footer[64];

	digest_buffer(a, strlen(a), da);
	digest_buffer("\x0f", 1, dl);
	digest_buffer(bb, strlen(bb), db);
	*b = (struct buf) {};
	tar_header(h, "a.txt", strlen(a));
	gzip_member(b, h, 512);
	off_a = b->len;
	gzip_member(b, a, strlen(a));
	off_l = b->len;
	gzip_member(b, "\x0f", 1);
	off_b = b->len;
	gzip_member(b, bb, strlen(bb));
	toc_offset = b->len;
	(void)asprintf(&json,
		       "{\"version\":1,\"entries\":["
		       "{\"name\":\"./\",\"type\":\"dir\",\"mode\":16877,\"modtime\":\"2023-11-14T22:13:20.5Z\"},"
		       "{\"name\":\"./a.txt\",\"type\":\"reg\",\"size\":%zu,\"mode\":33188,\"uid\":1000,"
		       "\"offset\":%zu,\"digest\":\"%s\",\"xattrs\":{\"user.x\":\"aGk=\"}},"
		       "{\"name\":\"./.prefetch.landmark\",\"type\":\"reg\",\"size\":1,\"offset\":%zu,"
		       "\"digest\":\"%s\"},"
		       "{\"name\":\"b.txt\",\"type\":\"reg\",\"size\":%zu,\"offset\":%zu,"
		       "\"modtime\":\"2023-11-14T23:13:20+01:00\",\"digest\":\"%s\",\"chunkDigest\":\"%s\"},"
		       "{\"name\":\"stargz.index.json\",\"type\":\"reg\",\"size\":9}"
		       "]}",
		       strlen(a), off_a, da, off_l, dl, strlen(bb), off_b, db, db);
	digest_buffer(json, strlen(json), ret_digest);
	tar_header(h, "stargz.index.json", strlen(json));
	buf_add(&toc, h, 512);
	buf_add(&toc, json, strlen(json));
	buf_add(&toc, zeros, (512 - strlen(json) % 512) % 512);
	buf_add(&toc, zeros, 1024);
	gzip_member(b, toc.p, toc.len);
	free(toc.p);

	toc_offset += toc_offset_delta;
	if (footer_kind == 51) {
		static const uint8_t head[] = { 0x1f, 0x8b, 8, 4, 0, 0, 0, 0, 0, 0xff, 26, 0,
						'S', 'G', 22, 0 };
		static const uint8_t tail[] = { 1, 0, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0 };

		buf_add(b, head, sizeof(head));
		snprintf(footer, sizeof(footer), "%016zxSTARGZ", toc_offset);
		buf_add(b, footer, 22);
		buf_add(b, tail, sizeof(tail));
	} else if (footer_kind == 47) {
		static const uint8_t head[] = { 0x1f, 0x8b, 8, 4, 0, 0, 0, 0, 0, 0xff, 22, 0 };
		static const uint8_t tail[] = { 1, 0, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0 };

		buf_add(b, head, sizeof(head));
		snprintf(footer, sizeof(footer), "%016zxSTARGZ", toc_offset);
		buf_add(b, footer, 22);
		buf_add(b, tail, sizeof(tail));
	} else {
		memset(footer, 'x', 51);
		buf_add(b, footer, 51);
	}
}

static void synth_layer(struct layer_desc *l, struct annotation *a, const char *digest,
			const struct buf *b)
{
	a->key = (char *)"containerd.io/snapshot/stargz/toc.digest";
	a->value = (char *)digest;
	*l = (struct layer_desc) { .digest = (char *)"sha256:0", .size = b->len,
				   .compression = LAYER_COMPRESSION_GZIP, .annotations = a,
				   .n_annotations = 1 };
}

static void test_synthetic(void)
{
	char digest[DIGEST_STRING_MAX];
	struct annotation a;
	struct layer_desc l;
	struct buf b;
	int r;

	for (int kind = 51; kind >= 47; kind -= 4) {
		struct mem mem;
		struct blob_range_reader rd = { .read = mem_read, .userdata = &mem };
		struct layer_run run = { .compression = LAYER_COMPRESSION_GZIP, .rd = &rd,
					 .chunks_cover = true };
		struct rec *ra, *rb, *root;

		synth_estargz(&b, kind, 0, digest);
		mem = (struct mem) { b.p, b.len };
		synth_layer(&l, &a, digest, &b);
		r = layer_lazy_parse(&l, LAYER_FORMAT_ESTARGZ, &rd, collect, &run);
		check(r >= 0 && run.entries.n == 3, "synthetic %d-byte footer: 3 entries indexed", kind);
		ra = tree_find(&run.entries, "a.txt");
		rb = tree_find(&run.entries, "b.txt");
		root = tree_find(&run.entries, "");
		check(ra && ra->prefetch && root && root->prefetch && rb && !rb->prefetch,
		      "synthetic %d: entries before .prefetch.landmark are prefetch", kind);
		check(run.n_bookkeeping == 0, "synthetic %d: landmark and TOC entries skipped", kind);
		check(run.n_chunks == 2 && run.n_chunk_ok == 2,
		      "synthetic %d: chunks of a.txt and b.txt verify", kind);
		check(ra && ra->mode == 0644 && ra->uid == 1000 && streq(ra->xattrs, "user.x=6869"),
		      "synthetic %d: mode masked to 07777, uid and base64 xattr", kind);
		check(root && root->mode == 0755, "synthetic %d: directory mode type bits masked", kind);
		tree_done(&run.entries);
		free(run.first_failure);

		/* Wrong toc.digest annotation */
		a.value = (char *)"sha256:0000000000000000000000000000000000000000000000000000000000000000";
		r = layer_lazy_parse(&l, LAYER_FORMAT_ESTARGZ, &rd, collect, &run);
		check(r == -EBADMSG, "synthetic %d: wrong toc.digest is -EBADMSG (%d)", kind, r);
		tree_done(&run.entries);
		free(b.p);
	}

	/* Garbage footer */
	{
		struct mem mem;
		struct blob_range_reader rd = { .read = mem_read, .userdata = &mem };
		struct layer_run run = { .compression = LAYER_COMPRESSION_GZIP, .rd = &rd };

		synth_estargz(&b, 0, 0, digest);
		mem = (struct mem) { b.p, b.len };
		synth_layer(&l, &a, digest, &b);
		r = layer_lazy_parse(&l, LAYER_FORMAT_ESTARGZ, &rd, collect, &run);
		check(r == -EPROTO, "a garbage footer is -EPROTO (%d)", r);
		free(b.p);

		synth_estargz(&b, 51, 1 << 20, digest);
		mem = (struct mem) { b.p, b.len };
		synth_layer(&l, &a, digest, &b);
		r = layer_lazy_parse(&l, LAYER_FORMAT_ESTARGZ, &rd, collect, &run);
		check(r == -EBADMSG, "a TOC offset past the blob is -EBADMSG (%d)", r);
		free(b.p);

		synth_estargz(&b, 51, 3, digest);
		mem = (struct mem) { b.p, b.len };
		synth_layer(&l, &a, digest, &b);
		r = layer_lazy_parse(&l, LAYER_FORMAT_ESTARGZ, &rd, collect, &run);
		check(r == -EBADMSG, "a TOC offset inside a member is -EBADMSG (%d)", r);
		free(b.p);
		tree_done(&run.entries);
	}
}

/* ---- tampering with the real fixtures ---------------------------------------------------- */

static void set_annotation(struct layer_desc *l, const char *key, const char *value)
{
	for (size_t i = 0; i < l->n_annotations; i++)
		if (streq(l->annotations[i].key, key)) {
			free(l->annotations[i].value);
			l->annotations[i].value = strdup(value);
		}
}

static int parse_discard(void *userdata, const struct entry *e)
{
	(void)userdata;
	(void)e;
	return 0;
}

static void test_tampering(void)
{
	static const char zero[] =
		"sha256:0000000000000000000000000000000000000000000000000000000000000000";
	_cleanup_(manifest_freep) struct manifest *es = NULL, *zc = NULL, *zs = NULL;
	_cleanup_free_ char *blob = NULL;
	size_t len;
	int r;

	assert(load_manifest("estargz", &es) >= 0);
	assert(load_manifest("zstdchunked", &zc) >= 0);
	assert(load_manifest("zstdchunked-skopeo", &zs) >= 0);

	/* eStargz layer 2: wrong toc.digest; garbage footer; TOC offset past the blob. */
	{
		struct layer_desc *l = &es->layers[1];
		struct mem mem;
		struct blob_range_reader rd = { .read = mem_read, .userdata = &mem };
		char hex[17];

		assert(read_blob("estargz", l->digest, &blob, &len) >= 0);
		mem = (struct mem) { (uint8_t *)blob, len };
		check(layer_lazy_parse(l, LAYER_FORMAT_ESTARGZ, &rd, parse_discard, NULL) == 0,
		      "estargz layer 2 from memory parses");

		memset(blob + len - 51, 'x', 51);
		r = layer_lazy_parse(l, LAYER_FORMAT_ESTARGZ, &rd, parse_discard, NULL);
		check(r == -EPROTO, "estargz: garbage footer is -EPROTO (%d)", r);
		free(blob);
		blob = NULL;

		assert(read_blob("estargz", l->digest, &blob, &len) >= 0);
		mem = (struct mem) { (uint8_t *)blob, len };
		snprintf(hex, sizeof(hex), "%016zx", len + 4096);
		memcpy(blob + len - 51 + 16, hex, 16);
		r = layer_lazy_parse(l, LAYER_FORMAT_ESTARGZ, &rd, parse_discard, NULL);
		check(r == -EBADMSG, "estargz: TOC offset past the blob is -EBADMSG (%d)", r);
		snprintf(hex, sizeof(hex), "%016zx", len - 51);
		memcpy(blob + len - 51 + 16, hex, 16);
		r = layer_lazy_parse(l, LAYER_FORMAT_ESTARGZ, &rd, parse_discard, NULL);
		check(r == -EBADMSG, "estargz: TOC offset at the footer is -EBADMSG (%d)", r);
		free(blob);
		blob = NULL;

		set_annotation(l, "containerd.io/snapshot/stargz/toc.digest", zero);
		assert(read_blob("estargz", l->digest, &blob, &len) >= 0);
		mem = (struct mem) { (uint8_t *)blob, len };
		r = layer_lazy_parse(l, LAYER_FORMAT_ESTARGZ, &rd, parse_discard, NULL);
		check(r == -EBADMSG, "estargz: wrong toc.digest annotation is -EBADMSG (%d)", r);
		free(blob);
		blob = NULL;
	}

	/* zstd:chunked: manifest-checksum and toc.digest mismatches, position outside the blob. */
	for (int k = 0; k < 2; k++) {
		struct layer_desc *l = &(k ? zs : zc)->layers[1];
		const char *variant = k ? "zstdchunked-skopeo" : "zstdchunked";
		_cleanup_free_ char *pos = NULL, *newpos = NULL;
		_cleanup_free_ char *sum = NULL;
		struct mem mem;
		struct blob_range_reader rd = { .read = mem_read, .userdata = &mem };
		const char *key_pos = "io.containers.zstd-chunked.manifest-position";
		const char *key_sum = "io.containers.zstd-chunked.manifest-checksum";

		assert(read_blob(variant, l->digest, &blob, &len) >= 0);
		mem = (struct mem) { (uint8_t *)blob, len };
		pos = strdup(layer_desc_annotation(l, key_pos));
		sum = strdup(layer_desc_annotation(l, key_sum));

		/* The newer annotation spelling is accepted too. */
		for (size_t i = 0; i < l->n_annotations; i++)
			if (startswith(l->annotations[i].key, "io.containers.zstd-chunked.")) {
				char *nk = NULL;

				(void)asprintf(&nk, "io.github.%s", l->annotations[i].key + 3);
				free(l->annotations[i].key);
				l->annotations[i].key = nk;
			}
		check(layer_format_detect(l) == LAYER_FORMAT_ZSTD_CHUNKED,
		      "%s: io.github.containers.zstd-chunked.* detected", variant);
		r = layer_lazy_parse(l, LAYER_FORMAT_ZSTD_CHUNKED, &rd, parse_discard, NULL);
		check(r == 0, "%s: io.github.containers.zstd-chunked.* annotations parse (%d)",
		      variant, r);
		for (size_t i = 0; i < l->n_annotations; i++)
			if (startswith(l->annotations[i].key, "io.github.containers.")) {
				char *nk = strdup(l->annotations[i].key + 10);

				free(l->annotations[i].key);
				l->annotations[i].key = nk;
			}

		set_annotation(l, key_sum, zero);
		r = layer_lazy_parse(l, LAYER_FORMAT_ZSTD_CHUNKED, &rd, parse_discard, NULL);
		check(r == -EBADMSG, "%s: manifest-checksum mismatch is -EBADMSG (%d)", variant, r);
		set_annotation(l, key_sum, sum);

		(void)asprintf(&newpos, "%zu:%s", len - 4, strchr(pos, ':') + 1);
		set_annotation(l, key_pos, newpos);
		r = layer_lazy_parse(l, LAYER_FORMAT_ZSTD_CHUNKED, &rd, parse_discard, NULL);
		check(r == -EBADMSG, "%s: manifest-position past the blob is -EBADMSG (%d)",
		      variant, r);
		set_annotation(l, key_pos, "1:2:3");
		r = layer_lazy_parse(l, LAYER_FORMAT_ZSTD_CHUNKED, &rd, parse_discard, NULL);
		check(r == -EBADMSG, "%s: malformed manifest-position is -EBADMSG (%d)", variant, r);
		set_annotation(l, key_pos, pos);

		if (k == 0) {
			set_annotation(l, "containerd.io/snapshot/stargz/toc.digest", zero);
			r = layer_lazy_parse(l, LAYER_FORMAT_ZSTD_CHUNKED, &rd, parse_discard, NULL);
			check(r == -EBADMSG, "%s: toc.digest mismatch is -EBADMSG (%d)", variant, r);
		}
		free(blob);
		blob = NULL;
	}

	/* Format detection: ctr-remote's zstd:chunked carries the stargz annotation too. */
	check(layer_format_detect(&zc->layers[0]) == LAYER_FORMAT_ZSTD_CHUNKED,
	      "a zstd layer with both annotations is zstd:chunked");
	{
		struct layer_desc plain = { .compression = LAYER_COMPRESSION_GZIP };

		check(layer_format_detect(&plain) == LAYER_FORMAT_TAR, "no annotations: tar");
	}
}

static void test_chunk_decompress(void)
{
	static const uint8_t skippable[] = { 0x50, 0x2a, 0x4d, 0x18, 3, 0, 0, 0, 'x', 'y', 'z' };
	struct buf b = {}, z = {};
	uint8_t out[16], frame[64];
	size_t first, n;

	gzip_member(&b, "hello ", 6);
	first = b.len;
	gzip_member(&b, "world!", 6);
	check(chunk_decompress(LAYER_COMPRESSION_GZIP, b.p, b.len, out, 12) == 0 &&
	      memcmp(out, "hello world!", 12) == 0, "gzip: a chunk spanning two members");
	check(chunk_decompress(LAYER_COMPRESSION_GZIP, b.p, b.len, out, 13) == -EBADMSG,
	      "gzip: asking for more than the members hold is -EBADMSG");
	check(chunk_decompress(LAYER_COMPRESSION_GZIP, b.p, first + 12, out, 12) == -EBADMSG,
	      "gzip: a truncated member is -EBADMSG");
	check(chunk_decompress(LAYER_COMPRESSION_GZIP, b.p, b.len, out, 4) == 0 &&
	      memcmp(out, "hell", 4) == 0, "gzip: stops after @size bytes");
	free(b.p);

	n = ZSTD_compress(frame, sizeof(frame), "hello ", 6, 3);
	buf_add(&z, frame, n);
	buf_add(&z, skippable, sizeof(skippable));
	n = ZSTD_compress(frame, sizeof(frame), "world!", 6, 3);
	buf_add(&z, frame, n);
	check(chunk_decompress(LAYER_COMPRESSION_ZSTD, z.p, z.len, out, 12) == 0 &&
	      memcmp(out, "hello world!", 12) == 0, "zstd: frames and a skippable frame between");
	check(chunk_decompress(LAYER_COMPRESSION_ZSTD, z.p, z.len, out, 13) == -EBADMSG,
	      "zstd: asking for more than the frames hold is -EBADMSG");
	check(chunk_decompress(LAYER_COMPRESSION_ZSTD, z.p, z.len - 2, out, 12) == -EBADMSG,
	      "zstd: a truncated frame is -EBADMSG");
	memset(out, 0, sizeof(out));
	z.p[z.len - 1] ^= 0xff;
	check(chunk_decompress(LAYER_COMPRESSION_ZSTD, z.p, 4, out, 3) == -EBADMSG,
	      "zstd: garbage is -EBADMSG");
	free(z.p);
}

int main(void)
{
	char tmpdir[] = "/tmp/test-layer_lazy-XXXXXX";

	assert(mkdtemp(tmpdir));
	test_chunk_decompress();
	test_variant("estargz", LAYER_FORMAT_ESTARGZ, tmpdir);
	test_variant("zstdchunked", LAYER_FORMAT_ZSTD_CHUNKED, tmpdir);
	test_variant("zstdchunked-skopeo", LAYER_FORMAT_ZSTD_CHUNKED, tmpdir);
	test_synthetic();
	test_tampering();

	{
		_cleanup_free_ char *cmd = NULL;

		(void)asprintf(&cmd, "rm -rf '%s'", tmpdir);
		(void)!system(cmd);
	}
	return tap_done();
}
