/*
 * cache/store/index_db.c: the SQLite index: tag resolutions, image manifests and configs, and every
 * entry of every indexed layer.
 *
 * One struct index_db is one connection, used by one thread at a time; several processes (a
 * mount daemon, a pull) share the file through WAL mode and a busy timeout.  Writes are short:
 * a layer's entries are collected in memory by struct layer_writer and written in one
 * transaction with a reused prepared statement, so even 100,000+ entries hold the write lock
 * for well under a second.  The schema version lives in PRAGMA user_version; migrations[] is
 * applied in order from the stored version, so a later version adds an element, never edits one.
 *
 * Strings are stored as TEXT without any charset check: paths are raw bytes from the layer.
 * xattrs are packed into one BLOB per entry (see xattrs_pack()).  The chunks of lazy layers'
 * files (eStargz, zstd:chunked: a few per file, up to millions per layer) are rows of their
 * own, keyed (layer_id, seq, idx) like the entries they belong to, so that
 * index_db_layer_foreach() reads entries and chunks as two scans in the same order and merges
 * them without a join or a sort.
 */
#include "index_db.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <pthread.h>
#include <sqlite3.h>
#include <sys/stat.h>

#include "cache/base/error.h"
#include "cache/base/util.h"

#define BUSY_TIMEOUT_MS 10000
#define BEGIN_RETRIES 50

static const char *const migrations[] = {
	/* 0 -> 1 */
	"CREATE TABLE refs ("
	"  ref TEXT NOT NULL,"
	"  platform TEXT NOT NULL,"
	"  digest TEXT NOT NULL,"
	"  updated INTEGER NOT NULL,"
	"  PRIMARY KEY (ref, platform)"
	") WITHOUT ROWID;"
	"CREATE TABLE images ("
	"  digest TEXT PRIMARY KEY NOT NULL,"
	"  media_type TEXT NOT NULL,"
	"  manifest BLOB NOT NULL,"
	"  config BLOB,"
	"  created INTEGER NOT NULL,"
	"  last_used INTEGER NOT NULL"
	");"
	"CREATE TABLE layers ("
	"  id INTEGER PRIMARY KEY,"
	"  digest TEXT NOT NULL UNIQUE,"
	"  media_type TEXT,"
	"  indexed_at INTEGER NOT NULL,"
	"  n_entries INTEGER NOT NULL"
	");"
	"CREATE TABLE entries ("
	"  layer_id INTEGER NOT NULL REFERENCES layers(id) ON DELETE CASCADE,"
	"  seq INTEGER NOT NULL,"
	"  path TEXT NOT NULL,"
	"  type INTEGER NOT NULL,"
	"  mode INTEGER NOT NULL,"
	"  uid INTEGER NOT NULL,"
	"  gid INTEGER NOT NULL,"
	"  size INTEGER NOT NULL,"
	"  mtime_sec INTEGER NOT NULL,"
	"  mtime_nsec INTEGER NOT NULL,"
	"  dev_major INTEGER NOT NULL,"
	"  dev_minor INTEGER NOT NULL,"
	"  link_target TEXT,"
	"  digest TEXT,"
	"  xattrs BLOB,"
	"  PRIMARY KEY (layer_id, seq)"
	") WITHOUT ROWID;",
	/* 1 -> 2: lazy layers.  Every layer indexed before was read whole, as a tar. */
	"ALTER TABLE layers ADD COLUMN format TEXT NOT NULL DEFAULT 'tar';"
	"ALTER TABLE entries ADD COLUMN prefetch INTEGER NOT NULL DEFAULT 0;"
	"CREATE TABLE chunks ("
	"  layer_id INTEGER NOT NULL REFERENCES layers(id) ON DELETE CASCADE,"
	"  seq INTEGER NOT NULL,"            /* the entry's */
	"  idx INTEGER NOT NULL,"            /* position in the entry's chunk list */
	"  file_offset INTEGER NOT NULL,"
	"  size INTEGER NOT NULL,"
	"  blob_offset INTEGER NOT NULL,"
	"  blob_length INTEGER NOT NULL,"
	"  digest TEXT,"                     /* NULL: a run of zeros */
	"  PRIMARY KEY (layer_id, seq, idx)"
	") WITHOUT ROWID;",
	/* 2 -> 3: gc, rm and fsck ask "does any layer still name this blob?".  One step of two
	 * statements (the parentheses tell clang the missing comma is meant). */
	("CREATE INDEX entries_digest ON entries (digest) WHERE digest IS NOT NULL;"
	 "CREATE INDEX chunks_digest ON chunks (digest) WHERE digest IS NOT NULL;"),
	/* 3 -> 4: the sha256 of a layer read whole, uncompressed, which every image's config
	 * must name as that layer's diff_id.  NULL for lazy layers (never read whole) and for
	 * layers indexed before. */
	"ALTER TABLE layers ADD COLUMN diff_id TEXT;",
	/* 4 -> 5: what a registry answered when asked for the artifacts that refer to a
	 * subject (cache/registry/artifact_cache.c): a JSON array of descriptors, "[]" for
	 * none, and when it was asked. */
	"CREATE TABLE referrers ("
	"  place TEXT NOT NULL,"
	"  subject TEXT NOT NULL,"
	"  artifact_type TEXT NOT NULL,"
	"  answer BLOB NOT NULL,"
	"  updated INTEGER NOT NULL,"
	"  PRIMARY KEY (place, subject, artifact_type)"
	") WITHOUT ROWID;",
	/* 5 -> 6: seek indexes of tar+gzip layers (cache/format/seek_index.h), by layer digest:
	 * the index is a blob of the store; trusted when it was built here from the verified
	 * layer, not when it came from elsewhere. */
	"CREATE TABLE seek_indexes ("
	"  layer TEXT PRIMARY KEY NOT NULL,"
	"  digest TEXT NOT NULL,"
	"  trusted INTEGER NOT NULL,"
	"  created INTEGER NOT NULL"
	") WITHOUT ROWID;"
	"CREATE INDEX seek_indexes_digest ON seek_indexes (digest);",
	/* 6 -> 7: the start profile of an image (cache/profile.h), a blob of the store, by the
	 * image's manifest digest; it goes with its image.  @origin: "recorded" here, or the
	 * artifact it was fetched as. */
	"CREATE TABLE start_profiles ("
	"  image TEXT PRIMARY KEY NOT NULL REFERENCES images (digest) ON DELETE CASCADE,"
	"  digest TEXT NOT NULL,"
	"  origin TEXT NOT NULL,"
	"  created INTEGER NOT NULL"
	") WITHOUT ROWID;"
	"CREATE INDEX start_profiles_digest ON start_profiles (digest);",
};

enum stmt_id {
	STMT_REF_GET,
	STMT_REF_PUT,
	STMT_IMAGE_PUT,
	STMT_IMAGE_GET,
	STMT_LAYER_ID,
	STMT_LAYER_DELETE,
	STMT_LAYER_INSERT,
	STMT_LAYER_FORMAT,
	STMT_LAYER_DIFF_ID,
	STMT_ENTRY_INSERT,
	STMT_CHUNK_INSERT,
	STMT_REFERRERS_GET,
	STMT_REFERRERS_PUT,
	STMT_REFERRERS_DELETE,
	_STMT_MAX,
};

