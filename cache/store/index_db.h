/* cache/store/index_db.h: the SQLite index (DIR/index.db, WAL mode, busy timeout): tag resolutions,
 * images (manifest + config bytes), layers and their entries (with the chunks of lazy
 * layers' files).  Every function maps SQLITE_* codes to -errno in one place (sqlite_errno).
 * One struct index_db is one connection; use it from one thread at a time. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cache/store/entry.h"

struct index_db;
struct layer_writer;

/* Opens or creates @path with the schema; the file is created 0600.  An older schema is
 * migrated; -EPROTO if the file was written by a newer schema version, -EBADMSG if it is not
 * an SQLite database, -EAGAIN if another process kept it locked past the busy timeout. */
int index_db_open(const char *path, struct index_db **ret);
/* Opens an existing index in a directory that cannot be written (a read-only mount, a baked
 * machine image), without locks: nothing may change it meanwhile.  Writes then fail with
 * -EROFS.  -EROFS too if a -wal file with changes sits beside it, -EPROTO if its schema is not
 * this version's (a read-only index cannot be migrated). */
int index_db_open_readonly(const char *path, struct index_db **ret);
struct index_db *index_db_free(struct index_db *db);  /* NULL-safe */
static inline void index_db_freep(struct index_db **db)
{
	*db = index_db_free(*db);
}

/* Tag resolutions remembered from the registry: (canonical reference, platform) -> manifest
 * digest.  -ENOENT if unknown. */
int index_db_ref_get(struct index_db *db, const char *ref, const char *platform, char **ret_digest);
int index_db_ref_put(struct index_db *db, const char *ref, const char *platform, const char *digest);

/* Answers of registries asked which artifacts refer to @subject in repository @place
 * ("host/repository"), of @artifact_type (NULL: any): the answer as the caller encoded it
 * (cache/registry/artifact_cache.c) and when it was stored (seconds since the epoch).  -ENOENT
 * if none is stored.  put replaces; forget drops every type's answer for the subject. */
int index_db_referrers_get(struct index_db *db, const char *place, const char *subject,
			   const char *artifact_type, char **ret_answer, int64_t *ret_updated);
int index_db_referrers_put(struct index_db *db, const char *place, const char *subject,
			   const char *artifact_type, const char *answer);
int index_db_referrers_forget(struct index_db *db, const char *place, const char *subject);

/* Images by manifest digest: the exact manifest bytes and config bytes (@config may be NULL:
 * get then returns "" with length 0).  put on a known digest replaces the row. */
int index_db_image_put(struct index_db *db, const char *manifest_digest, const char *media_type,
		       const void *manifest, size_t manifest_len, const void *config, size_t config_len);
/* -ENOENT if unknown.  Returned buffers are NUL-terminated; ret_* may be NULL. */
int index_db_image_get(struct index_db *db, const char *manifest_digest, char **ret_media_type,
		       char **ret_manifest, size_t *ret_manifest_len, char **ret_config,
		       size_t *ret_config_len);

/* 1 if the layer (by compressed blob digest) is fully indexed, 0 if not, -errno. */
int index_db_layer_is_indexed(struct index_db *db, const char *digest);

/* Collects a layer's entries in memory (committing a layer that is already indexed replaces
 * it); nothing is written to the database (and no SQLite lock
 * is held) until layer_writer_commit(), which writes them all in one short transaction.
 * The layer is recorded with format "tar". */
int index_db_layer_begin(struct index_db *db, const char *digest, const char *media_type,
			 struct layer_writer **ret);
/* The same, recording how the layer was indexed: @format is layer_format_to_string()'s name
 * ("tar", "estargz", "zstd:chunked"); NULL is "tar". */
int index_db_layer_begin_format(struct index_db *db, const char *digest, const char *media_type,
				const char *format, struct layer_writer **ret);
/* Copies everything, the chunks and their digests included.  -EINVAL without a path or with
 * n_chunks > 0 and no chunks. */
int layer_writer_add(struct layer_writer *w, const struct entry *e);
/* Records the sha256 of the layer's uncompressed stream (a layer read whole). */
int layer_writer_set_diff_id(struct layer_writer *w, const char *diff_id);
int layer_writer_commit(struct layer_writer *w);  /* always frees w */
void layer_writer_abort(struct layer_writer *w);  /* NULL-safe, frees w */
static inline void layer_writer_abortp(struct layer_writer **w)
{
	layer_writer_abort(*w);
}

/* The format an indexed layer was recorded with (layers indexed before lazy layers existed are
 * "tar"); the string is the caller's to free.  -ENOENT if the layer is not indexed. */
int index_db_layer_get_format(struct index_db *db, const char *digest, char **ret_format);

/* The diff_id recorded with an indexed layer, or NULL in *@ret_diff_id when none was (a lazy
 * layer, or one indexed before layers recorded it: schema 3).  -ENOENT if the layer is not indexed. */
