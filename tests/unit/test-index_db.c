/* tests/unit/test-index_db.c: the SQLite index round-trips refs, images and layer entries
 * exactly (binary xattrs, chunks and prefetch flags included), handles 100,000+ entries with
 * chunks in one quick transaction, shares the file between connections, and upgrades a
 * schema 1 database in place; a second connection in one process keeps the first one's locks. */
#include "cache/store/index_db.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "cache/base/util.h"
#include "tap.h"

#define L1 "sha256:1111111111111111111111111111111111111111111111111111111111111111"
#define L2 "sha256:2222222222222222222222222222222222222222222222222222222222222222"
#define L3 "sha256:3333333333333333333333333333333333333333333333333333333333333333"
#define L4 "sha256:4444444444444444444444444444444444444444444444444444444444444444"
#define C1 "sha256:c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1"
#define C2 "sha256:c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2"
#define BIG_N 150000

static char dbpath[320];

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st, (void)flag, (void)ftw;
	return remove(path);
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static long long sql_int(const char *sql)
{
	sqlite3 *c = NULL;
	sqlite3_stmt *s = NULL;
	long long v = -1;

	if (sqlite3_open_v2(dbpath, &c, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
	    sqlite3_prepare_v2(c, sql, -1, &s, NULL) == SQLITE_OK && sqlite3_step(s) == SQLITE_ROW)
		v = sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	sqlite3_close(c);
	return v;
}

/* The sample entries: every type, every field, binary xattrs with NUL bytes. */
static const uint8_t cap[20] = { 0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00 };
static const struct xattr xa_cap[] = {
	{ .name = "security.capability", .value = cap, .size = sizeof(cap) },
};
static const struct xattr xa_two[] = {
	{ .name = "user.a", .value = "1", .size = 1 },
	{ .name = "user.nul", .value = "\0x\0\0", .size = 4 },
	{ .name = "user.empty", .value = "", .size = 0 },
};
/* A lazy file: two fetchable chunks around a run of zeros; offsets past 2^63 round-trip too. */
static const struct chunk chunks_lazy[] = {
	{ .file_offset = 0, .size = 4096, .blob_offset = 1234, .blob_length = 999, .digest = C1 },
	{ .file_offset = 4096, .size = 1 << 20, .blob_offset = 2233, .blob_length = 0 },
	{ .file_offset = 4096 + (1 << 20), .size = 10, .blob_offset = UINT64_MAX - 5,
	  .blob_length = 5, .digest = C2 },
};
static const struct chunk chunks_one[] = {
	{ .file_offset = 0, .size = 7, .blob_offset = 0, .blob_length = 40, .digest = C2 },
};
static const struct entry sample[] = {
	{ .path = "", .type = ENTRY_DIR, .mode = 0755, .mtime_sec = 1700000000 },
	{ .path = "bin/busybox", .type = ENTRY_REG, .mode = 04755, .uid = 0, .gid = 0,
	  .size = 1982256, .mtime_sec = 1700000000, .mtime_nsec = 123456789,
	  .digest = "sha256:3d9f2889d6782537624a4e1a10e68a2ddd53e0ee8bac02676f27308f42ec6bf6" },
	{ .path = "bin/sh", .type = ENTRY_SYMLINK, .mode = 0777, .link_target = "busybox" },
	{ .path = "hardlinks/b", .type = ENTRY_HARDLINK, .mode = 0644, .link_target = "hardlinks/a" },
	{ .path = "dev/null", .type = ENTRY_CHR, .mode = 0666, .dev_major = 1, .dev_minor = 3 },
	{ .path = "dev/loop7", .type = ENTRY_BLK, .mode = 0660, .dev_major = 7, .dev_minor = 7,
	  .uid = 4294967294u, .gid = 65534 },
	{ .path = "run/fifo", .type = ENTRY_FIFO, .mode = 0644, .mtime_sec = -86400 },
	{ .path = "xattr/cap-net-raw", .type = ENTRY_REG, .mode = 0755, .size = 19,
	  .digest = "sha256:fa4b2f9f27bab631f987e1036ab6d095dc30b168d1fec816e7ffaac70a891f35",
	  .xattrs = xa_cap, .n_xattrs = 1 },
	{ .path = "xattr/two", .type = ENTRY_DIR, .mode = 01777, .xattrs = xa_two, .n_xattrs = 3 },
	{ .path = "names/ünïcødé-日本語.txt", .type = ENTRY_REG, .size = 0, .mode = 0644,
	  .mtime_sec = 10413792000, .digest = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" },
	{ .path = "raw/\xff\xfe", .type = ENTRY_SYMLINK, .mode = 0777, .link_target = "../\x80 x" },
	{ .path = "lazy/big", .type = ENTRY_REG, .mode = 0644, .size = 4096 + (1 << 20) + 10,
	  .digest = "sha256:5555555555555555555555555555555555555555555555555555555555555555",
	  .chunks = chunks_lazy, .n_chunks = ELEMENTSOF(chunks_lazy), .prefetch = true,
	  .xattrs = xa_cap, .n_xattrs = 1 },
	{ .path = "lazy/one", .type = ENTRY_REG, .mode = 0600, .size = 7,
	  .chunks = chunks_one, .n_chunks = 1 },
	{ .path = "lazy/dir", .type = ENTRY_DIR, .mode = 0755, .prefetch = true },
};

static bool str_eq(const char *a, const char *b)
{
	return (!a && !b) || (a && b && streq(a, b));
}

static bool entry_eq(const struct entry *a, const struct entry *b)
{
	if (!str_eq(a->path, b->path) || a->type != b->type || a->mode != b->mode ||
	    a->uid != b->uid || a->gid != b->gid || a->size != b->size ||
	    a->mtime_sec != b->mtime_sec || a->mtime_nsec != b->mtime_nsec ||
	    a->dev_major != b->dev_major || a->dev_minor != b->dev_minor ||
	    !str_eq(a->link_target, b->link_target) || !str_eq(a->digest, b->digest) ||
	    a->n_xattrs != b->n_xattrs || a->n_chunks != b->n_chunks || a->prefetch != b->prefetch)
		return false;
	if ((a->n_chunks > 0 && !a->chunks) || (b->n_chunks > 0 && !b->chunks))
		return false;
	for (size_t i = 0; i < a->n_chunks; i++)
		if (a->chunks[i].file_offset != b->chunks[i].file_offset ||
		    a->chunks[i].size != b->chunks[i].size ||
		    a->chunks[i].blob_offset != b->chunks[i].blob_offset ||
		    a->chunks[i].blob_length != b->chunks[i].blob_length ||
		    !str_eq(a->chunks[i].digest, b->chunks[i].digest))
			return false;
	for (size_t i = 0; i < a->n_xattrs; i++)
		if (!streq(a->xattrs[i].name, b->xattrs[i].name) ||
		    a->xattrs[i].size != b->xattrs[i].size ||
		    memcmp(a->xattrs[i].value, b->xattrs[i].value, a->xattrs[i].size) != 0)
			return false;
	return true;
}

struct collect {
	size_t n, mismatches, stop_at;
};

static int cb_sample(void *userdata, const struct entry *e)
{
	struct collect *c = userdata;

	if (c->n >= ELEMENTSOF(sample) || !entry_eq(e, &sample[c->n]))
		c->mismatches++;
	c->n++;
	if (c->stop_at && c->n == c->stop_at)
		return -ECANCELED;
	return 0;
}

#define BIG_CHUNKS 3

/* Like a zstd:chunked layer: most files have 1..3 chunks (every 16th chunk a zeros one). */
static void make_big_entry(size_t i, char *path, size_t size, struct entry *e, struct xattr *x,
			   struct chunk c[BIG_CHUNKS])
{
	static const char *const digests[] = { C1, C2 };
	size_t n = i % (BIG_CHUNKS + 1);

	snprintf(path, size, "data/tree/d%03zu/s%zu/f%06zu.txt", i / 1000, i % 7, i);
	*e = (struct entry) {
		.path = path, .type = ENTRY_REG, .mode = 0644, .uid = i % 3, .gid = i % 5,
		.size = i, .mtime_sec = 1700172800 + i, .mtime_nsec = i % 1000000000,
		.digest = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
		.prefetch = i % 5 == 0,
	};
	for (size_t k = 0; k < n; k++)
		c[k] = (struct chunk) {
			.file_offset = k * 100, .size = 100, .blob_offset = i * 1000 + k * 300,
			.blob_length = 300, .digest = (i + k) % 16 == 0 ? NULL : digests[(i + k) % 2],
		};
	if (n > 0) {
		e->chunks = c;
		e->n_chunks = n;
	}
	if (i % 100 == 0) {
		x->name = "user.i";
		x->value = path;
		x->size = strlen(path);
		e->xattrs = x;
		e->n_xattrs = 1;
	}
}

static int cb_big(void *userdata, const struct entry *e)
{
	struct collect *c = userdata;
	char path[128];
	struct entry want;
	struct xattr x;
	struct chunk ch[BIG_CHUNKS];

	make_big_entry(c->n, path, sizeof(path), &want, &x, ch);
	if (!entry_eq(e, &want))
		c->mismatches++;
	c->n++;
	return 0;
}

struct writer_thread {
	const char *digest;
	int r;
};

static void *write_layer_thread(void *p)
{
	struct writer_thread *t = p;
	struct index_db *db = NULL;
	struct layer_writer *w = NULL;
	char path[128];

	t->r = index_db_open(dbpath, &db);
	for (int round = 0; t->r >= 0 && round < 20; round++) {
		t->r = index_db_layer_begin(db, t->digest, NULL, &w);
		for (size_t i = 0; t->r >= 0 && i < 2000; i++) {
			struct entry e;
			struct xattr x;
			struct chunk ch[BIG_CHUNKS];

			make_big_entry(i, path, sizeof(path), &e, &x, ch);
			t->r = layer_writer_add(w, &e);
		}
		if (t->r >= 0)
			t->r = layer_writer_commit(w);
		else
			layer_writer_abort(w);
	}
	index_db_free(db);
	return NULL;
}

/* Schema 1 as lazyroot 0.x wrote it: migrations never edit it, so neither does this copy. */
static const char schema_v1[] =
	"CREATE TABLE refs (ref TEXT NOT NULL, platform TEXT NOT NULL, digest TEXT NOT NULL,"
	"  updated INTEGER NOT NULL, PRIMARY KEY (ref, platform)) WITHOUT ROWID;"
	"CREATE TABLE images (digest TEXT PRIMARY KEY NOT NULL, media_type TEXT NOT NULL,"
	"  manifest BLOB NOT NULL, config BLOB, created INTEGER NOT NULL,"
	"  last_used INTEGER NOT NULL);"
	"CREATE TABLE layers (id INTEGER PRIMARY KEY, digest TEXT NOT NULL UNIQUE,"
	"  media_type TEXT, indexed_at INTEGER NOT NULL, n_entries INTEGER NOT NULL);"
	"CREATE TABLE entries ("
	"  layer_id INTEGER NOT NULL REFERENCES layers(id) ON DELETE CASCADE,"
	"  seq INTEGER NOT NULL, path TEXT NOT NULL, type INTEGER NOT NULL, mode INTEGER NOT NULL,"
	"  uid INTEGER NOT NULL, gid INTEGER NOT NULL, size INTEGER NOT NULL,"
	"  mtime_sec INTEGER NOT NULL, mtime_nsec INTEGER NOT NULL, dev_major INTEGER NOT NULL,"
	"  dev_minor INTEGER NOT NULL, link_target TEXT, digest TEXT, xattrs BLOB,"
	"  PRIMARY KEY (layer_id, seq)) WITHOUT ROWID;"
	"INSERT INTO layers VALUES (7, '" L1 "', 'application/vnd.oci.image.layer.v1.tar', 1, 2);"
	"INSERT INTO entries VALUES (7, 0, 'bin', 1, 493, 0, 0, 0, 5, 0, 0, 0, NULL, NULL, NULL);"
	"INSERT INTO entries VALUES (7, 1, 'bin/busybox', 0, 2541, 0, 0, 1982256, 1700000000,"
	"  123456789, 0, 0, NULL,"
	"  'sha256:3d9f2889d6782537624a4e1a10e68a2ddd53e0ee8bac02676f27308f42ec6bf6', NULL);"
	"INSERT INTO refs VALUES ('old', 'linux/amd64', '" L2 "', 1);"
	"PRAGMA user_version = 1;";

static int cb_v1(void *userdata, const struct entry *e)
{
	struct collect *c = userdata;
	bool ok;

	if (c->n == 0)
		ok = streq(e->path, "bin") && e->type == ENTRY_DIR && e->mode == 0755;
	else
		ok = c->n == 1 && streq(e->path, "bin/busybox") && e->type == ENTRY_REG &&
		     e->mode == 04755 && e->size == 1982256 && e->mtime_nsec == 123456789 &&
		     e->digest && streq(e->digest, sample[1].digest);
	if (!ok || e->n_chunks != 0 || e->chunks || e->prefetch)
		c->mismatches++;
	c->n++;
	return 0;
}

static void test_migration(const char *dir)
{
	_cleanup_(index_db_freep) struct index_db *db = NULL;
	struct layer_writer *w = NULL;
	struct collect c = {};
	char path[300], *s = NULL;
	sqlite3 *conn = NULL;
	int r;

	snprintf(path, sizeof(path), "%s/v1.db", dir);
	r = sqlite3_open(path, &conn);
	if (r == SQLITE_OK)
		r = sqlite3_exec(conn, schema_v1, NULL, NULL, NULL);
	sqlite3_close(conn);
	check(r == SQLITE_OK, "v1: a schema 1 database is made (%d)", r);

	r = index_db_open(path, &db);
	check(r == 0, "v1: a schema 1 database opens (r=%d)", r);
	if (r < 0)
		return;
	snprintf(dbpath, sizeof(dbpath), "%s", path);
	check(sql_int("PRAGMA user_version") == 7, "v1: it is upgraded to the current schema (7) in place");
	check(index_db_layer_is_indexed(db, L1) == 1 &&
	      index_db_layer_foreach(db, L1, cb_v1, &c) == 0 && c.n == 2 && c.mismatches == 0,
	      "v1: its entries read back unchanged, without chunks or prefetch flags (%zu, %zu)",
	      c.n, c.mismatches);
	check(index_db_layer_get_format(db, L1, &s) == 0 && streq(s, "tar"),
	      "v1: its layers are 'tar' layers");
	free(s);
	s = (char *)"unset";
	check(index_db_layer_get_diff_id(db, L1, &s) == 0 && !s,
	      "v1: its layers have no diff_id recorded");
	s = NULL;
	check(index_db_ref_get(db, "old", "linux/amd64", &s) == 0 && streq(s, L2),
	      "v1: its refs are kept");
	free(s);

	r = index_db_layer_begin_format(db, L3, NULL, "estargz", &w);
	for (size_t i = 0; r >= 0 && i < ELEMENTSOF(sample); i++)
		r = layer_writer_add(w, &sample[i]);
	if (r >= 0)
		r = layer_writer_commit(w);
	else
		layer_writer_abort(w);
	c = (struct collect) {};
	check(r == 0 && index_db_layer_foreach(db, L3, cb_sample, &c) == 0 &&
	      c.n == ELEMENTSOF(sample) && c.mismatches == 0,
	      "v1: an upgraded database stores lazy layers with their chunks (%zu, %zu)", c.n,
	      c.mismatches);
	check(index_db_layer_begin(db, L1, NULL, &w) == 0 && layer_writer_set_diff_id(w, L2) == 0 &&
	      layer_writer_commit(w) == 0 &&
	      sql_int("SELECT count(*) FROM entries WHERE layer_id = 7") == 0,
	      "v1: an upgraded layer can be replaced");
	check(index_db_layer_get_diff_id(db, L1, &s) == 0 && s && streq(s, L2),
	      "the diff_id a layer is committed with reads back");
	free(s);
	s = NULL;
	check(index_db_layer_get_diff_id(db, "sha256:none", &s) == -ENOENT,
	      "a layer not indexed has no diff_id");

	db = index_db_free(db);
	check(index_db_open(path, &db) == 0 && sql_int("PRAGMA user_version") == 7,
	      "v1: an upgraded database reopens as is");
}

/* 1 if another process holds a lock on some byte of @path (the child asks, F_GETLK answers
 * only about other processes' locks), 0 if none, -1 if it cannot tell. */
static int locked_by_parent(const char *path)
{
	int status = -1;
	pid_t pid = fork();

	if (pid == 0) {
		struct flock l = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
		int fd = open(path, O_RDONLY | O_CLOEXEC);

		if (fd < 0 || fcntl(fd, F_GETLK, &l) < 0)
			_exit(2);
		_exit(l.l_type != F_UNLCK ? 1 : 0);
	}
	if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status))
		return -1;
	return WEXITSTATUS(status) <= 1 ? WEXITSTATUS(status) : -1;
}

