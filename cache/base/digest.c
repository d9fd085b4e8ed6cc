/*
 * cache/base/digest.c: parses and computes "sha256:<hex>" digests with libcrypto's EVP API.
 * Everything here is stateless apart from the caller-owned struct digest_ctx, so any thread
 * may call it.  Expected load: every blob byte fetched or unpacked passes through
 * digest_ctx_update() once.
 */
#include "digest.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "cache/base/util.h"

#define DIGEST_PREFIX "sha256:"

struct digest_ctx {
	EVP_MD_CTX *md;
};

static bool is_lower_hex(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

/* The OCI grammar: algorithm = component ([+._-] component)*, component = [a-z0-9]+,
 * encoded = [a-zA-Z0-9=_-]+.  Used only to tell "another algorithm" from "garbage". */
static bool is_other_algorithm(const char *s)
{
	const char *colon = strchr(s, ':');
	bool want_component = true;

	if (!colon || colon == s || colon[1] == '\0')
		return false;
	for (const char *p = s; p < colon; p++) {
		if ((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9')) {
			want_component = false;
		} else if (!want_component && strchr("+._-", *p)) {
			want_component = true;
		} else {
			return false;
		}
	}
	if (want_component)
		return false;
	for (const char *p = colon + 1; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		      (*p >= '0' && *p <= '9') || strchr("=_-", *p)))
			return false;
	return true;
}

int digest_validate(const char *s)
{
	size_t n;

	if (!s)
		return -EBADMSG;
	if (!startswith(s, DIGEST_PREFIX))
		return is_other_algorithm(s) ? -EOPNOTSUPP : -EBADMSG;

	s += strlen(DIGEST_PREFIX);
	for (n = 0; s[n]; n++)
		if (!is_lower_hex(s[n]))
			return -EBADMSG;
	return n == DIGEST_HEX_LEN ? 0 : -EBADMSG;
}

int digest_ctx_new(struct digest_ctx **ret)
{
	_cleanup_(digest_ctx_freep) struct digest_ctx *c = NULL;

	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->md = EVP_MD_CTX_new();
	if (!c->md)
		return -ENOMEM;
	if (EVP_DigestInit_ex(c->md, EVP_sha256(), NULL) != 1)
		return -ENOMEM;

	*ret = TAKE_PTR(c);
	return 0;
}

static void digest_ctx_done(struct digest_ctx *c)
{
	EVP_MD_CTX_free(c->md);
}
DEFINE_FREE_FUNC(struct digest_ctx, digest_ctx_free, digest_ctx_done);

void digest_ctx_update(struct digest_ctx *c, const void *buf, size_t n)
{
	/* SHA-256 in the default provider cannot fail on update once initialised. */
	(void)EVP_DigestUpdate(c->md, buf, n);
}

void digest_format_sha256(const uint8_t md[32], char ret[DIGEST_STRING_MAX])
{
	static const char hex[] = "0123456789abcdef";
	char *p = ret;

	memcpy(p, DIGEST_PREFIX, strlen(DIGEST_PREFIX));
	p += strlen(DIGEST_PREFIX);
	for (size_t i = 0; i < 32; i++) {
		*p++ = hex[md[i] >> 4];
		*p++ = hex[md[i] & 0xf];
	}
	*p = '\0';
}

void digest_ctx_final(struct digest_ctx *c, char ret[DIGEST_STRING_MAX])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned len = 0;

	(void)EVP_DigestFinal_ex(c->md, md, &len);
	digest_format_sha256(md, ret);
}

static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

int digest_parse_sha256(const char *s, uint8_t ret[32])
{
	const char *h;

	if (digest_validate(s) < 0)
		return -EBADMSG;
	h = s + strlen(DIGEST_PREFIX);
	for (size_t i = 0; i < 32; i++)
		ret[i] = (uint8_t)(hex_value(h[2 * i]) << 4 | hex_value(h[2 * i + 1]));
	return 0;
}

int digest_buffer(const void *buf, size_t n, char ret[DIGEST_STRING_MAX])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned len = 0;

	if (EVP_Digest(buf, n, md, &len, EVP_sha256(), NULL) != 1 || len != 32)
		return -ENOMEM;
	digest_format_sha256(md, ret);
	return 0;
}

int digest_verify_buffer(const void *buf, size_t n, const char *expected)
{
	char actual[DIGEST_STRING_MAX];
	int r;

	r = digest_validate(expected);
	if (r < 0)
		return -EBADMSG;
	r = digest_buffer(buf, n, actual);
	if (r < 0)
		return r;
	return streq(actual, expected) ? 0 : -EBADMSG;
}
