/*
 * cache/store/entry.c: the canonical form of a layer path.  Every producer (tar headers, TOCs)
 * normalises with entry_path_normalize() before an entry is indexed, so the index and fs/
 * compare paths as plain byte strings.  Names are raw bytes: no charset is assumed.
 */
#include "entry.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>

/* Linux's NAME_MAX and PATH_MAX: a name the kernel could not look up is refused when the layer
 * is indexed, not later when the tree is built from an index that already holds it. */
#define COMPONENT_MAX 255
#define PATH_MAX_LEN 4095
#define WHITEOUT_PREFIX ".wh."
#define AUFS_META_PREFIX ".wh..wh."
#define OPAQUE_MARKER ".wh..wh..opq"

int entry_path_normalize(char *path)
{
	const char *in = path;
	char *out = path;

	/* Walk the components, skipping empty ones ("//", leading or trailing "/") and ".";
	 * the output never runs ahead of the input, so this can work in place. */
	while (*in) {
		const char *end;
		size_t len;

		while (*in == '/')
			in++;
		if (!*in)
			break;
		end = strchrnul(in, '/');
		len = end - in;

		if (len == 1 && in[0] == '.') {
			in = end;
			continue;
		}
		if (len == 2 && in[0] == '.' && in[1] == '.')
			return -EINVAL;
		/* The whiteouts of "." and "..": they would name the directory itself or its
		 * parent, and no tool writes them. */
		if ((len == 5 || len == 6) && strncmp(in, ".wh...", len) == 0)
			return -EINVAL;
		if (len > COMPONENT_MAX)
			return -ENAMETOOLONG;

		if (out != path)
			*out++ = '/';
		memmove(out, in, len);
		out += len;
		in = end;
	}
	*out = '\0';
	if (out - path > PATH_MAX_LEN)
		return -ENAMETOOLONG;
	return 0;
}

static bool has_prefix(const char *s, size_t len, const char *prefix)
{
	size_t n = strlen(prefix);

	return len >= n && memcmp(s, prefix, n) == 0;
}

int entry_check_whiteout(const char *path, enum entry_type type)
{
	const char *p = path;

	for (;;) {
		const char *end = strchrnul(p, '/');
		size_t len = end - p;
		bool last = *end == '\0';

		if (!has_prefix(p, len, WHITEOUT_PREFIX)) {
			/* not a whiteout name */
		} else if (has_prefix(p, len, AUFS_META_PREFIX) &&
			   !(len == strlen(OPAQUE_MARKER) && memcmp(p, OPAQUE_MARKER, len) == 0)) {
			/* aufs's own ".wh..wh.plnk/...", ".wh..wh.aufs": skipped as a whole */
			return 0;
		} else if (!last) {
			return -EINVAL;         /* a whiteout is a name, it holds nothing */
		} else if (len == strlen(WHITEOUT_PREFIX)) {
			return -EINVAL;         /* ".wh." whites out nothing */
		} else if (type != ENTRY_REG && type != ENTRY_HARDLINK) {
			return -EINVAL;         /* docker, containerd and umoci write empty files */
		}
		if (last)
			return 0;
		p = end + 1;
	}
}
