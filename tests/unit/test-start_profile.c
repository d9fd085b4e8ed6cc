/* tests/unit/test-start_profile.c: start profiles as JSON (cache/format/start_profile.h): what
 * is written parses back the same; what a registry could send that is malformed, another
 * image's or over a bound is refused before anything is allocated for it. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache/base/util.h"
#include "cache/format/start_profile.h"
#include "tap.h"

#define IMG "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define L0 "sha256:1111111111111111111111111111111111111111111111111111111111111111"
#define L1 "sha256:2222222222222222222222222222222222222222222222222222222222222222"
#define C0 "sha256:c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0"
#define HEAD "{\"schemaVersion\":1,\"mediaType\":\"" START_PROFILE_MEDIA_TYPE "\",\"image\":\"" \
	IMG "\",\"windowMs\":10,\"layers\":[\"" L0 "\",\"" L1 "\"],"

static int parse(const char *json, const char *image)
{
	struct start_profile p = {};
	int r = start_profile_parse(json, strlen(json), image, &p);

	start_profile_done(&p);
	return r;
}

static void test_round_trip(void)
{
	char *layers[] = { L0, L1, NULL };
	struct start_profile_chunk chunks[] = {
		{ .layer = 1, .blob_offset = 1ull << 40, .blob_length = 99, .size = 4096, .digest = C0 },
		{ .layer = 0, .blob_offset = 0, .blob_length = 1, .size = 0, .digest = L0 },
	};
	struct start_profile in = { .image = IMG, .window_ms = 10000, .layers = layers,
				    .chunks = chunks, .n_chunks = 2 }, out = {};
	_cleanup_free_ char *buf = NULL;
	size_t len;

	check(start_profile_format(&in, &buf, &len) == 0, "a profile is written");
	check(start_profile_parse(buf, len, IMG, &out) == 0, "and parses back");
	check(streq(out.image, IMG) && out.window_ms == 10000 && strv_length(out.layers) == 2 &&
	      streq(out.layers[1], L1), "with its image, window and layers");
	check(out.n_chunks == 2 && out.chunks[0].layer == 1 &&
	      out.chunks[0].blob_offset == 1ull << 40 && out.chunks[0].blob_length == 99 &&
	      out.chunks[0].size == 4096 && streq(out.chunks[0].digest, C0) &&
	      streq(out.chunks[1].digest, L0), "and its chunks, in order");
	start_profile_done(&out);
}

static void test_hostile(void)
{
	_cleanup_free_ char *big = NULL;
	size_t n = START_PROFILE_CHUNKS_MAX + 1, len = 0;

	check(parse(HEAD "\"chunks\":[]}", IMG) == 0, "an empty chunk list is a profile");
	check(parse(HEAD "\"chunks\":[]}", L0) == -EBADMSG, "another image's is refused");
	check(parse("{\"schemaVersion\":1,", IMG) == -EBADMSG, "truncated JSON is refused");
	check(parse("{\"schemaVersion\":2,\"mediaType\":\"" START_PROFILE_MEDIA_TYPE "\"}", IMG) ==
	      -EBADMSG, "another version is refused");
	check(parse(HEAD "\"chunks\":[[2,0,1,1,\"" C0 "\"]]}", IMG) == -EBADMSG,
	      "a chunk of a layer not listed is refused");
	check(parse(HEAD "\"chunks\":[[0,0,0,1,\"" C0 "\"]]}", IMG) == -EBADMSG,
	      "an empty range is refused");
	check(parse(HEAD "\"chunks\":[[0,9223372036854775807,9223372036854775807,1,\"" C0 "\"]]}",
		    IMG) == -EBADMSG, "a range ending past 2^63 is refused");
	check(parse(HEAD "\"chunks\":[[0,-1,1,1,\"" C0 "\"]]}", IMG) == -EBADMSG,
	      "a negative offset is refused");
	check(parse(HEAD "\"chunks\":[[0,0,1,1,\"sha256:zz\"]]}", IMG) == -EBADMSG,
	      "a malformed digest is refused");
	check(parse(HEAD "\"chunks\":[[0,0,1,1]]}", IMG) == -EBADMSG, "a short chunk is refused");
	check(parse(HEAD "\"chunks\":[],\"chunks\":[]}", IMG) == -EBADMSG,
	      "duplicate keys are refused");

	big = malloc(64 + n * 4);
	len += (size_t)sprintf(big, "%s\"chunks\":[", HEAD);
	for (size_t i = 0; i < n; i++)
		len += (size_t)sprintf(big + len, "%s0", i ? "," : "");
	strcpy(big + len, "]}");
	check(parse(big, IMG) == -EFBIG, "more than START_PROFILE_CHUNKS_MAX chunks: EFBIG");
	check(start_profile_parse(big, START_PROFILE_MAX + 1, IMG,
				  &(struct start_profile) {}) == -EFBIG,
	      "more than START_PROFILE_MAX bytes: EFBIG, unread");
}

int main(void)
{
	test_round_trip();
	test_hostile();
	return tap_done();
}
