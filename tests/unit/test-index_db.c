/* tests/unit/test-index_db.c: the SQLite index round-trips refs, images and layer entries
 * exactly (binary xattrs included), handles 100,000+ entries in one quick transaction, and
 * shares the file between connections. */
#include "../../cache/index_db.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "../../cache/util.h"
#include "tap.h"

#define L1 "sha256:1111111111111111111111111111111111111111111111111111111111111111"
#define L2 "sha256:2222222222222222222222222222222222222222222222222222222222222222"
#define L3 "sha256:3333333333333333333333333333333333333333333333333333333333333333"
#define BIG_N 150000

static char dbpath[256];

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
	    a->n_xattrs != b->n_xattrs)
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

static void make_big_entry(size_t i, char *path, size_t size, struct entry *e, struct xattr *x)
{
	snprintf(path, size, "data/tree/d%03zu/s%zu/f%06zu.txt", i / 1000, i % 7, i);
	*e = (struct entry) {
		.path = path, .type = ENTRY_REG, .mode = 0644, .uid = i % 3, .gid = i % 5,
		.size = i, .mtime_sec = 1700172800 + i, .mtime_nsec = i % 1000000000,
		.digest = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
	};
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

	make_big_entry(c->n, path, sizeof(path), &want, &x);
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

			make_big_entry(i, path, sizeof(path), &e, &x);
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
	check(sql_int("PRAGMA user_version") == 1, "the schema version is recorded");
	{
		char wal[300];

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
			r = layer_writer_add(w, &e);
			memset(path, 'X', sizeof(path) - 1);
			memset(target, 'X', sizeof(target) - 1);
			memset(val, 0xAA, sizeof(val));
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
	      "every field of every entry round-trips, in order (%zu entries, %zu mismatches)",
	      c.n, c.mismatches);
	c = (struct collect) { .stop_at = 3 };
	check(index_db_layer_foreach(db, L1, cb_sample, &c) == -ECANCELED && c.n == 3,
	      "a negative callback return stops foreach and is returned");

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

			make_big_entry(i, path, sizeof(path), &e, &x);
			r = layer_writer_add(w, &e);
		}
		check(r == 0, "%d entries are added", BIG_N);
		t1 = now();
		r = layer_writer_commit(w);
		t2 = now();
		check(r == 0, "%d entries commit", BIG_N);
		printf("# %d entries: add %.3f s, commit %.3f s\n", BIG_N, t1 - t0, t2 - t1);
		check(t2 - t1 < 10.0, "the commit takes well under 10 s (%.3f s)", t2 - t1);
		c = (struct collect) {};
		t0 = now();
		r = index_db_layer_foreach(db, L3, cb_big, &c);
		t1 = now();
		printf("# %d entries: foreach %.3f s\n", BIG_N, t1 - t0);
		check(r == 0 && c.n == BIG_N && c.mismatches == 0,
		      "foreach streams all %d entries back in order (%zu, %zu mismatches)", BIG_N,
		      c.n, c.mismatches);
	}

	/* re-indexing replaces */
	check(index_db_layer_begin(db, L1, NULL, &w) == 0 && layer_writer_add(w, &sample[0]) == 0 &&
	      layer_writer_add(w, &sample[1]) == 0 && layer_writer_commit(w) == 0,
	      "a layer can be indexed again");
	c = (struct collect) {};
	check(index_db_layer_foreach(db, L1, cb_sample, &c) == 0 && c.n == 2 && c.mismatches == 0,
	      "the new entries replace the old");
	check(sql_int("SELECT count(*) FROM entries") == BIG_N + 2,
	      "the old entries are gone from the table (foreign key cascade)");
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
		check(sql_int("SELECT count(*) FROM entries") == BIG_N + 4000,
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

	(void)nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	return tap_done();
}