static const char *const stmt_sql[_STMT_MAX] = {
	[STMT_REF_GET] = "SELECT digest FROM refs WHERE ref = ?1 AND platform = ?2",
	[STMT_REF_PUT] = "INSERT INTO refs (ref, platform, digest, updated) VALUES (?1, ?2, ?3, ?4)"
			 " ON CONFLICT (ref, platform) DO UPDATE"
			 " SET digest = excluded.digest, updated = excluded.updated",
	[STMT_IMAGE_PUT] = "INSERT INTO images (digest, media_type, manifest, config, created,"
			   " last_used) VALUES (?1, ?2, ?3, ?4, ?5, ?5)"
			   " ON CONFLICT (digest) DO UPDATE SET media_type = excluded.media_type,"
			   " manifest = excluded.manifest, config = excluded.config,"
			   " last_used = excluded.last_used",
	[STMT_IMAGE_GET] = "SELECT media_type, manifest, config FROM images WHERE digest = ?1",
	[STMT_LAYER_ID] = "SELECT id FROM layers WHERE digest = ?1",
	[STMT_LAYER_DELETE] = "DELETE FROM layers WHERE digest = ?1",
	[STMT_LAYER_INSERT] = "INSERT INTO layers (digest, media_type, indexed_at, n_entries,"
			      " format, diff_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
	[STMT_LAYER_FORMAT] = "SELECT format FROM layers WHERE digest = ?1",
	[STMT_LAYER_DIFF_ID] = "SELECT diff_id FROM layers WHERE digest = ?1",
	[STMT_ENTRY_INSERT] = "INSERT INTO entries (layer_id, seq, path, type, mode, uid, gid,"
			      " size, mtime_sec, mtime_nsec, dev_major, dev_minor, link_target,"
			      " digest, xattrs, prefetch)"
			      " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15,"
			      " ?16)",
	[STMT_CHUNK_INSERT] = "INSERT INTO chunks (layer_id, seq, idx, file_offset, size,"
			      " blob_offset, blob_length, digest)"
			      " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
	[STMT_REFERRERS_GET] = "SELECT answer, updated FROM referrers"
			       " WHERE place = ?1 AND subject = ?2 AND artifact_type = ?3",
	[STMT_REFERRERS_PUT] = "INSERT INTO referrers (place, subject, artifact_type, answer, updated)"
			       " VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (place, subject, artifact_type)"
			       " DO UPDATE SET answer = excluded.answer, updated = excluded.updated",
	[STMT_REFERRERS_DELETE] = "DELETE FROM referrers WHERE place = ?1 AND subject = ?2",
};

struct index_db {
	sqlite3 *conn;
	sqlite3_stmt *stmts[_STMT_MAX];  /* prepared on first use, kept until close */
};

/* One buffered entry: the struct and every byte it points to, in one allocation: the chunk
 * array first (it needs alignment), then the packed xattrs, then the strings. */
struct pending_entry {
	struct entry e;         /* e.xattrs is unused: the packed form below is what's stored */
	const void *xattrs;
	size_t xattrs_size;
	char data[];
};
_Static_assert(offsetof(struct pending_entry, data) % _Alignof(struct chunk) == 0,
	       "the chunk array starts at data");

struct layer_writer {
	struct index_db *db;
	char *digest;
	char *media_type;
	char *format;
	char *diff_id;
	struct pending_entry **entries;
	size_t n_entries, n_allocated;
};

/* The one place SQLite result codes become errno. */
static int sqlite_errno(int rc)
{
	switch (rc & 0xff) {
	case SQLITE_OK:
	case SQLITE_ROW:
	case SQLITE_DONE:
		return 0;
	case SQLITE_NOMEM:
		return -ENOMEM;
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		return -EAGAIN;
	case SQLITE_PERM:
	case SQLITE_AUTH:
		return -EACCES;
	case SQLITE_READONLY:
		return -EROFS;
	case SQLITE_INTERRUPT:
		return -EINTR;
	case SQLITE_FULL:
		return -ENOSPC;
	case SQLITE_CANTOPEN:
		return -ENOENT;
	case SQLITE_CORRUPT:
	case SQLITE_NOTADB:
	case SQLITE_FORMAT:
		return -EBADMSG;
	case SQLITE_NOTFOUND:
		return -ENOENT;
	case SQLITE_CONSTRAINT:
		return -EEXIST;
	case SQLITE_TOOBIG:
		return -EFBIG;
	case SQLITE_MISMATCH:
	case SQLITE_RANGE:
	case SQLITE_MISUSE:
		return -EINVAL;
	case SQLITE_PROTOCOL:
		return -EPROTO;
	case SQLITE_NOLFS:
		return -EOVERFLOW;
	default:
		return -EIO;
	}
}

/* As sqlite_errno(), but an I/O error that ENOSPC or EDQUOT caused is -ENOSPC: SQLite reports a
 * full file system so when it cannot grow the WAL or its shared memory file. */
static int db_errno(sqlite3 *conn, int rc)
{
	int e;

	if ((rc & 0xff) == SQLITE_IOERR && conn) {
		e = sqlite3_system_errno(conn);
		if (e == ENOSPC || e == EDQUOT)
			return -ENOSPC;
	}
	return sqlite_errno(rc);
}

static int64_t now_sec(void)
{
	return (int64_t)time(NULL);
}

static int db_exec(struct index_db *db, const char *sql)
{
	return db_errno(db->conn, sqlite3_exec(db->conn, sql, NULL, NULL, NULL));
}

/* Hands out a cached statement, reset and unbound; put it back with stmt_done(). */
static int db_stmt(struct index_db *db, enum stmt_id id, sqlite3_stmt **ret)
{
	int r;

	if (!db->stmts[id]) {
		r = sqlite_errno(sqlite3_prepare_v3(db->conn, stmt_sql[id], -1,
						    SQLITE_PREPARE_PERSISTENT, &db->stmts[id], NULL));
		if (r < 0)
			return r;
	}
	*ret = db->stmts[id];
	return 0;
}

static void stmt_donep(sqlite3_stmt **s)
{
	if (*s) {
		(void)sqlite3_reset(*s);
		(void)sqlite3_clear_bindings(*s);
	}
}
#define _cleanup_stmt_done_ _cleanup_(stmt_donep)

static void stmt_finalizep(sqlite3_stmt **s)
{
	(void)sqlite3_finalize(*s);
}

static int db_step_done(sqlite3_stmt *s)
{
	int rc = sqlite3_step(s);

	return rc == SQLITE_DONE ? 0 : rc == SQLITE_ROW ? -EPROTO :
	       db_errno(sqlite3_db_handle(s), rc);
}

/* The bound on every wait for the index is the busy timeout: past it, say so. */
static int db_busy_message(int r)
{
	if (r != -EAGAIN)
		return r;
	return error_set(-ETIMEDOUT, "the index stayed locked by another process for more than %d s",
			 BUSY_TIMEOUT_MS / 1000);
}

/* BEGIN IMMEDIATE takes the write lock up front.  The busy handler covers most contention, but
 * SQLite returns SQLITE_BUSY without waiting when waiting could deadlock (e.g. the WAL is being
 * recovered by another connection), so retry a bounded number of times. */
static int db_begin(struct index_db *db)
{
	int rc = SQLITE_OK;

	for (int i = 0; i < BEGIN_RETRIES; i++) {
		rc = sqlite3_exec(db->conn, "BEGIN IMMEDIATE", NULL, NULL, NULL);
		if ((rc & 0xff) != SQLITE_BUSY)
			break;
		(void)usleep(10000 * (i < 10 ? i + 1 : 10));
	}
	return db_busy_message(db_errno(db->conn, rc));
}

static void db_rollback(struct index_db *db)
{
	if (!sqlite3_get_autocommit(db->conn))
		(void)sqlite3_exec(db->conn, "ROLLBACK", NULL, NULL, NULL);
}

static int db_commit(struct index_db *db)
{
	int r;

	r = db_exec(db, "COMMIT");
	if (r < 0)
		db_rollback(db);
	return r;
}

