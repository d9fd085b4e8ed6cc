/*
 * fs/read_around.h: the chunks that lie right after a given point of a lazy layer's blob, for
 * a read that missed to fetch along with its own.
 *
 * Why: a layer is an archive, and the files a program reads one after another often sit close
 * together in it (a package's modules, a directory's files).  A Range request costs a round
 * trip whatever it carries, while a few more KiB in the same request cost almost nothing
 * (128 KiB is 10 ms at 100 Mbit/s; one round trip on a 10 ms link is 20 ms).  The read does
 * not wait for these neighbours (fetch_chunk.ahead): the request fetches its own chunks first.
 *
 * The index (every fetchable chunk of the tree in (layer, blob offset) order) is built on the
 * first call, not at mount: an image that never misses, or has no lazy layer, never pays for
 * it.  Safe from many threads at once.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "fs/tree.h"

struct read_around;

/* Borrows @tree (frozen), which must outlive the result. */
int read_around_new(const struct fs_tree *tree, struct read_around **ret);
struct read_around *read_around_free(struct read_around *ra);  /* NULL-safe */
DEFINE_CLEANUP_FUNC(struct read_around *, read_around_free);

/* Stores in @ret (room for @max) the chunks of layer @layer that start at or after @from and
 * end at or before @from + @window, in blob order, and returns how many; 0 when there are
 * none or the index cannot be built (out of memory: read-around is an optimisation). */
size_t read_around_pick(struct read_around *ra, unsigned layer, uint64_t from, uint64_t window,
			const struct fs_chunk_ref **ret, size_t max);
