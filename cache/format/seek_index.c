/*
 * cache/format/seek_index.c: builds, serializes, parses and uses the seek index of a tar+gzip
 * layer (seek_index.h; the format is in docs/formats.md, "Seek indexes").
 *
 * The builder sees the layer once, as it is read whole: checkpoints and progress from the gzip
 * decoder (layer_unpack.c, which runs ahead of the tar reader), entries and file data from the
 * tar reader (layer_tar.c).  A file's data is cut into chunks where a checkpoint falls inside
 * it, so every chunk lies in one span and is inflated from the checkpoint before it.
 *
 * An index from elsewhere is untrusted input: seek_index_parse() checks every count, offset and
 * name before anything uses it, and every chunk it yields is verified by its sha256 after
 * inflating (by the fetcher), so a lying index can make reads fail but not serve other bytes.
 *
 * Load: one builder per layer import; an index holds ~120 bytes per entry, 56 per chunk and per
 * checkpoint the bytes of its window the stream after it uses, ~4 KiB of 32 (deflated as a
 * whole when serialized).
 */
#include "seek_index.h"
#include "seek_index_private.h"

#include <errno.h>
#include <string.h>
#include <zlib.h>

#include "cache/base/error.h"
#include "cache/base/log.h"
#include "cache/format/window_probe.h"

#define MAGIC "LZRSEEKI"
#define FILE_HEADER_SIZE 24     /* magic, u32 version, u32 flags, u64 body length */
#define BODY_HEADER_SIZE 80
#define CP_SIZE 32
#define ENTRY_SIZE 116
#define XATTR_SIZE 16
#define CHUNK_SIZE 56
#define ENTRY_HAS_LINK 1
#define ENTRY_HAS_DIGEST 2
/* What a cursor inflates the bytes before a chunk into: small, a mount parks many cursors. */
#define CURSOR_DISCARD_SIZE (16 * 1024)
#define MAX_CHECKPOINTS (1U << 20)
#define MAX_ENTRIES (1U << 22)
#define MAX_XATTRS (1U << 22)
#define MAX_CHUNKS (1U << 24)
#define NO_LINK UINT32_MAX
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

struct bytes {
	uint8_t *p;
	size_t n, allocated;
};

struct progress {
	uint64_t uoff, coff;
};

struct seek_builder {
	uint64_t span;
	char *refused;
	struct seek_cp *cps;
	size_t n_cps, cps_allocated;
	struct progress *progress;
	size_t n_progress, progress_allocated;
	struct bytes entries, xattrs, chunks, strings, windows;
	size_t n_entries, n_xattrs, n_chunks;
	/* The regular file whose data is coming: chunks [file_first_chunk, n_chunks) so far. */
	bool in_file;
	uint64_t data_off, pos, chunk_start;
	size_t file_first_chunk, next_cp;
	uint64_t last_cend;
	struct digest_ctx *hash;
	const struct seek_chunk_sink *sink;  /* NULL: chunks are only hashed */
	/* The last checkpoint's window, held until the probe has seen which of its bytes the
	 * stream after it refers to (window_probe.h); kept whole with sparse false. */
	bool sparse;
	struct window_probe *probe;
	size_t probe_cp;
	uint8_t *pending;       /* SEEK_WINDOW_SIZE bytes */
};

/* ---- Little-endian records ------------------------------------------------------------- */

