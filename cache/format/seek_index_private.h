/* cache/format/seek_index_private.h: the parsed seek index and its cursor, shared by
 * seek_index.c (format, parse, inflate) and seek_trust.c (what an untrusted index must prove
 * as it is read).  Nothing else includes it. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <zlib.h>

#include "cache/format/seek_index.h"

#define CP_MEMBER_START 1
#define CP_SPARSE 2             /* version 2: the window keeps only the bytes the stream uses */

struct seek_cp {
	uint64_t coff, uoff;
	uint8_t bits, flags;
	/* In the window table: the window's bytes, and for CP_SPARSE its mask before them (bit
	 * i % 8 of byte i / 8 set when byte i is used; the unused bytes are 0).  A sparse window
	 * is the last win_len bytes of the real one: the bytes before the first used one dropped. */
	uint32_t win_off, win_len, mask_off;
};

struct seek_chunk {
	uint64_t uoff, size, cend;
	uint32_t cp;            /* the checkpoint of its span */
	uint32_t start_cp;      /* the checkpoint it is inflated from: cp, or for the first
				 * chunk of a file of an untrusted index the one at or before the
				 * tar records before its data (seek_trust.c) */
	uint32_t entry;         /* the file it belongs to */
	uint64_t head;          /* first chunks, untrusted: where those records start */
	uint8_t digest[32];
};

struct seek_index {
	unsigned version;
	uint8_t *body;
	size_t body_len;
	uint8_t layer[32];
	uint64_t blob_size, tar_size, span;
	struct seek_cp *cps;
	size_t n_cps;
	struct seek_chunk *chunks;
	size_t n_chunks, n_entries, n_xattrs;
	const uint8_t *entries, *xattrs, *strings, *windows;
	uint32_t strings_len, windows_len;
	/* An index from elsewhere (seek_index_set_untrusted()): each file's tar records are
	 * read before its data, checkpoints crossed are checked (seek_trust.c). */
	bool untrusted;
	uint8_t *checked;       /* per entry, atomic: its tar records matched */
};

/* One entry as struct entry, with the copies its pointers need. */
struct entry_buf {
	struct entry e;
	char *path, *link, *names;
	struct xattr *xattrs;
	struct chunk *chunks;
	char (*digests)[DIGEST_STRING_MAX];
	char digest[DIGEST_STRING_MAX];
};

struct seek_cursor {
	const struct seek_index *si;
	size_t cp;
	bool active, raw;
	z_stream zs;
	uint64_t uoff;          /* the next uncompressed byte to come out */
	uint64_t consumed;      /* of the input, counted from the checkpoint's start */
	/* Of the input, the bytes before the caller's buffer (counted from the checkpoint's
	 * start): a cursor resumed by a later request gets only what follows where it stopped. */
	uint64_t in_skip;
	uint8_t *discard;
	/* Untrusted indexes (seek_trust.c): the next checkpoint to check when output reaches
	 * it; the tar records [head_from, head_to) being collected into head. */
	size_t next_cp;
	uint64_t head_from, head_to;
	uint8_t *head;
	size_t head_len;
	uint64_t member_uoff, member_pos;   /* where the last member ended: output, input */
	bool member_ended;
	/* Untrusted, from a sparse window: proves as output comes that the stream refers to no
	 * byte its mask calls unused (window_probe.h), NULL once past it or otherwise. */
	struct window_shadow *shadow;
	uint8_t window[SEEK_WINDOW_SIZE];
};

static inline uint64_t cp_start(const struct seek_cp *cp)
{
	return cp->coff - (cp->bits ? 1 : 0);
}

/* How far into the input @cur's decoder is, counted from its checkpoint's start; @in is the
 * caller's buffer (which starts cur->in_skip bytes after that). */
static inline uint64_t cursor_in_pos(const struct seek_cursor *cur, const uint8_t *in)
{
	return cur->in_skip + (uint64_t)(cur->zs.next_in - in);
}

/* Entry @i of @si decoded into @eb (seek_entry_buf_done() frees it). */
int seek_entry_decode(const struct seek_index *si, size_t i, struct entry_buf *eb);
void seek_entry_buf_done(struct entry_buf *eb);
/* The checkpoint whose compressed bytes start at @blob_offset; the chunk inflated from
 * checkpoint @cp with @digest and @size.  -ENOENT when there is none. */
int seek_cp_find_start(const struct seek_index *si, uint64_t blob_offset, size_t *ret);
int seek_chunk_find(const struct seek_index *si, size_t cp, const uint8_t digest[32],
		    uint64_t size, const struct seek_chunk **ret);
/* The last checkpoint at or before @uoff. */
size_t seek_cp_find_uoff(const struct seek_index *si, uint64_t uoff);
/* Past a gzip member's end (seek_index.c): its trailer, then the next member's header. */
int seek_member_next(z_stream *zs, bool *raw);

/* seek_trust.c, for an untrusted index (each a no-op for a trusted one).  Before inflating
 * chunk @c: *ret_target is where the cursor must start from (the tar records before the file
 * when they are to be checked: @c is its file's first chunk and they were not). */
int seek_trust_chunk_begin(const struct seek_index *si, const struct seek_chunk *c,
			   uint64_t *ret_target);
/* After the cursor is placed: collect the records before @c's data while skipping them;
 * after inflating @c: they must be the index's entries. */
int seek_trust_collect_start(struct seek_cursor *cur, const struct seek_chunk *c);
void seek_trust_collect(struct seek_cursor *cur, uint64_t from, const uint8_t *bytes, size_t n);
int seek_trust_collect_end(struct seek_cursor *cur, const struct seek_chunk *c);
/* After the cursor started at its checkpoint: a shadow for a sparse window of an untrusted
 * index.  After each inflate() (@in, @in_len, @out_len, @flush as given to it; @out its
 * output): the shadow must agree. */
int seek_trust_shadow_start(struct seek_cursor *cur, const uint8_t *in);
int seek_trust_shadow_step(struct seek_cursor *cur, const uint8_t *in, size_t in_len,
			   size_t out_len, int flush, const uint8_t *out);
/* The output reached the next checkpoint: check it (@more: input goes on past it). */
int seek_trust_at_checkpoint(struct seek_cursor *cur, const uint8_t *in, bool more);
/* @want, cut so that the output stops at the next checkpoint (and where the shadow can
 * follow). */
uint64_t seek_trust_limit(const struct seek_cursor *cur, uint64_t want);
