/* tests/unit/test-read_path.c: what a read does, over a tree built here: a stored chunk is
 * handed out as its blob fd, a read across chunks is assembled, zeros come from memory; a
 * missed chunk is fetched with the rest of its file (fetch-ahead) and, once the whole file is
 * coming, the file after it in the layer's blob (read-around), in one request, through the real
 * range source of a local OCI layout; hits cost no request and are counted; only a miss waits
 * (and may be interrupted). */
#include "fs/read_path.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zstd.h>

#include "cache/base/log.h"
#include "cache/base/util.h"
#include "cache/registry/source.h"
#include "cache/store/blob_store.h"
#include "tap.h"

#define CHUNK 30000u
#define HOLE (256u << 10)   /* wider than the read-around window (128 KiB) */

/* The lazy layer: a (3 chunks), b (1 chunk) right after it, c (1 chunk) behind HOLE. */
enum { A0, A1, A2, B0, C0, N_CHUNKS };

static char dir[] = "/tmp/test-read_path-XXXXXX";
static uint8_t *plain[N_CHUNKS];
static struct chunk chunks[N_CHUNKS];
static char digests[N_CHUNKS][DIGEST_STRING_MAX];
static char layer_digest[DIGEST_STRING_MAX];
static uint64_t layer_size;
static uint8_t tar_bytes[5000];
static char tar_digest[DIGEST_STRING_MAX];

/* Compresses the chunks into one blob of zstd frames, in the layout, named by its digest. */
static int layer_write(void)
{
	size_t max = ZSTD_compressBound(CHUNK), len = 0;
	_cleanup_free_ uint8_t *blob = malloc(N_CHUNKS * max + HOLE);
	char path[512];
	_cleanup_close_ int fd = -EBADF;

	if (!blob)
		return -ENOMEM;
	for (unsigned i = 0; i < N_CHUNKS; i++) {
		size_t n;

		plain[i] = malloc(CHUNK);
		for (size_t k = 0; k < CHUNK; k++)
			plain[i][k] = (uint8_t)(k % 251 == 0 ? i * 7 + k : 'a' + (k * (i + 3)) % 23);
		if (i == C0) {
			memset(blob + len, 0, HOLE);
			len += HOLE;
		}
		n = ZSTD_compress(blob + len, max, plain[i], CHUNK, 3);
		digest_buffer(plain[i], CHUNK, digests[i]);
		chunks[i] = (struct chunk) {
			.file_offset = i == A1 ? CHUNK : i == A2 ? 2 * CHUNK : 0, .size = CHUNK,
			.blob_offset = len, .blob_length = n, .digest = digests[i],
		};
		len += n;
	}
	layer_size = len;
	digest_buffer(blob, len, layer_digest);
	snprintf(path, sizeof(path), "%s/layout/blobs/sha256/%s", dir, layer_digest + 7);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	return fd >= 0 && write(fd, blob, len) == (ssize_t)len ? 0 : -EIO;
}

static int layout_build(void)
{
	const char *parts[] = { "layout", "layout/blobs", "layout/blobs/sha256", "store" };
	char path[512];

	for (size_t i = 0; i < 4; i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, parts[i]);
		if (mkdir(path, 0700) < 0)
			return -errno;
	}
	return layer_write();
}

static int add_file(struct fs_tree *t, const char *path, const char *digest, uint64_t size,
		    const struct chunk *c, size_t n)
{
	struct entry e = {
		.path = path, .type = ENTRY_REG, .mode = 0644, .size = size, .digest = digest,
		.chunks = c, .n_chunks = n,
	};

	return fs_tree_add(t, &e);
}

/* Layer 0 (tar): etc/t, stored whole.  Layer 1 (lazy): lib/a, lib/b, lib/c, and lib/z, a run
 * of zeros. */
static struct fs_tree *tree_build(void)
{
	static const struct chunk zeros = { .size = 10000 };
	struct fs_tree *t = NULL;
	struct entry d = { .path = "lib", .type = ENTRY_DIR, .mode = 0755 };
	bool ok;

