/*
 * cache/format/seek_trust.c: what a seek index that came from elsewhere must prove while it is
 * read (docs/security.md, "Seek indexes").  A chunk's sha256 proves only that the index and
 * the inflated bytes agree, and the index chooses both the window that inflating starts from
 * and the digest; so, for an untrusted index:
 *
 * - a file's first chunk is inflated from the checkpoint at or before the tar records that
 *   precede its data (from the end of the previous file's data), and those records must be
 *   the index's entries, in order, with the same path, type, mode, owner, size, mtime and link
 *   target, and end exactly where the index says the data starts (tar_header.c);
 * - no byte of a file is served before its records were checked (seek_index_chunk_proven(),
 *   which fs/read_path.c asks; seek_index_chunk_first() tells the fetcher which chunk proves
 *   a file).  Its later chunks may be inflated before that -- a span fetched ahead holds the
 *   rest of a file whose records lie in the span before it -- and stored under their digest:
 *   the store is keyed by digest, so holding them proves nothing and serves nothing of this
 *   file until its records were checked, and inflating them later would give the same bytes;
 * - whenever inflating reaches the next checkpoint, the decoder must be at a deflate block
 *   boundary at exactly the checkpoint's bit in the compressed stream (or at the end of a gzip
 *   member, for a member start), and the last 32 KiB it produced must be the checkpoint's
 *   window.  So a window is proven by the span before it, back to the first checkpoint, which
 *   has none;
 * - a sparse window (index version 2: only the bytes the stream after its checkpoint uses, the
 *   others 0, docs/formats.md) is compared there on its used bytes, and every inflate that
 *   starts at its checkpoint runs a shadow decoder beside it for its first 32 KiB of output,
 *   whose window has the unused bytes changed (window_probe.h): the outputs must agree, so no
 *   byte served depends on a byte the index left out.  Its next checkpoint must not come
 *   before the shadow is done (the builder keeps a window whole then).
 *
 * A lie is -EBADMSG with error.h's message saying what; the fetcher then drops the index.
 * Load: one check per file of the records before it (a few KiB) and per checkpoint crossed.
 */
#include "seek_index.h"
#include "seek_index_private.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cache/base/error.h"
#include "cache/base/log.h"
#include "cache/format/tar_header.h"
#include "cache/format/window_probe.h"

#define HEAD_MAX (4U << 20)     /* of the tar records before one file */

static int lie(const char *what)
{
	return error_set(-EBADMSG, "seek index: %s", what);
}

static bool chunk_is_first(const struct seek_index *si, const struct seek_chunk *c)
{
	return c == si->chunks || c[-1].entry != c->entry;
}

static bool entry_checked(const struct seek_index *si, uint32_t e)
{
	return __atomic_load_n(&si->checked[e], __ATOMIC_ACQUIRE);
}

int seek_index_set_untrusted(struct seek_index *si)
{
	if (si->untrusted)
		return 0;
	si->checked = calloc(si->n_entries ?: 1, 1);
	if (!si->checked)
		return -ENOMEM;
	for (size_t i = 0; i < si->n_chunks; i++) {
		struct seek_chunk *c = &si->chunks[i];
		uint64_t end;

		if (!chunk_is_first(si, c))
			continue;
		/* The records follow the previous file's data, padded to a 512-byte block. */
		end = i == 0 ? 0 : c[-1].uoff + c[-1].size;
		end = (end + 511) / 512 * 512;
		c->head = end < c->uoff ? end : c->uoff;
		c->start_cp = (uint32_t)seek_cp_find_uoff(si, c->head);
	}
	si->untrusted = true;
	return 0;
}

int seek_index_chunk_first(const struct seek_index *si, uint64_t blob_offset, const char *digest,
			   uint64_t size, struct seek_chunk_ref *ret)
{
	const struct seek_chunk *c, *first;
	uint8_t md[32];

	size_t cp;

	if (!si->untrusted || digest_parse_sha256(digest, md) < 0 ||
	    seek_cp_find_start(si, blob_offset, &cp) < 0 || seek_chunk_find(si, cp, md, size, &c) < 0 ||
	    chunk_is_first(si, c) || entry_checked(si, c->entry))
		return 0;
	for (first = c; !chunk_is_first(si, first); first--)
		;
	*ret = (struct seek_chunk_ref) { .blob_offset = cp_start(&si->cps[first->start_cp]),
					 .blob_length = first->cend -
							cp_start(&si->cps[first->start_cp]),
					 .size = first->size };
	digest_format_sha256(first->digest, ret->digest);
	return 1;
}

bool seek_index_untrusted(const struct seek_index *si)
{
	return si->untrusted;
}

bool seek_index_chunk_proven(const struct seek_index *si, uint64_t blob_offset,
			     const uint8_t digest[32], uint64_t size)
{
	const struct seek_chunk *c;
	size_t cp;

	if (!si->untrusted)
		return true;
	if (seek_cp_find_start(si, blob_offset, &cp) < 0 ||
	    seek_chunk_find(si, cp, digest, size, &c) < 0)
		return false;
	return entry_checked(si, c->entry);
}