static int db_user_version(struct index_db *db, int *ret)
{
	_cleanup_(stmt_finalizep) sqlite3_stmt *s = NULL;
	int rc, r;

	r = sqlite_errno(sqlite3_prepare_v2(db->conn, "PRAGMA user_version", -1, &s, NULL));
	if (r < 0)
		return r;
	rc = sqlite3_step(s);
	if (rc != SQLITE_ROW)
		return rc == SQLITE_DONE ? -EPROTO : sqlite_errno(rc);
	*ret = sqlite3_column_int(s, 0);
	return 0;
}

static int db_migrate(struct index_db *db)
{
	char sql[64];
	int version, r;

	r = db_user_version(db, &version);
	if (r < 0)
		return r;
	if (version == (int)ELEMENTSOF(migrations))
		return 0;

	r = db_begin(db);
	if (r < 0)
		return r;
	/* Another process may have migrated between the check and the lock. */
	r = db_user_version(db, &version);
	if (r < 0)
		goto fail;
	if (version < 0 || version > (int)ELEMENTSOF(migrations)) {
		r = -EPROTO;  /* written by a newer lazyroot */
		goto fail;
	}
	for (; version < (int)ELEMENTSOF(migrations); version++) {
		r = db_exec(db, migrations[version]);
		if (r < 0)
			goto fail;
	}
	snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", version);
	r = db_exec(db, sql);
	if (r < 0)
		goto fail;
	return db_commit(db);

fail:
	db_rollback(db);
	return r;
}

static void index_db_done(struct index_db *db)
{
	for (size_t i = 0; i < _STMT_MAX; i++)
		(void)sqlite3_finalize(db->stmts[i]);
	(void)sqlite3_close(db->conn);
}
DEFINE_FREE_FUNC(struct index_db, index_db_free, index_db_done);

/* Creates the file 0600 if it is not there: SQLite would create it 0644 & ~umask, and the
 * -wal and -shm files inherit the database file's mode.  An existing file is never opened
 * here: closing any descriptor of a file drops every POSIX lock the process holds on it, the
 * SHARED lock of a connection this process already has included (the seek index and start
 * profile lookups open a second one beside the pull's); without it, a prewarm's committed
 * ref and image rows went missing when other commands ran beside it.  The mutex keeps two
 * threads from both seeing the file missing and one closing under the other. */
static int index_db_create(const char *path)
{
	static pthread_mutex_t create_lock = PTHREAD_MUTEX_INITIALIZER;
	struct stat st;
	int fd, r = 0;

	pthread_mutex_lock(&create_lock);
	fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd >= 0)
		(void)close(fd);
	else if (errno != EEXIST)
		r = -errno;
	else if (lstat(path, &st) < 0)
		r = -errno;
	else if (!S_ISREG(st.st_mode))
		r = S_ISLNK(st.st_mode) ? -ELOOP : -EINVAL;
	pthread_mutex_unlock(&create_lock);
	return r;
}

int index_db_open(const char *path, struct index_db **ret)
{
	_cleanup_(index_db_freep) struct index_db *db = NULL;
	int r;

	r = index_db_create(path);
	if (r < 0)
		return r;

	db = calloc(1, sizeof(*db));
	if (!db)
		return -ENOMEM;

	r = sqlite_errno(sqlite3_open_v2(path, &db->conn,
					 SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL));
	if (r < 0)
		return r;
	(void)sqlite3_extended_result_codes(db->conn, 1);
	r = sqlite_errno(sqlite3_busy_timeout(db->conn, BUSY_TIMEOUT_MS));
	if (r < 0)
		return r;

	/* WAL: readers (the mount) never block the writer (a pull) and vice versa.  NORMAL sync
	 * is durable up to the last checkpoint and never corrupts in WAL mode; a lost tail only
	 * means re-indexing a layer. */
	r = db_exec(db, "PRAGMA journal_mode = WAL");
	if (r < 0)
		return db_busy_message(r);
	r = db_exec(db, "PRAGMA synchronous = NORMAL");
	if (r < 0)
		return r;
	r = db_exec(db, "PRAGMA foreign_keys = ON");
	if (r < 0)
		return r;

	r = db_migrate(db);
	if (r < 0)
		return db_busy_message(r);

	*ret = TAKE_PTR(db);
	return 0;
}

/* "file:" URI of @path: the characters a URI gives a meaning to are escaped. */
static int path_uri(const char *path, const char *query, char **ret)
{
	_cleanup_free_ char *u = NULL;
	size_t n = 0;

	u = malloc(strlen("file:") + 3 * strlen(path) + strlen(query) + 1);
	if (!u)
		return -ENOMEM;
	n += sprintf(u, "file:");
	for (const char *p = path; *p; p++)
		if (*p == '%' || *p == '?' || *p == '#')
			n += sprintf(u + n, "%%%02X", (unsigned char)*p);
		else
			u[n++] = *p;
	strcpy(u + n, query);
	*ret = TAKE_PTR(u);
	return 0;
}

int index_db_open_readonly(const char *path, struct index_db **ret)
{
	_cleanup_(index_db_freep) struct index_db *db = NULL;
	_cleanup_free_ char *wal = NULL, *uri = NULL;
	struct stat st;
	int version, r;

	/* Nothing changes a read-only directory under us, and it cannot hold the -shm file that
	 * WAL readers need: immutable=1 reads the file without locks or -shm.  It would also
	 * ignore a -wal file, so one with frames in it (the cache was copied while a writer had
	 * it open) is refused rather than read as an older index. */
	if (asprintf(&wal, "%s-wal", path) < 0)
		return -ENOMEM;
	if (stat(wal, &st) == 0 && st.st_size > 0)
		return error_set(-EROFS, "'%s' holds changes not checkpointed into the index; "
				 "open the cache writable once to fold them in", wal);
	r = path_uri(path, "?immutable=1", &uri);
	if (r < 0)
		return r;
	db = calloc(1, sizeof(*db));
	if (!db)
		return -ENOMEM;
	r = sqlite_errno(sqlite3_open_v2(uri, &db->conn, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI |
					 SQLITE_OPEN_NOMUTEX, NULL));
	if (r < 0)
		return r;
	(void)sqlite3_extended_result_codes(db->conn, 1);
	r = db_user_version(db, &version);
	if (r < 0)
		return r;
	if (version != (int)ELEMENTSOF(migrations))
		return error_set(-EPROTO, "the index has schema version %d, this lazyroot reads %d "
				 "and cannot migrate a read-only cache", version,
				 (int)ELEMENTSOF(migrations));
	*ret = TAKE_PTR(db);
	return 0;
}

/* The bind helpers do nothing once *r is negative, so a run of binds needs one check. */
static void bind_text(sqlite3_stmt *s, int i, const char *v, int *r)
{
	if (*r < 0)
		return;
	if (!v)
		*r = sqlite_errno(sqlite3_bind_null(s, i));
	else
		*r = sqlite_errno(sqlite3_bind_text(s, i, v, -1, SQLITE_STATIC));
}

static void bind_blob(sqlite3_stmt *s, int i, const void *v, size_t n, int *r)
{
	if (*r < 0)
		return;
	if (!v)
		*r = sqlite_errno(sqlite3_bind_null(s, i));
	else
		*r = sqlite_errno(sqlite3_bind_blob64(s, i, v, n, SQLITE_STATIC));
}

static void bind_int(sqlite3_stmt *s, int i, int64_t v, int *r)
{
	if (*r < 0)
		return;
	*r = sqlite_errno(sqlite3_bind_int64(s, i, v));
}

/* Copies column @i as a NUL-terminated buffer; NULL columns become "". */
static int column_dup(sqlite3_stmt *s, int i, char **ret, size_t *ret_len)
{
	const void *p = sqlite3_column_blob(s, i);
	size_t n = sqlite3_column_bytes(s, i);
	char *c;

	c = malloc(n + 1);
	if (!c)
		return -ENOMEM;
	if (n > 0)
		memcpy(c, p, n);
	c[n] = '\0';
	*ret = c;
	if (ret_len)
		*ret_len = n;
	return 0;
}

