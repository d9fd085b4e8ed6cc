/*
 * cache/seek.c: seek indexes as the cache keeps and uses them (seek.h).  An index is a blob of
 * the store; the index database names it per layer, with whether it was built here.  A pull
 * of a tar+gzip layer with an index indexes the layer's entries from it, with their chunks,
 * under the format "gzip-index": the mount's fetcher inflates those chunks from the index's
 * checkpoints (fetch.c) and checks each against its digest.
 */
#include "seek.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>

#include "cache/base/error.h"
#include "cache/base/log.h"
#include "cache/format/layer_lazy.h"
#include "cache/store/index_db.h"
#include "cache/fetch.h"
#include "cache/format/seek_memo.h"

/* ---- Chunks stored as a layer streams by ---------------------------------------------- */

static int chunk_store_failed(struct seek_chunk_store *s, int r)
{
	blob_txn_abort(s->txn);
	s->txn = NULL;
	if (r != -ENOSPC && r != -EDQUOT)
		return r;
	if (!s->full)
		log_debug_errno(r, "the cache is full: the rest of the layer's chunks are not stored "
				"by this stream: %m");
	s->full = true;
	return 0;
}

static int chunk_store_write(void *userdata, const void *buf, size_t n)
{
	struct seek_chunk_store *s = userdata;
	int r = 0;

	if (s->full)
		return 0;
	if (!s->txn)
		r = blob_txn_begin_flags(s->bs, BLOB_TXN_NO_SYNC, &s->txn);
	if (r >= 0)
		r = blob_txn_write(s->txn, buf, n);
	return r < 0 ? chunk_store_failed(s, r) : 0;
}

static int chunk_store_end(void *userdata, const char *digest)
{
	struct seek_chunk_store *s = userdata;
	bool created;
	int r;

	if (!s->txn)
		return 0;
	/* The builder hashed the same bytes: a mismatch would be a defect here, not bad input. */
	r = blob_txn_commit(TAKE_PTR(s->txn), digest, NULL, &created);
	if (r < 0)
		return r == -EBADMSG ? -EIO : chunk_store_failed(s, r);
	s->stored++;
	return created ? strv_push(&s->created, digest) : 0;
}

void seek_chunk_store_init(struct seek_chunk_store *s, struct blob_store *bs)
{
	*s = (struct seek_chunk_store) { .bs = bs };
	s->sink = (struct seek_chunk_sink) {
		.write = chunk_store_write, .end = chunk_store_end, .userdata = s,
	};
}

void seek_chunk_store_done(struct seek_chunk_store *s)
{
	blob_txn_abort(s->txn);
	s->txn = NULL;
	s->created = strv_free(s->created);
}

/* ---- Indexes in the cache ------------------------------------------------------------ */

bool seek_layer_eligible(const struct layer_desc *l)
{
	return l->compression == LAYER_COMPRESSION_GZIP &&
	       layer_format_detect(l) == LAYER_FORMAT_TAR;
}

static int store_blob(struct cache *c, const void *buf, size_t len,
		      char ret_digest[DIGEST_STRING_MAX])
{
	_cleanup_(blob_txn_abortp) struct blob_txn *t = NULL;
	int r;

	r = blob_txn_begin(c->bs, &t);
	if (r >= 0)
		r = blob_txn_write(t, buf, len);
	if (r < 0)
		return r;
	return blob_txn_commit(TAKE_PTR(t), NULL, ret_digest, NULL);
}

int seek_store_built(struct cache *c, const char *layer_digest, const void *buf, size_t len,
		     char ret_digest[DIGEST_STRING_MAX])
{
	int r = store_blob(c, buf, len, ret_digest);

	return r < 0 ? r : index_db_seek_put(c->db, layer_digest, ret_digest, true);
}

int seek_index_import(struct cache *c, const void *buf, size_t len, const char *layer_digest,
		      uint64_t layer_size, char ret_digest[DIGEST_STRING_MAX])
{
	_cleanup_(seek_index_freep) struct seek_index *si = NULL;
	int r;

	r = seek_index_parse(buf, len, layer_digest, layer_size, &si);
	if (r < 0)
		return r;
	r = store_blob(c, buf, len, ret_digest);
	if (r >= 0)
		r = index_db_seek_put(c->db, layer_digest, ret_digest, false);
	if (r >= 0)
		seek_memo_put(ret_digest, layer_digest, TAKE_PTR(si));  /* for seek_load() */
	return r;
}

int seek_index_read(struct cache *c, const char *layer_digest, char **ret_buf, size_t *ret_len,
		    char **ret_digest, bool *ret_trusted)
{
	_cleanup_free_ char *digest = NULL, *buf = NULL;
	_cleanup_close_ int fd = -EBADF;
	size_t len;
	int r;

	r = index_db_seek_get(c->db, layer_digest, &digest, ret_trusted);
	if (r < 0)
		return r;
	r = blob_store_open_blob(c->bs, digest, &fd);
	if (r >= 0)
		r = read_full_fd(fd, SEEK_INDEX_MAX, &buf, &len);
	if (r >= 0)
		r = digest_verify_buffer(buf, len, digest);
	if (r < 0)
		return log_debug_errno(r, "seek index '%s' of layer '%s' is unreadable: %m", digest,
				       layer_digest);
	*ret_buf = TAKE_PTR(buf);
	*ret_len = len;
	if (ret_digest)
		*ret_digest = TAKE_PTR(digest);
	return 0;
}

/* seek_load(), and the digest of the index blob in *@ret_blob (may be NULL).  The index
 * parsed by an earlier step of this pull is taken from seek_memo.h instead of parsed again. */
