/*
 * cache/store/entry.c: the canonical form of a layer path.  Every producer (tar headers, TOCs)
 * normalises with entry_path_normalize() before an entry is indexed, so the index and fs/
 * compare paths as plain byte strings.  Names are raw bytes: no charset is assumed.
 */
#include "entry.h"

#include <errno.h>
#include <string.h>

/* Linux's NAME_MAX and PATH_MAX: a name the kernel could not look up is refused when the layer
 * is indexed, not later when the tree is built from an index that already holds it. */
#define COMPONENT_MAX 255
#define PATH_MAX_LEN 4095

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
