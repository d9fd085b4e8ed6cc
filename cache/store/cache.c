/* cache/store/cache.c: opens a cache directory: creates it private (0700), then the index and the
 * blob store inside it, one process at a time (CACHE/locks/init.lock).  A directory this process
 * cannot write is opened read-only: nothing is created, locked or written there. */
#include "cache.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cache/base/error.h"
#include "cache/base/util.h"

/* A migration of a large index (an index over millions of entries) takes seconds. */
#define INIT_LOCK_WAIT_MS 120000

int cache_dir_default(char **ret)
{
	const char *e;
	char *d;

	e = getenv("LAZYROOT_CACHE_DIR");
	if (e && *e) {
		d = strdup(e);
	} else if (geteuid() == 0) {
		d = strdup("/var/cache/lazyroot");
	} else if ((e = getenv("XDG_CACHE_HOME")) && *e == '/') {
		if (asprintf(&d, "%s/lazyroot", e) < 0)
			d = NULL;
	} else if ((e = getenv("HOME")) && *e == '/') {
		if (asprintf(&d, "%s/.cache/lazyroot", e) < 0)
			d = NULL;
	} else {
		return -ENXIO;
	}
	if (!d)
		return -ENOMEM;
	*ret = d;
	return 0;
}

static void cache_done(struct cache *c)
{
	index_db_free(c->db);
	blob_store_free(c->bs);
	free(c->dir);
}
DEFINE_FREE_FUNC(struct cache, cache_free, cache_done);

void cache_close_db(struct cache *c)
{
	c->db = index_db_free(c->db);
}

/* True if @dir exists and this process cannot write it: a read-only mount, a baked image. */
static bool dir_read_only(const char *dir)
{
	return access(dir, W_OK) < 0 && (errno == EROFS || errno == EACCES) &&
	       access(dir, R_OK | X_OK) == 0;
}

/* Creating the index (the switch to WAL, the schema) and migrating it are done by one process
 * at a time: SQLite may refuse a second one doing the same at that moment without waiting
 * (SQLITE_BUSY where waiting could deadlock).  The others wait here, within a bound. */
static int cache_init_lock(const char *dir, int *ret_fd)
{
	int64_t deadline = now_ms() + INIT_LOCK_WAIT_MS;
	int r;

	for (;;) {
		r = cache_lock_file(dir, "init.lock", LOCK_EX | LOCK_NB, ret_fd);
		if (r != -EWOULDBLOCK || now_ms() >= deadline)
			break;
		(void)usleep(5000);
	}
	if (r == -EWOULDBLOCK)
		return error_set(-ETIMEDOUT, "another process held '%s/locks/init.lock' for more "
				 "than %d s", dir, INIT_LOCK_WAIT_MS / 1000);
	return r;
}

static int cache_open_writable(struct cache *c, const char *db_path)
{
	_cleanup_close_ int lock_fd = -EBADF;
	int r;

	r = mkdir_p(c->dir, 0700);
	if (r < 0)
		return r;
	/* An existing directory keeps its owner, but never stays readable by others. */
	if (chmod(c->dir, 0700) < 0)
		return -errno;
	r = cache_init_lock(c->dir, &lock_fd);
	if (r < 0)
		return r;
	r = index_db_open(db_path, &c->db);
	if (r < 0)
		return r;
	return blob_store_open(c->dir, &c->bs);
}

int cache_open(const char *dir, struct cache **ret)
{
	_cleanup_(cache_freep) struct cache *c = NULL;
	_cleanup_free_ char *db_path = NULL;
	int r;

	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->dir = strdup(dir);
	if (!c->dir)
		return -ENOMEM;
	if (asprintf(&db_path, "%s/index.db", dir) < 0)
		return -ENOMEM;

	c->read_only = dir_read_only(dir);
	if (c->read_only) {
		r = index_db_open_readonly(db_path, &c->db);
		if (r >= 0)
			r = blob_store_open_readonly(dir, &c->bs);
	} else
		r = cache_open_writable(c, db_path);
	if (r < 0)
		return r;

	*ret = TAKE_PTR(c);
	return 0;
}

int cache_lock_file(const char *cache_dir, const char *name, int operation, int *ret_fd)
{
	_cleanup_free_ char *dir = NULL, *path = NULL;
	_cleanup_close_ int fd = -EBADF;
	int r;

	if (asprintf(&dir, "%s/locks", cache_dir) < 0)
		return -ENOMEM;
	r = mkdir_p(dir, 0700);
	if (r < 0)
		return r;
	if (asprintf(&path, "%s/%s", dir, name) < 0)
		return -ENOMEM;
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return -errno;
	while (flock(fd, operation) < 0)
		if (errno != EINTR)
			return -errno;
	*ret_fd = TAKE_FD(fd);
	return 0;
}

int cache_tmp_foreach_old(struct cache *c, int64_t min_age,
			  int (*cb)(void *userdata, int dir_fd, const char *name,
				    const struct stat *st),
			  void *userdata)
{
	_cleanup_free_ char *path = NULL;
	time_t now = time(NULL);
	struct dirent *de;
	DIR *d;
	int r = 0;

	if (asprintf(&path, "%s/tmp", c->dir) < 0)
		return -ENOMEM;
	d = opendir(path);
	if (!d)
		return errno == ENOENT ? 0 : -errno;
	while (r >= 0 && (de = readdir(d))) {
		struct stat st;

		if (streq(de->d_name, ".") || streq(de->d_name, ".."))
			continue;
		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		if ((int64_t)(now - st.st_mtime) < min_age)
			continue;
		r = cb(userdata, dirfd(d), de->d_name, &st);
	}
	closedir(d);
	return r;
}
