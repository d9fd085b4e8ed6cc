/*
 * fs/read_around.c: see read_around.h.  The index is an array of pointers into the tree's
 * chunk refs (which never move once the tree is frozen), sorted by (layer, blob offset); a
 * pick is a binary search and a short walk.  It is built once, under the lock, by the first
 * read that misses; later calls read it without the lock (it never changes again: the
 * built flag is published with release/acquire).
 * Memory: one pointer per fetchable chunk (800 KiB for an image of 100,000 lazy files).
 */
#include "read_around.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#include "cache/base/log.h"
#include "cache/base/util.h"

struct read_around {
	const struct fs_tree *tree;
	pthread_mutex_t lock;             /* held while building */
	bool built;                       /* atomic (acquire/release); set once */
	bool failed;                      /* guarded by lock: building ran out of memory */
	const struct fs_chunk_ref **by_blob;
	size_t n, alloc;
};

int read_around_new(const struct fs_tree *tree, struct read_around **ret)
{
	struct read_around *ra;

	ra = calloc(1, sizeof(*ra));
	if (!ra)
		return -ENOMEM;
	ra->tree = tree;
	pthread_mutex_init(&ra->lock, NULL);
	*ret = ra;
	return 0;
}

static void read_around_done(struct read_around *ra)
{
	pthread_mutex_destroy(&ra->lock);
	free(ra->by_blob);
}
DEFINE_FREE_FUNC(struct read_around, read_around_free, read_around_done);

static int collect(void *userdata, const struct fs_chunk_ref *c)
{
	struct read_around *ra = userdata;
	int r;

	r = GREEDY_REALLOC(ra->by_blob, ra->alloc, ra->n + 1);
	if (r < 0)
		return r;
	ra->by_blob[ra->n++] = c;
	return 0;
}

static int ref_compare(const void *a, const void *b)
{
	const struct fs_chunk_ref *x = *(const struct fs_chunk_ref *const *)a;
	const struct fs_chunk_ref *y = *(const struct fs_chunk_ref *const *)b;

	if (x->layer != y->layer)
		return x->layer < y->layer ? -1 : 1;
	if (x->blob_offset != y->blob_offset)
		return x->blob_offset < y->blob_offset ? -1 : 1;
	return x < y ? -1 : x > y;
}

/* Every fetchable chunk of every lazy file, sorted; a file the tree lists twice (it was
 * replaced by a later layer's entry that kept its inode) leaves one pointer. */
static int build(struct read_around *ra)
{
	size_t k = 0;
	int r;

	r = fs_tree_foreach_prefetch(ra->tree, true, collect, ra);
	if (r < 0)
		return r;
	if (ra->n == 0)
		return 0;
	qsort(ra->by_blob, ra->n, sizeof(*ra->by_blob), ref_compare);
	for (size_t i = 0; i < ra->n; i++)
		if (k == 0 || ra->by_blob[k - 1] != ra->by_blob[i])
			ra->by_blob[k++] = ra->by_blob[i];
	ra->n = k;
	return 0;
}

static bool ensure_built(struct read_around *ra)
{
	bool ok;

	if (__atomic_load_n(&ra->built, __ATOMIC_ACQUIRE))
		return true;
	pthread_mutex_lock(&ra->lock);
	if (!ra->built && !ra->failed) {
		int r = build(ra);

		if (r < 0) {
			log_debug_errno(r, "no read-around: cannot index the chunks: %m");
			ra->failed = true;
			ra->n = 0;
		} else {
			__atomic_store_n(&ra->built, true, __ATOMIC_RELEASE);
		}
	}
	ok = ra->built;
	pthread_mutex_unlock(&ra->lock);
	return ok;
}

/* Index of the first chunk at or after (@layer, @from). */
static size_t lower_bound(const struct read_around *ra, unsigned layer, uint64_t from)
{
	size_t lo = 0, hi = ra->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const struct fs_chunk_ref *c = ra->by_blob[mid];

		if (c->layer < layer || (c->layer == layer && c->blob_offset < from))
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

size_t read_around_pick(struct read_around *ra, unsigned layer, uint64_t from, uint64_t window,
			const struct fs_chunk_ref **ret, size_t max)
{
	size_t n = 0;

	if (!ensure_built(ra))
		return 0;
	for (size_t i = lower_bound(ra, layer, from); i < ra->n && n < max; i++) {
		const struct fs_chunk_ref *c = ra->by_blob[i];

		if (c->layer != layer || c->blob_offset + c->blob_length > from + window)
			break;
		ret[n++] = c;
	}
	return n;
}
