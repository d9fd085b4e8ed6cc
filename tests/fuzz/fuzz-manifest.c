/* tests/fuzz/fuzz-manifest.c: the registry documents lazyroot parses (cache/format/manifest.c): media
 * type detection, image manifests, indexes (platform selection) and image configs.  The first
 * byte picks the Content-Type the "registry" sent; the rest is the document. */
#include "cache/format/manifest.h"

#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const content_types[] = {
	NULL,
	MEDIA_TYPE_OCI_MANIFEST,
	MEDIA_TYPE_OCI_INDEX,
	MEDIA_TYPE_DOCKER_MANIFEST,
	MEDIA_TYPE_DOCKER_LIST,
	"application/json",
	"text/plain; charset=utf-8",
};

static void select_platform(const uint8_t *data, size_t size, const char *want)
{
	_cleanup_free_ char *digest = NULL, *media_type = NULL, *available = NULL;
	struct platform p = {};

	if (platform_parse(want, &p) < 0)
		abort();
	(void)index_select_platform(data, size, &p, &digest, &media_type, &available);
	platform_done(&p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	_cleanup_(manifest_freep) struct manifest *m = NULL;
	_cleanup_(image_config_freep) struct image_config *c = NULL;
	_cleanup_free_ char *media_type = NULL;
	const char *content_type;

	if (size < 1)
		return 0;
	content_type = content_types[data[0] % (sizeof(content_types) / sizeof(content_types[0]))];
	data++, size--;

	if (manifest_detect_media_type(data, size, content_type, &media_type) >= 0) {
		if (media_type_is_manifest(media_type) && manifest_parse(data, size, media_type, &m) >= 0) {
			for (size_t i = 0; i < m->n_layers; i++)
				(void)layer_desc_annotation(&m->layers[i], "org.opencontainers.image.title");
		}
		if (media_type_is_index(media_type)) {
			select_platform(data, size, "linux/amd64");
			select_platform(data, size, "linux/arm64/v8");
		}
	}
	if (image_config_parse(data, size, &c) >= 0)
		free(platform_to_string(&c->platform));
	return 0;
}
