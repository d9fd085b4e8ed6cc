/* tests/unit/test-manifest_hostile.c: manifests and indexes that a hostile registry could
 * serve with a matching digest (docs/security.md, "Hostile manifests and TOCs"): each is
 * refused with -EPROTO (malformed or ambiguous) or -EFBIG (over a ceiling), never a crash. */
#include "cache/format/manifest.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache/base/util.h"
#include "tap.h"

#define D "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define CONFIG "\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\"," \
	"\"digest\":\"" D "\",\"size\":10}"
#define LAYER(size) "{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\"," \
	"\"digest\":\"" D "\",\"size\":" size "}"

static int parse(const char *json)
{
	struct manifest *m = NULL;
	int r = manifest_parse(json, strlen(json), MEDIA_TYPE_OCI_MANIFEST, &m);

	manifest_free(m);
	return r;
}

static int select_amd64(const char *json)
{
	struct platform want = { .os = (char *)"linux", .architecture = (char *)"amd64" };
	_cleanup_free_ char *digest = NULL, *mt = NULL, *available = NULL;

	return index_select_platform(json, strlen(json), &want, &digest, &mt, &available);
}

int main(void)
{
	char *big;
	int r;

	check(parse("{\"schemaVersion\":2," CONFIG ",\"layers\":[" LAYER("5") "]}") == 0,
	      "a well-formed manifest parses");
	check(parse("{\"schemaVersion\":2," CONFIG ",\"layers\":[" LAYER("5")) == -EPROTO,
	      "truncated JSON is -EPROTO");
	check(parse("{\"schemaVersion\":2," CONFIG ",\"layers\":[" LAYER("-5") "]}") < 0,
	      "a negative layer size is refused");
	check(parse("{\"schemaVersion\":2," CONFIG ",\"layers\":[" LAYER("1e30") "]}") < 0,
	      "a layer size that is not an integer is refused");
	check(parse("{\"schemaVersion\":2," CONFIG ",\"layers\":[{\"mediaType\":"
		    "\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:../../x\","
		    "\"size\":5}]}") < 0, "a malformed layer digest is refused");
	check(parse("{\"schemaVersion\":2," CONFIG ",\"layers\":[],\"layers\":[" LAYER("5") "]}") ==
	      -EPROTO, "a repeated key is -EPROTO");
	check(parse("{\"schemaVersion\":2," CONFIG ",\"layers\":[" LAYER("5") "],"
		    "\"manifests\":[]}") == -EPROTO, "a manifest that is also an index is -EPROTO");
	check(select_amd64("{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":"
			   "\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"" D "\","
			   "\"size\":5,\"platform\":{\"os\":\"linux\",\"architecture\":\"amd64\"}}],"
			   "\"layers\":[]}") == -EPROTO,
	      "an index that is also a manifest is -EPROTO");

	/* Nesting: jansson's limit is 2048 levels. */
	big = malloc(2 * 100000 + 256);
	strcpy(big, "{\"schemaVersion\":2," CONFIG ",\"layers\":[],\"x\":");
	r = (int)strlen(big);
	memset(big + r, '[', 100000);
	memset(big + r + 100000, ']', 100000);
	strcpy(big + r + 200000, "}");
	check(parse(big) == -EPROTO, "100000 nested arrays are -EPROTO, not a crash");
	free(big);

	/* Ceilings: 1000 layers, 4 MiB documents. */
	big = malloc(1001 * 200 + 256);
	strcpy(big, "{\"schemaVersion\":2," CONFIG ",\"layers\":[");
	for (int i = 0; i < 1001; i++)
		strcat(big, i ? "," LAYER("5") : LAYER("5"));
	strcat(big, "]}");
	r = parse(big);
	check(r == -EFBIG, "1001 layers are -EFBIG (%d)", r);
	free(big);

	big = malloc((4 << 20) + 64);
	strcpy(big, "{\"schemaVersion\":2," CONFIG ",\"layers\":[],\"pad\":\"");
	r = (int)strlen(big);
	memset(big + r, 'p', (4 << 20) - r);
	strcpy(big + (4 << 20), "\"}");
	check(parse(big) == -EFBIG, "a manifest over 4 MiB is -EFBIG");
	free(big);

	return tap_done();
}
