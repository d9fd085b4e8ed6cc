/* tests/bench/seek-span.c: how the seek index's span (cache/format/seek_index.h) trades index
 * size against the bytes a lazy read fetches, on a real tar+gzip layer (not a test):
 *
 *	build/tests/bench-seek-span LAYER.tar.gz [SPAN_KIB...]
 *
 * For each span: the index's size (and its share of the layer), its checkpoints, and what a
 * miss on a file costs: the compressed bytes of the range its first chunk is fetched with
 * (mean, median, 90th percentile over the layer's non-empty files), and the bytes inflated
 * before the file's data (mean).  And what sparse windows would save (window_probe.h): the
 * windows deflated whole, deflated with the bytes the stream after them never copies from
 * zeroed and the leading ones dropped, and the index's size with the second instead. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <zlib.h>

#include "cache/base/error.h"
#include "cache/format/layer_tar.h"
#include "cache/format/seek_index.h"
#include "cache/format/seek_index_private.h"
#include "cache/format/window_probe.h"

struct costs {
	uint64_t *fetch;
	size_t n, allocated;
	uint64_t n_files;
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

struct windows {
	uint8_t *full, *sparse;
	size_t full_len, sparse_len;
	size_t used, total;
};

/* Appends checkpoint @cp's window to @w, whole and as window_probe.h would keep it. */
static int window_add(struct windows *w, const struct seek_index *si, const struct seek_cp *cp,
		      const uint8_t *layer, size_t layer_len)
{
	const uint8_t *win = si->windows + cp->win_off;
	uint8_t used[WINDOW_PROBE_SIZE];
	struct window_probe *p = NULL;
	size_t first = 0;
	int r;

	memcpy(w->full + w->full_len, win, cp->win_len);
	w->full_len += cp->win_len;
	r = window_probe_new(cp->win_len, cp->bits, cp->bits ? layer[cp->coff - 1] : 0, &p);
	if (r >= 0)
		r = window_probe_feed(p, layer + cp->coff, layer_len - cp->coff);
	if (r == 1)
		window_probe_used(p, used);
	window_probe_free(p);
	if (r < 0)
		return r;
	if (r == 0)
		memset(used, 1, cp->win_len);  /* the layer ends first: keep it whole */
	while (first < cp->win_len && !used[first])
		first++;
	for (size_t i = first; i < cp->win_len; i++) {
		w->sparse[w->sparse_len++] = used[i] ? win[i] : 0;
		w->used += used[i];
	}
	w->total += cp->win_len;
	return 0;
}

static size_t deflated_size(const uint8_t *buf, size_t n)
{
	uLongf zlen = compressBound(n);
	uint8_t *z = malloc(zlen);
	int zr = z ? compress2(z, &zlen, buf, n, 6) : Z_MEM_ERROR;

	free(z);
	return zr == Z_OK ? zlen : 0;
}

/* The windows of @si deflated whole and sparse (as the index deflates its body, level 6). */
static int windows_measure(const struct seek_index *si, const uint8_t *layer, size_t layer_len,
			   size_t *ret_full, size_t *ret_sparse, double *ret_used)
{
	struct windows w = {};
	int r = 0;

	w.full = malloc(si->windows_len + 1);
	w.sparse = malloc(si->windows_len + 1);
	for (size_t i = 0; w.full && w.sparse && r >= 0 && i < si->n_cps; i++)
		if (si->cps[i].win_len > 0)
			r = window_add(&w, si, &si->cps[i], layer, layer_len);
	if (!w.full || !w.sparse)
		r = -ENOMEM;
	*ret_full = r >= 0 ? deflated_size(w.full, w.full_len) : 0;
	*ret_sparse = r >= 0 ? deflated_size(w.sparse, w.sparse_len) : 0;
	*ret_used = w.total ? 100.0 * w.used / w.total : 0;
	free(w.full);
	free(w.sparse);
	return r;
}

static int one_span(const char *path, const uint8_t *layer, const char *digest,
		    uint64_t blob_size, uint64_t span)
{
	size_t win_full = 0, win_sparse = 0;
	double win_used = 0;
	struct seek_builder *b = NULL;
	struct seek_index *si = NULL;
	struct seek_index_info info;
	struct costs c = {};
	char diff_id[DIGEST_STRING_MAX];
	uint64_t tar_size = 0, sum = 0;
	struct timespec t0, t1;
	void *idx = NULL;
	size_t len = 0;
	int fd, r;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	r = seek_builder_new(span, &b);
	if (r >= 0)
		r = layer_tar_index_seek(fd, NULL, NULL, NULL, NULL, b, diff_id, &tar_size);
	if (r >= 0)
		r = seek_builder_finish(b, digest, blob_size, tar_size, &idx, &len);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	close(fd);
	if (r >= 0)
		r = seek_index_parse(idx, len, digest, blob_size, &si);
	if (r >= 0)
		r = seek_index_foreach(si, add_file, &c);
	if (r >= 0)
		r = windows_measure(si, layer, blob_size, &win_full, &win_sparse, &win_used);
	if (r >= 0 && c.n > 0) {
		seek_index_get_info(si, &info);
		qsort(c.fetch, c.n, sizeof(*c.fetch), u64_cmp);
		for (size_t i = 0; i < c.n; i++)
			sum += c.fetch[i];
		printf("| %6llu KiB | %9zu | %5.2f%% | %6zu | %8.0f | %8llu | %8llu | %5.1f s "
		       "| %8zu | %8zu (%4.1f%% used) | %9zu = %5.2f%% |\n",
		       (unsigned long long)(span >> 10), len, 100.0 * len / blob_size,
		       info.n_checkpoints, (double)sum / c.n,
		       (unsigned long long)c.fetch[c.n / 2],
		       (unsigned long long)c.fetch[c.n * 9 / 10],
		       (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9,
		       win_full, win_sparse, win_used, len - win_full + win_sparse,
		       100.0 * (len - win_full + win_sparse) / blob_size);
	}
	free(c.fetch);
	free(idx);
	seek_index_free(si);
	seek_builder_free(b);
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
	printf("| span | index bytes | of layer | checkpoints | miss mean | median | p90 | build "
	       "| windows | sparse | index, sparse |\n");
	printf("|---|---|---|---|---|---|---|---|---|---|---|\n");
	for (int i = 0; i < (argc > 2 ? argc - 2 : (int)ELEMENTSOF(defaults)); i++) {
		uint64_t span = (argc > 2 ? strtoull(argv[i + 2], NULL, 10) : defaults[i]) << 10;

		r = one_span(argv[1], (const uint8_t *)buf, digest, len, span);
		if (r < 0) {
			fprintf(stderr, "span %llu: %s\n", (unsigned long long)span, error_take(r));
			return 1;
		}
	}
	return 0;
}