int seek_trust_chunk_begin(const struct seek_index *si, const struct seek_chunk *c,
			   uint64_t *ret_target)
{
	*ret_target = c->uoff;
	/* A later chunk of a file not checked yet: its bytes as the index says, not served before
	 * the first chunk proved the file (seek_index_chunk_proven()). */
	if (!si->untrusted || entry_checked(si, c->entry) || !chunk_is_first(si, c))
		return 0;
	if (c->uoff - c->head > HEAD_MAX)
		return lie("the tar records before a file are too large to check");
	*ret_target = c->head;
	return 0;
}

int seek_trust_collect_start(struct seek_cursor *cur, const struct seek_chunk *c)
{
	const struct seek_index *si = cur->si;

	cur->head_from = cur->head_to = 0;
	cur->head_len = 0;
	if (!si->untrusted || entry_checked(si, c->entry) || !chunk_is_first(si, c))
		return 0;
	free(cur->head);
	cur->head = malloc(c->uoff - c->head ?: 1);
	if (!cur->head)
		return -ENOMEM;
	cur->head_from = c->head;
	cur->head_to = c->uoff;
	return 0;
}

void seek_trust_collect(struct seek_cursor *cur, uint64_t from, const uint8_t *bytes, size_t n)
{
	uint64_t a = from > cur->head_from ? from : cur->head_from;
	uint64_t b = from + n < cur->head_to ? from + n : cur->head_to;

	if (a >= b || a != cur->head_from + cur->head_len)
		return;
	memcpy(cur->head + cur->head_len, bytes + (a - from), b - a);
	cur->head_len += b - a;
}

/* The records between the previous file's data and @c's must be entries (prev, c->entry]. */
static int records_compare(const struct seek_index *si, const struct seek_chunk *c,
			   const uint8_t *buf, size_t len)
{
	size_t first = c == si->chunks ? 0 : c[-1].entry + 1, pos = 0;
	int r = 0;

	for (size_t i = first; i <= c->entry && r >= 0; i++) {
		struct entry_buf eb = {};
		struct tar_header h = {};

		r = seek_entry_decode(si, i, &eb);
		if (r >= 0)
			r = tar_header_next(buf, len, &pos, &h);
		if (r >= 0 && !tar_header_matches(&h, &eb.e))
			r = error_set(-EBADMSG, "seek index: entry '%s' is not what the layer's tar "
				      "header says ('%s')", eb.e.path, h.path);
		if (r >= 0 && i == c->entry && h.data_off != len)
			r = error_set(-EBADMSG, "seek index: the data of '%s' does not start where "
				      "its tar header ends", eb.e.path);
		tar_header_done(&h);
		seek_entry_buf_done(&eb);
	}
	return r;
}

int seek_trust_collect_end(struct seek_cursor *cur, const struct seek_chunk *c)
{
	const struct seek_index *si = cur->si;
	size_t first = c == si->chunks ? 0 : c[-1].entry + 1;
	int r;

	if (cur->head_to == 0)
		return 0;
	cur->head_to = 0;
	if (cur->head_len != c->uoff - c->head)
		return lie("the tar records before a file were not all inflated");
	r = records_compare(si, c, cur->head, cur->head_len);
	if (r < 0 && error_message())
		return r;
	if (r < 0)
		return error_set(r, "seek index: the tar records before a file do not parse");
	for (size_t i = first; i <= c->entry; i++)
		__atomic_store_n(&si->checked[i], 1, __ATOMIC_RELEASE);
	return 0;
}

/* Absolute compressed position of @cur's decoder, in bits. */
static uint64_t cursor_bit(const struct seek_cursor *cur, const uint8_t *in)
{
	uint64_t byte = cp_start(&cur->si->cps[cur->cp]) + cursor_in_pos(cur, in);

	return byte * 8 - (uint64_t)(cur->zs.data_type & 63);
}

/* Whether checkpoint @cp's window, as the index has it, is @real (@real_len bytes): the same
 * bytes, or for a sparse one the same used bytes at the end of @real. */
static bool window_matches(const struct seek_index *si, const struct seek_cp *cp,
			   const uint8_t *real, size_t real_len)
{
	const uint8_t *mask = si->windows + cp->mask_off, *bytes = si->windows + cp->win_off;

	if (!(cp->flags & CP_SPARSE))
		return real_len == cp->win_len && memcmp(real, bytes, real_len) == 0;
	if (real_len < cp->win_len)
		return false;
	real += real_len - cp->win_len;
	for (size_t i = 0; i < cp->win_len; i++)
		if (window_mask_used(mask, i) && real[i] != bytes[i])
			return false;
	return true;
}