static int load(struct cache *c, const struct layer_desc *l, struct seek_index **ret,
		bool *ret_trusted, char **ret_blob)
{
	_cleanup_(seek_index_freep) struct seek_index *si = NULL;
	_cleanup_free_ char *buf = NULL, *digest = NULL;
	bool trusted;
	size_t len;
	int r;

	r = index_db_seek_get(c->db, l->digest, &digest, &trusted);
	if (r < 0)
		return r;
	si = seek_memo_take(digest, l->digest);
	if (!si) {
		free(digest);
		digest = NULL;
		r = seek_index_read(c, l->digest, &buf, &len, &digest, &trusted);
		if (r < 0)
			return r;
		r = seek_index_parse(buf, len, l->digest, l->size, &si);
	}
	/* One from elsewhere proves itself as it is read (docs/security.md, "Seek indexes"). */
	if (r >= 0 && !trusted)
		r = seek_index_set_untrusted(si);
	if (r < 0)
		return r;
	if (ret_trusted)
		*ret_trusted = trusted;
	if (ret_blob)
		*ret_blob = TAKE_PTR(digest);
	*ret = TAKE_PTR(si);
	return 0;
}

int seek_load(struct cache *c, const struct layer_desc *l, struct seek_index **ret,
	      bool *ret_trusted)
{
	return load(c, l, ret, ret_trusted, NULL);
}

int seek_drop(struct cache *c, const char *layer_digest)
{
	_cleanup_free_ char *format = NULL;
	int r;

	r = index_db_seek_delete(c->db, layer_digest);
	if (r < 0)
		return r;
	if (index_db_layer_get_format(c->db, layer_digest, &format) >= 0 &&
	    streq(format, LAYER_FORMAT_GZIP_INDEX))
		r = index_db_layer_delete(c->db, layer_digest);
	return r < 0 ? r : 0;
}

void seek_failed_drop(void *cache_dir, const char *layer_digest)
{
	_cleanup_(cache_freep) struct cache *c = NULL;
	int r;

	r = cache_open(cache_dir, &c);
	if (r >= 0)
		r = seek_drop(c, layer_digest);
	if (r < 0)
		log_warning_errno(r, "cannot drop the seek index of layer '%s' from '%s': %m",
				  layer_digest, (const char *)cache_dir);
}

int seek_layer_reindex(struct cache *c, const struct layer_desc *l)
{
	int r;

	if (!seek_layer_is_lazy(c->db, l))
		return 0;
	r = index_db_layer_delete(c->db, l->digest);
	if (r >= 0)
		r = seek_layer_import(c, l);
	return r < 0 ? r : 0;
}

static int writer_add(void *userdata, const struct entry *e)
{
	return layer_writer_add(userdata, e);
}

int seek_layer_import(struct cache *c, const struct layer_desc *l)
{
	_cleanup_(seek_index_freep) struct seek_index *si = NULL;
	_cleanup_free_ char *blob = NULL;
	struct layer_writer *w = NULL;
	int r;

	if (!seek_layer_eligible(l))
		return 0;
	r = load(c, l, &si, NULL, &blob);
	if (r == -ENOENT)
		return 0;
	if (r < 0) {
		/* A kept index that no longer parses is no reason to fail: read the layer whole. */
		log_debug_errno(r, "dropping the seek index of layer '%s': %s", l->digest,
				error_message() ?: "unreadable");
		error_clear();
		(void)index_db_seek_delete(c->db, l->digest);
		return 0;
	}
	r = index_db_layer_begin_format(c->db, l->digest, l->media_type, LAYER_FORMAT_GZIP_INDEX,
					&w);
	if (r < 0)
		return r;
	r = seek_index_foreach(si, writer_add, w);
	if (r < 0) {
		layer_writer_abort(w);
		return r;
	}
	r = layer_writer_commit(w);
	if (r < 0)
		return r;
	seek_memo_put(blob, l->digest, TAKE_PTR(si));  /* the mount's fetcher serves from it */
	return 1;
}

bool seek_layer_is_lazy(struct index_db *db, const struct layer_desc *l)
{
	_cleanup_free_ char *format = NULL;

	return seek_layer_eligible(l) && index_db_layer_get_format(db, l->digest, &format) >= 0 &&
	       streq(format, LAYER_FORMAT_GZIP_INDEX);
}

static bool layer_from_seek_index(struct cache *c, const struct layer_desc *l)
{
	return seek_layer_is_lazy(c->db, l);
}

const char *seek_layer_served(struct cache *c, const struct layer_desc *l)
{
	if (layer_format_detect(l) != LAYER_FORMAT_TAR)
		return layer_format_to_string(layer_format_detect(l));
	return layer_from_seek_index(c, l) ? LAYER_FORMAT_GZIP_INDEX : "eager";
}

int seek_image_is_lazy(struct cache *c, const struct manifest *m)
{
	for (size_t i = 0; i < m->n_layers; i++)
		if (layer_from_seek_index(c, &m->layers[i]))
			return 1;
	return 0;
}

int seek_fetcher_attach(struct cache *c, const struct manifest *m, struct fetcher *f)
{
	for (size_t i = 0; i < m->n_layers; i++) {
		struct seek_index *si = NULL;
		int r;

		if (!layer_from_seek_index(c, &m->layers[i]))
			continue;
		r = seek_load(c, &m->layers[i], &si, NULL);
		if (r >= 0)
			r = fetcher_set_seek_index(f, (unsigned)i, si);
		if (r < 0)
			return log_debug_errno(r, "cannot read the seek index of layer '%s': %m",
					       m->layers[i].digest);
	}
	return 0;
}