/* Runs the cached statement @id with its text parameters ?1 = @a and ?2 = @b (unless NULL)
 * to its first row: 0 on the row, -ENOENT when there is none.  *@s is the statement in every
 * case, so that the caller's _cleanup_stmt_done_ puts it back. */
static int db_stmt_row(struct index_db *db, enum stmt_id id, const char *a, const char *b,
		       sqlite3_stmt **s)
{
	int rc, r;

	r = db_stmt(db, id, s);
	if (r < 0)
		return r;
	bind_text(*s, 1, a, &r);
	if (b)
		bind_text(*s, 2, b, &r);
	if (r < 0)
		return r;
	rc = sqlite3_step(*s);
	if (rc == SQLITE_DONE)
		return -ENOENT;
	return rc == SQLITE_ROW ? 0 : sqlite_errno(rc);
}

int index_db_ref_get(struct index_db *db, const char *ref, const char *platform, char **ret_digest)
{
	_cleanup_stmt_done_ sqlite3_stmt *s = NULL;
	int r;

	r = db_stmt_row(db, STMT_REF_GET, ref, platform ?: "", &s);
	if (r < 0)
		return r;
	return column_dup(s, 0, ret_digest, NULL);
}

int index_db_ref_put(struct index_db *db, const char *ref, const char *platform, const char *digest)
{
	_cleanup_stmt_done_ sqlite3_stmt *s = NULL;
	int r;

	r = db_stmt(db, STMT_REF_PUT, &s);
	if (r < 0)
		return r;
	bind_text(s, 1, ref, &r);
	bind_text(s, 2, platform ?: "", &r);
	bind_text(s, 3, digest, &r);
	bind_int(s, 4, now_sec(), &r);
	if (r < 0)
		return r;
	return db_step_done(s);
}

int index_db_referrers_get(struct index_db *db, const char *place, const char *subject,
			   const char *artifact_type, char **ret_answer, int64_t *ret_updated)
{
	_cleanup_stmt_done_ sqlite3_stmt *s = NULL;
	int rc, r;

	r = db_stmt(db, STMT_REFERRERS_GET, &s);
	if (r < 0)
		return r;
	bind_text(s, 1, place, &r);
	bind_text(s, 2, subject, &r);
	bind_text(s, 3, artifact_type ?: "", &r);
	if (r < 0)
		return r;
	rc = sqlite3_step(s);
	if (rc == SQLITE_DONE)
		return -ENOENT;
	if (rc != SQLITE_ROW)
		return sqlite_errno(rc);
	*ret_updated = sqlite3_column_int64(s, 1);
	return column_dup(s, 0, ret_answer, NULL);
}

int index_db_referrers_put(struct index_db *db, const char *place, const char *subject,
			   const char *artifact_type, const char *answer)
{
	_cleanup_stmt_done_ sqlite3_stmt *s = NULL;
	int r;

	r = db_stmt(db, STMT_REFERRERS_PUT, &s);
	if (r < 0)
		return r;
	bind_text(s, 1, place, &r);
	bind_text(s, 2, subject, &r);
	bind_text(s, 3, artifact_type ?: "", &r);
	bind_blob(s, 4, answer, strlen(answer), &r);
	bind_int(s, 5, now_sec(), &r);
	if (r < 0)
		return r;
	return db_step_done(s);
}

int index_db_referrers_forget(struct index_db *db, const char *place, const char *subject)
{
	_cleanup_stmt_done_ sqlite3_stmt *s = NULL;
	int r;

	r = db_stmt(db, STMT_REFERRERS_DELETE, &s);
	if (r < 0)
		return r;
	bind_text(s, 1, place, &r);
	bind_text(s, 2, subject, &r);
	if (r < 0)
		return r;
	return db_step_done(s);
}

int index_db_image_put(struct index_db *db, const char *manifest_digest, const char *media_type,
		       const void *manifest, size_t manifest_len, const void *config, size_t config_len)
{
	_cleanup_stmt_done_ sqlite3_stmt *s = NULL;
	int r;

	r = db_stmt(db, STMT_IMAGE_PUT, &s);
	if (r < 0)
		return r;
	/* A zero-length manifest must still be a (non-NULL) BLOB. */
	bind_text(s, 1, manifest_digest, &r);
	bind_text(s, 2, media_type, &r);
	bind_blob(s, 3, manifest ?: "", manifest_len, &r);
	bind_blob(s, 4, config, config_len, &r);
	bind_int(s, 5, now_sec(), &r);
	if (r < 0)
		return r;
	return db_step_done(s);
}

int index_db_image_get(struct index_db *db, const char *manifest_digest, char **ret_media_type,
		       char **ret_manifest, size_t *ret_manifest_len, char **ret_config,
		       size_t *ret_config_len)
{
	_cleanup_stmt_done_ sqlite3_stmt *s = NULL;
	_cleanup_free_ char *media_type = NULL, *manifest = NULL, *config = NULL;
	size_t manifest_len = 0, config_len = 0;
	int r;

	r = db_stmt_row(db, STMT_IMAGE_GET, manifest_digest, NULL, &s);
	if (r < 0)
		return r;

	if (ret_media_type)
		r = column_dup(s, 0, &media_type, NULL);
	if (r >= 0 && ret_manifest)
		r = column_dup(s, 1, &manifest, &manifest_len);
	if (r >= 0 && ret_config)
		r = column_dup(s, 2, &config, &config_len);
	if (r < 0)
		return r;

	if (ret_media_type)
		*ret_media_type = TAKE_PTR(media_type);
	if (ret_manifest)
		*ret_manifest = TAKE_PTR(manifest);
	if (ret_manifest_len)
		*ret_manifest_len = manifest_len;
	if (ret_config)
		*ret_config = TAKE_PTR(config);
	if (ret_config_len)
		*ret_config_len = config_len;
	return 0;
}

/* Sets *ret_id to the layer's row id; -ENOENT if the layer is not indexed. */
static int db_layer_id(struct index_db *db, const char *digest, int64_t *ret_id)
{
	_cleanup_stmt_done_ sqlite3_stmt *s = NULL;
	int r;

	r = db_stmt_row(db, STMT_LAYER_ID, digest, NULL, &s);
	if (r < 0)
		return r;
	*ret_id = sqlite3_column_int64(s, 0);
	return 0;
}

int index_db_layer_is_indexed(struct index_db *db, const char *digest)
{
	int64_t id;
	int r;

	/* A layers row is written in the same transaction as all of its entries. */
	r = db_layer_id(db, digest, &id);
	if (r == -ENOENT)
		return 0;
	return r < 0 ? r : 1;
}

/*
 * xattrs BLOB format (little-endian), NULL when an entry has none:
 *   u32 count, then per xattr: u32 name_len, name bytes, NUL, u32 value_len, value bytes.
 * The NUL after the name lets readers point into the row without copying.
 */
static void put_u32(uint8_t **p, uint32_t v)
{
	(*p)[0] = v;
	(*p)[1] = v >> 8;
	(*p)[2] = v >> 16;
	(*p)[3] = v >> 24;
	*p += 4;
}

static uint32_t get_u32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int xattrs_packed_size(const struct xattr *x, size_t n, size_t *ret)
{
	size_t size = 4;

	if (n > UINT32_MAX)
		return -EFBIG;
	for (size_t i = 0; i < n; i++) {
		size_t name_len = strlen(x[i].name);

		if (name_len > UINT32_MAX || x[i].size > UINT32_MAX)
			return -EFBIG;
		size += 4 + name_len + 1 + 4 + x[i].size;
	}
	*ret = size;
	return 0;
}