int index_db_layer_get_diff_id(struct index_db *db, const char *digest, char **ret_diff_id);

/* Calls @cb for each entry of an indexed layer, in the order they were added, with its chunks
 * and prefetch flag as added; the entry's pointers (chunks included) are valid only during
 * the call.  A negative return from @cb stops and is returned.
 * -ENOENT if the layer is not indexed. */
int index_db_layer_foreach(struct index_db *db, const char *digest,
			   int (*cb)(void *userdata, const struct entry *e), void *userdata);

/* ---- Cache administration (images, inspect, rm, gc, fsck) ---------------------------------
 * Rows are handed to callbacks; their pointers are valid only during the call, and a negative
 * return from a callback stops the walk and is returned.  Callbacks must not use @db. */

struct index_db_ref_row {
	const char *ref, *platform, *digest;
	int64_t updated;
};
struct index_db_image_row {
	const char *digest, *media_type;
	const void *manifest;
	size_t manifest_len;
	int64_t created, last_used;   /* seconds since the epoch */
};
struct index_db_layer_row {
	const char *digest, *media_type, *format;
	int64_t n_entries;
};

int index_db_ref_foreach(struct index_db *db,
			 int (*cb)(void *userdata, const struct index_db_ref_row *row), void *userdata);
int index_db_image_foreach(struct index_db *db,
			   int (*cb)(void *userdata, const struct index_db_image_row *row),
			   void *userdata);
int index_db_layer_foreach_row(struct index_db *db,
			       int (*cb)(void *userdata, const struct index_db_layer_row *row),
			       void *userdata);
/* Each distinct blob digest a layer names: whole-file contents (entries.digest; @chunk false)
 * and chunks of lazy layers (@chunk true).  A digest may come once from each source.
 * -ENOENT if the layer is not indexed. */
int index_db_layer_foreach_blob(struct index_db *db, const char *layer_digest,
				int (*cb)(void *userdata, const char *digest, bool chunk),
				void *userdata);
/* 1 if any indexed layer names @digest as a file's content or a chunk, 0 if none. */
int index_db_blob_is_referenced(struct index_db *db, const char *digest);

/* Sets images.last_used to now; -ENOENT if the image is unknown. */
int index_db_image_touch(struct index_db *db, const char *manifest_digest);
/* Deletes the refs rows of @ref (every platform when @platform is NULL); returns how many. */
int index_db_ref_delete(struct index_db *db, const char *ref, const char *platform);
/* Deletes every refs row that resolves to @manifest_digest; returns how many. */
int index_db_ref_delete_digest(struct index_db *db, const char *manifest_digest);
/* Deletes the image row (0 if there was none). */
int index_db_image_delete(struct index_db *db, const char *manifest_digest);
/* Deletes a layer with its entries and chunks (0 if it was not indexed). */
int index_db_layer_delete(struct index_db *db, const char *digest);

/* Seek indexes of tar+gzip layers, by the layer's digest: the index's own digest (a blob of
 * the store, which index_db_blob_is_referenced() then counts as used) and whether it was built
 * here from the verified layer (@trusted) or came from elsewhere.  put replaces; get is
 * -ENOENT when there is none; delete returns how many rows went (0 or 1). */
int index_db_seek_put(struct index_db *db, const char *layer, const char *digest, bool trusted);
int index_db_seek_get(struct index_db *db, const char *layer, char **ret_digest, bool *ret_trusted);
int index_db_seek_delete(struct index_db *db, const char *layer);
/* Calls @cb for every seek index row, by layer digest; a negative return stops the walk. */
int index_db_seek_foreach(struct index_db *db,
			  int (*cb)(void *userdata, const char *layer, const char *digest,
				    bool trusted),
			  void *userdata);

/* The start profile of image @image (a manifest digest the images table holds; the row goes
 * with the image): the profile's digest (a blob of the store, which
 * index_db_blob_is_referenced() then counts as used) and where it came from ("recorded", or the
 * artifact's digest).  put replaces; get is -ENOENT when there is none. */
int index_db_profile_put(struct index_db *db, const char *image, const char *digest,
			 const char *origin);
int index_db_profile_get(struct index_db *db, const char *image, char **ret_digest,
			 char **ret_origin);

/* Groups the writes above: BEGIN IMMEDIATE with retries on contention, COMMIT, ROLLBACK. */
int index_db_transaction_begin(struct index_db *db);
int index_db_transaction_commit(struct index_db *db);  /* rolls back on failure */
void index_db_transaction_rollback(struct index_db *db);

/* PRAGMA integrity_check: 0 and *ret_problems NULL when it says "ok", else a strv of its
 * messages (caller frees). */
int index_db_integrity_check(struct index_db *db, char ***ret_problems);
