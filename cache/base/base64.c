/* cache/base/base64.c: see base64.h. */
#include "base64.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const char alphabet[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int base64_encode(const void *data, size_t n, char **ret)
{
	const unsigned char *p = data;
	size_t o = 0;
	char *out;

	out = malloc(4 * ((n + 2) / 3) + 1);
	if (!out)
		return -ENOMEM;
	for (size_t i = 0; i < n; i += 3) {
		unsigned a = p[i], b = i + 1 < n ? p[i + 1] : 0, c = i + 2 < n ? p[i + 2] : 0;

		out[o++] = alphabet[a >> 2];
		out[o++] = alphabet[((a & 3) << 4) | (b >> 4)];
		out[o++] = i + 1 < n ? alphabet[((b & 15) << 2) | (c >> 6)] : '=';
		out[o++] = i + 2 < n ? alphabet[c & 63] : '=';
	}
	out[o] = 0;
	*ret = out;
	return 0;
}

static int value_of(char c)
{
	const char *p = c ? strchr(alphabet, c) : NULL;

	return p ? (int)(p - alphabet) : -1;
}

int base64_decode(const char *s, size_t len, char **ret, size_t *ret_len)
{
	size_t n = len, out_len = 0;
	uint32_t acc = 0;
	int bits = 0;
	char *out;

	while (n > 0 && s[n - 1] == '=')
		n--;
	if (len - n > 2 || n % 4 == 1)
		return -EBADMSG;
	out = malloc(n / 4 * 3 + 3);
	if (!out)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		int v = value_of(s[i]);

		if (v < 0) {
			explicit_bzero(out, out_len);
			free(out);
			return -EBADMSG;
		}
		acc = acc << 6 | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[out_len++] = (char)(acc >> bits & 0xff);
		}
	}
	out[out_len] = 0;
	*ret = out;
	*ret_len = out_len;
	return 0;
}
