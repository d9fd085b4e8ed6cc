/* cache/format/manifest.h: parsing of OCI / Docker schema 2 manifests, indexes (manifest lists) and
 * image configs (with jansson).  Pure functions over byte buffers: no I/O. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cache/base/util.h"

#define MEDIA_TYPE_OCI_MANIFEST "application/vnd.oci.image.manifest.v1+json"
#define MEDIA_TYPE_OCI_INDEX "application/vnd.oci.image.index.v1+json"
#define MEDIA_TYPE_DOCKER_MANIFEST "application/vnd.docker.distribution.manifest.v2+json"
#define MEDIA_TYPE_DOCKER_LIST "application/vnd.docker.distribution.manifest.list.v2+json"

enum layer_compression {
	LAYER_COMPRESSION_NONE,
	LAYER_COMPRESSION_GZIP,
	LAYER_COMPRESSION_ZSTD,
};

struct annotation {
	char *key;
	char *value;
};

struct layer_desc {
	char *digest;
	char *media_type;
	uint64_t size;
	enum layer_compression compression;
	struct annotation *annotations;
	size_t n_annotations;
};

struct manifest {
	char *media_type;        /* from the document, or the descriptor's when it has none */
	char *config_digest;
	char *config_media_type;
	uint64_t config_size;
	struct layer_desc *layers;
	size_t n_layers;
};

struct platform {
	char *os;            /* "linux" */
	char *architecture;  /* "amd64", "arm64" (GOARCH names) */
	char *variant;       /* "v8", or NULL */
};

struct image_config {
	char **entrypoint;   /* strv or NULL */
	char **cmd;          /* strv or NULL */
	char **env;          /* strv of "K=V" or NULL */
	char *working_dir;   /* or NULL */
	char *user;          /* or NULL */
	char **diff_ids;     /* rootfs.diff_ids, strv, bottom layer first; NULL if absent */
	struct platform platform;
};

/* True for the two index / manifest-list media types. */
bool media_type_is_index(const char *media_type);
/* True for the two image manifest media types. */
bool media_type_is_manifest(const char *media_type);

/* Which media type a fetched document has: the Content-Type when it names a known type, else
 * the document's own "mediaType", else inferred ("manifests" -> OCI index, "layers" -> OCI
 * manifest).  -EPROTO if none of these gives a known type. */
int manifest_detect_media_type(const void *buf, size_t len, const char *content_type,
			       char **ret);

/* Parses an image manifest.  @media_type as detected above.  Rejects (-EPROTO) a layer media
 * type that is not a tar (plain, gzip or zstd; OCI or Docker spellings), a bad digest, a
 * missing config.  -EFBIG for more than 1000 layers. */
int manifest_parse(const void *buf, size_t len, const char *media_type, struct manifest **ret);
struct manifest *manifest_free(struct manifest *m);  /* NULL-safe */
DEFINE_CLEANUP_FUNC(struct manifest *, manifest_free);
const char *layer_desc_annotation(const struct layer_desc *l, const char *key);

/* Picks the manifest for @want from an index: os and architecture must match; a variant in
 * @want must match, and with none the index's entry for the host's default is preferred
 * (arm64 -> v8).  Entries for os or architecture "unknown" (BuildKit attestations) and of
 * other media types are skipped; an entry without a platform is the last resort.  Returns its
 * digest and media type (an index type when the entry is a nested index: the caller fetches
 * it and selects again); -ENOENT if no entry matches (the text lists what the index offers,
 * e.g. "linux/amd64, linux/arm64/v8", through *ret_available when non-NULL: set to NULL on
 * success, caller frees). */
int index_select_platform(const void *buf, size_t len, const struct platform *want,
			  char **ret_digest, char **ret_media_type, char **ret_available);

/* "linux/amd64" or "linux/arm64/v8" -> platform; -EINVAL if malformed. */
int platform_parse(const char *s, struct platform *ret);
/* The host's platform, as GOOS/GOARCH names. */
int platform_host(struct platform *ret);
char *platform_to_string(const struct platform *p);
void platform_done(struct platform *p);

int image_config_parse(const void *buf, size_t len, struct image_config **ret);
struct image_config *image_config_free(struct image_config *c);  /* NULL-safe */
DEFINE_CLEANUP_FUNC(struct image_config *, image_config_free);