	ok = fs_tree_new(&t) == 0 && fs_tree_begin_layer(t) == 0 &&
	     add_file(t, "etc-t", tar_digest, sizeof(tar_bytes), NULL, 0) == 0 &&
	     fs_tree_begin_layer(t) == 0 && fs_tree_add(t, &d) == 0 &&
	     add_file(t, "lib/a", digests[A0], 3 * CHUNK, &chunks[A0], 3) == 0 &&
	     add_file(t, "lib/b", digests[B0], CHUNK, &chunks[B0], 1) == 0 &&
	     add_file(t, "lib/c", digests[C0], CHUNK, &chunks[C0], 1) == 0 &&
	     add_file(t, "lib/z", digests[C0], zeros.size, &zeros, 1) == 0 &&
	     fs_tree_finish(t) == 0;
	if (!ok)
		abort();
	return t;
}

static fs_ino_t ino_of(const struct fs_tree *t, const char *path)
{
	fs_ino_t dir_ino = FS_ROOT_INO, ino = 0;

	if (strncmp(path, "lib/", 4) == 0) {
		(void)fs_tree_lookup(t, FS_ROOT_INO, "lib", &dir_ino);
		path += 4;
	}
	(void)fs_tree_lookup(t, dir_ino, path, &ino);
	return ino;
}

struct env {
	struct blob_store *bs;
	struct fetcher *f;
	struct fs_tree *tree;
	struct read_path *rp;
	unsigned begins, ends;
};

static void wait_begin(void *userdata, struct fetcher *f, struct fetch_interrupt *intr)
{
	struct env *e = userdata;

	(void)f, (void)intr;
	e->begins++;
}

static void wait_end(void *userdata)
{
	((struct env *)userdata)->ends++;
}

static void env_new(struct env *e, bool fetcher)
{
	struct fetch_layer layers[2] = {
		{ .digest = tar_digest, .compression = LAYER_COMPRESSION_GZIP, .size = 1 },
		{ .digest = layer_digest, .compression = LAYER_COMPRESSION_ZSTD, .size = layer_size },
	};
	_cleanup_(reference_freep) struct reference *ref = NULL;
	struct range_source *src = NULL;
	struct blob_txn *txn = NULL;
	char path[512];

	*e = (struct env) {};
	snprintf(path, sizeof(path), "%s/store", dir);
	if (blob_store_open(path, &e->bs) < 0 || blob_txn_begin(e->bs, &txn) < 0 ||
	    blob_txn_write(txn, tar_bytes, sizeof(tar_bytes)) < 0 ||
	    blob_txn_commit(txn, tar_digest, NULL, NULL) < 0)
		abort();
	snprintf(path, sizeof(path), "oci:%s/layout", dir);
	if (fetcher && (reference_parse(path, &ref) < 0 ||
			source_range_new(ref, NULL, &src) < 0 ||
			fetcher_new(src, NULL, e->bs, layers, 2, &e->f) < 0))
		abort();
	e->tree = tree_build();
	if (read_path_new(e->tree, e->bs, e->f, 64, &e->rp) < 0)
		abort();
}

static void env_done(struct env *e)
{
	e->rp = read_path_free(e->rp);
	e->tree = fs_tree_free(e->tree);
	e->f = fetcher_free(e->f);
	e->bs = blob_store_free(e->bs);
}

static bool stored(struct env *e, unsigned i)
{
	return blob_store_has_size(e->bs, digests[i], CHUNK) == 1;
}

/* Reads and checks against @want; returns the reply's kind: 'f' blob fd, 'b' buffer, 'e' EOF,
 * '!' wrong bytes, or the -errno. */
static int read_check(struct env *e, const char *path, off_t off, size_t size, const uint8_t *want)
{
	const struct read_waiter w = { wait_begin, wait_end, e, 0 };
	_cleanup_(read_reply_done) struct read_reply rr = READ_REPLY_NONE;
	_cleanup_free_ uint8_t *got = malloc(size ?: 1);
	int r;

	r = read_path_read(e->rp, ino_of(e->tree, path), off, size, &w, &rr);
	if (r < 0)
		return r;
	if (rr.len == 0)
		return 'e';
	if (rr.buf)
		return rr.len == size && memcmp(rr.buf, want, size) == 0 ? 'b' : '!';
	return rr.len == size && pread(rr.fd.fd, got, size, rr.pos) == (ssize_t)size &&
	       memcmp(got, want, size) == 0 ? 'f' : '!';
}

/* The read returns once its own chunks are in; the rest of its request goes on behind it.
 * Waits (at most 10 s) until @n chunks are fetched and that request has ended. */
