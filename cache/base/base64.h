/* cache/base/base64.h: standard base64 (RFC 4648, "+/" alphabet), for auth.json entries, Basic
 * authentication and eStargz TOC digests.  Both directions may carry secrets: nothing is left
 * behind in freed memory on failure. */
#pragma once

#include <stddef.h>

/* Encodes @n bytes, padded with '='.  Caller frees (wipe it if @data was a secret). */
int base64_encode(const void *data, size_t n, char **ret);

/* Decodes @len characters; the '=' padding (at most two) is optional.  The result is
 * NUL-terminated (not counted in *ret_len).  -EBADMSG for anything else. */
int base64_decode(const char *s, size_t len, char **ret, size_t *ret_len);
