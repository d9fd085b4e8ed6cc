/* tests/fuzz/fuzz-layer-tar.c: the tar indexer (cache/format/layer_tar.c) on arbitrary layer bytes,
 * plain, gzip or zstd as the bytes say.  The blob store and the index live in a temp dir on
 * tmpfs (/dev/shm when there is one), made once per process; each input's blobs are removed
 * again and its layer writer aborted, so that memory and disk use stay flat. */
#include "cache/format/layer_tar.h"

#include <errno.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define LAYER_DIGEST "sha256:0000000000000000000000000000000000000000000000000000000000000000"

static char tmp_dir[64];
static struct blob_store *store;
static struct index_db *db;

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st, (void)flag, (void)ftw;
	return remove(path);
}

static void cleanup(void)
{
	store = blob_store_free(store);
	db = index_db_free(db);
	if (tmp_dir[0])
		nftw(tmp_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char path[128];

	(void)argc, (void)argv;
	snprintf(tmp_dir, sizeof(tmp_dir), "%s/lazyroot-fuzz-XXXXXX",
		 access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
	if (!mkdtemp(tmp_dir))
		abort();
	atexit(cleanup);
	snprintf(path, sizeof(path), "%s/index.db", tmp_dir);
	if (blob_store_open(tmp_dir, &store) < 0 || index_db_open(path, &db) < 0)
		abort();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	_cleanup_(layer_writer_abortp) struct layer_writer *w = NULL;
	_cleanup_strv_free_ char **created = NULL;
	_cleanup_close_ int fd = -EBADF;
	char diff_id[DIGEST_STRING_MAX];
	int r;

	fd = memfd_create("layer", MFD_CLOEXEC);
	if (fd < 0)
		abort();
	if (size > 0 && write(fd, data, size) != (ssize_t)size)
		abort();
	if (lseek(fd, 0, SEEK_SET) != 0)
		abort();
	if (index_db_layer_begin(db, LAYER_DIGEST, NULL, &w) < 0)
		abort();

	r = layer_tar_index(fd, store, NULL, w, &created, diff_id);
	(void)r;
	for (char **d = created; d && *d; d++)
		if (blob_store_remove(store, *d) < 0)
			abort();
	return 0;
}
