/* tests/unit/test-blob_store.c: blobs appear only whole and verified, under their digest. */
#include "cache/store/blob_store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cache/base/util.h"
#include "tap.h"

#define ABC "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
#define ABC_PATH "blobs/sha256/ba/ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st, (void)flag, (void)ftw;
	return remove(path);
}

static int count_dir(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *de;
	int n = 0;

	if (!d)
		return -errno;
	while ((de = readdir(d)))
		if (!streq(de->d_name, ".") && !streq(de->d_name, ".."))
			n++;
	closedir(d);
	return n;
}

static int put(struct blob_store *bs, const void *buf, size_t n, const char *expected,
	       char d[DIGEST_STRING_MAX], bool *created)
{
	struct blob_txn *t;
	int r;

	r = blob_txn_begin(bs, &t);
	if (r < 0)
		return r;
	r = blob_txn_write(t, buf, n);
	if (r < 0) {
		blob_txn_abort(t);
		return r;
	}
	return blob_txn_commit(t, expected, d, created);
}

struct racer {
	struct blob_store *bs;
	const char *data;
	size_t size;
	int r;
	bool created;
	char digest[DIGEST_STRING_MAX];
};

static void *race(void *p)
{
	struct racer *x = p;

	x->r = put(x->bs, x->data, x->size, NULL, x->digest, &x->created);
	return NULL;
}

/* A file of zeros with a few bytes of data, written in pieces of awkward sizes, is stored with
 * holes: its blocks of zeros take no space, and it reads back whole, under the right digest. */
static void check_sparse(struct blob_store *bs, const char *dir)
{
	static const size_t pieces[] = { 1000, 70000, 3, 4096, 65536 * 3 + 17 };
	const size_t n = 8u << 20;
	char d[DIGEST_STRING_MAX], want[DIGEST_STRING_MAX], path[512];
	_cleanup_free_ uint8_t *data = calloc(1, n), *back = malloc(n);
	struct blob_txn *t = NULL;
	size_t off = 0;
	struct stat st;
	int fd, r;

	if (!data || !back)
		return;
	memcpy(data + (1u << 20) - 2, "hello", 5);      /* across a block boundary */
	data[(6u << 20) - 1] = 'x';                     /* the last 2 MiB are a hole */
	(void)digest_buffer(data, n, want);
	r = blob_txn_begin(bs, &t);
	for (size_t i = 0; r >= 0 && off < n; i++) {
		size_t k = i < sizeof(pieces) / sizeof(pieces[0]) ? pieces[i] : 1u << 20;

		k = k < n - off ? k : n - off;
		r = blob_txn_write(t, data + off, k);
		off += k;
	}
	if (r >= 0)
		r = blob_txn_commit(TAKE_PTR(t), NULL, d, NULL);
	blob_txn_abort(t);
	check(r == 0 && streq(d, want), "a mostly-zero blob keeps its digest (r=%d)", r);
	snprintf(path, sizeof(path), "%s/cache/blobs/sha256/%.2s/%s", dir, want + 7, want + 7);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	check(fd >= 0 && fstat(fd, &st) == 0 && (size_t)st.st_size == n,
	      "its size is the content's, trailing hole included");
	check(fd >= 0 && st.st_blocks * 512 <= 64 * 1024,
	      "its zeros are holes: %lld bytes on disk for %zu", (long long)st.st_blocks * 512, n);
	check(fd >= 0 && read_full(fd, back, n) == (ssize_t)n && memcmp(back, data, n) == 0,
	      "it reads back byte for byte");
	if (fd >= 0)
		(void)close(fd);
}