static void settle(struct env *e, uint64_t n, uint64_t requests, struct fetch_stats *ret)
{
	for (int i = 0; i < 10000; i++) {
		fetcher_get_stats(e->f, ret);
		if (ret->chunks_fetched >= n && ret->requests >= requests)
			return;
		usleep(1000);
	}
}

static void test_miss_plans_ahead_and_around(void)
{
	struct fetch_stats st;
	_cleanup_free_ uint8_t *span = malloc(200);
	struct env e;
	int r;

	env_new(&e, true);
	r = read_check(&e, "lib/a", CHUNK + 10, 100, plain[A1] + 10);
	check(r == 'f', "a missed read inside one chunk is fetched and handed out as its blob (%d)",
	      r);
	settle(&e, 3, 1, &st);
	check(stored(&e, A1) && stored(&e, A2) && !stored(&e, A0),
	      "the chunk after it in the file came along, the one before did not");
	check(stored(&e, B0) && !stored(&e, C0),
	      "the whole file coming, the next file in the blob came along, not one past the window");
	check(st.requests == 1 && st.chunks_fetched == 3, "all in one request (%llu requests, %llu "
	      "chunks)", (unsigned long long)st.requests, (unsigned long long)st.chunks_fetched);
	check(e.begins == 1 && e.ends == 1, "the miss waited once, interruptibly");

	memcpy(span, plain[A0] + CHUNK - 100, 100);
	memcpy(span + 100, plain[A1], 100);
	r = read_check(&e, "lib/a", CHUNK - 100, 200, span);
	settle(&e, 4, 2, &st);
	check(r == 'b' && stored(&e, A0) && st.requests == 2 && st.chunks_fetched == 4,
	      "a read across a missed and a stored chunk is assembled; only the missed one is "
	      "fetched (%d, %llu chunks)", r, (unsigned long long)st.chunks_fetched);

	r = read_check(&e, "lib/b", 0, CHUNK, plain[B0]);
	fetcher_get_stats(e.f, &st);
	check(r == 'f' && st.requests == 2 && st.chunks_cached == 2 && e.begins == 2,
	      "a chunk fetched along is a hit: no request, no wait, counted (%llu cached)",
	      (unsigned long long)st.chunks_cached);
	env_done(&e);
}

static void test_local_and_edges(void)
{
	static const uint8_t zeros[10000];
	struct read_reply rr = READ_REPLY_NONE;
	struct env e;
	int r;

	env_new(&e, false);
	r = read_check(&e, "etc-t", 1000, 3000, tar_bytes + 1000);
	check(r == 'f', "a tar file is handed out as its blob (%d)", r);
	r = read_path_read(e.rp, ino_of(e.tree, "etc-t"), 4000, 4096, NULL, &rr);
	check(r == 0 && rr.len == 1000 && rr.pos == 4000, "a read past the end is cut to the "
	      "file's size");
	read_reply_done(&rr);
	check(read_check(&e, "etc-t", sizeof(tar_bytes), 10, NULL) == 'e' &&
	      read_check(&e, "etc-t", 0, 0, NULL) == 'e', "at the end, or of no bytes: EOF");
	check(read_check(&e, "etc-t", -1, 10, NULL) == -EINVAL, "a negative offset is -EINVAL");
	check(read_path_read(e.rp, 9999, 0, 10, NULL, &(struct read_reply) {}) == -ENOENT,
	      "a bad inode is -ENOENT");
	r = read_check(&e, "lib/z", 100, 5000, zeros);
	check(r == 'b', "a run of zeros comes from memory (%d)", r);
	r = read_check(&e, "lib/c", 0, 10, plain[C0]);
	check(r == -EIO && e.begins == 0, "a missing chunk without a fetcher is -EIO at once (%d)",
	      r);
	env_done(&e);
}

int main(void)
{
	char cmd[64];

	if (getenv("TEST_DEBUG"))
		log_set_level(LOG_LEVEL_DEBUG);
	for (size_t k = 0; k < sizeof(tar_bytes); k++)
		tar_bytes[k] = (uint8_t)(k * 31 + 7);
	digest_buffer(tar_bytes, sizeof(tar_bytes), tar_digest);
	if (!mkdtemp(dir) || layout_build() < 0) {
		printf("Bail out! building the layout: %m\n");
		return 1;
	}

	test_miss_plans_ahead_and_around();
	test_local_and_edges();

	for (unsigned i = 0; i < N_CHUNKS; i++)
		free(plain[i]);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		printf("# could not remove %s\n", dir);
	return tap_done();
}