/* At a block boundary: must be checkpoint @cp's bit, and the window its window. */
static int boundary_check(struct seek_cursor *cur, const uint8_t *in, const struct seek_cp *cp)
{
	uint8_t one;
	uInt wlen = SEEK_WINDOW_SIZE;
	int zr;

	if (inflateGetDictionary(&cur->zs, cur->window, &wlen) != Z_OK)
		return -ENOMEM;
	if (!window_matches(cur->si, cp, cur->window, wlen))
		return lie("a checkpoint's window is not what the span before it inflates to");
	/* Not at the end of a block yet (its end code not read): read up to it, no further. */
	if (!(cur->zs.data_type & 128)) {
		cur->zs.next_out = &one;
		cur->zs.avail_out = 1;
		zr = inflate(&cur->zs, Z_BLOCK);
		if (cur->zs.avail_out == 0 || (zr != Z_OK && zr != Z_BUF_ERROR))
			return lie("a checkpoint is not at a deflate block boundary");
	}
	if (!(cur->zs.data_type & 128))
		return 0;  /* the input ends before the boundary: nothing more to see here */
	if (cursor_bit(cur, in) != cp->coff * 8 - cp->bits)
		return lie("a checkpoint's compressed offset is not where its span starts");
	return 0;
}

/* At a member start: the previous member must end here, the next one's header at the
 * checkpoint's offset.  With @more, the input goes on past it (inflating continues). */
static int member_check(struct seek_cursor *cur, const uint8_t *in, const struct seek_cp *cp,
			bool more)
{
	uint8_t one;
	int zr;

	if (cur->member_uoff != cp->uoff || !cur->member_ended) {
		if (!more)
			return 0;
		cur->zs.next_out = &one;
		cur->zs.avail_out = 1;
		zr = inflate(&cur->zs, Z_NO_FLUSH);
		if (cur->zs.avail_out == 0 || (zr != Z_STREAM_END && zr != Z_OK && zr != Z_BUF_ERROR))
			return lie("a gzip member does not end where a checkpoint says");
		if (zr != Z_STREAM_END)
			return 0;  /* the input ends first: left to the inflate that goes on */
		if (seek_member_next(&cur->zs, &cur->raw) < 0)
			return lie("a gzip member's trailer is cut short");
		cur->member_uoff = cur->uoff;
		cur->member_pos = cp_start(&cur->si->cps[cur->cp]) + cursor_in_pos(cur, in);
		cur->member_ended = true;
	}
	if (cur->member_pos != cp->coff)
		return lie("a gzip member does not start where a checkpoint says");
	return 0;
}

int seek_trust_at_checkpoint(struct seek_cursor *cur, const uint8_t *in, bool more)
{
	const struct seek_index *si = cur->si;
	const struct seek_cp *cp;
	int r;

	if (!si->untrusted || cur->next_cp >= si->n_cps || cur->uoff < si->cps[cur->next_cp].uoff)
		return 0;
	cp = &si->cps[cur->next_cp];
	if (cur->uoff > cp->uoff)
		return lie("inflating passed a checkpoint");
	if (cur->shadow)
		return lie("a checkpoint follows a sparse window's within 32 KiB of output");
	if (cp->flags & CP_MEMBER_START) {
		r = member_check(cur, in, cp, more);
		if (r >= 0 && (more || (cur->member_ended && cur->member_uoff == cp->uoff)))
			cur->next_cp++;
		return r;
	}
	r = boundary_check(cur, in, cp);
	if (r >= 0)
		cur->next_cp++;
	return r;
}

uint64_t seek_trust_limit(const struct seek_cursor *cur, uint64_t want)
{
	const struct seek_index *si = cur->si;
	uint64_t left;

	if (cur->shadow)
		want = window_shadow_limit(cur->shadow, want);
	if (!si->untrusted || cur->next_cp >= si->n_cps)
		return want;
	left = si->cps[cur->next_cp].uoff - cur->uoff;
	return left < want ? left : want;
}

int seek_trust_shadow_start(struct seek_cursor *cur, const uint8_t *in)
{
	const struct seek_index *si = cur->si;
	const struct seek_cp *cp = &si->cps[cur->cp];

	if (!si->untrusted || !(cp->flags & CP_SPARSE))
		return 0;
	return window_shadow_new(si->windows + cp->win_off, si->windows + cp->mask_off,
				 cp->win_len, cp->bits, cp->bits ? in[0] : 0, &cur->shadow);
}

int seek_trust_shadow_step(struct seek_cursor *cur, const uint8_t *in, size_t in_len,
			   size_t out_len, int flush, const uint8_t *out)
{
	int r;

	if (!cur->shadow)
		return 0;
	r = window_shadow_step(cur->shadow, in, in_len, out_len, flush,
			       in_len - cur->zs.avail_in, out, out_len - cur->zs.avail_out);
	if (r == -EBADMSG)
		return lie("a sparse window leaves out a byte the stream after it refers to");
	/* Past its 32 KiB: what it proved stays proven (the checkpoint check needs no more). */
	if (r >= 0 && window_shadow_done(cur->shadow))
		cur->shadow = window_shadow_free(cur->shadow);
	return r;
}
