/* tests/unit/test-seek.c: seek indexes in the cache (cache/seek.c): an index from elsewhere is
 * imported only when it parses and names the layer, kept untrusted under its own digest, and
 * nothing of a refused one is kept; a pull parses it once (cache/format/seek_memo.c), each later step
 * taking the parse of the step before. */
#include "cache/seek.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <zlib.h>

#include "cache/base/digest.h"
#include "cache/base/error.h"
#include "cache/format/layer_tar.h"
#include "cache/store/index_db.h"
#include "tap.h"

/* A one-file tar+gzip layer, made by hand: a ustar header, the data, the end blocks. */
static size_t make_layer(uint8_t **ret)
{
	static uint8_t tar[512 * 5];
	unsigned sum = 0;
	uLongf zlen = compressBound(sizeof(tar)) + 32;
	uint8_t *gz = malloc(zlen);
	z_stream zs = {};

	memset(tar, 0, sizeof(tar));
	strcpy((char *)tar, "hello.txt");
	strcpy((char *)tar + 100, "0000644");
	strcpy((char *)tar + 108, "0000000");
	strcpy((char *)tar + 116, "0000000");
	strcpy((char *)tar + 124, "00000000006");
	strcpy((char *)tar + 136, "00000000000");
	tar[156] = '0';
	memcpy(tar + 257, "ustar\0" "00", 8);
	memset(tar + 148, ' ', 8);
	for (int i = 0; i < 512; i++)
		sum += tar[i];
	snprintf((char *)tar + 148, 8, "%06o", sum);
	memcpy(tar + 512, "hello\n", 6);
	deflateInit2(&zs, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
	zs.next_in = tar;
	zs.avail_in = sizeof(tar);
	zs.next_out = gz;
	zs.avail_out = (uInt)zlen;
	if (deflate(&zs, Z_FINISH) != Z_STREAM_END)
		abort();
	deflateEnd(&zs);
	*ret = gz;
	return zlen - zs.avail_out;
}

static int build_index(const uint8_t *gz, size_t n, const char *layer, void **ret, size_t *ret_len)
{
	struct seek_builder *b = NULL;
	char diff_id[DIGEST_STRING_MAX];
	uint64_t tar_size;
	int fd = memfd_create("layer", MFD_CLOEXEC), r;

	if (fd < 0 || write(fd, gz, n) != (ssize_t)n || lseek(fd, 0, SEEK_SET) != 0)
		abort();
	r = seek_builder_new(SEEK_SPAN_DEFAULT, &b);
	if (r >= 0)
		r = layer_tar_index_seek(fd, NULL, NULL, NULL, NULL, b, diff_id, &tar_size);
	if (r >= 0)
		r = seek_builder_finish(b, layer, n, tar_size, ret, ret_len);
	seek_builder_free(b);
	close(fd);
	return r;
}

struct seek_rows {
	unsigned n;
	char layer[DIGEST_STRING_MAX], digest[DIGEST_STRING_MAX];
	bool trusted;
};

static int count_row(void *userdata, const char *layer, const char *digest, bool trusted)
{
	struct seek_rows *rows = userdata;

	rows->n++;
	snprintf(rows->layer, sizeof(rows->layer), "%s", layer);
	snprintf(rows->digest, sizeof(rows->digest), "%s", digest);
	rows->trusted = trusted;
	return 0;
}

/* Moves the store's file of blob @digest aside (@hide) or back. */
static void blob_hide(const char *dir, const char *digest, bool hide)
{
	char path[512], aside[520];
	const char *hex = digest + strlen("sha256:");

	snprintf(path, sizeof(path), "%s/blobs/sha256/%.2s/%s", dir, hex, hex);
	snprintf(aside, sizeof(aside), "%s.aside", path);
	if (rename(hide ? path : aside, hide ? aside : path) < 0)
		abort();
}

int main(void)
{
	char dir[] = "/tmp/test-seek-XXXXXX", layer[DIGEST_STRING_MAX], digest[DIGEST_STRING_MAX];
	char other[DIGEST_STRING_MAX];
	struct layer_desc desc = { .compression = LAYER_COMPRESSION_GZIP };
	struct seek_index *si = NULL;
	struct cache *c = NULL;
	char *kept = NULL;
	struct seek_rows rows = {};
	bool trusted = true;
	uint8_t *gz;
	void *idx = NULL;
	size_t n, len = 0;

	if (!mkdtemp(dir) || cache_open(dir, &c) < 0)
		return 1;
	n = make_layer(&gz);
	digest_buffer(gz, n, layer);
	digest_buffer("another", 7, other);
	check(build_index(gz, n, layer, &idx, &len) >= 0, "an index of the layer is built");

	check(seek_index_import(c, "not an index", 12, layer, n, digest) == -EBADMSG,
	      "bytes that are no index are refused");
	check(seek_index_import(c, idx, len, other, n, digest) == -EBADMSG,
	      "the index of another layer is refused");
	check(seek_index_import(c, idx, len - 1, layer, n, digest) == -EBADMSG,
	      "a truncated index is refused");
	check(index_db_seek_get(c->db, layer, NULL, NULL) == -ENOENT,
	      "nothing of a refused index is named");

	check(seek_index_import(c, idx, len, layer, n, digest) == 0, "a good index is imported");
	check(index_db_seek_get(c->db, layer, &kept, &trusted) == 0 && streq(kept, digest) &&
	      !trusted, "it is kept untrusted, under its own digest");
	check(index_db_blob_is_referenced(c->db, digest) == 1,
	      "its blob counts as used (gc keeps it)");
	check(index_db_seek_foreach(c->db, count_row, &rows) == 0 && rows.n == 1 &&
	      streq(rows.layer, layer) && streq(rows.digest, digest) && !rows.trusted,
	      "the walk of seek index rows gives it, by layer (gc and fsck read them so)");
	desc.digest = layer;
	desc.size = n;
	desc.media_type = (char *)"application/vnd.oci.image.layer.v1.tar+gzip";
	/* The import parsed it: the next step of the pull takes that, not the stored blob. */
	blob_hide(dir, digest, true);
	check(seek_load(c, &desc, &si, &trusted) == 0 && !trusted && seek_index_untrusted(si),
	      "the index the import parsed is taken, not read and parsed again");
	seek_index_free(si);
	si = NULL;
	check(seek_load(c, &desc, &si, &trusted) < 0, "taken once: then it is read from the store");
	error_clear();
	blob_hide(dir, digest, false);
	check(seek_load(c, &desc, &si, &trusted) == 0 && !trusted, "it loads from the cache");
	check(seek_layer_import(c, &desc) == 1 && seek_layer_is_lazy(c->db, &desc),
	      "the layer is indexed from it, lazily");
	blob_hide(dir, digest, true);
	seek_index_free(si);
	si = NULL;
	check(seek_load(c, &desc, &si, &trusted) == 0 && !trusted && seek_index_untrusted(si),
	      "the layer import leaves its parse for the mount's fetcher");
	blob_hide(dir, digest, false);
	check(seek_drop(c, layer) == 0 && index_db_seek_get(c->db, layer, NULL, NULL) == -ENOENT &&
	      index_db_layer_is_indexed(c->db, layer) == 0,
	      "dropping it forgets the index and the entries indexed from it");

	seek_index_free(si);
	free_many(kept, idx, gz);
	cache_free(c);
	{
		char cmd[64];

		snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
		(void)!system(cmd);
	}
	return tap_done();
}
