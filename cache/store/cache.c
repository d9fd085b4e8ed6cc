/* cache/store/cache.c: opens a cache directory: creates it private (0700), then the index and the
 * blob store inside it. */
#include "cache.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>

#include "cache/base/util.h"

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

	r = mkdir_p(dir, 0700);
	if (r < 0)
		return r;
	/* An existing directory keeps its owner, but never stays readable by others. */
	if (chmod(dir, 0700) < 0)
		return -errno;

	if (asprintf(&db_path, "%s/index.db", dir) < 0)
		return -ENOMEM;
	r = index_db_open(db_path, &c->db);
	if (r < 0)
		return r;
	r = blob_store_open(dir, &c->bs);
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
