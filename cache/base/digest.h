/* cache/base/digest.h: "sha256:<64 lower-case hex>" digests, computed with libcrypto. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cache/base/util.h"

#define DIGEST_HEX_LEN 64
#define DIGEST_STRING_MAX (7 + DIGEST_HEX_LEN + 1)  /* "sha256:" + hex + NUL */

/* Returns 0 if @s is "sha256:" plus exactly 64 lower-case hex digits, else -EBADMSG.
 * Other algorithms (sha512) are -EOPNOTSUPP. */
int digest_validate(const char *s);

struct digest_ctx;
int digest_ctx_new(struct digest_ctx **ret);
struct digest_ctx *digest_ctx_free(struct digest_ctx *c);  /* NULL-safe */
DEFINE_CLEANUP_FUNC(struct digest_ctx *, digest_ctx_free);
void digest_ctx_update(struct digest_ctx *c, const void *buf, size_t n);
/* Writes "sha256:<hex>" into @ret; the context may not be updated afterwards. */
void digest_ctx_final(struct digest_ctx *c, char ret[DIGEST_STRING_MAX]);

/* Writes "sha256:<hex>" of the 32 raw bytes @md into @ret. */
void digest_format_sha256(const uint8_t md[32], char ret[DIGEST_STRING_MAX]);

/* "sha256:<hex>" -> 32 raw bytes; -EBADMSG unless digest_validate() accepts @s. */
int digest_parse_sha256(const char *s, uint8_t ret[32]);

int digest_buffer(const void *buf, size_t n, char ret[DIGEST_STRING_MAX]);
/* 0 if sha256(buf) == @expected, -EBADMSG otherwise (or if @expected is malformed). */
int digest_verify_buffer(const void *buf, size_t n, const char *expected);
