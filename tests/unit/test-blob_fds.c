/* tests/unit/test-blob_fds.c: the open-fd cache of fs/blob_fds.c: a second get of a digest
 * opens nothing, open errors pass through and cache nothing, a slot in use is never taken
 * over (the colliding reader gets an fd of its own, closed at put), a free slot is, and many
 * threads getting colliding digests at once each read their own blob's bytes. */
#include "fs/blob_fds.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cache/base/util.h"
#include "tap.h"

#define N_BLOBS 8

static char dir[] = "/tmp/test-blob_fds-XXXXXX";

struct opener {
	unsigned k;         /* which blob */
	unsigned opens;     /* atomic */
	int error;          /* returned instead of opening, if set */
};

static int open_blob(void *userdata, int *ret_fd)
{
	struct opener *o = userdata;
	char path[64];
	int fd;

	__atomic_add_fetch(&o->opens, 1, __ATOMIC_RELAXED);
	if (o->error)
		return o->error;
	snprintf(path, sizeof(path), "%s/%u", dir, o->k);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	*ret_fd = fd;
	return 0;
}

/* Blob k's digest: its first bytes pick the slot, so digests k and k + 2 share a slot of a
 * two-slot cache. */
static void digest_of(unsigned k, uint8_t ret[32])
{
	memset(ret, 0xa0 + k, 32);
	memcpy(ret, &(uint32_t) { k }, sizeof(uint32_t));
}

static bool fd_reads(int fd, unsigned k)
{
	char buf[16] = {}, want[16];

	snprintf(want, sizeof(want), "blob %u", k);
	return pread(fd, buf, sizeof(buf) - 1, 0) == (ssize_t)strlen(want) && streq(buf, want);
}

static bool fd_is_open(int fd)
{
	return fcntl(fd, F_GETFD) >= 0;
}

struct worker {
	struct blob_fds *c;
	unsigned seed;
	unsigned bad;
};

static void *work(void *userdata)
{
	struct worker *w = userdata;

	for (unsigned i = 0; i < 20000; i++) {
		struct opener o = { .k = rand_r(&w->seed) % N_BLOBS };
		struct blob_fd h = BLOB_FD_NONE;
		uint8_t d[32];

		digest_of(o.k, d);
		if (blob_fds_get(w->c, d, open_blob, &o, &h) < 0 || !fd_reads(h.fd, o.k))
			w->bad++;
		blob_fds_put(&h);
	}
	return NULL;
}

int main(void)
{
	struct blob_fds *c = NULL;
	struct blob_fd h1 = BLOB_FD_NONE, h2 = BLOB_FD_NONE, h3 = BLOB_FD_NONE;
	struct opener o0 = { .k = 0 }, o2 = { .k = 2 }, bad = { .k = 1, .error = -ENOENT };
	uint8_t d0[32], d1[32], d2[32];
	struct worker w[4];
	pthread_t th[4];
	unsigned total_bad = 0;
	int fd_shared, fd_own;

	if (!mkdtemp(dir))
		return 1;
	for (unsigned k = 0; k < N_BLOBS; k++) {
		char path[64], text[16];
		FILE *f;

		snprintf(path, sizeof(path), "%s/%u", dir, k);
		snprintf(text, sizeof(text), "blob %u", k);
		f = fopen(path, "we");
		if (!f)
			return 1;
		fputs(text, f);
		fclose(f);
	}
	digest_of(0, d0);
	digest_of(1, d1);
	digest_of(2, d2);

	check(blob_fds_new(0, &c) == -EINVAL, "a cache of no slots is refused");
	check(blob_fds_new(2, &c) == 0, "a cache of two slots");

	check(blob_fds_get(c, d0, open_blob, &o0, &h1) == 0 && fd_reads(h1.fd, 0),
	      "a miss opens the blob");
	blob_fds_put(&h1);
	check(h1.fd == -EBADF, "put forgets the fd");
	blob_fds_put(&h1);
	check(blob_fds_get(c, d0, open_blob, &o0, &h1) == 0 && fd_reads(h1.fd, 0) && o0.opens == 1,
	      "a second get of the same digest opens nothing");
	fd_shared = h1.fd;

	check(blob_fds_get(c, d1, open_blob, &bad, &h2) == -ENOENT && h2.fd == -EBADF,
	      "an open error is returned as is");
	check(blob_fds_get(c, d1, open_blob, &bad, &h2) == -ENOENT && bad.opens == 2,
	      "and nothing is cached for it");

	/* d2 shares d0's slot, which h1 still uses. */
	check(blob_fds_get(c, d2, open_blob, &o2, &h2) == 0 && fd_reads(h2.fd, 2) && !h2.cached,
	      "a colliding digest gets its own fd while the slot is in use");
	fd_own = h2.fd;
	check(fd_reads(h1.fd, 0), "the reader of the slot keeps its fd meanwhile");
	blob_fds_put(&h2);
	check(!fd_is_open(fd_own), "put closes an fd of its own");
	check(blob_fds_get(c, d0, open_blob, &o0, &h3) == 0 && h3.fd == fd_shared && o0.opens == 1,
	      "the slot still holds the first digest");
	blob_fds_put(&h3);
	blob_fds_put(&h1);

	check(blob_fds_get(c, d2, open_blob, &o2, &h2) == 0 && h2.cached && fd_reads(h2.fd, 2),
	      "a free slot goes to the colliding digest");
	check(!fd_is_open(fd_shared), "closing the fd it held");
	blob_fds_put(&h2);
	check(blob_fds_get(c, d2, open_blob, &o2, &h2) == 0 && o2.opens == 2,
	      "which is cached from then on");
	blob_fds_put(&h2);

	for (unsigned i = 0; i < ELEMENTSOF(th); i++) {
		w[i] = (struct worker) { .c = c, .seed = i + 1 };
		pthread_create(&th[i], NULL, work, &w[i]);
	}
	for (unsigned i = 0; i < ELEMENTSOF(th); i++) {
		pthread_join(th[i], NULL);
		total_bad += w[i].bad;
	}
	check(total_bad == 0, "4 threads x 20,000 gets of 8 digests in 2 slots read the right blob");

	c = blob_fds_free(c);
	check(!c && !blob_fds_free(NULL), "free is NULL-safe");
	for (unsigned k = 0; k < N_BLOBS; k++) {
		char path[64];

		snprintf(path, sizeof(path), "%s/%u", dir, k);
		(void)unlink(path);
	}
	(void)rmdir(dir);
	return tap_done();
}