/* A second connection in the same process (the seek index and start profile lookups open one
 * in a thread beside the pull's) must leave the first one's POSIX locks alone: closing any fd
 * of the file drops every lock the process holds on it, and without its SHARED lock a
 * prewarm's committed ref and image rows went missing when other commands ran beside it
 * (test_crash_concurrency.py's concurrent test). */
static void test_second_connection_keeps_locks(const char *dir)
{
	_cleanup_(index_db_freep) struct index_db *a = NULL, *b = NULL;
	char path[300], *s = NULL;

	snprintf(path, sizeof(path), "%s/locks.db", dir);
	if (index_db_open(path, &a) < 0 || index_db_ref_put(a, "first", "", L1) < 0 ||
	    index_db_ref_get(a, "first", "", &s) < 0) {
		check(false, "locks: a connection opens and writes");
		return;
	}
	free(s);
	check(locked_by_parent(path) == 1, "locks: an open connection holds a lock on the index");
	check(index_db_open(path, &b) == 0, "locks: a second connection opens in the same process");
	check(locked_by_parent(path) == 1, "locks: the first connection's lock is still held");
	b = index_db_free(b);
	check(locked_by_parent(path) == 1, "locks: ... also once the second one is closed");
	check(index_db_ref_put(a, "second", "", L2) == 0, "locks: the first connection writes on");
}

