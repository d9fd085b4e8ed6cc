/* cli/mount_state.c: the runtime state of mounts (see mount_state.h) and mountinfo queries. */
#include "mount_state.h"

#include <dirent.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cache/base/digest.h"
#include "cache/base/util.h"

int runtime_dir(char **ret)
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

int mount_state_dir_for(const char *target, char **ret)
{
	_cleanup_free_ char *rt = NULL;
	char digest[DIGEST_STRING_MAX];
	int r;

	r = runtime_dir(&rt);
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

int mount_state_write(const struct mount_state *s)
{
	_cleanup_free_ char *path = NULL, *tmp = NULL;
	_cleanup_fclose_ FILE *f = NULL;
	int fd;

	if (asprintf(&path, "%s/info", s->dir) < 0 || asprintf(&tmp, "%s/.info.tmp", s->dir) < 0)
		return -ENOMEM;
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	f = fdopen(fd, "w");
	if (!f) {
		(void)close(fd);
		return -errno;
	}
	fprintf(f, "target=%s\nfuse=%s\nupper=%s\nimage=%s\ndigest=%s\npid=%d\n", s->target,
		s->fuse_mountpoint, s->upper, s->image ? s->image : "", s->digest ? s->digest : "",
		(int)s->pid);
	if (fflush(f) != 0)
		return -errno;
	if (rename(tmp, path) < 0)
		return -errno;
	return 0;
}

void mount_state_done(struct mount_state *s)
{
	free(s->dir);
	free(s->target);
	free(s->fuse_mountpoint);
	free(s->upper);
	free(s->image);
	free(s->digest);
	*s = (struct mount_state) {};
}

int mount_state_read(const char *target, struct mount_state *ret)
{
	_cleanup_free_ char *dir = NULL, *path = NULL, *buf = NULL;
	struct mount_state s = {};
	char *line, *save = NULL;
	int r;

	r = mount_state_dir_for(target, &dir);
	if (r < 0)
		return r;
	if (asprintf(&path, "%s/info", dir) < 0)
		return -ENOMEM;
	r = read_full_file(path, 64 * 1024, &buf, NULL);
	if (r < 0)
		return r;

	for (line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *eq = strchr(line, '='), **field = NULL;

		if (!eq)
			continue;
		*eq = 0;
		if (streq(line, "target"))
			field = &s.target;
		else if (streq(line, "fuse"))
			field = &s.fuse_mountpoint;
		else if (streq(line, "upper"))
			field = &s.upper;
		else if (streq(line, "image"))
			field = &s.image;
		else if (streq(line, "digest"))
			field = &s.digest;
		else if (streq(line, "pid"))
			s.pid = (pid_t)atoi(eq + 1);
		if (field) {
			free(*field);
			*field = strdup(eq + 1);
			if (!*field) {
				mount_state_done(&s);
				return -ENOMEM;
			}
		}
	}
	if (!s.target || !s.fuse_mountpoint || !s.upper) {
		mount_state_done(&s);
		return -EBADMSG;
	}
	s.dir = TAKE_PTR(dir);
	*ret = s;
	return 0;
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

int mount_state_remove(const char *dir)
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

int path_make_absolute(const char *path, char **ret)
{
	_cleanup_free_ char *copy1 = strdup(path), *copy2 = strdup(path);
	char parent[PATH_MAX];
	const char *base;

	if (!copy1 || !copy2)
		return -ENOMEM;
	/* Trailing slashes would make basename() of "x/" empty in some libcs: strip them. */
	for (size_t n = strlen(copy1); n > 1 && copy1[n - 1] == '/'; n--)
		copy1[n - 1] = copy2[n - 1] = 0;
	base = basename(copy2);
	if (!realpath(dirname(copy1), parent))
		return -errno;
	if (streq(base, "/"))
		return (*ret = strdup("/")) ? 0 : -ENOMEM;
	if (streq(base, ".") || streq(base, "..")) {
		char full[PATH_MAX];

		if (!realpath(path, full))
			return -errno;
		return (*ret = strdup(full)) ? 0 : -ENOMEM;
	}
	if (asprintf(ret, "%s/%s", streq(parent, "/") ? "" : parent, base) < 0)
		return -ENOMEM;
	return 0;
}

/* mountinfo escapes space, tab, newline and backslash as \ooo. */
static void unescape_octal(char *s)
{
	char *w = s;

	for (char *p = s; *p; p++) {
		if (p[0] == '\\' && p[1] >= '0' && p[1] <= '7' && p[2] >= '0' && p[2] <= '7' &&
		    p[3] >= '0' && p[3] <= '7') {
			*w++ = (char)((p[1] - '0') * 64 + (p[2] - '0') * 8 + (p[3] - '0'));
			p += 3;
		} else {
			*w++ = *p;
		}
	}
	*w = 0;
}

int mountinfo_find(const char *path, char **ret_fstype)
{
	_cleanup_fclose_ FILE *f = NULL;
	_cleanup_free_ char *line = NULL, *found = NULL;
	size_t cap = 0;

	f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return -errno;
	/* The last match wins: it is the top of a stack of mounts on the same path. */
	while (getline(&line, &cap, f) > 0) {
		char *fields[32] = {}, *save = NULL, *sep;
		size_t n = 0;

		for (char *t = strtok_r(line, " ", &save); t && n < ELEMENTSOF(fields);
		     t = strtok_r(NULL, " ", &save))
			fields[n++] = t;
		if (n < 7)
			continue;
		unescape_octal(fields[4]);
		if (!streq(fields[4], path))
			continue;
		/* After the optional fields comes "-", then the fstype. */
		sep = NULL;
		for (size_t i = 6; i + 1 < n; i++)
			if (streq(fields[i], "-")) {
				sep = fields[i + 1];
				break;
			}
		free(found);
		found = strdup(sep ? sep : "");
		if (!found)
			return -ENOMEM;
	}
	if (!found)
		return 0;
	if (ret_fstype)
		*ret_fstype = TAKE_PTR(found);
	return 1;
}
