/* tests/unit/test-seek_index.c: the seek index of a tar+gzip layer (cache/format/seek_index.c):
 * built in one pass by layer_tar_index_seek(), every chunk it names inflates from its
 * checkpoint to the file's bytes, and indexes that lie or are damaged are refused by the parser
 * or caught by the chunk digests; an untrusted index proves its tar headers and windows as it
 * is read (seek_trust.c, tar_header.c). */
#include "cache/format/seek_index.h"
#include "cache/format/seek_cursor_pool.h"
#include "cache/format/window_probe.h"

#include <archive.h>
#include <archive_entry.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include "cache/base/digest.h"
#include "cache/base/error.h"
#include "cache/format/layer_tar.h"
#include "cache/format/tar_header.h"
#include "tap.h"

#define N_FILES 40

struct buf {
	uint8_t *p;
	size_t n, allocated;
};

static void buf_add(struct buf *b, const void *p, size_t n)
{
	if (b->n + n > b->allocated) {
		b->allocated = (b->n + n) * 2;
		b->p = realloc(b->p, b->allocated);
		if (!b->p)
			abort();
	}
	memcpy(b->p + b->n, p, n);
	b->n += n;
}

static la_ssize_t tar_write_cb(struct archive *a, void *ud, const void *p, size_t n)
{
	(void)a;
	buf_add(ud, p, n);
	return (la_ssize_t)n;
}

/* File i: sizes from 0 to ~600 KiB, half compressible text, half pseudo-random. */
static uint8_t *file_content(unsigned i, size_t *ret_n)
{
	size_t n = (size_t)i * i * 397 + (i % 3) * 7;
	uint8_t *p = malloc(n ?: 1);
	uint32_t x = i * 2654435761u + 1;

	for (size_t k = 0; k < n; k++) {
		x = x * 1103515245u + 12345u;
		p[k] = i % 2 ? (uint8_t)(x >> 16) : (uint8_t)("lazyroot seek index\n"[k % 20]);
	}
	*ret_n = n;
	return p;
}

static void make_tar(struct buf *tar)
{
	struct archive *a = archive_write_new();
	struct archive_entry *e = archive_entry_new();

	archive_write_set_format_pax_restricted(a);
	archive_write_set_bytes_in_last_block(a, 1);
	archive_write_open(a, tar, NULL, tar_write_cb, NULL);
	archive_entry_set_pathname(e, "dir");
	archive_entry_set_filetype(e, AE_IFDIR);
	archive_entry_set_perm(e, 0755);
	archive_write_header(a, e);
	for (unsigned i = 0; i < N_FILES; i++) {
		char name[256];
		size_t n;
		uint8_t *p = file_content(i, &n);

		snprintf(name, sizeof(name), "dir/file-%02u%s", i, i == 7 ? "-with-a-long-name-"
			 "that-needs-a-pax-header-because-it-is-longer-than-one-hundred-bytes-xx"
			 "xxxxxxxxxxxxxxxxxx" : "");
		archive_entry_clear(e);
		archive_entry_set_pathname(e, name);
		archive_entry_set_filetype(e, AE_IFREG);
		archive_entry_set_perm(e, 0644);
		archive_entry_set_size(e, (la_int64_t)n);
		archive_write_header(a, e);
		archive_write_data(a, p, n);
		free(p);
	}
	archive_entry_clear(e);
	archive_entry_set_pathname(e, "dir/link");
	archive_entry_set_filetype(e, AE_IFLNK);
	archive_entry_set_symlink(e, "file-01");
	archive_entry_set_perm(e, 0777);
	archive_write_header(a, e);
	archive_entry_free(e);
	archive_write_close(a);
	archive_write_free(a);
}