int main(void)
{
	char dir[] = "/tmp/test-index_db-XXXXXX";
	_cleanup_(index_db_freep) struct index_db *db = NULL;
	struct layer_writer *w = NULL;
	struct collect c;
	struct stat st;
	char *s = NULL;
	int r;

	if (!mkdtemp(dir)) {
		printf("Bail out! mkdtemp: %m\n");
		return 1;
	}
	snprintf(dbpath, sizeof(dbpath), "%s/index.db", dir);

	umask(022);
	r = index_db_open(dbpath, &db);
	check(r == 0, "a new database opens (r=%d)", r);
	if (r < 0)
		return tap_done();
	check(stat(dbpath, &st) == 0 && (st.st_mode & 0777) == 0600, "the file is created 0600");
	check(sql_int("PRAGMA user_version") == 7, "the schema version is recorded");
	{
		char wal[sizeof(dbpath) + 8];

		snprintf(wal, sizeof(wal), "%s-wal", dbpath);
		check(stat(wal, &st) == 0 && (st.st_mode & 0777) == 0600, "the WAL exists and is 0600");
	}

	/* refs */
	check(index_db_ref_get(db, "127.0.0.1:5000/edge:edge", "linux/amd64", &s) == -ENOENT,
	      "an unknown ref is -ENOENT");
	check(index_db_ref_put(db, "127.0.0.1:5000/edge:edge", "linux/amd64", L1) == 0, "ref put");
	check(index_db_ref_put(db, "127.0.0.1:5000/edge:edge", "linux/arm64/v8", L2) == 0,
	      "ref put for another platform");
	check(index_db_ref_get(db, "127.0.0.1:5000/edge:edge", "linux/amd64", &s) == 0 && streq(s, L1),
	      "ref get returns the digest");
	free(s);
	check(index_db_ref_put(db, "127.0.0.1:5000/edge:edge", "linux/amd64", L3) == 0 &&
	      index_db_ref_get(db, "127.0.0.1:5000/edge:edge", "linux/amd64", &s) == 0 && streq(s, L3),
	      "ref put replaces the resolution");
	free(s);
	check(index_db_ref_get(db, "127.0.0.1:5000/edge:edge", "linux/arm64/v8", &s) == 0 &&
	      streq(s, L2), "refs are per platform");
	free(s);

	/* answers about artifacts that refer to a subject */
	{
		char *answer = NULL;
		int64_t updated = 0;

		check(index_db_referrers_get(db, "h/r", L1, "t", &answer, &updated) == -ENOENT,
		      "no answer is stored at first");
		check(index_db_referrers_put(db, "h/r", L1, "t", "[]") == 0 &&
		      index_db_referrers_put(db, "h/r", L1, NULL, "[1]") == 0 &&
		      index_db_referrers_put(db, "h/r", L2, "t", "[2]") == 0, "answers are stored");
		check(index_db_referrers_put(db, "h/r", L1, "t", "[3]") == 0 &&
		      index_db_referrers_get(db, "h/r", L1, "t", &answer, &updated) == 0 &&
		      streq(answer, "[3]") && updated > 0, "put replaces, with the time it was stored");
		free(answer);
		check(index_db_referrers_get(db, "h/r", L1, NULL, &answer, &updated) == 0 &&
		      streq(answer, "[1]"), "answers are per artifact type");
		free(answer);
		check(index_db_referrers_forget(db, "h/r", L1) == 0 &&
		      index_db_referrers_get(db, "h/r", L1, "t", &answer, &updated) == -ENOENT &&
		      index_db_referrers_get(db, "h/r", L1, NULL, &answer, &updated) == -ENOENT,
		      "forget drops every type's answer about the subject");
		check(index_db_referrers_get(db, "h/r", L2, "t", &answer, &updated) == 0 &&
		      streq(answer, "[2]"), "and only that subject's");
		free(answer);
	}

	/* images */
	{
		const char manifest[] = "{\"schemaVersion\":2}\0binary\xff";
		const char config[] = "{\"architecture\":\"amd64\"}";
		char *mt = NULL, *m = NULL, *cf = NULL;
		size_t ml = 0, cl = 0;

		check(index_db_image_get(db, L1, &mt, &m, &ml, &cf, &cl) == -ENOENT,
		      "an unknown image is -ENOENT");
		check(index_db_image_put(db, L1, "application/vnd.oci.image.manifest.v1+json", manifest,
					 sizeof(manifest) - 1, config, strlen(config)) == 0, "image put");
		check(index_db_image_get(db, L1, &mt, &m, &ml, &cf, &cl) == 0, "image get");
		check(mt && streq(mt, "application/vnd.oci.image.manifest.v1+json"), "media type round-trips");
		check(m && ml == sizeof(manifest) - 1 && memcmp(m, manifest, ml) == 0 && m[ml] == '\0',
		      "manifest bytes round-trip exactly (NUL bytes included), NUL-terminated");
		check(cf && cl == strlen(config) && streq(cf, config), "config round-trips");
		free(mt), free(m), free(cf);
		mt = m = cf = NULL;
		check(index_db_image_put(db, L2, "application/vnd.docker.distribution.manifest.v2+json",
					 "{}", 2, NULL, 0) == 0 &&
		      index_db_image_get(db, L2, NULL, &m, &ml, &cf, &cl) == 0 && ml == 2 && cf &&
		      cl == 0 && cf[0] == '\0', "an image without config returns an empty config");
		free(m), free(cf);
		check(index_db_image_get(db, L2, NULL, NULL, NULL, NULL, NULL) == 0,
		      "image get with no outputs checks existence");
	}

	/* one layer with every kind of entry */
	check(index_db_layer_is_indexed(db, L1) == 0, "an unknown layer is not indexed");
	c = (struct collect) {};
	check(index_db_layer_foreach(db, L1, cb_sample, &c) == -ENOENT,
	      "foreach on an unknown layer is -ENOENT");
	check(index_db_layer_begin(db, L1, "application/vnd.oci.image.layer.v1.tar+gzip", &w) == 0,
	      "layer writer begins");
	{
		/* The writer must copy: add from scratch buffers that are clobbered afterwards. */
		r = 0;
		for (size_t i = 0; i < ELEMENTSOF(sample) && r >= 0; i++) {
			struct entry e = sample[i];
			char path[256], target[256], digest[80];
			struct xattr x[3];
			uint8_t val[3][32];
			struct chunk ch[4];
			char cdigest[4][80];

			snprintf(path, sizeof(path), "%s", e.path);
			e.path = path;
			if (e.link_target) {
				snprintf(target, sizeof(target), "%s", e.link_target);
				e.link_target = target;
			}
			if (e.digest) {
				snprintf(digest, sizeof(digest), "%s", e.digest);
				e.digest = digest;
			}
			for (size_t j = 0; j < e.n_xattrs; j++) {
				x[j] = e.xattrs[j];
				memcpy(val[j], x[j].value, x[j].size);
				x[j].value = val[j];
			}
			if (e.n_xattrs)
				e.xattrs = x;
			for (size_t j = 0; j < e.n_chunks; j++) {
				ch[j] = e.chunks[j];
				if (ch[j].digest) {
					snprintf(cdigest[j], sizeof(cdigest[j]), "%s", ch[j].digest);
					ch[j].digest = cdigest[j];
				}
			}
			if (e.n_chunks)
				e.chunks = ch;
			r = layer_writer_add(w, &e);
			memset(path, 'X', sizeof(path) - 1);
			memset(target, 'X', sizeof(target) - 1);
			memset(val, 0xAA, sizeof(val));
			memset(ch, 0xAA, sizeof(ch));
			memset(cdigest, 'X', sizeof(cdigest) - 1);
		}
		check(r == 0, "entries are added");
	}
	check(index_db_layer_is_indexed(db, L1) == 0, "an uncommitted layer is not indexed");
	{
		/* No SQLite lock is held while the writer collects: another connection can write. */
		struct index_db *db2 = NULL;

		check(index_db_open(dbpath, &db2) == 0 &&
		      index_db_ref_put(db2, "other", "linux/amd64", L2) == 0,
		      "another connection writes while a layer writer is open");
		index_db_free(db2);
	}
	check(layer_writer_commit(w) == 0, "layer commit");
	check(index_db_layer_is_indexed(db, L1) == 1, "a committed layer is indexed");
	c = (struct collect) {};
	check(index_db_layer_foreach(db, L1, cb_sample, &c) == 0, "foreach succeeds");
	check(c.n == ELEMENTSOF(sample) && c.mismatches == 0,
	      "every field of every entry round-trips, in order, chunks (zeros ones too) and "
	      "prefetch flags included (%zu entries, %zu mismatches)", c.n, c.mismatches);
	check(sql_int("SELECT count(*) FROM chunks WHERE digest IS NULL") == 1,
	      "a zeros chunk is stored with a NULL digest");
	{
		char *f = NULL;

		check(index_db_layer_get_format(db, L1, &f) == 0 && streq(f, "tar"),
		      "index_db_layer_begin() records format 'tar'");
		free(f);
		f = NULL;
		check(index_db_layer_get_format(db, L4, &f) == -ENOENT,
		      "the format of an unknown layer is -ENOENT");
	}
	c = (struct collect) { .stop_at = 3 };
	check(index_db_layer_foreach(db, L1, cb_sample, &c) == -ECANCELED && c.n == 3,
	      "a negative callback return stops foreach and is returned");

	/* a lazy layer records its format; chunk-less entries of it are fine */
	{
		struct entry e = { .path = "x", .type = ENTRY_REG, .n_chunks = 2 };
		char *f = NULL;

		check(index_db_layer_begin_format(db, L4, NULL, "zstd:chunked", &w) == 0,
		      "a layer writer begins with a format");
		check(layer_writer_add(w, &e) == -EINVAL, "n_chunks without chunks is -EINVAL");
		check(layer_writer_add(w, &sample[ELEMENTSOF(sample) - 2]) == 0 &&
		      layer_writer_commit(w) == 0, "a lazy layer commits");
		check(index_db_layer_get_format(db, L4, &f) == 0 && streq(f, "zstd:chunked"),
		      "the format round-trips");
		free(f);
	}

	/* abort writes nothing */
	check(index_db_layer_begin(db, L2, NULL, &w) == 0 && layer_writer_add(w, &sample[0]) == 0,
	      "second writer");
	layer_writer_abort(w);
	layer_writer_abort(NULL);
	check(index_db_layer_is_indexed(db, L2) == 0, "an aborted layer is not indexed");

	/* an empty layer is still an indexed layer */
	check(index_db_layer_begin(db, L2, NULL, &w) == 0 && layer_writer_commit(w) == 0 &&
	      index_db_layer_is_indexed(db, L2) == 1, "an empty layer can be indexed");
	c = (struct collect) {};
	check(index_db_layer_foreach(db, L2, cb_sample, &c) == 0 && c.n == 0, "and has no entries");

	/* big layer */
	{
		double t0, t1, t2;
		char path[128];

		t0 = now();
		r = index_db_layer_begin(db, L3, "application/vnd.oci.image.layer.v1.tar", &w);
		for (size_t i = 0; r >= 0 && i < BIG_N; i++) {
			struct entry e;
			struct xattr x;
			struct chunk ch[BIG_CHUNKS];

			make_big_entry(i, path, sizeof(path), &e, &x, ch);
			r = layer_writer_add(w, &e);
		}
		check(r == 0, "%d entries are added", BIG_N);
		t1 = now();
		r = layer_writer_commit(w);
		t2 = now();
		check(r == 0, "%d entries commit", BIG_N);
		printf("# %d entries: add %.3f s, commit %.3f s\n", BIG_N, t1 - t0, t2 - t1);
		check(t2 - t1 < 10.0 * TAP_TIME_SCALE, "the commit takes well under %.0f s (%.3f s)",
		      10.0 * TAP_TIME_SCALE, t2 - t1);
		c = (struct collect) {};
		t0 = now();
		r = index_db_layer_foreach(db, L3, cb_big, &c);
		t1 = now();
		printf("# %d entries: foreach %.3f s\n", BIG_N, t1 - t0);
		check(r == 0 && c.n == BIG_N && c.mismatches == 0,
		      "foreach streams all %d entries back in order with their chunks (%zu, %zu "
		      "mismatches)", BIG_N, c.n, c.mismatches);
		check(sql_int("SELECT count(*) FROM chunks WHERE layer_id = (SELECT id FROM layers"
			      " WHERE digest = '" L3 "')") == (long long)(BIG_N / 4 * 6),
		      "every chunk of the big layer is stored once");
	}

	/* re-indexing replaces */
	check(index_db_layer_begin(db, L1, NULL, &w) == 0 && layer_writer_add(w, &sample[0]) == 0 &&
	      layer_writer_add(w, &sample[1]) == 0 && layer_writer_commit(w) == 0,
	      "a layer can be indexed again");
	c = (struct collect) {};
	check(index_db_layer_foreach(db, L1, cb_sample, &c) == 0 && c.n == 2 && c.mismatches == 0,
	      "the new entries replace the old");
	check(sql_int("SELECT count(*) FROM entries") == BIG_N + 2 + 1,
	      "the old entries are gone from the table (foreign key cascade)");
	check(sql_int("SELECT count(*) FROM chunks WHERE layer_id = (SELECT id FROM layers"
		      " WHERE digest = '" L1 "')") == 0, "and so are their chunks");
	check(sql_int("SELECT n_entries FROM layers WHERE digest = '" L3 "'") == BIG_N,
	      "layers.n_entries is recorded");

	/* several connections committing at once */
	{
		struct writer_thread t[3] = { { .digest = L1 }, { .digest = L2 }, { .digest = L1 } };
		pthread_t th[3];

		for (int i = 0; i < 3; i++)
			pthread_create(&th[i], NULL, write_layer_thread, &t[i]);
		for (int i = 0; i < 3; i++)
			pthread_join(th[i], NULL);
		check(t[0].r == 0 && t[1].r == 0 && t[2].r == 0,
		      "3 connections x 20 commits of 2000 entries all succeed (%d %d %d)", t[0].r,
		      t[1].r, t[2].r);
		check(sql_int("SELECT count(*) FROM entries") == BIG_N + 4000 + 1,
		      "and leave exactly one copy of each layer");
	}

	/* reopen */
	db = index_db_free(db);
	check(index_db_open(dbpath, &db) == 0 && index_db_layer_is_indexed(db, L3) == 1 &&
	      index_db_ref_get(db, "other", "linux/amd64", &s) == 0 && streq(s, L2),
	      "data persists across reopen");
	free(s);
	db = index_db_free(db);
	check(index_db_free(NULL) == NULL, "free is NULL-safe");

	{
		sqlite3 *conn = NULL;

		sqlite3_open(dbpath, &conn);
		sqlite3_exec(conn, "PRAGMA user_version = 99", NULL, NULL, NULL);
		sqlite3_close(conn);
		r = index_db_open(dbpath, &db);
		check(r == -EPROTO, "a database from a newer schema is refused with -EPROTO (r=%d)", r);
	}
	{
		char junk[300];
		int fd;

		snprintf(junk, sizeof(junk), "%s/junk.db", dir);
		fd = open(junk, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
		(void)!write(fd, "this is not an sqlite database, not at all, no no no no no no no\n", 66);
		close(fd);
		r = index_db_open(junk, &db);
		check(r == -EBADMSG, "a file that is not a database is -EBADMSG (r=%d)", r);
		snprintf(junk, sizeof(junk), "%s/no/such/dir/index.db", dir);
		check(index_db_open(junk, &db) == -ENOENT, "a missing directory is -ENOENT");
	}

	test_migration(dir);
	test_second_connection_keeps_locks(dir);

	(void)nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	return tap_done();
}
