/*
 * cache/registry/range_source.h: byte ranges of one image's blobs, as the fetcher
 * (cache/fetch.h) reads them.  Made once per image; it hands out connections, each used by one
 * thread at a time, so that the fetcher can keep several requests in flight.  The real one is
 * source_range_new() (source.h): the image's registry with its mirrors, or its local layout or
 * archive.  Implementations embed struct range_source (and struct range_conn) first.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct range_source;

/* Where the bytes of a blob that failed verification (or came short in a well-framed answer)
 * are asked for again: the same endpoint until RANGE_BAD_TRIES tries failed there, then the
 * next endpoint that serves blobs, each in turn.  Zero-initialise it per blob (or run). */
#define RANGE_BAD_TRIES 3U
struct blob_retry {
	unsigned tries;         /* failed tries at the current endpoint */
	unsigned moves;         /* endpoints left behind */
	size_t endpoint;        /* the current one, once chosen */
	bool chosen;
};

struct range_conn {
	struct range_source *source;
};

struct range_source_ops {
	/* A connection of its own (a registry client per thread).  -errno, e.g. -EPERM when
	 * registries.conf blocks the registry. */
	int (*connect)(struct range_source *s, struct range_conn **ret);
	/* Streams bytes [offset, offset + len) of blob @digest to @sink, each byte once and in
	 * order; a negative return from @sink aborts and is returned.  @size: the blob's size
	 * as the manifest gives it (a length the server reports must agree), 0 if unknown.
	 * Errors as registry_stream_blob(): -EPROTO for an answer cut short (worth another try),
	 * -ECANCELED once cancelled; @sink may have had part of the range by then.  Why it
	 * failed, in words, is the thread's error message (cache/base/error.h). */
	int (*stream)(struct range_conn *c, const char *digest, uint64_t size, uint64_t offset,
		      uint64_t len, int (*sink)(void *userdata, const void *buf, size_t n),
		      void *userdata);
	/* Before bytes asked for through @c are asked for again because those of the last try
	 * failed verification: counts that try in @rt and makes @c ask the endpoint @rt chooses.
	 * False when no try is left (NULL: never try again, e.g. a local file). */
	bool (*retry_bad)(struct range_conn *c, struct blob_retry *rt);
	void (*disconnect)(struct range_conn *c);
	/* From any thread: streams in progress end within about a second, later ones at once,
	 * with -ECANCELED (nobody waits for them any more). */
	void (*cancel)(struct range_source *s);
	void (*free)(struct range_source *s);
};

struct range_source {
	const struct range_source_ops *ops;
	/* Bound of one stream() call, its own retries included; 0: not known. */
	long timeout_ms;
};

static inline int range_source_connect(struct range_source *s, struct range_conn **ret)
{
	return s->ops->connect(s, ret);
}

static inline int range_conn_stream(struct range_conn *c, const char *digest, uint64_t size,
				    uint64_t offset, uint64_t len,
				    int (*sink)(void *userdata, const void *buf, size_t n),
				    void *userdata)
{
	return c->source->ops->stream(c, digest, size, offset, len, sink, userdata);
}

static inline bool range_conn_retry_bad(struct range_conn *c, struct blob_retry *rt)
{
	return c->source->ops->retry_bad && c->source->ops->retry_bad(c, rt);
}

/* NULL-safe. */
static inline void range_conn_free(struct range_conn *c)
{
	if (c)
		c->source->ops->disconnect(c);
}

static inline void range_source_cancel(struct range_source *s)
{
	s->ops->cancel(s);
}

/* NULL-safe; every connection must have been freed. */
static inline struct range_source *range_source_free(struct range_source *s)
{
	if (s)
		s->ops->free(s);
	return NULL;
}
