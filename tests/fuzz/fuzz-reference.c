/* tests/fuzz/fuzz-reference.c: reference_parse() on arbitrary strings.  Beyond "no crash, no
 * leak": a registry reference that parses must print to a string that parses back to the same
 * string, since that string is the key of the cache's refs table. */
#include "cache/format/reference.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	_cleanup_(reference_freep) struct reference *ref = NULL, *copy = NULL, *again = NULL;
	_cleanup_free_ char *s = NULL, *canonical = NULL, *short_name = NULL, *canonical2 = NULL;

	/* a reference longer than this is rejected by its length alone */
	if (size > 4096)
		return 0;
	/* not strndup(): it may look for a NUL past @size, and libFuzzer's data has none */
	s = malloc(size + 1);
	if (!s)
		abort();
	memcpy(s, data, size);
	s[size] = '\0';
	if (reference_parse(s, &ref) < 0)
		return 0;

	canonical = reference_to_string(ref);
	short_name = reference_short_name(ref);
	if (!canonical || !short_name)
		abort();
	(void)reference_api_host(ref);
	if (reference_dup(ref, &copy) < 0)
		abort();

	if (reference_is_local(ref))
		return 0;  /* a local path is resolved against the file system: no fixed point */
	if (reference_parse(canonical, &again) < 0)
		abort();
	canonical2 = reference_to_string(again);
	if (!canonical2 || strcmp(canonical, canonical2) != 0)
		abort();
	return 0;
}
