/* cache/registry/docker_archive.h: the images of a `docker save` tar (also skopeo's docker-archive:),
 * each turned into an OCI image manifest whose descriptors point at the archive's members.
 * manifest.json lists [{Config, RepoTags, Layers}] by member name, in the legacy layout
 * ("<id>/layer.tar", "<hex>.json") and in Docker 25's (blobs/sha256/<hex>) alike. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "cache/base/digest.h"
#include "cache/registry/tar_index.h"

struct docker_archive_image {
	char **repo_tags;            /* canonical references where they parse, else as written */
	char *manifest;              /* synthesized OCI manifest, deterministic JSON */
	size_t manifest_len;
	char digest[DIGEST_STRING_MAX];  /* sha256 of those bytes */
};

/* A member that a manifest names, by the digest of its bytes. */
struct docker_archive_blob {
	char digest[DIGEST_STRING_MAX];
	uint64_t offset, size;
};

struct docker_archive {
	struct docker_archive_image *images;
	size_t n_images;
	struct docker_archive_blob *blobs;
	size_t n_blobs;
	uint64_t bytes_read;         /* by the load: the config and layer bytes hashed */
};

/* Reads manifest.json of the tar @fd (indexed as @t) and hashes each config and layer once,
 * each read sequentially, in the order manifest.json names them.  -EPROTO if manifest.json is
 * missing or malformed, -ENOENT if it names a member that is not there, -ENODATA if the
 * archive is truncated; @err (if not NULL) gets a one-line reason. */
int docker_archive_load(int fd, const struct tar_index *t, struct docker_archive **ret,
			char *err, size_t err_size);
struct docker_archive *docker_archive_free(struct docker_archive *a);  /* NULL-safe */
DEFINE_CLEANUP_FUNC(struct docker_archive *, docker_archive_free);

const struct docker_archive_blob *docker_archive_find_blob(const struct docker_archive *a,
							   const char *digest);
