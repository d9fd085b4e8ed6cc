/* cache/fetch_span.h: a seek span is fetched whole, once.  A chunk of a layer read through its
 * seek index (cache/seek.h) is inflated from its span's checkpoint, so the request for it
 * carries every compressed byte of the span before it.  Fetched one by one, as reads and
 * prewarm's batches come, a span's chunks each brought that prefix again: a full read of the
 * Debian image fetched about twice its layers.  fetch_span_expand() adds to a fetcher call the
 * other chunks of every span it needs a chunk of, marked ahead: the span comes in one request,
 * and its chunks are claimed at once, so a read of another chunk of it waits for that request
 * instead of starting its own from the checkpoint. */
#pragma once

#include <stddef.h>

#include "cache/fetch.h"

/* At most this many chunks of one span are added (a span of 2 MiB of tiny files); the rest
 * is left to the reads that want them. */
#define FETCH_SPAN_CHUNKS_MAX 4096U

/* The chunks of @chunks (@n, in their order) followed by those of every span of a seek index
 * layer of @layers that holds one of them not marked ahead: marked ahead, none of @chunks
 * again and each digest once.  A new array in *ret and its length in *ret_n; *ret is NULL
 * when there is nothing to add. */
int fetch_span_expand(const struct fetch_layer *layers, size_t n_layers,
		      const struct fetch_chunk *chunks, size_t n, struct fetch_chunk **ret,
		      size_t *ret_n);
