/* cache/store/cache.h: one cache directory: DIR/index.db (the SQLite index) and DIR/blobs (content).
 * Created 0700; everything in it is private to the owner. */
#pragma once

#include <stdbool.h>

#include "cache/store/blob_store.h"
#include "cache/store/index_db.h"
#include "cache/base/util.h"

struct cache {
	char *dir;
	struct index_db *db;     /* NULL after cache_close_db() */
	struct blob_store *bs;
	bool read_only;          /* the directory cannot be written: see cache_open() */
};

/* The directory to use when --cache-dir is not given: $LAZYROOT_CACHE_DIR, else
 * /var/cache/lazyroot for root, else $XDG_CACHE_HOME/lazyroot (~/.cache/lazyroot). */
int cache_dir_default(char **ret);

/* Creates @dir if needed.  An existing @dir this process cannot write (a read-only mount, a
 * baked machine image) is opened read-only: its index must exist and be checkpointed,
 * read_only is set, and every write fails with -EROFS.  Waits (bounded; -ETIMEDOUT with a
 * message past it) while another process creates or migrates the index. */
int cache_open(const char *dir, struct cache **ret);
/* Closes the SQLite connection only: a process about to fork() must not carry it over. */
void cache_close_db(struct cache *c);
struct cache *cache_free(struct cache *c);  /* NULL-safe */
/* flock(@operation) on CACHE/locks/@name (created 0600), retrying on EINTR; closing *ret_fd
 * releases it.  With LOCK_NB, -EWOULDBLOCK when another process holds it. */
int cache_lock_file(const char *cache_dir, const char *name, int operation, int *ret_fd);
DEFINE_CLEANUP_FUNC(struct cache *, cache_free);
/* Calls @cb for each entry of CACHE/tmp whose mtime is at least @min_age seconds old (a
 * younger one may be a live writer's), with tmp's fd to act on it, until @cb fails; 0 when
 * there is no tmp.  An entry that vanishes meanwhile is skipped. */
struct stat;
int cache_tmp_foreach_old(struct cache *c, int64_t min_age,
			  int (*cb)(void *userdata, int dir_fd, const char *name,
				    const struct stat *st),
			  void *userdata);