int main(void)
{
	char dir[] = "/tmp/test-blob_store-XXXXXX";
	struct blob_store *bs = NULL;
	struct blob_txn *t = NULL;
	char d[DIGEST_STRING_MAX], path[512];
	bool created = false;
	struct stat st;
	int fd, r;

	if (!mkdtemp(dir)) {
		printf("Bail out! mkdtemp: %m\n");
		return 1;
	}
	snprintf(path, sizeof(path), "%s/cache", dir);
	r = blob_store_open(path, &bs);
	check(r == 0, "store opens and creates its directory (r=%d)", r);
	if (r < 0)
		return tap_done();
	snprintf(path, sizeof(path), "%s/cache/blobs/sha256", dir);
	check(stat(path, &st) == 0 && (st.st_mode & 07777) == 0700, "blob directory is 0700");
	snprintf(path, sizeof(path), "%s/cache/tmp", dir);
	check(stat(path, &st) == 0 && (st.st_mode & 07777) == 0700, "tmp directory is 0700");

	check(blob_store_has(bs, ABC) == 0, "an absent blob is not there");
	check(blob_store_open_blob(bs, ABC, &fd) == -ENOENT, "opening an absent blob is -ENOENT");
	check(blob_store_remove(bs, ABC) == -ENOENT, "removing an absent blob is -ENOENT");
	check(blob_store_has(bs, "sha256:abc") == -EBADMSG, "has() rejects a malformed digest");
	check(blob_store_open_blob(bs, "../../etc/passwd", &fd) == -EBADMSG,
	      "open_blob() rejects a path-like digest");
	check(blob_store_open_blob(bs, "sha512:00", &fd) == -EBADMSG,
	      "open_blob() rejects other algorithms as -EBADMSG");
	check(blob_store_remove(bs, "") == -EBADMSG, "remove() rejects an empty digest");

	/* A blob is visible only after commit. */
	check(blob_txn_begin(bs, &t) == 0, "txn begins");
	check(blob_txn_write(t, "ab", 2) == 0 && blob_txn_write(t, "c", 1) == 0, "txn writes");
	check(blob_store_has(bs, ABC) == 0, "an uncommitted blob is invisible");
	check(blob_txn_commit(t, ABC, d, &created) == 0, "commit with the right digest succeeds");
	check(streq(d, ABC) && created, "commit reports the digest and that it created the blob");
	check(blob_store_has(bs, ABC) == 1, "a committed blob is visible");
	snprintf(path, sizeof(path), "%s/cache/%s", dir, ABC_PATH);
	check(stat(path, &st) == 0 && st.st_size == 3 && (st.st_mode & 0077) == 0,
	      "blob lives at blobs/sha256/ab/<hex>, private");
	check(blob_store_open_blob(bs, ABC, &fd) == 0, "a committed blob opens");
	{
		char buf[8] = { 0 };

		check(read(fd, buf, sizeof(buf)) == 3 && memcmp(buf, "abc", 3) == 0,
		      "blob content reads back");
		check((fcntl(fd, F_GETFD) & FD_CLOEXEC) && (fcntl(fd, F_GETFL) & O_ACCMODE) == O_RDONLY,
		      "blob fd is read-only and close-on-exec");
		close(fd);
	}

	/* Storing it again keeps the first one. */
	created = true;
	check(put(bs, "abc", 3, NULL, d, &created) == 0 && !created && streq(d, ABC),
	      "a second commit of the same content reports created=false");

	/* Wrong expected digest: nothing is kept. */
	{
		char other[] = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
		char want[DIGEST_STRING_MAX];

		r = put(bs, "abd", 3, other, d, &created);
		check(r == -EBADMSG, "commit with a wrong expected digest is -EBADMSG (r=%d)", r);
		(void)digest_buffer("abd", 3, want);
		check(blob_store_has(bs, want) == 0 && blob_store_has(bs, other) == 0,
		      "a mismatching blob is kept under neither name");
		r = put(bs, "abd", 3, "garbage", d, &created);
		check(r == -EBADMSG, "commit with a malformed expected digest is -EBADMSG");
	}
	snprintf(path, sizeof(path), "%s/cache/tmp", dir);
	check(count_dir(path) == 0, "no temporaries are left behind");

	/* Abort. */
	check(blob_txn_begin(bs, &t) == 0 && blob_txn_write(t, "xyz", 3) == 0, "txn for abort");
	blob_txn_abort(t);
	blob_txn_abort(NULL);
	check(count_dir(path) == 0, "abort leaves no temporary");
	{
		char want[DIGEST_STRING_MAX];

		(void)digest_buffer("xyz", 3, want);
		check(blob_store_has(bs, want) == 0, "an aborted blob is invisible");
	}

	/* Empty and bigger blobs, written in pieces. */
	check(put(bs, "", 0, "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
		  d, &created) == 0 && created, "an empty blob is stored");
	{
		size_t n = 5 * 1024 * 1024 + 17;
		_cleanup_free_ char *big = malloc(n);
		char want[DIGEST_STRING_MAX];

		for (size_t i = 0; i < n; i++)
			big[i] = (char)(i ^ (i >> 9));
		(void)digest_buffer(big, n, want);
		check(blob_txn_begin(bs, &t) == 0, "big txn begins");
		for (size_t off = 0; off < n; off += 65536)
			(void)blob_txn_write(t, big + off, off + 65536 <= n ? 65536 : n - off);
		check(blob_txn_commit(t, want, d, NULL) == 0 && streq(d, want),
		      "a 5 MiB blob written in 64 KiB pieces verifies");
		check(blob_store_open_blob(bs, want, &fd) == 0 && fstat(fd, &st) == 0 &&
		      (size_t)st.st_size == n, "the big blob has its full size");
		close(fd);
	}

	/* Racing writers of one digest: both succeed, exactly one creates. */
	{
		struct racer x[4];
		pthread_t th[4];
		int n_created = 0, n_ok = 0;

		for (int i = 0; i < 4; i++) {
			x[i] = (struct racer) { .bs = bs, .data = "racing content", .size = 14 };
			pthread_create(&th[i], NULL, race, &x[i]);
		}
		for (int i = 0; i < 4; i++) {
			pthread_join(th[i], NULL);
			n_ok += x[i].r == 0;
			n_created += x[i].created;
		}
		check(n_ok == 4 && n_created == 1, "4 racing writers: all succeed, one created (%d)",
		      n_created);
	}

	check(blob_store_remove(bs, ABC) == 0 && blob_store_has(bs, ABC) == 0, "a blob can be removed");

	/* A blob left short under its final name (a power loss before blob_store_sync()) is
	 * replaced by the next writer of that digest, small (in memory) or large (spilled). */
	for (int big = 0; big <= 1; big++) {
		size_t n = big ? 200000 : 5000;
		char *data = malloc(n), digest[DIGEST_STRING_MAX], rel[512];
		struct blob_txn *nt = NULL;
		int sfd;

		memset(data, 'a' + big, n);
		(void)digest_buffer(data, n, digest);
		snprintf(rel, sizeof(rel), "%s/cache/blobs/sha256/%.2s", dir, digest + 7);
		(void)mkdir(rel, 0700);
		snprintf(rel, sizeof(rel), "%s/cache/blobs/sha256/%.2s/%s", dir, digest + 7, digest + 7);
		sfd = open(rel, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		(void)write(sfd, data, 10);   /* only the first bytes made it to disk */
		(void)close(sfd);
		check(blob_store_has(bs, digest) == 1, "the short blob is there under its name");
		created = false;
		r = blob_txn_begin_flags(bs, BLOB_TXN_NO_SYNC, &nt);
		if (r >= 0)
			r = blob_txn_write(nt, data, n);
		if (r >= 0)
			r = blob_txn_commit(nt, digest, NULL, &created);
		check(r == 0 && created, "a short blob under its name is replaced (%s)", big ? "spilled" : "in memory");
		r = stat(rel, &st);
		check(r == 0 && (size_t)st.st_size == n, "the replaced blob is whole (%lld bytes)", (long long)st.st_size);
		check(blob_store_sync(bs) == 0, "the store syncs");
		free(data);
	}

	check_sparse(bs, dir);

	check(blob_store_free(bs) == NULL, "store frees");
	check(blob_store_free(NULL) == NULL, "free is NULL-safe");
	(void)nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	return tap_done();
}