static void xattrs_pack(const struct xattr *x, size_t n, uint8_t *p)
{
	put_u32(&p, n);
	for (size_t i = 0; i < n; i++) {
		size_t name_len = strlen(x[i].name);

		put_u32(&p, name_len);
		memcpy(p, x[i].name, name_len + 1);
		p += name_len + 1;
		put_u32(&p, x[i].size);
		if (x[i].size > 0)
			memcpy(p, x[i].value, x[i].size);
		p += x[i].size;
	}
}

/* Parses a packed BLOB into @buf (grown as needed); the xattrs point into @blob. */
static int xattrs_unpack(const uint8_t *blob, size_t size, struct xattr **buf, size_t *n_allocated,
			 size_t *ret_n)
{
	const uint8_t *p = blob, *end = blob + size;
	uint32_t n;

	if (size < 4)
		return -EBADMSG;
	n = get_u32(p);
	p += 4;
	/* Each xattr takes at least 9 bytes, which also bounds the allocation below. */
	if (n > (size - 4) / 9)
		return -EBADMSG;
	if (greedy_realloc((void **)buf, n_allocated, n, sizeof(**buf)) < 0)
		return -ENOMEM;
	for (uint32_t i = 0; i < n; i++) {
		uint32_t len;

		if (end - p < 4)
			return -EBADMSG;
		len = get_u32(p);
		p += 4;
		if ((size_t)(end - p) < (size_t)len + 1 || p[len] != '\0' || memchr(p, 0, len))
			return -EBADMSG;
		(*buf)[i].name = (const char *)p;
		p += len + 1;
		if (end - p < 4)
			return -EBADMSG;
		len = get_u32(p);
		p += 4;
		if ((size_t)(end - p) < len)
			return -EBADMSG;
		(*buf)[i].value = p;
		(*buf)[i].size = len;
		p += len;
	}
	if (p != end)
		return -EBADMSG;
	*ret_n = n;
	return 0;
}

int index_db_layer_begin_format(struct index_db *db, const char *digest, const char *media_type,
				const char *format, struct layer_writer **ret)
{
	struct layer_writer *w;

	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->db = db;
	w->digest = strdup(digest);
	w->media_type = media_type ? strdup(media_type) : NULL;
	w->format = strdup(format ?: "tar");
	if (!w->digest || (media_type && !w->media_type) || !w->format) {
		layer_writer_abort(w);
		return -ENOMEM;
	}
	*ret = w;
	return 0;
}

int index_db_layer_begin(struct index_db *db, const char *digest, const char *media_type,
			 struct layer_writer **ret)
{
	return index_db_layer_begin_format(db, digest, media_type, NULL, ret);
}

int index_db_layer_get_format(struct index_db *db, const char *digest, char **ret_format)
{
	_cleanup_stmt_done_ sqlite3_stmt *s = NULL;
	int r;

	r = db_stmt_row(db, STMT_LAYER_FORMAT, digest, NULL, &s);
	if (r < 0)
		return r;
	return column_dup(s, 0, ret_format, NULL);
}

int layer_writer_set_diff_id(struct layer_writer *w, const char *diff_id)
{
	char *d = strdup(diff_id);

	if (!d)
		return -ENOMEM;
	free(w->diff_id);
	w->diff_id = d;
	return 0;
}

int index_db_layer_get_diff_id(struct index_db *db, const char *digest, char **ret_diff_id)
{
	_cleanup_stmt_done_ sqlite3_stmt *s = NULL;
	int r;

	r = db_stmt_row(db, STMT_LAYER_DIFF_ID, digest, NULL, &s);
	if (r < 0)
		return r;
	if (sqlite3_column_type(s, 0) == SQLITE_NULL) {
		*ret_diff_id = NULL;
		return 0;
	}
	return column_dup(s, 0, ret_diff_id, NULL);
}

void layer_writer_abort(struct layer_writer *w)
{
	if (!w)
		return;
	for (size_t i = 0; i < w->n_entries; i++)
		free(w->entries[i]);
	free_many(w->entries, w->digest, w->media_type, w->format, w->diff_id, w);
}

static char *copy_string(char **p, const char *s)
{
	char *c = *p;
	size_t n;

	if (!s)
		return NULL;
	n = strlen(s) + 1;
	memcpy(c, s, n);
	*p += n;
	return c;
}

int layer_writer_add(struct layer_writer *w, const struct entry *e)
{
	struct pending_entry *pe;
	struct chunk *chunks = NULL;
	size_t xsize = 0, size;
	char *p;
	int r;

	if (!e->path || (e->n_chunks > 0 && !e->chunks))
		return -EINVAL;
	if (e->n_xattrs > 0) {
		r = xattrs_packed_size(e->xattrs, e->n_xattrs, &xsize);
		if (r < 0)
			return r;
	}
	if (e->n_chunks > (SIZE_MAX / 2) / sizeof(struct chunk))
		return -EFBIG;
	size = sizeof(*pe) + e->n_chunks * sizeof(struct chunk) + strlen(e->path) + 1 + xsize;
	if (e->link_target)
		size += strlen(e->link_target) + 1;
	if (e->digest)
		size += strlen(e->digest) + 1;
	for (size_t i = 0; i < e->n_chunks; i++)
		if (e->chunks[i].digest)
			size += strlen(e->chunks[i].digest) + 1;

	r = GREEDY_REALLOC(w->entries, w->n_allocated, w->n_entries + 1);
	if (r < 0)
		return r;

	pe = malloc(size);
	if (!pe)
		return -ENOMEM;
	pe->e = *e;
	pe->e.xattrs = NULL;
	pe->e.n_xattrs = 0;
	p = pe->data;
	if (e->n_chunks > 0) {
		chunks = (struct chunk *)p;
		memcpy(chunks, e->chunks, e->n_chunks * sizeof(struct chunk));
		p += e->n_chunks * sizeof(struct chunk);
	}
	pe->e.chunks = chunks;
	/* The packed xattrs go first: they are bytes, the strings after them need no alignment. */
	if (xsize > 0) {
		xattrs_pack(e->xattrs, e->n_xattrs, (uint8_t *)p);
		pe->xattrs = p;
		p += xsize;
	} else {
		pe->xattrs = NULL;
	}
	pe->xattrs_size = xsize;
	pe->e.path = copy_string(&p, e->path);
	pe->e.link_target = copy_string(&p, e->link_target);
	pe->e.digest = copy_string(&p, e->digest);
	for (size_t i = 0; i < e->n_chunks; i++)
		chunks[i].digest = copy_string(&p, e->chunks[i].digest);

	w->entries[w->n_entries++] = pe;
	return 0;
}

static int insert_entry(sqlite3_stmt *s, int64_t layer_id, int64_t seq,
			const struct pending_entry *pe)
{
	const struct entry *e = &pe->e;
	int r = 0;

	bind_int(s, 1, layer_id, &r);
	bind_int(s, 2, seq, &r);
	bind_text(s, 3, e->path, &r);
	bind_int(s, 4, e->type, &r);
	bind_int(s, 5, e->mode, &r);
	bind_int(s, 6, e->uid, &r);
	bind_int(s, 7, e->gid, &r);
	bind_int(s, 8, (int64_t)e->size, &r);
	bind_int(s, 9, e->mtime_sec, &r);
	bind_int(s, 10, e->mtime_nsec, &r);
	bind_int(s, 11, e->dev_major, &r);
	bind_int(s, 12, e->dev_minor, &r);
	bind_text(s, 13, e->link_target, &r);
	bind_text(s, 14, e->digest, &r);
	bind_blob(s, 15, pe->xattrs, pe->xattrs_size, &r);
	bind_int(s, 16, e->prefetch, &r);
	if (r < 0)
		return r;
	r = db_step_done(s);
	(void)sqlite3_reset(s);
	return r;
}

