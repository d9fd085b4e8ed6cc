/* tests/bench/seek-span.c: how the seek index's span (cache/format/seek_index.h) trades index
 * size against the bytes a lazy read fetches, on a real tar+gzip layer (not a test):
 *
 *	build/tests/bench-seek-span LAYER.tar.gz [SPAN_KIB...]
 *
 * For each span: the index's size with whole windows (version 1's) and with sparse ones (what
 * the builder writes: only the window bytes the stream after a checkpoint uses, window_probe.h)
 * and their share of the layer, the share of window bytes kept, its checkpoints, and what a
 * miss on a file costs: the compressed bytes of the range its first chunk is fetched with
 * (mean, median, 90th percentile over the layer's non-empty files). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cache/base/error.h"
#include "cache/format/layer_tar.h"
#include "cache/format/seek_index.h"
#include "cache/format/seek_index_private.h"
#include "cache/format/window_probe.h"

struct costs {
	uint64_t *fetch;
	size_t n, allocated;
};

static int add_file(void *userdata, const struct entry *e)
{
	struct costs *c = userdata;

	if (e->type != ENTRY_REG || e->n_chunks == 0)
		return 0;
	if (GREEDY_REALLOC(c->fetch, c->allocated, c->n + 1) < 0)
		return -ENOMEM;
	c->fetch[c->n++] = e->chunks[0].blob_length;
	return 0;
}

static int u64_cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* The index of the layer at @path, with sparse windows or not; *ret_secs: the build's time. */
static int build(const char *path, const char *digest, uint64_t blob_size, uint64_t span,
		 bool sparse, struct seek_index **ret, size_t *ret_len, double *ret_secs)
{
	char diff_id[DIGEST_STRING_MAX];
	struct seek_builder *b = NULL;
	struct timespec t0, t1;
	uint64_t tar_size = 0;
	void *idx = NULL;
	int fd, r;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	r = seek_builder_new(span, &b);
	if (r >= 0) {
		seek_builder_set_sparse(b, sparse);
		r = layer_tar_index_seek(fd, NULL, NULL, NULL, NULL, b, diff_id, &tar_size);
	}
	if (r >= 0)
		r = seek_builder_finish(b, digest, blob_size, tar_size, &idx, ret_len);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	close(fd);
	*ret_secs = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
	if (r >= 0)
		r = seek_index_parse(idx, *ret_len, digest, blob_size, ret);
	free(idx);
	seek_builder_free(b);
	return r;
}

/* Of the window bytes @whole has, the share @sparse keeps. */
static double windows_kept(const struct seek_index *whole, const struct seek_index *sparse)
{
	uint64_t all = 0, kept = 0;

	for (size_t i = 0; i < whole->n_cps && i < sparse->n_cps; i++) {
		const struct seek_cp *cp = &sparse->cps[i];

		all += whole->cps[i].win_len;
		if (!(cp->flags & CP_SPARSE))
			kept += cp->win_len;
		for (size_t j = 0; (cp->flags & CP_SPARSE) && j < cp->win_len; j++)
			kept += window_mask_used(sparse->windows + cp->mask_off, j);
	}
	return all ? 100.0 * kept / all : 0;
}

static int one_span(const char *path, const char *digest, uint64_t blob_size, uint64_t span)
{
	struct seek_index *whole = NULL, *sparse = NULL;
	size_t whole_len = 0, sparse_len = 0;
	struct seek_index_info info;
	struct costs c = {};
	double secs = 0, whole_secs = 0;
	uint64_t sum = 0;
	int r;

	r = build(path, digest, blob_size, span, false, &whole, &whole_len, &whole_secs);
	if (r >= 0)
		r = build(path, digest, blob_size, span, true, &sparse, &sparse_len, &secs);
	if (r >= 0)
		r = seek_index_foreach(sparse, add_file, &c);
	if (r >= 0 && c.n > 0) {
		seek_index_get_info(sparse, &info);
		qsort(c.fetch, c.n, sizeof(*c.fetch), u64_cmp);
		for (size_t i = 0; i < c.n; i++)
			sum += c.fetch[i];
		printf("| %6llu KiB | %9zu = %5.2f%% | %9zu = %5.2f%% | %4.1f%% | %6zu | %8.0f "
		       "| %8llu | %8llu | %5.1f s |\n",
		       (unsigned long long)(span >> 10), whole_len, 100.0 * whole_len / blob_size,
		       sparse_len, 100.0 * sparse_len / blob_size, windows_kept(whole, sparse),
		       info.n_checkpoints, (double)sum / c.n, (unsigned long long)c.fetch[c.n / 2],
		       (unsigned long long)c.fetch[c.n * 9 / 10], secs);
	}
	free(c.fetch);
	seek_index_free(whole);
	seek_index_free(sparse);
	return r;
}

int main(int argc, char **argv)
{
	static const unsigned defaults[] = { 512, 1024, 2048, 4096, 8192, 16384 };
	char digest[DIGEST_STRING_MAX];
	_cleanup_free_ char *buf = NULL;
	size_t len;
	int r;

	if (argc < 2) {
		fprintf(stderr, "usage: %s LAYER.tar.gz [SPAN_KIB...]\n", argv[0]);
		return 2;
	}
	r = read_full_file(argv[1], SIZE_MAX, &buf, &len);
	if (r < 0 || digest_buffer(buf, len, digest) < 0) {
		fprintf(stderr, "cannot read '%s': %s\n", argv[1], strerror(-r));
		return 1;
	}
	printf("%s: %zu bytes\n\n", argv[1], len);
	printf("| span | index, whole windows | index, sparse windows | window bytes kept "
	       "| checkpoints | miss mean | median | p90 | build |\n");
	printf("|---|---|---|---|---|---|---|---|---|\n");
	for (int i = 0; i < (argc > 2 ? argc - 2 : (int)ELEMENTSOF(defaults)); i++) {
		uint64_t span = (argc > 2 ? strtoull(argv[i + 2], NULL, 10) : defaults[i]) << 10;

		r = one_span(argv[1], digest, len, span);
		if (r < 0) {
			fprintf(stderr, "span %llu: %s\n", (unsigned long long)span, error_take(r));
			return 1;
		}
	}
	return 0;
}
