/*
 * cache/fetch_span.c: see fetch_span.h.  Runs once per fetcher call, before anything is
 * claimed: the spans of the call's needed chunks in seek index layers are listed (each once),
 * each span's chunks appended from the index, and what the call had already, or a span gave
 * twice, dropped again (a sort by digest).  Nothing here looks at the store: the fetcher does
 * for every chunk it is asked for.
 *
 * Load: a read's miss names one span or a few, a prewarm batch some tens; a span holds from
 * one chunk (a big file) to a few thousand (small ones).
 */
#include "fetch_span.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cache/base/util.h"

struct span {
	unsigned layer;
	uint64_t blob_offset;
};

struct expansion {
	struct fetch_chunk *out;
	size_t n, alloc, added;      /* added: of the current span */
	unsigned layer;
	uint64_t blob_offset;
};

static int span_compare(const void *a, const void *b)
{
	const struct span *x = a, *y = b;

	if (x->layer != y->layer)
		return x->layer < y->layer ? -1 : 1;
	if (x->blob_offset != y->blob_offset)
		return x->blob_offset < y->blob_offset ? -1 : 1;
	return 0;
}

/* The distinct spans of @chunks' needed chunks in seek index layers, in *ret. */
static int spans_needed(const struct fetch_layer *layers, size_t n_layers,
			const struct fetch_chunk *chunks, size_t n, struct span **ret,
			size_t *ret_n)
{
	_cleanup_free_ struct span *spans = NULL;
	size_t k = 0, alloc = 0;

	for (size_t i = 0; i < n; i++) {
		const struct fetch_chunk *c = &chunks[i];

		if (c->ahead || c->layer >= n_layers || !layers[c->layer].seek ||
		    __atomic_load_n(&layers[c->layer].seek_failed, __ATOMIC_RELAXED))
			continue;
		if (GREEDY_REALLOC(spans, alloc, k + 1) < 0)
			return -ENOMEM;
		spans[k++] = (struct span) { .layer = c->layer, .blob_offset = c->blob_offset };
	}
	if (k > 1)
		qsort(spans, k, sizeof(*spans), span_compare);
	*ret_n = 0;
	for (size_t i = 0; i < k; i++)
		if (*ret_n == 0 || span_compare(&spans[*ret_n - 1], &spans[i]) != 0)
			spans[(*ret_n)++] = spans[i];
	*ret = TAKE_PTR(spans);
	return 0;
}

static int span_add(void *userdata, const char *digest, uint64_t size, uint64_t blob_length)
{
	struct expansion *x = userdata;

	if (x->added >= FETCH_SPAN_CHUNKS_MAX)
		return 0;
	if (GREEDY_REALLOC(x->out, x->alloc, x->n + 1) < 0)
		return -ENOMEM;
	x->out[x->n] = (struct fetch_chunk) {
		.layer = x->layer, .blob_offset = x->blob_offset, .blob_length = blob_length,
		.size = size, .ahead = true,
	};
	memcpy(x->out[x->n].digest, digest, sizeof(x->out[x->n].digest));
	x->n++;
	x->added++;
	return 0;
}

struct position {
	const char *digest;
	size_t i;
};

/* By digest, then position: the first of equal digests comes first. */
static int position_compare(const void *a, const void *b)
{
	const struct position *x = a, *y = b;
	int d = strcmp(x->digest, y->digest);

	if (d != 0)
		return d;
	return x->i < y->i ? -1 : x->i > y->i;
}

/* Drops the chunks at positions >= @keep whose digest came earlier in @x->out. */
static int drop_repeats(struct expansion *x, size_t keep)
{
	_cleanup_free_ struct position *pos = NULL;
	_cleanup_free_ bool *drop = NULL;
	size_t k = keep;

	pos = malloc(x->n * sizeof(*pos));
	drop = calloc(x->n, sizeof(*drop));
	if (!pos || !drop)
		return -ENOMEM;
	for (size_t i = 0; i < x->n; i++)
		pos[i] = (struct position) { .digest = x->out[i].digest, .i = i };
	qsort(pos, x->n, sizeof(*pos), position_compare);
	for (size_t i = 1; i < x->n; i++)
		if (pos[i].i >= keep && streq(pos[i].digest, pos[i - 1].digest))
			drop[pos[i].i] = true;
	for (size_t i = keep; i < x->n; i++)
		if (!drop[i])
			x->out[k++] = x->out[i];
	x->n = k;
	return 0;
}

int fetch_span_expand(const struct fetch_layer *layers, size_t n_layers,
		      const struct fetch_chunk *chunks, size_t n, struct fetch_chunk **ret,
		      size_t *ret_n)
{
	_cleanup_free_ struct span *spans = NULL;
	struct expansion x = {};
	size_t n_spans;
	int r;

	*ret = NULL;
	*ret_n = n;
	r = spans_needed(layers, n_layers, chunks, n, &spans, &n_spans);
	if (r < 0 || n_spans == 0)
		return r;
	if (GREEDY_REALLOC(x.out, x.alloc, n) < 0)
		return -ENOMEM;
	memcpy(x.out, chunks, n * sizeof(*chunks));
	x.n = n;
	for (size_t i = 0; i < n_spans && r >= 0; i++) {
		x.layer = spans[i].layer;
		x.blob_offset = spans[i].blob_offset;
		x.added = 0;
		r = seek_index_span_foreach(layers[x.layer].seek, x.blob_offset, span_add, &x);
		if (r == -ENOENT)
			r = 0;  /* not a checkpoint: the fetcher fails that chunk, nothing to add */
	}
	if (r >= 0)
		r = drop_repeats(&x, n);
	if (r < 0 || x.n == n) {
		free(x.out);
		return r < 0 ? r : 0;
	}
	*ret = x.out;
	*ret_n = x.n;
	return 0;
}
