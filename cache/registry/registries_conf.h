/* cache/registry/registries_conf.h: containers-registries.conf(5), the file podman, skopeo and buildah
 * read to learn a registry's mirrors, whether it is insecure or blocked, and where a name is
 * really served from.  Read from $CONTAINERS_REGISTRIES_CONF when set, else from
 * /etc/containers/registries.conf and then the drop-ins /etc/containers/registries.conf.d/
 * *.conf in name order, where a [[registry]] of a later file replaces an earlier one of the
 * same prefix.  A missing file is an empty one.
 *
 * Only the TOML the format uses is understood: comments, `key = "string"` ('literal' too),
 * booleans, numbers (ignored), arrays over several lines, inline tables (ignored), [table],
 * [[array.of.tables]].  Keys lazyroot has no use for (unqualified-search-registries,
 * short-name-mode, credential-helpers, [aliases], …) are parsed and ignored.  Version 1 files
 * ([registries.insecure] and [registries.block] lists) are read too.
 *
 * Errors: -EINVAL with the thread's message (error.h) set to one line, "FILE:LINE: reason". */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "cache/base/util.h"

struct registries_conf;

enum pull_from_mirror {
	PULL_FROM_MIRROR_ALL,
	PULL_FROM_MIRROR_DIGEST_ONLY,
	PULL_FROM_MIRROR_TAG_ONLY,
};

struct registries_conf *registries_conf_new(void);
struct registries_conf *registries_conf_free(struct registries_conf *c);  /* NULL-safe */
DEFINE_CLEANUP_FUNC(struct registries_conf *, registries_conf_free);

/* Adds the settings of one file's text (@filename only names it in errors and messages). */
int registries_conf_add_text(struct registries_conf *c, const char *text, size_t len,
			     const char *filename);
/* Adds @path's settings; a missing file adds nothing. */
int registries_conf_add_file(struct registries_conf *c, const char *path);
/* Reads the configuration as podman does (see above). */
int registries_conf_load(struct registries_conf **ret);

/* Where one registry request for an image may go, in the order to try them. */
struct registries_endpoint {
	char *name;       /* "host[:port]/repository", after the prefix was rewritten */
	bool insecure;
	bool mirror;      /* false for the origin, which is always last */
	bool by_tag;      /* may resolve tags */
	bool by_digest;   /* may serve blobs and manifests by digest */
};

/* The endpoints for the image @name ("host[:port]/repository", no tag), pulled by digest if
 * @pull_by_digest: the allowed mirrors of the best-matching [[registry]], then its location.
 * Without a match, just @name.  -EPERM (with a message) when the registry is blocked; -EINVAL
 * (with a message) when a rewrite leaves no repository. */
int registries_conf_endpoints(const struct registries_conf *c, const char *name,
			      bool pull_by_digest, struct registries_endpoint **ret, size_t *ret_n);
void registries_endpoints_free(struct registries_endpoint *e, size_t n);  /* NULL-safe */
