/* Unit test of cache/base/base64.c: RFC 4648 vectors both ways, optional padding, and what is
 * refused. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cache/base/base64.h"
#include "tap.h"

static const struct {
	const char *plain, *encoded;
} vectors[] = {
	{ "", "" }, { "f", "Zg==" }, { "fo", "Zm8=" }, { "foo", "Zm9v" }, { "foob", "Zm9vYg==" },
	{ "fooba", "Zm9vYmE=" }, { "foobar", "Zm9vYmFy" },
	{ "user:pa ss/+?", "dXNlcjpwYSBzcy8rPw==" },
};

static void check_decode(const char *s, int want, const char *plain)
{
	char *out = NULL;
	size_t len = 0;
	int r = base64_decode(s, strlen(s), &out, &len);

	if (want < 0) {
		check(r == want, "'%s' is refused with %d (got %d)", s, want, r);
	} else {
		check(r == 0 && len == strlen(plain) && memcmp(out, plain, len) == 0 &&
		      out[len] == 0, "'%s' decodes to '%s'", s, plain);
	}
	free(out);
}

int main(void)
{
	for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
		char *out = NULL;

		check(base64_encode(vectors[i].plain, strlen(vectors[i].plain), &out) == 0 &&
		      strcmp(out, vectors[i].encoded) == 0, "'%s' encodes to '%s'",
		      vectors[i].plain, vectors[i].encoded);
		free(out);
		check_decode(vectors[i].encoded, 0, vectors[i].plain);
	}
	check_decode("Zg", 0, "f");            /* padding is optional */
	check_decode("Zm8", 0, "fo");
	check_decode("Zg===", -EBADMSG, NULL); /* at most two '=' */
	check_decode("Z", -EBADMSG, NULL);     /* one char is never whole */
	check_decode("Zm9v!", -EBADMSG, NULL);
	check_decode("Zm 9v", -EBADMSG, NULL);
	check_decode("Zm=v", -EBADMSG, NULL);  /* '=' only at the end */

	/* Binary: every byte value survives. */
	{
		unsigned char all[256];
		char *enc = NULL, *dec = NULL;
		size_t len = 0;

		for (int i = 0; i < 256; i++)
			all[i] = (unsigned char)i;
		check(base64_encode(all, sizeof(all), &enc) == 0 &&
		      base64_decode(enc, strlen(enc), &dec, &len) == 0 && len == sizeof(all) &&
		      memcmp(dec, all, len) == 0, "256 byte values round-trip");
		free(enc);
		free(dec);
	}
	return tap_done();
}