static void put_u32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_u32(const uint8_t *p)
{
	uint32_t v = 0;

	for (int i = 3; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static uint64_t get_u64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

/* Appends @n bytes (zeroed when @src is NULL); returns where they went, or NULL. */
static uint8_t *bytes_append(struct bytes *b, const void *src, size_t n)
{
	uint8_t *p;

	if (n == 0)  /* nothing to copy (memcpy wants a buffer even then): any non-NULL will do */
		return b->p ? b->p + b->n : (uint8_t *)b;
	if (b->n + n < b->n || greedy_realloc((void **)&b->p, &b->allocated, b->n + n, 1) < 0)
		return NULL;
	p = b->p + b->n;
	if (src)
		memcpy(p, src, n);
	else
		memset(p, 0, n);
	b->n += n;
	return p;
}

/* Adds a string to the table (not NUL-terminated there). */
static int string_add(struct bytes *strings, const char *s, uint32_t *ret_off, uint32_t *ret_len)
{
	size_t len = strlen(s);

	if (strings->n + len > UINT32_MAX)
		return -EFBIG;
	*ret_off = (uint32_t)strings->n;
	*ret_len = (uint32_t)len;
	return bytes_append(strings, s, len) || len == 0 ? 0 : -ENOMEM;
}

/* ---- Building -------------------------------------------------------------------------- */

static void seek_builder_done(struct seek_builder *b)
{
	free(b->refused);
	window_probe_free(b->probe);
	free(b->pending);
	free(b->cps);
	free(b->progress);
	free_many(b->entries.p, b->xattrs.p, b->chunks.p, b->strings.p, b->windows.p);
	digest_ctx_free(b->hash);
}
DEFINE_FREE_FUNC(struct seek_builder, seek_builder_free, seek_builder_done);

int seek_builder_new(uint64_t span, struct seek_builder **ret)
{
	_cleanup_(seek_builder_freep) struct seek_builder *b = NULL;

	if (span == 0 || span > SEEK_SPAN_MAX)
		return -EINVAL;
	b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->span = span;
	b->sparse = true;
	b->pending = malloc(SEEK_WINDOW_SIZE);
	if (!b->pending)
		return -ENOMEM;
	/* Inflating can always start at the first member's header. */
	b->cps = calloc(1, sizeof(*b->cps));
	if (!b->cps)
		return -ENOMEM;
	b->cps[0] = (struct seek_cp) { .flags = CP_MEMBER_START };
	b->n_cps = b->cps_allocated = 1;
	*ret = TAKE_PTR(b);
	return 0;
}

void seek_builder_set_sink(struct seek_builder *b, const struct seek_chunk_sink *sink)
{
	b->sink = sink;
}

void seek_builder_refuse(struct seek_builder *b, const char *why)
{
	if (!b->refused)
		b->refused = strdup(why);
	if (!b->refused)
		b->refused = (char *)NULL;
}

void seek_builder_set_sparse(struct seek_builder *b, bool sparse)
{
	b->sparse = sparse;
}

/* Appends the pending window of checkpoint b->probe_cp to the window table: whole, or with
 * @used (a byte per window byte, window_probe_used()) as a sparse one (CP_SPARSE). */
static int window_keep(struct seek_builder *b, const uint8_t *used)
{
	struct seek_cp *cp = &b->cps[b->probe_cp];
	size_t first = 0, n = cp->win_len, all = 0;
	uint8_t *mask, *bytes;

	b->probe = window_probe_free(b->probe);
	for (size_t i = 0; used && i < n; i++)
		all += used[i];
	if (!used || all == n) {
		cp->win_off = (uint32_t)b->windows.n;
		return bytes_append(&b->windows, b->pending, n) ? 0 : -ENOMEM;
	}
	while (first < n && !used[first])
		first++;
	n -= first;
	if (b->windows.n + n + window_mask_len(n) > UINT32_MAX)
		return -EFBIG;
	cp->flags |= CP_SPARSE;
	cp->win_len = (uint32_t)n;
	cp->mask_off = (uint32_t)b->windows.n;
	cp->win_off = (uint32_t)(b->windows.n + window_mask_len(n));
	if (!bytes_append(&b->windows, NULL, n + window_mask_len(n)))
		return -ENOMEM;
	mask = b->windows.p + cp->mask_off;
	bytes = b->windows.p + cp->win_off;
	for (size_t i = 0; i < n; i++) {
		if (!used[first + i])
			continue;
		mask[i / 8] |= (uint8_t)(1U << (i % 8));
		bytes[i] = b->pending[first + i];
	}
	return 0;
}

int seek_builder_input(struct seek_builder *b, const void *in, size_t n)
{
	uint8_t used[SEEK_WINDOW_SIZE];
	int r;

	if (!b->probe || n == 0)
		return 0;
	r = window_probe_feed(b->probe, in, n);
	if (r == 0)
		return 0;
	if (r == 1)
		window_probe_used(b->probe, used);
	/* Bytes that do not inflate: the layer's read fails on them anyway. */
	return window_keep(b, r == 1 ? used : NULL);
}

bool seek_builder_wants_checkpoint(const struct seek_builder *b, uint64_t uoff)
{
	return uoff - b->cps[b->n_cps - 1].uoff >= b->span;
}

int seek_builder_checkpoint(struct seek_builder *b, uint64_t coff, uint64_t uoff, unsigned bits,
			    uint8_t prime_byte, bool member_start, const void *window,
			    size_t window_len)
{
	const struct seek_cp *last = &b->cps[b->n_cps - 1];
	struct seek_cp cp = { .coff = coff, .uoff = uoff, .bits = (uint8_t)bits,
			      .flags = member_start ? CP_MEMBER_START : 0,
			      .win_len = (uint32_t)window_len };
	int r;

	if (coff <= last->coff || uoff <= last->uoff || bits > 7 || window_len > SEEK_WINDOW_SIZE)
		return 0;  /* not a new place to start from */
	/* The window before is kept whole if its probe has not seen enough yet: a span shorter
	 * than 32 KiB of output, or the end of the stream. */
	r = b->probe ? window_keep(b, NULL) : 0;
	if (r < 0)
		return r;
	if (b->windows.n + window_len > UINT32_MAX)
		return -EFBIG;
	if (GREEDY_REALLOC(b->cps, b->cps_allocated, b->n_cps + 1) < 0)
		return -ENOMEM;
	b->cps[b->n_cps] = cp;
	b->probe_cp = b->n_cps++;
	if (window_len == 0)
		return 0;
	memcpy(b->pending, window, window_len);
	r = b->sparse ? window_probe_new(window_len, bits, prime_byte, &b->probe) : 0;
	if (r < 0)
		return r;
	return b->sparse ? 0 : window_keep(b, NULL);
}

int seek_builder_progress(struct seek_builder *b, uint64_t coff, uint64_t uoff)
{
	if (GREEDY_REALLOC(b->progress, b->progress_allocated, b->n_progress + 1) < 0)
		return -ENOMEM;
	b->progress[b->n_progress++] = (struct progress) { .uoff = uoff, .coff = coff };
	return 0;
}

/* The compressed offset by which uncompressed byte @uoff - 1 had come out; 0 if unknown. */
static uint64_t progress_coff(const struct seek_builder *b, uint64_t uoff)
{
	size_t lo = 0, hi = b->n_progress;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (b->progress[mid].uoff < uoff)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < b->n_progress ? b->progress[lo].coff : 0;
}

int seek_builder_file_begin(struct seek_builder *b, uint64_t data_off)
{
	int r;

	if (!b->hash) {
		r = digest_ctx_new(&b->hash);
		if (r < 0)
			return r;
	}
	b->in_file = true;
	b->data_off = b->pos = b->chunk_start = data_off;
	b->file_first_chunk = b->n_chunks;
	/* Files come in stream order: the checkpoint search goes on from the last one. */
	while (b->next_cp < b->n_cps && b->cps[b->next_cp].uoff <= data_off)
		b->next_cp++;
	return 0;
}

/* Ends the chunk [chunk_start, pos) of the current file. */
static int chunk_end(struct seek_builder *b)
{
	char digest[DIGEST_STRING_MAX];
	uint8_t *rec;
	int r;

	if (b->pos == b->chunk_start)
		return 0;
	digest_ctx_final(b->hash, digest);
	if (b->sink) {
		r = b->sink->end(b->sink->userdata, digest);
		if (r < 0)
			return r;
	}
	b->hash = digest_ctx_free(b->hash);
	r = digest_ctx_new(&b->hash);
	if (r < 0)
		return r;
	rec = bytes_append(&b->chunks, NULL, CHUNK_SIZE);
	if (!rec)
		return -ENOMEM;
	/* Strictly increasing (a byte more costs nothing), so that a span's chunks sorted by
	 * their range are in stream order: the fetcher inflates them in one pass. */
	b->last_cend = MAX(progress_coff(b, b->pos), b->last_cend + 1);
	put_u64(rec, b->chunk_start);
	put_u64(rec + 8, b->pos - b->chunk_start);
	put_u64(rec + 16, b->last_cend);
	(void)digest_parse_sha256(digest, rec + 24);
	b->n_chunks++;
	b->chunk_start = b->pos;
	return 0;
}

int seek_builder_data(struct seek_builder *b, const void *buf, size_t n)
{
	const uint8_t *p = buf;
	int r;

	if (!b->in_file)
		return -EINVAL;
	while (n > 0) {
		uint64_t cut = b->next_cp < b->n_cps ? b->cps[b->next_cp].uoff : UINT64_MAX;
		size_t take;

		if (cut <= b->pos) {
			b->next_cp++;
			continue;
		}
		take = cut - b->pos < n ? (size_t)(cut - b->pos) : n;
		digest_ctx_update(b->hash, p, take);
		if (b->sink && take > 0) {
			r = b->sink->write(b->sink->userdata, p, take);
			if (r < 0)
				return r;
		}
		b->pos += take;
		p += take;
		n -= take;
		if (b->pos == cut) {
			r = chunk_end(b);
			if (r < 0)
				return r;
			b->next_cp++;
		}
	}
	return 0;
}

static int xattrs_add(struct seek_builder *b, const struct entry *e, uint32_t *ret_first)
{
	*ret_first = (uint32_t)b->n_xattrs;
	for (size_t i = 0; i < e->n_xattrs; i++) {
		uint32_t name_off, name_len, value_off, value_len;
		uint8_t *rec;
		int r;

		r = string_add(&b->strings, e->xattrs[i].name, &name_off, &name_len);
		if (r < 0)
			return r;
		if (b->strings.n + e->xattrs[i].size > UINT32_MAX)
			return -EFBIG;
		value_off = (uint32_t)b->strings.n;
		value_len = (uint32_t)e->xattrs[i].size;
		if (value_len > 0 && !bytes_append(&b->strings, e->xattrs[i].value, value_len))
			return -ENOMEM;
		rec = bytes_append(&b->xattrs, NULL, XATTR_SIZE);
		if (!rec)
			return -ENOMEM;
		put_u32(rec, name_off);
		put_u32(rec + 4, name_len);
		put_u32(rec + 8, value_off);
		put_u32(rec + 12, value_len);
		b->n_xattrs++;
	}
	return 0;
}

/* Writes @e's record; a regular file takes the chunks of the data that came before it. */
static int entry_record(struct seek_builder *b, const struct entry *e, uint32_t first_chunk,
			uint32_t n_chunks, uint64_t data_off)
{
	uint32_t path_off, path_len, link_off = 0, link_len = NO_LINK, first_xattr;
	uint8_t *rec;
	int r;

	r = string_add(&b->strings, e->path, &path_off, &path_len);
	if (r >= 0 && e->link_target)
		r = string_add(&b->strings, e->link_target, &link_off, &link_len);
	if (r >= 0)
		r = xattrs_add(b, e, &first_xattr);
	if (r < 0)
		return r;
	rec = bytes_append(&b->entries, NULL, ENTRY_SIZE);
	if (!rec)
		return -ENOMEM;
	rec[0] = (uint8_t)e->type;
	rec[1] = (e->link_target ? ENTRY_HAS_LINK : 0) | (e->digest ? ENTRY_HAS_DIGEST : 0);
	put_u32(rec + 4, e->mode);
	put_u32(rec + 8, e->uid);
	put_u32(rec + 12, e->gid);
	put_u32(rec + 16, e->dev_major);
	put_u32(rec + 20, e->dev_minor);
	put_u32(rec + 24, e->mtime_nsec);
	put_u64(rec + 28, e->size);
	put_u64(rec + 36, (uint64_t)e->mtime_sec);
	put_u64(rec + 44, data_off);
	put_u32(rec + 52, path_off);
	put_u32(rec + 56, path_len);
	put_u32(rec + 60, link_off);
	put_u32(rec + 64, link_len);
	put_u32(rec + 68, first_xattr);
	put_u32(rec + 72, (uint32_t)e->n_xattrs);
	put_u32(rec + 76, first_chunk);
	put_u32(rec + 80, n_chunks);
	if (e->digest && digest_parse_sha256(e->digest, rec + 84) < 0)
		return -EINVAL;
	b->n_entries++;
	return 0;
}

int seek_builder_entry(struct seek_builder *b, const struct entry *e)
{
	uint64_t data_off = 0;
	size_t first = b->n_chunks;
	int r;

	if (b->n_entries >= MAX_ENTRIES || b->n_chunks >= MAX_CHUNKS) {
		seek_builder_refuse(b, "the layer has too many entries or chunks");
		return 0;
	}
	if (e->type == ENTRY_REG) {
		if (!b->in_file)
			return -EINVAL;
		r = chunk_end(b);
		if (r < 0)
			return r;
		b->in_file = false;
		if (b->pos - b->data_off != e->size) {
			seek_builder_refuse(b, "a file's data is not one run of the stream (sparse)");
			return 0;
		}
		data_off = b->data_off;
		first = b->file_first_chunk;
	}
	return entry_record(b, e, (uint32_t)first, (uint32_t)(b->n_chunks - first), data_off);
}

static void body_header(const struct seek_builder *b, uint8_t *h, const uint8_t layer[32],
			uint64_t blob_size, uint64_t tar_size)
{
	memcpy(h, layer, 32);
	put_u64(h + 32, blob_size);
	put_u64(h + 40, tar_size);
	put_u32(h + 48, (uint32_t)b->span);
	put_u32(h + 52, (uint32_t)b->n_cps);
	put_u32(h + 56, (uint32_t)b->n_entries);
	put_u32(h + 60, (uint32_t)b->n_xattrs);
	put_u32(h + 64, (uint32_t)b->n_chunks);
	put_u32(h + 68, (uint32_t)b->strings.n);
	put_u32(h + 72, (uint32_t)b->windows.n);
	put_u32(h + 76, 0);
}

static int body_build(const struct seek_builder *b, const uint8_t layer[32], uint64_t blob_size,
		      uint64_t tar_size, struct bytes *body)
{
	uint8_t *h = bytes_append(body, NULL, BODY_HEADER_SIZE);

	if (!h)
		return -ENOMEM;
	body_header(b, h, layer, blob_size, tar_size);
	for (size_t i = 0; i < b->n_cps; i++) {
		uint8_t *rec = bytes_append(body, NULL, CP_SIZE);

		if (!rec)
			return -ENOMEM;
		put_u64(rec, b->cps[i].coff);
		put_u64(rec + 8, b->cps[i].uoff);
		rec[16] = b->cps[i].bits;
		rec[17] = b->cps[i].flags;
		put_u32(rec + 20, b->cps[i].flags & CP_SPARSE ? b->cps[i].mask_off :
							      b->cps[i].win_off);
		put_u32(rec + 24, b->cps[i].win_len);
	}
	if ((b->entries.n > 0 && !bytes_append(body, b->entries.p, b->entries.n)) ||
	    (b->xattrs.n > 0 && !bytes_append(body, b->xattrs.p, b->xattrs.n)) ||
	    (b->chunks.n > 0 && !bytes_append(body, b->chunks.p, b->chunks.n)) ||
	    (b->strings.n > 0 && !bytes_append(body, b->strings.p, b->strings.n)) ||
	    (b->windows.n > 0 && !bytes_append(body, b->windows.p, b->windows.n)))
		return -ENOMEM;
	return 0;
}

/* The file: its header, then the body deflated (zlib format, its Adler-32 checked on read). */
static int file_build(const struct bytes *body, void **ret, size_t *ret_len)
{
	uLongf zlen = compressBound(body->n);
	_cleanup_free_ uint8_t *out = NULL;

	out = malloc(FILE_HEADER_SIZE + zlen);
	if (!out)
		return -ENOMEM;
	memcpy(out, MAGIC, 8);
	put_u32(out + 8, SEEK_INDEX_VERSION);
	put_u32(out + 12, 0);
	put_u64(out + 16, body->n);
	if (compress2(out + FILE_HEADER_SIZE, &zlen, body->p, body->n, 6) != Z_OK)
		return -ENOMEM;
	*ret_len = FILE_HEADER_SIZE + zlen;
	*ret = TAKE_PTR(out);
	return 0;
}

/* The checkpoints of the last span must reach the end, so that no chunk needs more than
 * SEEK_SPAN_MAX inflated before it. */
static int spans_check(const struct seek_builder *b, uint64_t tar_size)
{
	for (size_t i = 0; i < b->n_cps; i++) {
		uint64_t end = i + 1 < b->n_cps ? b->cps[i + 1].uoff : tar_size;

		if (end - b->cps[i].uoff > SEEK_SPAN_MAX)
			return error_set(-EOPNOTSUPP, "the layer has no deflate block boundary for "
					 "%llu MiB", (unsigned long long)(SEEK_SPAN_MAX >> 20));
	}
	return 0;
}

int seek_builder_finish(struct seek_builder *b, const char *layer_digest, uint64_t blob_size,
			uint64_t tar_size, void **ret, size_t *ret_len)
{
	struct bytes body = {};
	uint8_t layer[32];
	int r;

	if (b->refused)
		return error_set(-EOPNOTSUPP, "%s", b->refused);
	if (b->in_file)
		return -EINVAL;
	/* The end of the last gzip member is no place to start: nothing follows. */
	while (b->n_cps > 1 && (b->cps[b->n_cps - 1].uoff >= tar_size ||
				b->cps[b->n_cps - 1].coff >= blob_size))
		b->n_cps--;
	r = b->probe && b->probe_cp < b->n_cps ? window_keep(b, NULL) : 0;
	if (r < 0)
		return r;
	r = digest_parse_sha256(layer_digest, layer);
	if (r < 0)
		return r;
	r = spans_check(b, tar_size);
	if (r < 0)
		return r;
	/* The last chunks' ends, made distinct, may pass the blob's end. */
	for (size_t i = 0; i < b->n_chunks; i++)
		if (get_u64(b->chunks.p + i * CHUNK_SIZE + 16) > blob_size)
			put_u64(b->chunks.p + i * CHUNK_SIZE + 16, blob_size);
	r = body_build(b, layer, blob_size, tar_size, &body);
	if (r >= 0 && body.n > SEEK_INDEX_MAX)
		r = error_set(-EFBIG, "the seek index would be larger than %llu MiB",
			      (unsigned long long)(SEEK_INDEX_MAX >> 20));
	if (r >= 0)
		r = file_build(&body, ret, ret_len);
	free(body.p);
	return r;
}

/* ---- Parsing --------------------------------------------------------------------------- */

static void seek_index_done(struct seek_index *si)
{
	free(si->body);
	free(si->cps);
	free(si->chunks);
	free(si->checked);
}
DEFINE_FREE_FUNC(struct seek_index, seek_index_free, seek_index_done);

static int bad(const char *what)
{
	return error_set(-EBADMSG, "seek index: %s", what);
}

static int file_unpack(const uint8_t *p, size_t len, uint8_t **ret, size_t *ret_len,
		       unsigned *ret_version)
{
	_cleanup_free_ uint8_t *body = NULL;
	uint64_t raw_len;
	uLongf dlen;

	if (len < FILE_HEADER_SIZE || memcmp(p, MAGIC, 8) != 0)
		return bad("not a lazyroot seek index");
	*ret_version = get_u32(p + 8);
	if (*ret_version < 1 || *ret_version > SEEK_INDEX_VERSION)
		return error_set(-EBADMSG, "seek index: version %u is not supported (1 to %u)",
				 *ret_version, SEEK_INDEX_VERSION);
	raw_len = get_u64(p + 16);
	if (raw_len > SEEK_INDEX_MAX)
		return error_set(-EFBIG, "seek index: larger than %llu MiB",
				 (unsigned long long)(SEEK_INDEX_MAX >> 20));
	if (raw_len < BODY_HEADER_SIZE)
		return bad("truncated");
	body = malloc(raw_len);
	if (!body)
		return -ENOMEM;
	dlen = raw_len;
	if (uncompress(body, &dlen, p + FILE_HEADER_SIZE, len - FILE_HEADER_SIZE) != Z_OK ||
	    dlen != raw_len)
		return bad("its body does not inflate to its length (truncated or corrupt)");
	*ret = TAKE_PTR(body);
	*ret_len = raw_len;
	return 0;
}

/* Counts and the layout of the tables; the tables must fill the body exactly. */
static int layout_parse(struct seek_index *si, size_t *ret_n_cps)
{
	const uint8_t *h = si->body, *p;
	uint64_t total;
	size_t n_cps = 0;

	memcpy(si->layer, h, 32);
	si->blob_size = get_u64(h + 32);
	si->tar_size = get_u64(h + 40);
	si->span = get_u32(h + 48);
	n_cps = get_u32(h + 52);
	si->n_entries = get_u32(h + 56);
	si->n_xattrs = get_u32(h + 60);
	si->n_chunks = get_u32(h + 64);
	si->strings_len = get_u32(h + 68);
	si->windows_len = get_u32(h + 72);
	if (n_cps < 1 || n_cps > MAX_CHECKPOINTS || si->n_entries > MAX_ENTRIES ||
	    si->n_xattrs > MAX_XATTRS || si->n_chunks > MAX_CHUNKS)
		return error_set(-EFBIG, "seek index: too many checkpoints, entries or chunks");
	total = BODY_HEADER_SIZE + (uint64_t)n_cps * CP_SIZE + (uint64_t)si->n_entries * ENTRY_SIZE +
		(uint64_t)si->n_xattrs * XATTR_SIZE + (uint64_t)si->n_chunks * CHUNK_SIZE +
		si->strings_len + si->windows_len;
	if (total != si->body_len)
		return bad("its tables do not fill its body");
	p = si->body + BODY_HEADER_SIZE + n_cps * CP_SIZE;
	si->entries = p;
	si->xattrs = p += si->n_entries * ENTRY_SIZE;
	p += si->n_xattrs * XATTR_SIZE;
	si->strings = p + si->n_chunks * CHUNK_SIZE;
	si->windows = si->strings + si->strings_len;
	*ret_n_cps = n_cps;
	return 0;
}

/* The unused bytes of a sparse window are 0, and the first byte is used (those before it are
 * dropped): one layer, one index. */
static bool sparse_window_valid(const struct seek_index *si, const struct seek_cp *cp)
{
	const uint8_t *mask = si->windows + cp->mask_off, *bytes = si->windows + cp->win_off;

	if (cp->win_len > 0 && !window_mask_used(mask, 0))
		return false;
	/* No bit set past the window's end in the mask's last byte. */
	if (cp->win_len % 8 && mask[cp->win_len / 8] >> (cp->win_len % 8))
		return false;
	for (size_t i = 0; i < cp->win_len; i++)
		if (!window_mask_used(mask, i) && bytes[i] != 0)
			return false;
	return true;
}

static int cps_parse(struct seek_index *si, size_t n)
{
	const uint8_t *rec = si->body + BODY_HEADER_SIZE;

	si->cps = calloc(n, sizeof(*si->cps));
	if (!si->cps)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++, rec += CP_SIZE) {
		struct seek_cp *cp = &si->cps[i];
		uint64_t end;

		*cp = (struct seek_cp) { .coff = get_u64(rec), .uoff = get_u64(rec + 8),
					 .bits = rec[16], .flags = rec[17],
					 .win_off = get_u32(rec + 20), .win_len = get_u32(rec + 24) };
		if (cp->bits > 7 || (cp->flags & ~(CP_MEMBER_START | CP_SPARSE)) ||
		    ((cp->flags & CP_MEMBER_START) && (cp->bits || cp->win_len || cp->flags != 1)) ||
		    (cp->bits && cp->coff == 0) || ((cp->flags & CP_SPARSE) && si->version < 2))
			return bad("a checkpoint is malformed");
		if (i == 0 && (cp->coff != 0 || cp->uoff != 0 || !cp->flags))
			return bad("the first checkpoint is not the start of the layer");
		if (i > 0 && (cp->uoff <= si->cps[i - 1].uoff ||
			      cp_start(cp) <= cp_start(&si->cps[i - 1])))
			return bad("checkpoint offsets are not increasing");
		if (cp->coff >= si->blob_size || cp->uoff >= si->tar_size)
			return bad("a checkpoint is outside the layer");
		if (cp->flags & CP_SPARSE) {
			cp->mask_off = cp->win_off;
			cp->win_off += window_mask_len(cp->win_len);
		}
		if (cp->win_len > SEEK_WINDOW_SIZE || cp->win_off > si->windows_len ||
		    cp->win_off < cp->mask_off || cp->win_len > si->windows_len - cp->win_off)
			return bad("a checkpoint's window is outside the index");
		if ((cp->flags & CP_SPARSE) && !sparse_window_valid(si, cp))
			return bad("a sparse window keeps unused bytes");
		end = i + 1 < n ? get_u64(rec + CP_SIZE + 8) : si->tar_size;
		if (end > cp->uoff && end - cp->uoff > SEEK_SPAN_MAX)
			return bad("checkpoints are too far apart");
	}
	si->n_cps = n;
	return 0;
}

/* The last checkpoint at or before @uoff. */
size_t seek_cp_find_uoff(const struct seek_index *si, uint64_t uoff)
{
	size_t lo = 0, hi = si->n_cps;

	while (hi - lo > 1) {
		size_t mid = lo + (hi - lo) / 2;

		if (si->cps[mid].uoff <= uoff)
			lo = mid;
		else
			hi = mid;
	}
	return lo;
}

static int chunks_parse(struct seek_index *si)
{
	const uint8_t *rec = si->xattrs + si->n_xattrs * XATTR_SIZE;
	uint64_t prev_end = 0;

	si->chunks = calloc(si->n_chunks ?: 1, sizeof(*si->chunks));
	if (!si->chunks)
		return -ENOMEM;
	for (size_t i = 0; i < si->n_chunks; i++, rec += CHUNK_SIZE) {
		struct seek_chunk *c = &si->chunks[i];
		const struct seek_cp *cp;
		uint64_t span_end;

		*c = (struct seek_chunk) { .uoff = get_u64(rec), .size = get_u64(rec + 8),
					   .cend = get_u64(rec + 16) };
		memcpy(c->digest, rec + 24, 32);
		if (c->size == 0 || c->uoff < prev_end || c->uoff > si->tar_size ||
		    c->size > si->tar_size - c->uoff)
			return bad("chunk offsets are not increasing or outside the layer");
		c->cp = c->start_cp = (uint32_t)seek_cp_find_uoff(si, c->uoff);
		cp = &si->cps[c->cp];
		span_end = c->cp + 1 < si->n_cps ? si->cps[c->cp + 1].uoff : si->tar_size;
		if (c->uoff + c->size > span_end)
			return bad("a chunk crosses a checkpoint");
		if (c->cend <= cp_start(cp) || c->cend > si->blob_size)
			return bad("a chunk's compressed end is outside its span");
		prev_end = c->uoff + c->size;
	}
	return 0;
}

void seek_entry_buf_done(struct entry_buf *eb)
{
	free_many(eb->path, eb->link, eb->names, eb->xattrs, eb->chunks, eb->digests);
	*eb = (struct entry_buf) {};
}

/* A string of the table, NUL-terminated, with no NUL inside. */
static int string_copy(const struct seek_index *si, uint32_t off, uint32_t len, char **ret)
{
	if (off > si->strings_len || len > si->strings_len - off ||
	    memchr(si->strings + off, 0, len))
		return bad("a name is outside the string table or holds a NUL");
	*ret = strndup((const char *)si->strings + off, len);
	return *ret ? 0 : -ENOMEM;
}

/* A path as the index holds it must already be normalised: nothing to clamp, nothing above
 * the root. */
static int path_check(const char *path)
{
	_cleanup_free_ char *n = strdup(path);

	if (!n)
		return -ENOMEM;
	if (entry_path_normalize(n) < 0 || !streq(n, path))
		return bad("a path is not normalised or escapes the root");
	return 0;
}

static int xattrs_decode(const struct seek_index *si, const uint8_t *rec, struct entry_buf *eb)
{
	uint32_t first = get_u32(rec + 68), n = get_u32(rec + 72);
	size_t names_len = 0;

	if (first > si->n_xattrs || n > si->n_xattrs - first || n > 1024)
		return bad("an entry's xattrs are outside the index");
	if (n == 0)
		return 0;
	eb->xattrs = calloc(n, sizeof(*eb->xattrs));
	eb->names = malloc(n * 256);
	if (!eb->xattrs || !eb->names)
		return -ENOMEM;
	for (uint32_t i = 0; i < n; i++) {
		const uint8_t *x = si->xattrs + (size_t)(first + i) * XATTR_SIZE;
		uint32_t no = get_u32(x), nl = get_u32(x + 4), vo = get_u32(x + 8), vl = get_u32(x + 12);

		if (nl == 0 || nl > 255 || no > si->strings_len || nl > si->strings_len - no ||
		    memchr(si->strings + no, 0, nl) || vo > si->strings_len ||
		    vl > si->strings_len - vo || vl > 65536)
			return bad("an xattr is malformed");
		memcpy(eb->names + names_len, si->strings + no, nl);
		eb->names[names_len + nl] = '\0';
		eb->xattrs[i] = (struct xattr) { .name = eb->names + names_len,
						 .value = si->strings + vo, .size = vl };
		names_len += 256;
	}
	eb->e.xattrs = eb->xattrs;
	eb->e.n_xattrs = n;
	return 0;
}

/* A regular file's chunks: the next ones of the table, tiling [data_off, +size) after the
 * previous file's data. */
static int chunks_decode(const struct seek_index *si, const uint8_t *rec, uint64_t data_off,
			 size_t *chunk_next, uint64_t *data_end, struct entry_buf *eb)
{
	uint32_t first = get_u32(rec + 76), n = get_u32(rec + 80);
	uint64_t pos = data_off;

	if (first != *chunk_next || n > si->n_chunks - first || (n == 0) != (eb->e.size == 0) ||
	    data_off < *data_end || data_off > si->tar_size || eb->e.size > si->tar_size - data_off)
		return bad("a file's data or chunks are out of order or outside the layer");
	eb->chunks = calloc(n ?: 1, sizeof(*eb->chunks));
	eb->digests = calloc(n ?: 1, sizeof(*eb->digests));
	if (!eb->chunks || !eb->digests)
		return -ENOMEM;
	for (uint32_t i = 0; i < n; i++) {
		const struct seek_chunk *c = &si->chunks[first + i];
		const struct seek_cp *cp = &si->cps[c->start_cp];

		if (c->uoff != pos)
			return bad("a file's chunks do not tile its data");
		digest_format_sha256(c->digest, eb->digests[i]);
		eb->chunks[i] = (struct chunk) { .file_offset = pos - data_off, .size = c->size,
						 .blob_offset = cp_start(cp),
						 .blob_length = c->cend - cp_start(cp),
						 .digest = eb->digests[i] };
		pos += c->size;
	}
	if (pos != data_off + eb->e.size)
		return bad("a file's chunks do not tile its data");
	*chunk_next += n;
	*data_end = pos;
	eb->e.chunks = eb->chunks;
	eb->e.n_chunks = n;
	return 0;
}

static int entry_fields(const uint8_t *rec, struct entry *e)
{
	*e = (struct entry) { .type = rec[0], .mode = get_u32(rec + 4), .uid = get_u32(rec + 8),
			      .gid = get_u32(rec + 12), .dev_major = get_u32(rec + 16),
			      .dev_minor = get_u32(rec + 20), .mtime_nsec = get_u32(rec + 24),
			      .size = get_u64(rec + 28), .mtime_sec = (int64_t)get_u64(rec + 36) };
	if (rec[0] > ENTRY_FIFO || (e->mode & ~07777u) || e->mtime_nsec >= 1000000000u ||
	    (rec[1] & ~(ENTRY_HAS_LINK | ENTRY_HAS_DIGEST)))
		return bad("an entry's type, mode or time is invalid");
	if ((e->type == ENTRY_REG) != !!(rec[1] & ENTRY_HAS_DIGEST) ||
	    (e->type != ENTRY_REG && (e->size != 0 || get_u32(rec + 80) != 0)) ||
	    (e->type == ENTRY_SYMLINK || e->type == ENTRY_HARDLINK) != !!(rec[1] & ENTRY_HAS_LINK))
		return bad("an entry's fields do not fit its type");
	return 0;
}

static int entry_names(const struct seek_index *si, const uint8_t *rec, struct entry_buf *eb)
{
	int r;

	r = string_copy(si, get_u32(rec + 52), get_u32(rec + 56), &eb->path);
	if (r >= 0)
		r = path_check(eb->path);
	if (r < 0)
		return r;
	eb->e.path = eb->path;
	if (!*eb->path && eb->e.type != ENTRY_DIR)
		return bad("the root is not a directory");
	if (entry_check_whiteout(eb->path, eb->e.type) < 0)
		return bad("an entry is not a valid whiteout");
	if (!(rec[1] & ENTRY_HAS_LINK))
		return 0;
	r = string_copy(si, get_u32(rec + 60), get_u32(rec + 64), &eb->link);
	if (r < 0)
		return r;
	if (eb->e.type == ENTRY_HARDLINK && (path_check(eb->link) < 0 || !*eb->link ||
					      streq(eb->link, eb->path)))
		return bad("a hard link's target is invalid");
	if (strlen(eb->link) > 4095)
		return bad("a symlink's target is too long");
	eb->e.link_target = eb->link;
	return 0;
}

static int entry_decode(const struct seek_index *si, size_t i, size_t *chunk_next,
			uint64_t *data_end, struct entry_buf *eb)
{
	const uint8_t *rec = si->entries + i * ENTRY_SIZE;
	int r;

	r = entry_fields(rec, &eb->e);
	if (r >= 0)
		r = entry_names(si, rec, eb);
	if (r >= 0)
		r = xattrs_decode(si, rec, eb);
	if (r >= 0 && eb->e.type == ENTRY_REG) {
		r = chunks_decode(si, rec, get_u64(rec + 44), chunk_next, data_end, eb);
		digest_format_sha256(rec + 84, eb->digest);
		eb->e.digest = eb->digest;
	}
	return r;
}

int seek_entry_decode(const struct seek_index *si, size_t i, struct entry_buf *eb)
{
	const uint8_t *rec = si->entries + i * ENTRY_SIZE;
	size_t chunk_next = get_u32(rec + 76);
	uint64_t data_end = 0;

	*eb = (struct entry_buf) {};
	return entry_decode(si, i, &chunk_next, &data_end, eb);
}

/* Which file each chunk belongs to (the tables were checked: the chunks of the files tile the
 * chunk table in order). */
static void chunks_owners(struct seek_index *si)
{
	for (size_t i = 0; i < si->n_entries; i++) {
		const uint8_t *rec = si->entries + i * ENTRY_SIZE;
		uint32_t first = get_u32(rec + 76), n = get_u32(rec + 80);

		if (rec[0] != ENTRY_REG)
			continue;
		for (uint32_t k = first; k < first + n; k++)
			si->chunks[k].entry = (uint32_t)i;
	}
}

static int entries_walk(const struct seek_index *si,
			int (*cb)(void *userdata, const struct entry *e), void *userdata)
{
	size_t chunk_next = 0;
	uint64_t data_end = 0;
	int r = 0;

	for (size_t i = 0; i < si->n_entries && r >= 0; i++) {
		struct entry_buf eb = {};

		r = entry_decode(si, i, &chunk_next, &data_end, &eb);
		if (r >= 0 && cb)
			r = cb(userdata, &eb.e);
		seek_entry_buf_done(&eb);
	}
	if (r >= 0 && chunk_next != si->n_chunks)
		return bad("chunks belong to no file");
	return r;
}

int seek_index_parse(const void *buf, size_t len, const char *layer_digest, uint64_t blob_size,
		     struct seek_index **ret)
{
	_cleanup_(seek_index_freep) struct seek_index *si = NULL;
	uint8_t want[32];
	size_t n_cps = 0;
	int r;

	si = calloc(1, sizeof(*si));
	if (!si)
		return -ENOMEM;
	r = file_unpack(buf, len, &si->body, &si->body_len, &si->version);
	if (r >= 0)
		r = layout_parse(si, &n_cps);
	if (r < 0)
		return r;
	if (layer_digest && (digest_parse_sha256(layer_digest, want) < 0 ||
			     memcmp(want, si->layer, 32) != 0))
		return bad("it is the index of another layer");
	if ((blob_size && si->blob_size != blob_size) || si->blob_size == 0 || si->tar_size == 0)
		return bad("its layer size is not the layer's");
	if (si->span == 0 || si->span > SEEK_SPAN_MAX)
		return bad("its span is invalid");
	r = cps_parse(si, n_cps);
	if (r >= 0)
		r = chunks_parse(si);
	if (r >= 0)
		r = entries_walk(si, NULL, NULL);
	if (r < 0)
		return r;
	chunks_owners(si);
	*ret = TAKE_PTR(si);
	return 0;
}

void seek_index_get_info(const struct seek_index *si, struct seek_index_info *ret)
{
	*ret = (struct seek_index_info) { .blob_size = si->blob_size, .tar_size = si->tar_size,
					  .span = si->span, .n_entries = si->n_entries,
					  .n_chunks = si->n_chunks, .n_checkpoints = si->n_cps };
	digest_format_sha256(si->layer, ret->layer_digest);
}

int seek_index_foreach(const struct seek_index *si,
		       int (*cb)(void *userdata, const struct entry *e), void *userdata)
{
	return entries_walk(si, cb, userdata);
}

/* ---- Reading a chunk ------------------------------------------------------------------- */

/* The checkpoint whose compressed bytes start at @blob_offset, or -ENOENT. */
int seek_cp_find_start(const struct seek_index *si, uint64_t blob_offset, size_t *ret)
{
	size_t lo = 0, hi = si->n_cps;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (cp_start(&si->cps[mid]) < blob_offset)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == si->n_cps || cp_start(&si->cps[lo]) != blob_offset)
		return -ENOENT;
	*ret = lo;
	return 0;
}

