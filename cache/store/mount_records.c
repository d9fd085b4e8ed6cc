/*
 * cache/store/mount_records.c: mount records in the runtime directory (see mount_records.h).
 * A host has a handful of mounts, rarely hundreds: listing reads every info file (a few hundred
 * bytes each) each time, with no index to keep in step.
 */
#include "mount_records.h"

#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cache/base/digest.h"
#include "cache/base/util.h"

static const char *str_or_empty(const char *s)
{
	return s ? s : "";
}

int mount_records_runtime_dir(char **ret)
{
	const char *e = getenv("LAZYROOT_RUNTIME_DIR"), *x = getenv("XDG_RUNTIME_DIR");
	char *d = NULL;

	if (e && *e == '/')
		d = strdup(e);
	else if (geteuid() != 0 && x && *x == '/') {
		/* Other users cannot write /run/lazyroot: their own runtime dir, as podman. */
		if (asprintf(&d, "%s/lazyroot", x) < 0)
			d = NULL;
	} else
		d = strdup("/run/lazyroot");
	if (!d)
		return -ENOMEM;
	*ret = d;
	return 0;
}

int mount_record_dir_for(const char *target, char **ret)
{
	_cleanup_free_ char *rt = NULL;
	char digest[DIGEST_STRING_MAX];
	int r;

	r = mount_records_runtime_dir(&rt);
	if (r < 0)
		return r;
	r = digest_buffer(target, strlen(target), digest);
	if (r < 0)
		return r;
	/* 16 hex digits of the path's hash: unique enough, and short enough for mount tables. */
	if (asprintf(ret, "%s/mounts/%.16s", rt, digest + strlen("sha256:")) < 0)
		return -ENOMEM;
	return 0;
}

int mount_record_write(const struct mount_record *rec)
{
	_cleanup_free_ char *path = NULL, *tmp = NULL;
	_cleanup_fclose_ FILE *f = NULL;
	int fd;

	if (asprintf(&path, "%s/info", rec->dir) < 0 || asprintf(&tmp, "%s/.info.tmp", rec->dir) < 0)
		return -ENOMEM;
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	f = fdopen(fd, "w");
	if (!f) {
		(void)close(fd);
		return -errno;
	}
	fprintf(f, "target=%s\nfuse=%s\nupper=%s\nimage=%s\ndigest=%s\ncache=%s\npid=%d\n"
		"private_users=%" PRIu32 "\n",
		rec->target, rec->fuse_mountpoint, rec->upper, str_or_empty(rec->image),
		str_or_empty(rec->digest), str_or_empty(rec->cache_dir), (int)rec->pid,
		rec->private_users);
	if (fflush(f) != 0)
		return -errno;
	if (rename(tmp, path) < 0)
		return -errno;
	return 0;
}

void mount_record_done(struct mount_record *rec)
{
	free_many(rec->dir, rec->target, rec->fuse_mountpoint, rec->upper, rec->image,
		  rec->digest, rec->cache_dir);
	*rec = (struct mount_record) {};
}

static char **record_field(struct mount_record *rec, const char *key)
{
	static const struct {
		const char *key;
		size_t offset;
	} fields[] = {
		{ "target", offsetof(struct mount_record, target) },
		{ "fuse", offsetof(struct mount_record, fuse_mountpoint) },
		{ "upper", offsetof(struct mount_record, upper) },
		{ "image", offsetof(struct mount_record, image) },
		{ "digest", offsetof(struct mount_record, digest) },
		{ "cache", offsetof(struct mount_record, cache_dir) },
	};

	for (size_t i = 0; i < ELEMENTSOF(fields); i++)
		if (streq(key, fields[i].key))
			return (char **)((char *)rec + fields[i].offset);
	return NULL;
}

/* Reads @dir/info; takes @dir. */
static int record_read_dir(char *dir, struct mount_record *ret)
{
	_cleanup_(mount_record_done) struct mount_record rec = { .dir = dir };
	_cleanup_free_ char *path = NULL, *buf = NULL;
	char *line, *save = NULL;
	int r;

	if (asprintf(&path, "%s/info", dir) < 0)
		return -ENOMEM;
	r = read_full_file(path, 64 * 1024, &buf, NULL);
	if (r < 0)
		return r;
	for (line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *eq = strchr(line, '='), **field;

		if (!eq)
			continue;
		*eq = 0;
		if (streq(line, "pid")) {
			rec.pid = (pid_t)atoi(eq + 1);
			continue;
		}
		if (streq(line, "private_users")) {
			rec.private_users = (uint32_t)strtoul(eq + 1, NULL, 10);
			continue;
		}
		field = record_field(&rec, line);
		if (!field)
			continue;  /* a key of a newer lazyroot */
		free(*field);
		*field = eq[1] ? strdup(eq + 1) : NULL;
		if (eq[1] && !*field)
			return -ENOMEM;
	}
	if (!rec.target || !rec.fuse_mountpoint || !rec.upper)
		return -EBADMSG;
	*ret = rec;
	rec = (struct mount_record) {};
	return 0;
}

