/*
 * cache/entry.c: the canonical form of a layer path.  Every producer (tar headers, TOCs)
 * normalises with entry_path_normalize() before an entry is indexed, so the index and fs/
 * compare paths as plain byte strings.  Names are raw bytes: no charset is assumed.
 */
#include "entry.h"

#include <errno.h>
#include <string.h>

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

		if (out != path)
			*out++ = '/';
		memmove(out, in, len);
		out += len;
		in = end;
	}
	*out = '\0';
	return 0;
}