/* The first chunk inflated from checkpoint @cp (chunks are in offset order, so are the
 * checkpoints they start from), or n_chunks. */
static size_t chunk_first(const struct seek_index *si, size_t cp)
{
	size_t lo = 0, hi = si->n_chunks;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (si->chunks[mid].start_cp < cp)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

int seek_chunk_find(const struct seek_index *si, size_t cp, const uint8_t digest[32],
		    uint64_t size, const struct seek_chunk **ret)
{
	for (size_t lo = chunk_first(si, cp); lo < si->n_chunks && si->chunks[lo].start_cp == cp;
	     lo++)
		if (si->chunks[lo].size == size && memcmp(si->chunks[lo].digest, digest, 32) == 0) {
			*ret = &si->chunks[lo];
			return 0;
		}
	return -ENOENT;
}

int seek_index_span_foreach(const struct seek_index *si, uint64_t blob_offset,
			    int (*cb)(void *userdata, const char *digest, uint64_t size,
				      uint64_t blob_length),
			    void *userdata)
{
	char digest[DIGEST_STRING_MAX];
	size_t cp;
	int r;

	r = seek_cp_find_start(si, blob_offset, &cp);
	if (r < 0)
		return r;
	for (size_t i = chunk_first(si, cp); i < si->n_chunks && si->chunks[i].start_cp == cp; i++) {
		digest_format_sha256(si->chunks[i].digest, digest);
		r = cb(userdata, digest, si->chunks[i].size, si->chunks[i].cend - blob_offset);
		if (r < 0)
			return r;
	}
	return 0;
}

int seek_index_span_next(const struct seek_index *si, uint64_t blob_offset, uint64_t *ret)
{
	size_t cp;
	int r;

	r = seek_cp_find_start(si, blob_offset, &cp);
	if (r < 0)
		return r;
	/* Checkpoints whose bytes start in the same byte (a bit offset apart) share a start. */
	while (++cp < si->n_cps)
		if (cp_start(&si->cps[cp]) > blob_offset) {
			*ret = cp_start(&si->cps[cp]);
			return 0;
		}
	return -ENOENT;
}

/* Where a stream ends inside the bytes: the gzip trailer (raw mode, which does not read it),
 * then the next member's header, which zlib's gzip mode reads. */
int seek_member_next(z_stream *zs, bool *raw)
{
	if (*raw) {
		if (zs->avail_in < 8)
			return -EBADMSG;
		zs->next_in += 8;
		zs->avail_in -= 8;
		*raw = false;
		return inflateReset2(zs, 15 + 16) == Z_OK ? 0 : -ENOMEM;
	}
	return inflateReset(zs) == Z_OK ? 0 : -ENOMEM;
}

static int inflate_start(const struct seek_index *si, const struct seek_cp *cp, z_stream *zs,
			 const uint8_t *in, size_t in_len, bool *ret_raw)
{
	bool raw = !(cp->flags & CP_MEMBER_START);
	size_t used = 0;

	if (in_len > UINT32_MAX || (cp->bits && in_len < 1))
		return -EBADMSG;
	if (inflateInit2(zs, raw ? -15 : 15 + 16) != Z_OK)
		return -ENOMEM;
	if (raw && cp->bits) {
		if (inflatePrime(zs, cp->bits, in[0] >> (8 - cp->bits)) != Z_OK)
			return -EBADMSG;
		used = 1;
	}
	if (raw && cp->win_len > 0 &&
	    inflateSetDictionary(zs, si->windows + cp->win_off, cp->win_len) != Z_OK)
		return -EBADMSG;
	zs->next_in = (uint8_t *)in + used;
	zs->avail_in = (uInt)(in_len - used);
	*ret_raw = raw;
	return 0;
}

int seek_cursor_new(struct seek_cursor **ret)
{
	struct seek_cursor *cur = calloc(1, sizeof(*cur));

	if (!cur)
		return -ENOMEM;
	cur->discard = malloc(CURSOR_DISCARD_SIZE);
	if (!cur->discard) {
		free(cur);
		return -ENOMEM;
	}
	*ret = cur;
	return 0;
}

static void cursor_stop(struct seek_cursor *cur)
{
	if (cur->active)
		(void)inflateEnd(&cur->zs);
	cur->active = false;
	cur->shadow = window_shadow_free(cur->shadow);
}

struct seek_cursor *seek_cursor_free(struct seek_cursor *cur)
{
	if (cur) {
		cursor_stop(cur);
		free(cur->discard);
		free(cur->head);
		free(cur);
	}
	return NULL;
}

/* Whether @cur can go on to uncompressed offset @uoff of checkpoint @cp's span with an input
 * that starts @in_skip bytes after the checkpoint's start. */
static bool cursor_reaches(const struct seek_cursor *cur, const struct seek_index *si, size_t cp,
			   uint64_t uoff, uint64_t in_skip)
{
	return cur->active && cur->si == si && cur->cp == cp && cur->uoff <= uoff &&
	       cur->consumed >= in_skip;
}

/* Starts @cur at checkpoint @cp unless it is already there, at or before @uoff.  @in holds
 * the span's input from @in_skip bytes after the checkpoint's start: only a cursor already
 * past that can use it (-ENODATA otherwise). */
static int cursor_seek(struct seek_cursor *cur, const struct seek_index *si, size_t cp,
		       uint64_t uoff, const uint8_t *in, uint64_t in_skip, size_t in_len)
{
	int r;

	if (cursor_reaches(cur, si, cp, uoff, in_skip) && cur->consumed - in_skip <= in_len) {
		cur->in_skip = in_skip;
		cur->zs.next_in = (uint8_t *)in + (cur->consumed - in_skip);
		cur->zs.avail_in = (uInt)(in_len - (cur->consumed - in_skip));
		return 0;
	}
	if (in_skip > 0)
		return -ENODATA;
	cursor_stop(cur);
	/* zlib's state points back at the z_stream: it is set up in place, never copied. */
	memset(&cur->zs, 0, sizeof(cur->zs));
	r = inflate_start(si, &si->cps[cp], &cur->zs, in, in_len, &cur->raw);
	if (r < 0) {
		(void)inflateEnd(&cur->zs);
		return r;
	}
	cur->si = si;
	cur->cp = cp;
	cur->active = true;
	cur->uoff = si->cps[cp].uoff;
	cur->consumed = cur->in_skip = 0;
	cur->next_cp = cp + 1;
	cur->member_ended = false;
	r = seek_trust_shadow_start(cur, in);
	if (r < 0)
		cursor_stop(cur);
	return r;
}

/* After inflate() left @want bytes at @dst from uncompressed offset @from: an untrusted index
 * collects the tar records it checks (seek_trust.c). */
static void cursor_note(struct seek_cursor *cur, uint64_t from, const uint8_t *dst, uint64_t n)
{
	if (cur->head_to > 0)
		seek_trust_collect(cur, from, dst, n);
}

/* Inflates from where @cur is: drops the bytes up to @uoff, writes @size bytes to @out.  For
 * an untrusted index, output stops at each checkpoint to check it (seek_trust.c). */
static int cursor_read(struct seek_cursor *cur, const uint8_t *in, uint64_t uoff, uint8_t *out,
		       uint64_t size)
{
	uint64_t got = 0;
	int r = 0;

	while (r >= 0 && got < size) {
		/* Bytes before the chunk still to drop (0 once it is coming out). */
		uint64_t skip = uoff + got - cur->uoff, from = cur->uoff;
		uint64_t want = skip > 0 ? MIN(skip, CURSOR_DISCARD_SIZE) : MIN(size - got, UINT32_MAX);
		/* Stopping at block ends lets the checkpoint check see one where it should be. */
		int flush = cur->si->untrusted ? Z_BLOCK : Z_NO_FLUSH, zr;
		uint8_t *dst = skip > 0 ? cur->discard : out + got;
		const uint8_t *in_at;
		uInt in_len;

		r = seek_trust_at_checkpoint(cur, in, true);
		if (r < 0)
			break;
		want = seek_trust_limit(cur, want);
		in_at = cur->zs.next_in;
		in_len = cur->zs.avail_in;
		cur->zs.next_out = dst;
		cur->zs.avail_out = (uInt)want;
		zr = want > 0 ? inflate(&cur->zs, flush) : Z_OK;
		if (want > 0 && (zr == Z_OK || zr == Z_STREAM_END || zr == Z_BUF_ERROR))
			r = seek_trust_shadow_step(cur, in_at, in_len, want, flush, dst);
		if (r < 0)
			break;
		want -= cur->zs.avail_out;
		cur->uoff += want;
		if (skip == 0)
			got += want;
		else
			cursor_note(cur, from, cur->discard, want);
		if (zr == Z_STREAM_END && got < size) {
			r = seek_member_next(&cur->zs, &cur->raw);
			cur->member_uoff = cur->uoff;
			cur->member_pos = cp_start(&cur->si->cps[cur->cp]) +
					  cursor_in_pos(cur, in);
			cur->member_ended = true;
		} else if (zr == Z_MEM_ERROR) {
			r = -ENOMEM;
		} else if (zr != Z_OK && zr != Z_STREAM_END) {
			r = -EBADMSG;  /* corrupt, a window that does not fit, or cut short */
		}
	}
	/* A chunk that ends at a checkpoint proves (or not) the window after it. */
	if (r >= 0)
		r = seek_trust_at_checkpoint(cur, in, false);
	cur->consumed = cursor_in_pos(cur, in);
	return r;
}

int seek_cursor_resume_at(const struct seek_cursor *cur, const struct seek_index *si,
			  uint64_t blob_offset, const char *digest, uint64_t size,
			  uint64_t *ret_offset)
{
	const struct seek_chunk *c;
	uint64_t target;
	uint8_t md[32];
	size_t cp;

	if (!cur || digest_parse_sha256(digest, md) < 0 ||
	    seek_cp_find_start(si, blob_offset, &cp) < 0 || seek_chunk_find(si, cp, md, size, &c) < 0)
		return 0;
	if (seek_trust_chunk_begin(si, c, &target) < 0) {
		error_clear();  /* the decode will say it, if it comes to that */
		return 0;
	}
	if (!cursor_reaches(cur, si, cp, target, 0))
		return 0;
	*ret_offset = cp_start(&si->cps[cp]) + cur->consumed;
	return 1;
}

int seek_index_chunk_decode_at(const struct seek_index *si, struct seek_cursor *cur,
			       uint64_t blob_offset, const char *digest, uint64_t size,
			       const void *in, size_t in_len, void *out)
{
	return seek_index_chunk_decode_from(si, cur, blob_offset, digest, size, in, blob_offset,
					    in_len, out);
}

int seek_index_chunk_decode_from(const struct seek_index *si, struct seek_cursor *cur,
				 uint64_t blob_offset, const char *digest, uint64_t size,
				 const void *in, uint64_t in_offset, size_t in_len, void *out)
{
	_cleanup_(seek_cursor_freep) struct seek_cursor *own = NULL;
	const struct seek_chunk *c;
	uint64_t target;
	uint8_t md[32];
	size_t cp;
	int r;

	if (digest_parse_sha256(digest, md) < 0)
		return -ENOENT;
	r = seek_cp_find_start(si, blob_offset, &cp);
	if (r >= 0)
		r = seek_chunk_find(si, cp, md, size, &c);
	if (r >= 0 && !cur)
		r = seek_cursor_new(&own);
	if (r < 0)
		return r;
	cur = cur ?: own;
	if (in_len > UINT32_MAX || in_offset < blob_offset)
		return -EBADMSG;
	r = seek_trust_chunk_begin(si, c, &target);
	if (r >= 0)
		r = cursor_seek(cur, si, cp, target, in, in_offset - blob_offset, in_len);
	if (r >= 0)
		r = seek_trust_collect_start(cur, c);
	if (r >= 0)
		r = cursor_read(cur, in, c->uoff, out, size);
	if (r >= 0)
		r = seek_trust_collect_end(cur, c);
	if (r < 0)
		cursor_stop(cur);  /* a failed inflate is no place to go on from */
	return r;
}

int seek_index_chunk_decode(const struct seek_index *si, uint64_t blob_offset, const char *digest,
			    uint64_t size, const void *in, size_t in_len, void *out)
{
	return seek_index_chunk_decode_at(si, NULL, blob_offset, digest, size, in, in_len, out);
}
