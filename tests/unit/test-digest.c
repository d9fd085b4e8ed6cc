/* tests/unit/test-digest.c: digest syntax and SHA-256 results against known vectors. */
#include "cache/base/digest.h"

#include <errno.h>
#include <string.h>

#include "tap.h"

#define EMPTY "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define ABC "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"

int main(void)
{
	_cleanup_(digest_ctx_freep) struct digest_ctx *c = NULL;
	char d[DIGEST_STRING_MAX];
	char big[100000];

	check(digest_validate(EMPTY) == 0, "a well-formed sha256 digest is valid");
	check(digest_validate("sha256:abcd") == -EBADMSG, "short hex is rejected");
	check(digest_validate(EMPTY "0") == -EBADMSG, "long hex is rejected");
	check(digest_validate("sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855")
		      == -EBADMSG, "upper-case hex is rejected");
	check(digest_validate("sha256:g3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
		      == -EBADMSG, "non-hex digit is rejected");
	check(digest_validate("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
		      == -EBADMSG, "missing algorithm is rejected");
	check(digest_validate("") == -EBADMSG, "empty string is rejected");
	check(digest_validate(NULL) == -EBADMSG, "NULL is rejected");
	check(digest_validate("sha256:") == -EBADMSG, "empty hex is rejected");
	check(digest_validate("sha512:cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce")
		      == -EOPNOTSUPP, "sha512 is not supported");
	check(digest_validate("multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8")
		      == -EOPNOTSUPP, "other well-formed algorithms are not supported");
	check(digest_validate("SHA256:abc") == -EBADMSG, "upper-case algorithm is garbage");
	check(digest_validate("sha256 :abc") == -EBADMSG, "space in algorithm is garbage");
	check(digest_validate("sha512:") == -EBADMSG, "algorithm without encoded part is garbage");

	check(digest_buffer("", 0, d) == 0 && streq(d, EMPTY), "sha256 of nothing");
	check(digest_buffer("abc", 3, d) == 0 && streq(d, ABC), "sha256 of 'abc'");
	check(digest_validate(d) == 0, "computed digests validate");

	check(digest_verify_buffer("abc", 3, ABC) == 0, "verify accepts the right digest");
	check(digest_verify_buffer("abd", 3, ABC) == -EBADMSG, "verify rejects other content");
	check(digest_verify_buffer("abc", 3, "sha256:abc") == -EBADMSG, "verify rejects malformed digest");
	check(digest_verify_buffer("abc", 3, NULL) == -EBADMSG, "verify rejects NULL digest");

	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (char)(i * 7 + i / 251);
	check(digest_ctx_new(&c) == 0, "context allocates");
	for (size_t off = 0; off < sizeof(big); off += 777)
		digest_ctx_update(c, big + off, off + 777 <= sizeof(big) ? 777 : sizeof(big) - off);
	{
		char whole[DIGEST_STRING_MAX];

		digest_ctx_final(c, d);
		(void)digest_buffer(big, sizeof(big), whole);
		check(streq(d, whole), "streamed digest equals one-shot digest");
	}
	digest_ctx_free(TAKE_PTR(c));
	check(digest_ctx_new(&c) == 0, "a second context allocates");
	digest_ctx_final(c, d);
	check(streq(d, EMPTY), "a context with no updates gives the empty digest");
	check(digest_ctx_free(NULL) == NULL, "free is NULL-safe");

	return tap_done();
}