static int insert_chunks(sqlite3_stmt *s, int64_t layer_id, int64_t seq, const struct entry *e)
{
	int r = 0;

	for (size_t i = 0; i < e->n_chunks; i++) {
		const struct chunk *c = &e->chunks[i];

		/* Unsigned values above INT64_MAX come back bit for bit through int64. */
		bind_int(s, 1, layer_id, &r);
		bind_int(s, 2, seq, &r);
		bind_int(s, 3, (int64_t)i, &r);
		bind_int(s, 4, (int64_t)c->file_offset, &r);
		bind_int(s, 5, (int64_t)c->size, &r);
		bind_int(s, 6, (int64_t)c->blob_offset, &r);
		bind_int(s, 7, (int64_t)c->blob_length, &r);
		bind_text(s, 8, c->digest, &r);
		if (r < 0)
			return r;
		r = db_step_done(s);
		(void)sqlite3_reset(s);
		if (r < 0)
			return r;
	}
	return 0;
}

static int layer_writer_write(struct layer_writer *w)
{
	struct index_db *db = w->db;
	sqlite3_stmt *s;
	int64_t layer_id;
	int r;

	/* Re-indexing a layer replaces it (its entries go by ON DELETE CASCADE). */
	r = db_stmt(db, STMT_LAYER_DELETE, &s);
	if (r < 0)
		return r;
	bind_text(s, 1, w->digest, &r);
	if (r >= 0)
		r = db_step_done(s);
	stmt_donep(&s);
	if (r < 0)
		return r;

	r = db_stmt(db, STMT_LAYER_INSERT, &s);
	if (r < 0)
		return r;
	bind_text(s, 1, w->digest, &r);
	bind_text(s, 2, w->media_type, &r);
	bind_int(s, 3, now_sec(), &r);
	bind_int(s, 4, w->n_entries, &r);
	bind_text(s, 5, w->format, &r);
	bind_text(s, 6, w->diff_id, &r);
	if (r >= 0)
		r = db_step_done(s);
	stmt_donep(&s);
	if (r < 0)
		return r;
	layer_id = sqlite3_last_insert_rowid(db->conn);

	r = db_stmt(db, STMT_ENTRY_INSERT, &s);
	if (r < 0)
		return r;
	for (size_t i = 0; i < w->n_entries; i++) {
		r = insert_entry(s, layer_id, i, w->entries[i]);
		if (r < 0)
			break;
	}
	stmt_donep(&s);
	if (r < 0)
		return r;

	/* All chunks after all entries: each statement runs in one tight loop, and chunk rows
	 * land in key order, appending to the table's B-tree. */
	r = db_stmt(db, STMT_CHUNK_INSERT, &s);
	if (r < 0)
		return r;
	for (size_t i = 0; i < w->n_entries; i++) {
		r = insert_chunks(s, layer_id, i, &w->entries[i]->e);
		if (r < 0)
			break;
	}
	stmt_donep(&s);
	return r;
}

int layer_writer_commit(struct layer_writer *w)
{
	int r;

	r = db_begin(w->db);
	if (r < 0)
		goto finish;
	r = layer_writer_write(w);
	if (r < 0) {
		db_rollback(w->db);
		goto finish;
	}
	r = db_commit(w->db);
finish:
	layer_writer_abort(w);
	return r;
}

/* The chunks of the entry being returned by index_db_layer_foreach(), copied out of the chunk
 * cursor (whose column pointers die at the next step).  Reused from entry to entry. */
struct chunk_buf {
	struct chunk *chunks;
	size_t n, n_allocated;
	size_t *digest_off;     /* into @strs; SIZE_MAX for a zeros chunk */
	size_t off_allocated;
	char *strs;
	size_t strs_len, strs_allocated;
};

static void chunk_buf_done(struct chunk_buf *b)
{
	free_many(b->chunks, b->digest_off, b->strs);
}

static int chunk_buf_push(struct chunk_buf *b, sqlite3_stmt *s)
{
	const char *digest = (const char *)sqlite3_column_text(s, 5);
	size_t len = digest ? (size_t)sqlite3_column_bytes(s, 5) + 1 : 0;

	if (GREEDY_REALLOC(b->chunks, b->n_allocated, b->n + 1) < 0 ||
	    GREEDY_REALLOC(b->digest_off, b->off_allocated, b->n + 1) < 0 ||
	    GREEDY_REALLOC(b->strs, b->strs_allocated, b->strs_len + len) < 0)
		return -ENOMEM;
	b->chunks[b->n] = (struct chunk) {
		.file_offset = (uint64_t)sqlite3_column_int64(s, 1),
		.size = (uint64_t)sqlite3_column_int64(s, 2),
		.blob_offset = (uint64_t)sqlite3_column_int64(s, 3),
		.blob_length = (uint64_t)sqlite3_column_int64(s, 4),
	};
	if (digest) {
		memcpy(b->strs + b->strs_len, digest, len);
		b->digest_off[b->n] = b->strs_len;
		b->strs_len += len;
	} else {
		b->digest_off[b->n] = SIZE_MAX;
	}
	b->n++;
	return 0;
}

/* Pointers into @strs only once it stops moving. */
static void chunk_buf_fix(struct chunk_buf *b)
{
	for (size_t i = 0; i < b->n; i++)
		b->chunks[i].digest = b->digest_off[i] == SIZE_MAX ? NULL : b->strs + b->digest_off[i];
}

int index_db_layer_foreach(struct index_db *db, const char *digest,
			   int (*cb)(void *userdata, const struct entry *e), void *userdata)
{
	/* Statements of its own, not cached ones: @cb may use @db, even recursively. */
	_cleanup_(stmt_finalizep) sqlite3_stmt *s = NULL, *cs = NULL;
	_cleanup_(chunk_buf_done) struct chunk_buf cb_chunks = {};
	_cleanup_free_ struct xattr *xattrs = NULL;
	size_t n_xattrs_allocated = 0;
	int64_t layer_id;
	int rc, crc, r;

	r = db_layer_id(db, digest, &layer_id);
	if (r < 0)
		return r;

	r = sqlite_errno(sqlite3_prepare_v2(db->conn,
		"SELECT path, type, mode, uid, gid, size, mtime_sec, mtime_nsec, dev_major,"
		" dev_minor, link_target, digest, xattrs, seq, prefetch FROM entries"
		" WHERE layer_id = ?1 ORDER BY seq", -1, &s, NULL));
	if (r < 0)
		return r;
	bind_int(s, 1, layer_id, &r);
	if (r < 0)
		return r;
	/* The primary key's order: a scan, no sort. */
	r = sqlite_errno(sqlite3_prepare_v2(db->conn,
		"SELECT seq, file_offset, size, blob_offset, blob_length, digest FROM chunks"
		" WHERE layer_id = ?1 ORDER BY seq, idx", -1, &cs, NULL));
	if (r < 0)
		return r;
	bind_int(cs, 1, layer_id, &r);
	if (r < 0)
		return r;
	crc = sqlite3_step(cs);

	for (;;) {
		struct entry e = {};
		const void *blob;
		int64_t seq;

		rc = sqlite3_step(s);
		if (rc != SQLITE_ROW)
			break;

		e.path = (const char *)sqlite3_column_text(s, 0);
		if (!e.path)
			return -ENOMEM;  /* NOT NULL column: only an allocation failure gives NULL */
		e.type = sqlite3_column_int(s, 1);
		e.mode = sqlite3_column_int64(s, 2);
		e.uid = sqlite3_column_int64(s, 3);
		e.gid = sqlite3_column_int64(s, 4);
		e.size = sqlite3_column_int64(s, 5);
		e.mtime_sec = sqlite3_column_int64(s, 6);
		e.mtime_nsec = sqlite3_column_int64(s, 7);
		e.dev_major = sqlite3_column_int64(s, 8);
		e.dev_minor = sqlite3_column_int64(s, 9);
		e.link_target = (const char *)sqlite3_column_text(s, 10);
		e.digest = (const char *)sqlite3_column_text(s, 11);
		blob = sqlite3_column_blob(s, 12);
		if (blob) {
			r = xattrs_unpack(blob, sqlite3_column_bytes(s, 12), &xattrs,
					  &n_xattrs_allocated, &e.n_xattrs);
			if (r < 0)
				return r;
			e.xattrs = xattrs;
		}
		seq = sqlite3_column_int64(s, 13);
		e.prefetch = sqlite3_column_int(s, 14) != 0;

		/* Both cursors run in seq order: take this entry's chunks off the other one. */
		cb_chunks.n = cb_chunks.strs_len = 0;
		for (; crc == SQLITE_ROW; crc = sqlite3_step(cs)) {
			int64_t cseq = sqlite3_column_int64(cs, 0);

			if (cseq > seq)
				break;
			if (cseq < seq)
				continue;  /* no such entry: cannot happen with our writes */
			r = chunk_buf_push(&cb_chunks, cs);
			if (r < 0)
				return r;
		}
		if (crc != SQLITE_ROW && crc != SQLITE_DONE)
			return sqlite_errno(crc);
		if (cb_chunks.n > 0) {
			chunk_buf_fix(&cb_chunks);
			e.chunks = cb_chunks.chunks;
			e.n_chunks = cb_chunks.n;
		}

		r = cb(userdata, &e);
		if (r < 0)
			return r;
	}
	return sqlite_errno(rc);
}