int mount_record_read(const char *target, struct mount_record *ret)
{
	char *dir = NULL;
	int r;

	r = mount_record_dir_for(target, &dir);
	if (r < 0)
		return r;
	return record_read_dir(dir, ret);
}

bool mount_record_alive(const struct mount_record *rec)
{
	return rec->pid > 0 && (kill(rec->pid, 0) == 0 || errno == EPERM);
}

static int remove_tree_at(int dir_fd, dev_t dev)
{
	_cleanup_close_ int fd = -EBADF;
	DIR *d;
	struct dirent *de;
	int r = 0;

	fd = dup(dir_fd);
	if (fd < 0)
		return -errno;
	d = fdopendir(TAKE_FD(fd));
	if (!d)
		return -errno;
	while ((de = readdir(d))) {
		struct stat st;

		if (streq(de->d_name, ".") || streq(de->d_name, ".."))
			continue;
		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue;  /* e.g. a dead FUSE mount: leave it, rmdir below reports */
		if (S_ISDIR(st.st_mode)) {
			_cleanup_close_ int sub = -EBADF;

			if (st.st_dev != dev) {
				r = -EBUSY;  /* something is still mounted here: never cross it */
				continue;
			}
			sub = openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (sub >= 0)
				(void)remove_tree_at(sub, dev);
			if (unlinkat(dirfd(d), de->d_name, AT_REMOVEDIR) < 0 && r == 0)
				r = -errno;
		} else if (unlinkat(dirfd(d), de->d_name, 0) < 0 && r == 0) {
			r = -errno;
		}
	}
	closedir(d);
	return r;
}

int mount_record_remove(const char *dir)
{
	_cleanup_close_ int fd = -EBADF;
	struct stat st;
	int r;

	fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 0 : -errno;
	if (fstat(fd, &st) < 0)
		return -errno;
	r = remove_tree_at(fd, st.st_dev);
	if (rmdir(dir) < 0 && errno != ENOENT)
		return r < 0 ? r : -errno;
	return r;
}


int mount_records_foreach_live(int (*cb)(void *userdata, const struct mount_record *rec),
			       void *userdata)
{
	_cleanup_free_ char *rt = NULL, *dir = NULL;
	struct dirent *de;
	DIR *d;
	int r;

	r = mount_records_runtime_dir(&rt);
	if (r < 0)
		return r;
	if (asprintf(&dir, "%s/mounts", rt) < 0)
		return -ENOMEM;
	d = opendir(dir);
	if (!d) {
		/* We could not have written a record where we may not read (a user without
		 * $XDG_RUNTIME_DIR, beside root's /run/lazyroot): none of ours is there. */
		if (errno == ENOENT || errno == EACCES || errno == ENOTDIR)
			return 0;
		return -errno;
	}
	r = 0;
	while (r >= 0 && (de = readdir(d))) {
		_cleanup_(mount_record_done) struct mount_record rec = {};
		char *sub;

		if (de->d_name[0] == '.')
			continue;
		if (asprintf(&sub, "%s/%s", dir, de->d_name) < 0) {
			r = -ENOMEM;
			break;
		}
		if (record_read_dir(sub, &rec) < 0)
			continue;  /* being set up or torn down: its daemon is not serving */
		if (!mount_record_alive(&rec))
			continue;  /* its daemon died: nothing serves the tree any more */
		r = cb(userdata, &rec);
	}
	closedir(d);
	return r;
}

/* Whether a mount that reads from @record_dir reads from the cache at @resolved. */
static bool record_serves_cache(const char *record_dir, const char *resolved)
{
	char buf[PATH_MAX];

	/* A record without cache= was written before records named their cache: it may be any
	 * cache's, so it pins its image in every cache (as all records did then).  A cache
	 * directory we cannot resolve any more may still be this one by another name: the same.
	 * Keeping an image too long costs space; evicting a mounted one breaks its reads. */
	if (!record_dir || !realpath(record_dir, buf))
		return true;
	return streq(buf, resolved);
}

struct mounted_query {
	const char *cache_dir;   /* resolved */
	char **digests;
};

static int collect_mounted(void *userdata, const struct mount_record *rec)
{
	struct mounted_query *q = userdata;

	if (!rec->digest || !record_serves_cache(rec->cache_dir, q->cache_dir))
		return 0;
	if (strv_contains(q->digests, rec->digest))
		return 0;
	return strv_push(&q->digests, rec->digest);
}

int mount_records_mounted_digests(const char *cache_dir, char ***ret)
{
	char resolved[PATH_MAX];
	struct mounted_query q = { .cache_dir = resolved };
	int r;

	if (!realpath(cache_dir, resolved))
		return -errno;
	r = mount_records_foreach_live(collect_mounted, &q);
	if (r < 0) {
		strv_free(q.digests);
		return r;
	}
	*ret = q.digests;
	return 0;
}
