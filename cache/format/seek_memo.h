/* cache/format/seek_memo.h: parsed seek indexes handed from one step of a pull to the next in one
 * process, so that an index is parsed once, not three times: the import that parses it to
 * check it (seek_index_import()), the layer import that walks its entries, the mount's fetcher
 * that serves from it (seek_load()).  A parse inflates the whole index (megabytes for a large
 * layer: tens of milliseconds on the way to a ready mount).  Entries are keyed by the index
 * blob's digest and the layer's: what is taken is exactly what parsing those bytes against that
 * layer gave.  Thread-safe (a pull's seek index lookup runs in a thread of its own). */
#pragma once

#include "cache/format/seek_index.h"

/* Keeps @si (taken) for a later seek_memo_take(); the oldest entry goes when it is full. */
void seek_memo_put(const char *blob_digest, const char *layer_digest, struct seek_index *si);
/* The index kept for (@blob_digest, @layer_digest), now the caller's; NULL when none is. */
struct seek_index *seek_memo_take(const char *blob_digest, const char *layer_digest);