/* ---- Cache administration (images, inspect, rm, gc, fsck) ----------------------------------
 * Walks use statements of their own, finalized on return; writes are single statements that
 * the caller may group with index_db_transaction_begin(). */

static int db_prepare(struct index_db *db, const char *sql, sqlite3_stmt **ret)
{
	return sqlite_errno(sqlite3_prepare_v2(db->conn, sql, -1, ret, NULL));
}

/* The code that ended a walk, mapped to errno. */
static int db_step_end(int rc)
{
	return rc == SQLITE_DONE ? 0 : sqlite_errno(rc);
}

/* Prepares @sql, binds ?1 to @id unless it is negative, and hands each result row to @row
 * until it fails; the statement is finalized on return.  Returns @row's error or the walk's. */
static int db_walk(struct index_db *db, const char *sql, int64_t id,
		   int (*row)(sqlite3_stmt *s, void *userdata), void *userdata)
{
	_cleanup_(stmt_finalizep) sqlite3_stmt *s = NULL;
	int rc, r;

	r = db_prepare(db, sql, &s);
	if (r < 0)
		return r;
	if (id >= 0)
		bind_int(s, 1, id, &r);
	if (r < 0)
		return r;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		r = row(s, userdata);
		if (r < 0)
			return r;
	}
	return db_step_end(rc);
}

/* A public walk's callback, for the row adapters below. */
struct walk {
	union {
		int (*ref)(void *userdata, const struct index_db_ref_row *row);
		int (*image)(void *userdata, const struct index_db_image_row *row);
		int (*layer)(void *userdata, const struct index_db_layer_row *row);
		int (*blob)(void *userdata, const char *digest, bool chunk);
		int (*seek)(void *userdata, const char *layer, const char *digest, bool trusted);
	};
	void *userdata;
};

static int ref_row(sqlite3_stmt *s, void *userdata)
{
	const struct walk *w = userdata;
	struct index_db_ref_row row = {
		.ref = (const char *)sqlite3_column_text(s, 0),
		.platform = (const char *)sqlite3_column_text(s, 1),
		.digest = (const char *)sqlite3_column_text(s, 2),
		.updated = sqlite3_column_int64(s, 3),
	};

	if (!row.ref || !row.platform || !row.digest)
		return -ENOMEM;
	return w->ref(w->userdata, &row);
}

int index_db_ref_foreach(struct index_db *db,
			 int (*cb)(void *userdata, const struct index_db_ref_row *row), void *userdata)
{
	struct walk w = { .ref = cb, .userdata = userdata };

	return db_walk(db, "SELECT ref, platform, digest, updated FROM refs ORDER BY ref, platform",
		       -1, ref_row, &w);
}

static int image_row(sqlite3_stmt *s, void *userdata)
{
	const struct walk *w = userdata;
	struct index_db_image_row row = {
		.digest = (const char *)sqlite3_column_text(s, 0),
		.media_type = (const char *)sqlite3_column_text(s, 1),
		.manifest = sqlite3_column_blob(s, 2),
		.manifest_len = (size_t)sqlite3_column_bytes(s, 2),
		.created = sqlite3_column_int64(s, 3),
		.last_used = sqlite3_column_int64(s, 4),
	};

	if (!row.digest || !row.media_type)
		return -ENOMEM;
	if (!row.manifest)
		row.manifest = "";
	return w->image(w->userdata, &row);
}

int index_db_image_foreach(struct index_db *db,
			   int (*cb)(void *userdata, const struct index_db_image_row *row),
			   void *userdata)
{
	struct walk w = { .image = cb, .userdata = userdata };

	return db_walk(db, "SELECT digest, media_type, manifest, created, last_used FROM images"
		       " ORDER BY digest", -1, image_row, &w);
}

static int layer_row(sqlite3_stmt *s, void *userdata)
{
	const struct walk *w = userdata;
	struct index_db_layer_row row = {
		.digest = (const char *)sqlite3_column_text(s, 0),
		.media_type = (const char *)sqlite3_column_text(s, 1),
		.format = (const char *)sqlite3_column_text(s, 2),
		.n_entries = sqlite3_column_int64(s, 3),
	};

	if (!row.digest || !row.format)
		return -ENOMEM;
	return w->layer(w->userdata, &row);
}

int index_db_layer_foreach_row(struct index_db *db,
			       int (*cb)(void *userdata, const struct index_db_layer_row *row),
			       void *userdata)
{
	struct walk w = { .layer = cb, .userdata = userdata };

	return db_walk(db, "SELECT digest, media_type, format, n_entries FROM layers ORDER BY digest",
		       -1, layer_row, &w);
}

static int blob_row(sqlite3_stmt *s, void *userdata)
{
	const struct walk *w = userdata;
	const char *d = (const char *)sqlite3_column_text(s, 0);

	if (!d)
		return -ENOMEM;
	return w->blob(w->userdata, d, sqlite3_column_int(s, 1) != 0);
}

int index_db_layer_foreach_blob(struct index_db *db, const char *layer_digest,
				int (*cb)(void *userdata, const char *digest, bool chunk),
				void *userdata)
{
	struct walk w = { .blob = cb, .userdata = userdata };
	int64_t layer_id;
	int r;

	r = db_layer_id(db, layer_digest, &layer_id);
	if (r < 0)
		return r;
	return db_walk(db, "SELECT DISTINCT digest, 0 FROM entries"
		       " WHERE layer_id = ?1 AND digest IS NOT NULL"
		       " UNION SELECT DISTINCT digest, 1 FROM chunks"
		       " WHERE layer_id = ?1 AND digest IS NOT NULL", layer_id, blob_row, &w);
}