/* gzip of @tar, cut into @members members (eStargz-like layers have many). */
static void make_gzip(const struct buf *tar, unsigned members, struct buf *gz)
{
	size_t per = tar->n / members + 1;

	for (size_t off = 0; off < tar->n; off += per) {
		size_t n = tar->n - off < per ? tar->n - off : per;
		z_stream zs = {};
		uint8_t out[65536];
		int zr;

		deflateInit2(&zs, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
		zs.next_in = tar->p + off;
		zs.avail_in = (uInt)n;
		do {
			zs.next_out = out;
			zs.avail_out = sizeof(out);
			zr = deflate(&zs, Z_FINISH);
			buf_add(gz, out, sizeof(out) - zs.avail_out);
		} while (zr == Z_OK);
		deflateEnd(&zs);
	}
}

static int memfd_of(const struct buf *b)
{
	int fd = memfd_create("layer", MFD_CLOEXEC);

	if (fd < 0 || write(fd, b->p, b->n) != (ssize_t)b->n || lseek(fd, 0, SEEK_SET) != 0)
		abort();
	return fd;
}

/* A pipe of one page that a child fills with @gz in writes of 1..@max_piece bytes, sizes
 * drawn from @seed: its reads return pieces cut as the scheduler pleases, as a registry's
 * stream arrives over a network; or, with @max_piece 0, a memfd that gives whole buffers. */
static int stream_of(const struct buf *gz, size_t max_piece, unsigned seed)
{
	int p[2];
	pid_t pid;

	if (max_piece == 0)
		return memfd_of(gz);
	if (pipe2(p, O_CLOEXEC) < 0)
		abort();
	(void)fcntl(p[1], F_SETPIPE_SZ, 4096);
	pid = fork();
	if (pid < 0)
		abort();
	if (pid == 0) {
		close(p[0]);  /* a reader that stops early must not leave this write blocked */
		srand(seed);
		for (size_t off = 0; off < gz->n;) {
			size_t n = 1 + (size_t)rand() % max_piece;

			n = n < gz->n - off ? n : gz->n - off;
			if (write(p[1], gz->p + off, n) != (ssize_t)n)
				_exit(1);
			off += n;
		}
		_exit(0);
	}
	close(p[1]);
	return p[0];
}

static int build_from(const struct buf *gz, size_t max_piece, unsigned seed, uint64_t span,
		      bool sparse, const char *layer_digest, void **ret, size_t *ret_len,
		      uint64_t *ret_tar_size)
{
	struct seek_builder *b = NULL;
	char diff_id[DIGEST_STRING_MAX];
	int fd = stream_of(gz, max_piece, seed), r;

	r = seek_builder_new(span, &b);
	if (r >= 0)
		seek_builder_set_sparse(b, sparse);
	if (r >= 0)
		r = layer_tar_index_seek(fd, NULL, NULL, NULL, NULL, b, diff_id, ret_tar_size);
	if (r >= 0)
		r = seek_builder_finish(b, layer_digest, gz->n, *ret_tar_size, ret, ret_len);
	seek_builder_free(b);
	close(fd);
	if (max_piece > 0)
		while (wait(NULL) > 0)
			;
	return r;
}

static int build(const struct buf *gz, uint64_t span, const char *layer_digest, void **ret,
		 size_t *ret_len, uint64_t *ret_tar_size)
{
	return build_from(gz, 0, 0, span, true, layer_digest, ret, ret_len, ret_tar_size);
}

struct verify {
	const struct seek_index *si;
	struct seek_cursor *cur;   /* NULL: each chunk inflated from its checkpoint anew */
	bool resume;               /* give the cursor only the bytes after where it stopped */
	const struct buf *gz;
	unsigned files, chunks, good, multi_chunk_files, resumed;
	uint64_t max_fetch;
};

/* Every chunk inflates from its range of the blob to the bytes of the file it belongs to. */
static int verify_entry(void *userdata, const struct entry *e)
{
	struct verify *v = userdata;
	unsigned i;
	size_t n;
	uint8_t *want;

	if (e->type != ENTRY_REG || sscanf(e->path, "dir/file-%02u", &i) != 1)
		return 0;
	want = file_content(i, &n);
	v->files++;
	v->multi_chunk_files += e->n_chunks > 1;
	for (size_t k = 0; k < e->n_chunks; k++) {
		const struct chunk *c = &e->chunks[k];
		uint64_t from = c->blob_offset, end = c->blob_offset + c->blob_length;
		uint8_t *out = malloc(c->size);
		int r;

		v->chunks++;
		if (c->blob_length > v->max_fetch)
			v->max_fetch = c->blob_length;
		if (v->resume && seek_cursor_resume_at(v->cur, v->si, c->blob_offset, c->digest,
						       c->size, &from) == 1)
			v->resumed += from > c->blob_offset;
		r = end <= v->gz->n && from <= end ?
		    seek_index_chunk_decode_from(v->si, v->cur, c->blob_offset, c->digest, c->size,
						 v->gz->p + from, from, end - from, out) :
		    -ERANGE;
		if (r >= 0 && digest_verify_buffer(out, c->size, c->digest) >= 0 &&
		    c->file_offset + c->size <= n && memcmp(out, want + c->file_offset, c->size) == 0)
			v->good++;
		free(out);
	}
	free(want);
	return 0;
}

/* A cursor that is not where the bytes start cannot use them: -ENODATA, not a lie; a pool
 * gives a parked cursor back for the next chunk of its span only. */
struct first_two {
	struct entry_copy { struct chunk c; char digest[DIGEST_STRING_MAX]; bool set; } f[2];
};

/* The first chunks of the first two regular files in stream order. */
static int first_two(void *userdata, const struct entry *e)
{
	struct first_two *t = userdata;
	struct entry_copy *f = &t->f[t->f[0].set];

	if (e->type != ENTRY_REG || e->n_chunks == 0 || e->chunks[0].size == 0 || t->f[1].set)
		return 0;
	f->c = e->chunks[0];
	snprintf(f->digest, sizeof(f->digest), "%s", e->chunks[0].digest);
	f->c.digest = f->digest;  /* the entry's own goes with the callback */
	f->set = true;
	return 0;
}

static void test_resume_refused(const struct seek_index *si, const struct buf *gz)
{
	struct first_two two = {};
	struct seek_cursor_pool *pool = NULL;
	struct seek_cursor *cur = NULL, *back;
	struct seek_span_claim claim;
	uint64_t from = 0;
	const struct chunk *a, *b;
	uint8_t *out;

	(void)seek_index_foreach(si, first_two, &two);
	if (!two.f[1].set || seek_cursor_new(&cur) < 0 || seek_cursor_pool_new(&pool) < 0) {
		check(false, "two files and a cursor pool");
		seek_cursor_free(cur);
		seek_cursor_pool_free(pool);
		return;
	}
	a = &two.f[0].c;
	b = &two.f[1].c;
	out = malloc(a->size > b->size ? a->size : b->size);
	check(seek_index_chunk_decode_from(si, cur, a->blob_offset, a->digest, a->size,
					   gz->p + a->blob_offset + 1, a->blob_offset + 1,
					   a->blob_length - 1, out) == -ENODATA,
	      "a fresh cursor cannot start after the checkpoint: -ENODATA");
	check(seek_index_chunk_decode_at(si, cur, a->blob_offset, a->digest, a->size,
					 gz->p + a->blob_offset, a->blob_length, out) >= 0,
	      "the first file inflates");
	seek_cursor_pool_put(pool, NULL, cur);
	back = seek_cursor_pool_take(pool, si, a->blob_offset, a->digest, a->size, 0, &from,
				     &claim);
	check(!back, "a parked cursor past a chunk is not given for it");
	seek_cursor_pool_put(pool, &claim, NULL);
	back = b->blob_offset == a->blob_offset ?
	       seek_cursor_pool_take(pool, si, b->blob_offset, b->digest, b->size, 0, &from,
				     &claim) : NULL;
	check(b->blob_offset != a->blob_offset || (back && claim.held && from > a->blob_offset),
	      "the parked cursor is given for the next file of its span, from where it stopped");
	seek_cursor_pool_put(pool, &claim, back);
	seek_cursor_pool_free(pool);
	free(out);
}

static void test_roundtrip(unsigned members, uint64_t span)
{
	struct buf tar = {}, gz = {};
	char layer[DIGEST_STRING_MAX];
	struct seek_index *si = NULL;
	struct seek_index_info info;
	uint64_t tar_size = 0;
	void *idx = NULL;
	size_t idx_len = 0;
	int r;

	make_tar(&tar);
	make_gzip(&tar, members, &gz);
	digest_buffer(gz.p, gz.n, layer);
	r = build(&gz, span, layer, &idx, &idx_len, &tar_size);
	check(r >= 0, "%u member(s), span %llu: the index is built (%s)", members,
	      (unsigned long long)span, r < 0 ? error_take(r) : "ok");
	check(tar_size == tar.n, "the uncompressed size is the tar's");
	r = seek_index_parse(idx, idx_len, layer, gz.n, &si);
	check(r >= 0, "the index built here parses (%s)", r < 0 ? error_take(r) : "ok");
	if (r >= 0) {
		struct verify v = { .si = si, .gz = &gz };

		seek_index_get_info(si, &info);
		check(info.n_checkpoints > 3, "checkpoints every span (%zu)", info.n_checkpoints);
		check(streq(info.layer_digest, layer), "the index names its layer");
		check(seek_index_foreach(si, verify_entry, &v) >= 0, "its entries can be walked");
		check(v.files == N_FILES, "every file is in the index");
		check(v.multi_chunk_files > 0, "files that cross a checkpoint are cut into chunks");
		check(v.chunks > 0 && v.good == v.chunks,
		      "every chunk inflates from its checkpoint to the file's bytes (%u of %u)",
		      v.good, v.chunks);
		check(v.max_fetch < gz.n / 2, "no chunk needs half the blob (%llu of %zu)",
		      (unsigned long long)v.max_fetch, gz.n);
		/* Again through one cursor: each span inflated once, in file order. */
		v = (struct verify) { .si = si, .gz = &gz };
		check(seek_cursor_new(&v.cur) >= 0, "a cursor is made");
		(void)seek_index_foreach(si, verify_entry, &v);
		check(v.chunks > 0 && v.good == v.chunks,
		      "through a cursor, every chunk inflates to the file's bytes (%u of %u)",
		      v.good, v.chunks);
		/* And once more with the same cursor, which is past them all: it starts again. */
		v.chunks = v.good = 0;
		(void)seek_index_foreach(si, verify_entry, &v);
		check(v.chunks > 0 && v.good == v.chunks, "a cursor past a chunk starts again");
		seek_cursor_free(v.cur);
		/* A request per chunk that gets only the bytes after where the cursor stopped, as
		 * the fetcher's requests after the first one in a span. */
		v = (struct verify) { .si = si, .gz = &gz, .resume = true };
		check(seek_cursor_new(&v.cur) >= 0, "a cursor is made");
		(void)seek_index_foreach(si, verify_entry, &v);
		check(v.chunks > 0 && v.good == v.chunks && v.resumed > 0,
		      "a cursor goes on with only the bytes after it (%u of %u good, %u resumed)",
		      v.good, v.chunks, v.resumed);
		seek_cursor_free(v.cur);
		test_resume_refused(si, &gz);
	}
	seek_index_free(si);
	free_many(idx, tar.p, gz.p);
}

/* ---- Lying and damaged indexes --------------------------------------------------------- */

struct fixture {
	struct buf tar, gz;
	char layer[DIGEST_STRING_MAX];
	void *idx;
	size_t idx_len;
};

static void fixture_make(struct fixture *f)
{
	uint64_t tar_size;

	*f = (struct fixture) {};
	make_tar(&f->tar);
	make_gzip(&f->tar, 1, &f->gz);
	digest_buffer(f->gz.p, f->gz.n, f->layer);
	if (build(&f->gz, 64 * 1024, f->layer, &f->idx, &f->idx_len, &tar_size) < 0)
		abort();
}

static uint32_t le32(const uint8_t *p)
{
	return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24;
}

/* The index with its body changed by @fn (the body's layout: docs/formats.md). */
static void *mutate(const struct fixture *f, void (*fn)(uint8_t *body, size_t len), size_t *ret_len)
{
	const uint8_t *idx = f->idx;
	uLongf raw_len = 0, zlen;
	uint8_t *body, *out;

	for (int i = 7; i >= 0; i--)
		raw_len = raw_len << 8 | idx[16 + i];
	body = malloc(raw_len);
	if (uncompress(body, &raw_len, idx + 24, f->idx_len - 24) != Z_OK)
		abort();
	fn(body, raw_len);
	zlen = compressBound(raw_len);
	out = malloc(24 + zlen);
	memcpy(out, idx, 24);
	compress(out + 24, &zlen, body, raw_len);
	free(body);
	*ret_len = 24 + zlen;
	return out;
}

#define CPS(b) ((b) + 80)
#define N_CPS(b) le32((b) + 52)
#define ENTRIES(b) (CPS(b) + N_CPS(b) * 32)
#define STRINGS(b) (ENTRIES(b) + le32((b) + 56) * 116 + le32((b) + 60) * 16 + le32((b) + 64) * 56)
#define WINDOWS(b) (STRINGS(b) + le32((b) + 68))

static void swap_checkpoints(uint8_t *b, size_t len)
{
	uint8_t tmp[8];

	(void)len;
	memcpy(tmp, CPS(b) + 32 + 8, 8);
	memcpy(CPS(b) + 32 + 8, CPS(b) + 64 + 8, 8);
	memcpy(CPS(b) + 64 + 8, tmp, 8);
}

static void escape_path(uint8_t *b, size_t len)
{
	uint8_t *s = STRINGS(b);

	(void)len;
	memcpy(s, "..", 2);  /* "dir" -> "..r", and "dir/..." of the next entries below it */
	memcpy(s + 3, "../", 3);
}

static void shift_chunk(uint8_t *b, size_t len)
{
	uint8_t *chunk = ENTRIES(b) + le32(b + 56) * 116 + le32(b + 60) * 16 + 56;

	(void)len;
	chunk[0] ^= 1;  /* the second chunk starts a byte off */
}

static bool sparse_window(uint8_t *b, uint32_t i, uint8_t **mask, uint8_t **bytes, uint32_t *n);

/* Every 7th byte of every window changed (of a sparse one, of the bytes it keeps). */
static void bad_window(uint8_t *b, size_t len)
{
	uint8_t *mask, *bytes;
	uint32_t n;

	(void)len;
	for (uint32_t i = 1; i < N_CPS(b); i++) {
		uint8_t *cp = CPS(b) + 32 * i;

		if (!sparse_window(b, i, &mask, &bytes, &n)) {
			mask = NULL;
			bytes = WINDOWS(b) + le32(cp + 20);
			n = le32(cp + 24);
		}
		for (uint32_t j = 0; j < n; j += 7)
			if (!mask || window_mask_used(mask, j))
				bytes[j] ^= 0x5a;
	}
}

static void bad_bits(uint8_t *b, size_t len)
{
	(void)len;
	for (uint32_t i = 1; i < N_CPS(b); i++)
		CPS(b)[32 * i + 16] = (CPS(b)[32 * i + 16] + 3) % 8 ?: 1;
}

static void count_up(uint8_t *b, size_t len)
{
	(void)len;
	b[56]++;  /* one entry more than the tables hold */
}

static void test_refused(const struct fixture *f, void (*fn)(uint8_t *, size_t), const char *what)
{
	struct seek_index *si = NULL;
	size_t len;
	void *idx = mutate(f, fn, &len);
	int r = seek_index_parse(idx, len, f->layer, f->gz.n, &si);

	check(r == -EBADMSG || r == -EFBIG, "an index with %s is refused (%s)", what,
	      r < 0 ? error_take(r) : "accepted");
	seek_index_free(si);
	free(idx);
}

struct lie {
	const struct seek_index *si;
	const struct fixture *f;
	unsigned chunks, caught, wrong_served;
};

/* Decodes every chunk as the fetcher would: what fails its digest is never served. */
static int lie_entry(void *userdata, const struct entry *e)
{
	struct lie *l = userdata;
	unsigned i;
	size_t n;
	uint8_t *want;

	if (e->type != ENTRY_REG || sscanf(e->path, "dir/file-%02u", &i) != 1)
		return 0;
	want = file_content(i, &n);
	for (size_t k = 0; k < e->n_chunks; k++) {
		const struct chunk *c = &e->chunks[k];
		uint8_t *out = malloc(c->size);
		int r = seek_index_chunk_decode(l->si, c->blob_offset, c->digest, c->size,
						l->f->gz.p + c->blob_offset, c->blob_length, out);

		l->chunks++;
		if (r < 0 || digest_verify_buffer(out, c->size, c->digest) < 0)
			l->caught++;
		else if (memcmp(out, want + c->file_offset, c->size) != 0)
			l->wrong_served++;
		free(out);
	}
	free(want);
	return 0;
}

static void test_caught(const struct fixture *f, void (*fn)(uint8_t *, size_t), const char *what)
{
	struct seek_index *si = NULL;
	size_t len;
	void *idx = mutate(f, fn, &len);
	int r = seek_index_parse(idx, len, f->layer, f->gz.n, &si);

	if (r >= 0) {
		struct lie l = { .si = si, .f = f };

		(void)seek_index_foreach(si, lie_entry, &l);
		check(l.caught > 0 && l.wrong_served == 0,
		      "an index with %s: %u of %u chunks fail their digest, none serves wrong bytes",
		      what, l.caught, l.chunks);
	} else {
		check(r == -EBADMSG, "an index with %s is refused", what);
	}
	seek_index_free(si);
	free(idx);
}

static void test_hostile(void)
{
	struct fixture f;
	struct seek_index *si = NULL;
	uint8_t *copy;

	fixture_make(&f);
	check(seek_index_parse(f.idx, f.idx_len - 9, f.layer, f.gz.n, &si) == -EBADMSG,
	      "a truncated index is refused");
	check(seek_index_parse(f.idx, 20, f.layer, f.gz.n, &si) == -EBADMSG,
	      "an index shorter than its header is refused");
	check(seek_index_parse(f.idx, f.idx_len, "sha256:0000000000000000000000000000000000000000"
			       "000000000000000000000000", f.gz.n, &si) == -EBADMSG,
	      "the index of another layer is refused");
	check(seek_index_parse(f.idx, f.idx_len, f.layer, f.gz.n + 1, &si) == -EBADMSG,
	      "an index for another blob size is refused");
	copy = malloc(f.idx_len);
	memcpy(copy, f.idx, f.idx_len);
	copy[8] = SEEK_INDEX_VERSION + 1;
	check(seek_index_parse(copy, f.idx_len, f.layer, f.gz.n, &si) == -EBADMSG,
	      "an index of an unknown version is refused");
	free(copy);
	test_refused(&f, swap_checkpoints, "checkpoints out of order");
	test_refused(&f, escape_path, "a path that escapes the root");
	test_refused(&f, shift_chunk, "a chunk at a wrong offset");
	test_refused(&f, count_up, "counts that do not fit its tables");
	test_caught(&f, bad_window, "windows that do not match");
	test_caught(&f, bad_bits, "wrong bit offsets");
	check(si == NULL, "nothing is returned for a refused index");
	free_many(f.idx, f.tar.p, f.gz.p);
}

static void test_refuse_plain(void)
{
	struct buf tar = {};
	struct seek_builder *b = NULL;
	char diff_id[DIGEST_STRING_MAX], layer[DIGEST_STRING_MAX];
	uint64_t tar_size;
	void *idx = NULL;
	size_t len;
	int fd, r;

	make_tar(&tar);
	digest_buffer(tar.p, tar.n, layer);
	fd = memfd_of(&tar);
	r = seek_builder_new(SEEK_SPAN_DEFAULT, &b);
	if (r >= 0)
		r = layer_tar_index_seek(fd, NULL, NULL, NULL, NULL, b, diff_id, &tar_size);
	check(r >= 0, "an uncompressed layer reads");
	check(seek_builder_finish(b, layer, tar.n, tar_size, &idx, &len) == -EOPNOTSUPP,
	      "but gets no seek index");
	seek_builder_free(b);
	close(fd);
	free(tar.p);
}

/* ---- Untrusted indexes: tar headers and windows proven as they are read ---------------- */

struct walk {
	const struct seek_index *si;
	const struct buf *gz;
	struct seek_cursor *cur;
	unsigned chunks, good, lies, wrong_served;
	char first_lie[512];
};

/* Decodes every chunk in stream order through one cursor, as the fetcher does. */
static int walk_entry(void *userdata, const struct entry *e)
{
	struct walk *w = userdata;
	unsigned i;
	size_t n;
	uint8_t *want;

	if (e->type != ENTRY_REG || sscanf(e->path, "dir/file-%02u", &i) != 1)
		return 0;
	want = file_content(i, &n);
	for (size_t k = 0; k < e->n_chunks; k++) {
		const struct chunk *c = &e->chunks[k];
		uint8_t *out = malloc(c->size);
		int r = seek_index_chunk_decode_at(w->si, w->cur, c->blob_offset, c->digest, c->size,
						   w->gz->p + c->blob_offset, c->blob_length, out);

		w->chunks++;
		if (r < 0 || digest_verify_buffer(out, c->size, c->digest) < 0) {
			if (w->lies++ == 0)
				snprintf(w->first_lie, sizeof(w->first_lie), "%s",
					 r < 0 ? error_take(r) : "digest");
		} else if (memcmp(out, want + c->file_offset, c->size) != 0) {
			w->wrong_served++;
		} else {
			w->good++;
		}
		free(out);
	}
	free(want);
	return 0;
}

static void walk_untrusted(const void *idx, size_t len, const char *layer, const struct buf *gz,
			   struct walk *w)
{
	struct seek_index *si = NULL;

	*w = (struct walk) { .gz = gz };
	if (seek_index_parse(idx, len, layer, gz->n, &si) < 0 || seek_index_set_untrusted(si) < 0 ||
	    seek_cursor_new(&w->cur) < 0)
		abort();
	w->si = si;
	(void)seek_index_foreach(si, walk_entry, w);
	seek_cursor_free(w->cur);
	seek_index_free(si);
}

/* The chunks of the first file that has two or more. */
struct second {
	struct chunk c[2];
	char d[2][DIGEST_STRING_MAX];
	bool found;
};

static int second_entry(void *userdata, const struct entry *e)
{
	struct second *s = userdata;

	if (s->found || e->type != ENTRY_REG || e->n_chunks < 2)
		return 0;
	for (int k = 0; k < 2; k++) {
		s->c[k] = e->chunks[k];
		snprintf(s->d[k], sizeof(s->d[k]), "%s", e->chunks[k].digest);
		s->c[k].digest = s->d[k];
	}
	s->found = true;
	return 0;
}

static int decode(const struct seek_index *si, const struct buf *gz, const struct chunk *c)
{
	uint8_t *out = malloc(c->size);
	int r = seek_index_chunk_decode(si, c->blob_offset, c->digest, c->size,
					gz->p + c->blob_offset, c->blob_length, out);

	free(out);
	return r;
}

static bool proven(const struct seek_index *si, const struct chunk *c)
{
	uint8_t md[32];

	return digest_parse_sha256(c->digest, md) >= 0 &&
	       seek_index_chunk_proven(si, c->blob_offset, md, c->size);
}

static void test_untrusted_order(const struct fixture *f)
{
	struct seek_index *si = NULL;
	struct seek_chunk_ref first;
	struct second s = {};

	if (seek_index_parse(f->idx, f->idx_len, f->layer, f->gz.n, &si) < 0 ||
	    seek_index_set_untrusted(si) < 0)
		abort();
	(void)seek_index_foreach(si, second_entry, &s);
	check(s.found, "a file has several chunks");
	check(decode(si, &f->gz, &s.c[1]) == 0,
	      "a file's later chunk inflates before its tar header was checked (fetched ahead)");
	check(!proven(si, &s.c[1]) && !proven(si, &s.c[0]),
	      "but the file is not proven by it: nothing of it is served yet");
	check(seek_index_chunk_first(si, s.c[1].blob_offset, s.c[1].digest, s.c[1].size,
				     &first) == 1 && streq(first.digest, s.c[0].digest) &&
	      first.blob_offset == s.c[0].blob_offset,
	      "the fetcher is told which chunk to inflate first");
	check(decode(si, &f->gz, &s.c[0]) == 0, "the first chunk inflates, its header matches");
	check(seek_index_chunk_first(si, s.c[1].blob_offset, s.c[1].digest, s.c[1].size,
				     &first) == 0, "then nothing more is needed first");
	check(proven(si, &s.c[1]), "the file is proven");
	check(decode(si, &f->gz, &s.c[1]) == 0, "and the later chunk inflates");
	seek_index_free(si);
}

static void test_untrusted_honest(unsigned members)
{
	struct buf tar = {}, gz = {};
	char layer[DIGEST_STRING_MAX];
	uint64_t tar_size;
	struct walk w;
	void *idx;
	size_t len;

	make_tar(&tar);
	make_gzip(&tar, members, &gz);
	digest_buffer(gz.p, gz.n, layer);
	if (build(&gz, 64 * 1024, layer, &idx, &len, &tar_size) < 0)
		abort();
	walk_untrusted(idx, len, layer, &gz, &w);
	check(w.chunks > 0 && w.good == w.chunks && w.lies == 0,
	      "%u member(s): an honest untrusted index proves every header and window it reaches "
	      "(%u of %u chunks; %s)", members, w.good, w.chunks, w.lies ? w.first_lie : "ok");
	free_many(idx, tar.p, gz.p);
}

static void mode_lie(uint8_t *b, size_t len)
{
	(void)len;
	ENTRIES(b)[116 * 4 + 4] ^= 0111;   /* dir/file-03: executable */
}

static void rename_lie(uint8_t *b, size_t len)
{
	uint8_t *e = ENTRIES(b) + 116 * 5;  /* dir/file-04 */

	(void)len;
	STRINGS(b)[le32(e + 52) + le32(e + 56) - 1] ^= 1;
}

static void test_untrusted_lie(const struct fixture *f, void (*fn)(uint8_t *, size_t),
			       const char *what, const char *says)
{
	size_t len;
	void *idx = mutate(f, fn, &len);
	struct walk w;

	walk_untrusted(idx, len, f->layer, &f->gz, &w);
	check(w.lies > 0 && w.wrong_served == 0 && strstr(w.first_lie, says),
	      "an untrusted index with %s: caught by the %s check (%s), no wrong byte served",
	      what, says, w.first_lie);
	free(idx);
}

static void test_tar_header(const struct fixture *f)
{
	struct tar_header h = {};
	size_t pos = 0, entries = 0, files = 0;
	bool long_name = false;
	uint8_t block[512];

	while (pos + 512 <= f->tar.n && f->tar.p[pos] != 0 &&
	       tar_header_next(f->tar.p, f->tar.n, &pos, &h) >= 0) {
		entries++;
		if (h.type == ENTRY_REG) {
			files++;
			pos += (h.size + 511) / 512 * 512;
		}
		long_name |= strlen(h.path) > 100;
		tar_header_done(&h);
	}
	check(entries == N_FILES + 2 && files == N_FILES && long_name,
	      "every entry of a pax tar parses, its long name from the pax record (%zu)", entries);
	memcpy(block, f->tar.p, 512);
	block[0] ^= 1;
	pos = 0;
	check(tar_header_next(block, 512, &pos, &h) == -EBADMSG, "a header whose checksum does "
	      "not match is no header (%s)", error_take(-EBADMSG));
	pos = 0;
	check(tar_header_next(f->tar.p, 300, &pos, &h) == -EBADMSG,
	      "records cut short are refused");
}

static void test_untrusted(void)
{
	struct fixture f;

	fixture_make(&f);
	test_tar_header(&f);
	test_untrusted_order(&f);
	test_untrusted_lie(&f, mode_lie, "a changed mode", "tar header");
	test_untrusted_lie(&f, rename_lie, "a renamed file", "tar header");
	test_untrusted_lie(&f, bad_window, "windows that do not match", "window");
	free_many(f.idx, f.tar.p, f.gz.p);
}

/* ---- Sparse windows: only the bytes the stream after a checkpoint uses ---------------- */

/* Checkpoint @i's sparse window in body @b: its mask and bytes, or false if it is not sparse. */
static bool sparse_window(uint8_t *b, uint32_t i, uint8_t **mask, uint8_t **bytes, uint32_t *n)
{
	uint8_t *cp = CPS(b) + 32 * i;

	if (!(cp[17] & 2))
		return false;
	*n = le32(cp + 24);
	*mask = WINDOWS(b) + le32(cp + 20);
	*bytes = *mask + (*n + 7) / 8;
	return true;
}

/* A byte the stream uses, not 0, left out (its mask bit cleared, stored 0): the window looks
 * like one whose stream never refers to that byte. */
static void drop_used_byte(uint8_t *b, size_t len)
{
	uint8_t *mask, *bytes;
	uint32_t n;

	(void)len;
	for (uint32_t i = 1; i < N_CPS(b); i++)
		for (uint32_t j = 1; sparse_window(b, i, &mask, &bytes, &n) && j < n; j++)
			if (window_mask_used(mask, j) && bytes[j] != 0) {
				mask[j / 8] &= (uint8_t)~(1U << (j % 8));
				bytes[j] = 0;
				return;
			}
	abort();
}

static void unused_not_zero(uint8_t *b, size_t len)
{
	uint8_t *mask, *bytes;
	uint32_t n;

	(void)len;
	for (uint32_t i = 1; i < N_CPS(b); i++)
		for (uint32_t j = 0; sparse_window(b, i, &mask, &bytes, &n) && j < n; j++)
			if (!window_mask_used(mask, j)) {
				bytes[j] = 1;
				return;
			}
	abort();
}

static unsigned count_sparse(const void *buf, size_t idx_len)
{
	const uint8_t *idx = buf;
	uLongf raw_len = 0;
	uint8_t *body;
	unsigned n = 0;

	for (int i = 7; i >= 0; i--)
		raw_len = raw_len << 8 | idx[16 + i];
	body = malloc(raw_len);
	if (uncompress(body, &raw_len, idx + 24, idx_len - 24) != Z_OK)
		abort();
	for (uint32_t i = 0; i < N_CPS(body); i++)
		n += (CPS(body)[32 * i + 17] & 2) != 0;
	free(body);
	return n;
}

static void test_sparse_windows(void)
{
	struct fixture f;
	void *whole = NULL, *copy;
	size_t whole_len = 0, len;
	struct seek_index *si = NULL;
	uint64_t tar_size;
	struct walk w;

	fixture_make(&f);
	check(count_sparse(f.idx, f.idx_len) > 0, "the builder keeps windows sparse (%u)",
	      count_sparse(f.idx, f.idx_len));
	check(build_from(&f.gz, 0, 0, 64 * 1024, false, f.layer, &whole, &whole_len,
			 &tar_size) >= 0 && whole_len > f.idx_len,
	      "windows kept sparse make the index smaller (%zu bytes against %zu whole)",
	      f.idx_len, whole_len);
	walk_untrusted(f.idx, f.idx_len, f.layer, &f.gz, &w);
	check(w.lies == 0 && w.good == w.chunks && w.chunks > 0,
	      "an honest untrusted index with sparse windows serves every chunk (%u of %u)",
	      w.good, w.chunks);
	test_untrusted_lie(&f, drop_used_byte, "a used window byte left out",
			   "sparse window");
	copy = mutate(&f, unused_not_zero, &len);
	check(seek_index_parse(copy, len, f.layer, f.gz.n, &si) == -EBADMSG,
	      "a sparse window whose unused bytes are not 0 is refused (%s)", error_take(-EBADMSG));
	free(copy);
	copy = malloc(f.idx_len);
	memcpy(copy, f.idx, f.idx_len);
	((uint8_t *)copy)[8] = 1;
	check(seek_index_parse(copy, f.idx_len, f.layer, f.gz.n, &si) == -EBADMSG,
	      "a version 1 index with sparse windows is refused");
	free(copy);
	((uint8_t *)whole)[8] = 1;
	walk_untrusted(whole, whole_len, f.layer, &f.gz, &w);
	check(w.lies == 0 && w.good == w.chunks && w.chunks > 0,
	      "a version 1 index (whole windows) is still read, untrusted (%u of %u chunks)",
	      w.good, w.chunks);
	check(si == NULL, "nothing is returned for a refused index");
	free_many(whole, f.idx, f.tar.p, f.gz.p);
}

/* Every host that indexes a layer must write the same index, however its reads were cut: the
 * index is published and shared by digest. */
static void test_same_index_however_reads_are_cut(unsigned members)
{
	struct buf tar = {}, gz = {};
	void *ref = NULL;
	size_t ref_len = 0;
	uint64_t tar_size;
	static const size_t pieces[] = { 1500, 7000, 60000 };
	char layer[DIGEST_STRING_MAX];
	bool same = true;

	make_tar(&tar);
	make_gzip(&tar, members, &gz);
	digest_buffer(gz.p, gz.n, layer);
	if (build(&gz, 64 * 1024, layer, &ref, &ref_len, &tar_size) < 0)
		abort();
	for (size_t i = 0; i < sizeof(pieces) / sizeof(pieces[0]); i++) {
		void *idx = NULL;
		size_t len = 0;
		int r = build_from(&gz, pieces[i], (unsigned)i + 1, 64 * 1024, true, layer, &idx, &len,
				   &tar_size);

		same = same && r >= 0 && len == ref_len && memcmp(idx, ref, len) == 0;
		free(idx);
	}
	check(same, "%u member(s): the index of a stream read in pieces of up to 1500, 7000 and "
	   "60000 bytes is the one of whole reads, byte for byte", members);
	free(ref);
	free(tar.p);
	free(gz.p);
}

int main(void)
{
	test_roundtrip(1, 64 * 1024);
	test_roundtrip(9, 64 * 1024);
	test_roundtrip(1, 1024 * 1024);
	test_hostile();
	test_sparse_windows();
	test_refuse_plain();
	test_untrusted_honest(1);
	test_untrusted_honest(9);
	test_untrusted();
	test_same_index_however_reads_are_cut(1);
	test_same_index_however_reads_are_cut(9);
	return tap_done();
}
