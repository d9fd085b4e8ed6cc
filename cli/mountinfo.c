/* cli/mountinfo.c: what the kernel says is mounted, and paths named as mount tables name them. */
#include "mountinfo.h"

#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

#include "cache/base/util.h"

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