int index_db_blob_is_referenced(struct index_db *db, const char *digest)
{
	_cleanup_(stmt_finalizep) sqlite3_stmt *s = NULL;
	int rc, r;

	/* Both lookups are one probe of the v3 indexes. */
	r = db_prepare(db, "SELECT EXISTS (SELECT 1 FROM entries WHERE digest = ?1)"
		       " OR EXISTS (SELECT 1 FROM chunks WHERE digest = ?1)"
		       " OR EXISTS (SELECT 1 FROM seek_indexes WHERE digest = ?1)"
		       " OR EXISTS (SELECT 1 FROM start_profiles WHERE digest = ?1)", &s);
	if (r < 0)
		return r;
	bind_text(s, 1, digest, &r);
	if (r < 0)
		return r;
	rc = sqlite3_step(s);
	if (rc != SQLITE_ROW)
		return rc == SQLITE_DONE ? -EPROTO : sqlite_errno(rc);
	return sqlite3_column_int(s, 0) != 0;
}

/* Runs a one-statement write binding @a (and @b, if non-NULL) and returns the rows changed. */
static int db_write(struct index_db *db, const char *sql, const char *a, const char *b,
		    int64_t i)
{
	_cleanup_(stmt_finalizep) sqlite3_stmt *s = NULL;
	int r;

	r = db_prepare(db, sql, &s);
	if (r < 0)
		return r;
	bind_text(s, 1, a, &r);
	if (b)
		bind_text(s, 2, b, &r);
	if (i >= 0)
		bind_int(s, 3, i, &r);
	if (r < 0)
		return r;
	r = db_step_done(s);
	if (r < 0)
		return r;
	return sqlite3_changes(db->conn);
}

int index_db_image_touch(struct index_db *db, const char *manifest_digest)
{
	int r;

	r = db_write(db, "UPDATE images SET last_used = ?3 WHERE digest = ?1", manifest_digest, NULL,
		     now_sec());
	if (r < 0)
		return r;
	return r == 0 ? -ENOENT : 0;
}

int index_db_ref_delete(struct index_db *db, const char *ref, const char *platform)
{
	if (platform)
		return db_write(db, "DELETE FROM refs WHERE ref = ?1 AND platform = ?2", ref,
				platform, -1);
	return db_write(db, "DELETE FROM refs WHERE ref = ?1", ref, NULL, -1);
}

int index_db_ref_delete_digest(struct index_db *db, const char *manifest_digest)
{
	return db_write(db, "DELETE FROM refs WHERE digest = ?1", manifest_digest, NULL, -1);
}

int index_db_image_delete(struct index_db *db, const char *manifest_digest)
{
	return db_write(db, "DELETE FROM images WHERE digest = ?1", manifest_digest, NULL, -1);
}

int index_db_layer_delete(struct index_db *db, const char *digest)
{
	/* Entries and chunks go by ON DELETE CASCADE, a range scan of their primary keys. */
	return db_write(db, "DELETE FROM layers WHERE digest = ?1", digest, NULL, -1);
}

int index_db_transaction_begin(struct index_db *db)
{
	return db_begin(db);
}

int index_db_transaction_commit(struct index_db *db)
{
	return db_commit(db);
}

void index_db_transaction_rollback(struct index_db *db)
{
	db_rollback(db);
}

/* Keeps each line of PRAGMA integrity_check that is not "ok". */
static int problem_row(sqlite3_stmt *s, void *userdata)
{
	const char *m = (const char *)sqlite3_column_text(s, 0);

	if (!m)
		return -ENOMEM;
	return streq(m, "ok") ? 0 : strv_push(userdata, m);
}

int index_db_integrity_check(struct index_db *db, char ***ret_problems)
{
	_cleanup_strv_free_ char **l = NULL;
	int r;

	r = db_walk(db, "PRAGMA integrity_check", -1, problem_row, &l);
	if (r < 0)
		return r;
	*ret_problems = TAKE_PTR(l);
	return 0;
}

int index_db_seek_put(struct index_db *db, const char *layer, const char *digest, bool trusted)
{
	_cleanup_(stmt_finalizep) sqlite3_stmt *s = NULL;
	int r;

	r = db_prepare(db, "INSERT OR REPLACE INTO seek_indexes (layer, digest, trusted, created)"
		       " VALUES (?1, ?2, ?3, ?4)", &s);
	if (r < 0)
		return r;
	bind_text(s, 1, layer, &r);
	bind_text(s, 2, digest, &r);
	bind_int(s, 3, trusted, &r);
	bind_int(s, 4, now_sec(), &r);
	return r < 0 ? r : db_busy_message(db_step_done(s));
}

int index_db_seek_get(struct index_db *db, const char *layer, char **ret_digest, bool *ret_trusted)
{
	_cleanup_(stmt_finalizep) sqlite3_stmt *s = NULL;
	int rc, r;

	r = db_prepare(db, "SELECT digest, trusted FROM seek_indexes WHERE layer = ?1", &s);
	if (r < 0)
		return r;
	bind_text(s, 1, layer, &r);
	if (r < 0)
		return r;
	rc = sqlite3_step(s);
	if (rc == SQLITE_DONE)
		return -ENOENT;
	if (rc != SQLITE_ROW)
		return db_busy_message(sqlite_errno(rc));
	if (ret_trusted)
		*ret_trusted = sqlite3_column_int(s, 1) != 0;
	return ret_digest ? column_dup(s, 0, ret_digest, NULL) : 0;
}

int index_db_seek_delete(struct index_db *db, const char *layer)
{
	return db_write(db, "DELETE FROM seek_indexes WHERE layer = ?1", layer, NULL, -1);
}

static int seek_row(sqlite3_stmt *s, void *userdata)
{
	const struct walk *w = userdata;
	const char *layer = (const char *)sqlite3_column_text(s, 0);
	const char *digest = (const char *)sqlite3_column_text(s, 1);

	if (!layer || !digest)
		return -ENOMEM;
	return w->seek(w->userdata, layer, digest, sqlite3_column_int(s, 2) != 0);
}

int index_db_seek_foreach(struct index_db *db,
			  int (*cb)(void *userdata, const char *layer, const char *digest,
				    bool trusted),
			  void *userdata)
{
	struct walk w = { .seek = cb, .userdata = userdata };

	return db_walk(db, "SELECT layer, digest, trusted FROM seek_indexes ORDER BY layer", -1,
		       seek_row, &w);
}

int index_db_profile_put(struct index_db *db, const char *image, const char *digest,
			 const char *origin)
{
	_cleanup_(stmt_finalizep) sqlite3_stmt *s = NULL;
	int r;

	r = db_prepare(db, "INSERT OR REPLACE INTO start_profiles (image, digest, origin, created)"
		       " VALUES (?1, ?2, ?3, ?4)", &s);
	if (r < 0)
		return r;
	bind_text(s, 1, image, &r);
	bind_text(s, 2, digest, &r);
	bind_text(s, 3, origin, &r);
	bind_int(s, 4, now_sec(), &r);
	return r < 0 ? r : db_busy_message(db_step_done(s));
}

int index_db_profile_get(struct index_db *db, const char *image, char **ret_digest,
			 char **ret_origin)
{
	_cleanup_(stmt_finalizep) sqlite3_stmt *s = NULL;
	_cleanup_free_ char *digest = NULL;
	int rc, r;

	r = db_prepare(db, "SELECT digest, origin FROM start_profiles WHERE image = ?1", &s);
	if (r < 0)
		return r;
	bind_text(s, 1, image, &r);
	if (r < 0)
		return r;
	rc = sqlite3_step(s);
	if (rc == SQLITE_DONE)
		return -ENOENT;
	if (rc != SQLITE_ROW)
		return db_busy_message(sqlite_errno(rc));
	r = column_dup(s, 0, &digest, NULL);
	if (r >= 0 && ret_origin)
		r = column_dup(s, 1, ret_origin, NULL);
	if (r < 0)
		return r;
	*ret_digest = TAKE_PTR(digest);
	return 0;
}
