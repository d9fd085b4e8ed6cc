/*
 * fs/tree_path.c: paths resolved in a frozen tree (tree_path.h).  What is left to walk is kept
 * as one string; a symlink met on the way is replaced by its target followed by the rest, so
 * no recursion and one bounded buffer.
 */
#include "tree_path.h"

#include <errno.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>

#define SYMLINKS_MAX 40   /* Linux's MAXSYMLINKS */

/* Replaces @rest (inside @buf) by "@target/@rest"; -ENAMETOOLONG if that does not fit. */
static int splice_target(char *buf, size_t size, const char *rest, const char *target)
{
	size_t nt = strlen(target), nr = strlen(rest);

	if (nt + 1 + nr + 1 > size)
		return -ENAMETOOLONG;
	memmove(buf + nt + 1, rest, nr + 1);
	memcpy(buf, target, nt);
	buf[nt] = '/';
	return 0;
}

/* One step from directory @dir into @name: *ret the child, *ret_link its target if it is a
 * symlink (NULL otherwise). */
static int step(const struct fs_tree *t, fs_ino_t dir, const char *name, fs_ino_t *ret,
		const char **ret_link)
{
	struct stat st;
	int r;

	r = fs_tree_lookup(t, dir, name, ret);
	if (r >= 0)
		r = fs_tree_stat(t, *ret, &st);
	if (r < 0)
		return r;
	*ret_link = NULL;
	return S_ISLNK(st.st_mode) ? fs_tree_readlink(t, *ret, ret_link) : 0;
}

/* The next component of *@p into @name, *@p moved past it: 1, or 0 at the end, or
 * -ENAMETOOLONG. */
static int next_name(const char **p, char name[NAME_MAX + 1])
{
	size_t n;

	while (**p == '/')
		(*p)++;
	if (!**p)
		return 0;
	n = strcspn(*p, "/");
	if (n > NAME_MAX)
		return -ENAMETOOLONG;
	memcpy(name, *p, n);
	name[n] = '\0';
	*p += n;
	return 1;
}

int fs_tree_resolve(const struct fs_tree *t, const char *path, fs_ino_t *ret)
{
	char buf[PATH_MAX], name[NAME_MAX + 1];
	fs_ino_t cur = FS_ROOT_INO;
	unsigned links = 0;
	const char *p = buf;
	int r;

	if (strlen(path) >= sizeof(buf))
		return -ENAMETOOLONG;
	strcpy(buf, path);
	while ((r = next_name(&p, name)) > 0) {
		const char *target;
		fs_ino_t child;

		r = step(t, cur, name, &child, &target);
		if (r < 0)
			return r;
		if (!target) {
			cur = child;
			continue;
		}
		if (++links > SYMLINKS_MAX)
			return -ELOOP;
		if (!*target)
			return -ENOENT;
		if (target[0] == '/')
			cur = FS_ROOT_INO;
		r = splice_target(buf, sizeof(buf), p, target);
		if (r < 0)
			return r;
		p = buf;
	}
	if (r < 0)
		return r;
	*ret = cur;
	return 0;
}
