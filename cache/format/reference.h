/* cache/format/reference.h: image references as the ecosystem writes them.  A docker reference in the
 * distribution grammar, [docker://][host[:port]/]path[:tag][@sha256:hex], with docker.io
 * normalisation ("debian" -> docker.io/library/debian:latest); or one of skopeo's local
 * transports: oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE[:REF|:@N]. */
#pragma once

#include "cache/base/util.h"

enum reference_transport {
	REFERENCE_DOCKER,          /* a registry */
	REFERENCE_OCI,             /* an OCI image layout directory */
	REFERENCE_OCI_ARCHIVE,     /* a tar of such a layout */
	REFERENCE_DOCKER_ARCHIVE,  /* the output of `docker save` */
};

struct reference {
	enum reference_transport transport;
	/* REFERENCE_DOCKER only (NULL otherwise): */
	char *domain;      /* "docker.io", "127.0.0.1:5000", "[::1]:5000", "localhost" */
	char *repository;  /* "library/debian", "demo" */
	char *digest;      /* "sha256:…" or NULL */
	/* docker: "latest" when neither tag nor digest was given, NULL with a digest only.
	 * oci, oci-archive: the org.opencontainers.image.ref.name to select, or NULL.
	 * docker-archive: the canonical docker reference to find in RepoTags, or NULL. */
	char *tag;
	/* Local transports only: */
	char *path;        /* absolute, symbolic links resolved when the path exists */
	long index;        /* docker-archive ":@N": the N-th manifest entry; -1 when not given */
};

/* -EINVAL (with the reason as the thread's message, error.h) for anything the grammar rejects: upper-case repository, bad digest, empty tag, over-long names, an empty
 * path…  A relative local path is made absolute against the working directory (realpath() when
 * it exists: the canonical string then names the same image from any directory); a path that
 * does not exist is not an error here but when the image is read. */
int reference_parse(const char *s, struct reference **ret);
struct reference *reference_free(struct reference *r);  /* NULL-safe */
DEFINE_CLEANUP_FUNC(struct reference *, reference_free);
/* A deep copy; -ENOMEM. */
int reference_dup(const struct reference *r, struct reference **ret);

static inline bool reference_is_local(const struct reference *r)
{
	return r->transport != REFERENCE_DOCKER;
}

/* "docker.io/library/debian:latest", "host/repo:tag@sha256:…", "oci:/abs/dir:edge",
 * "oci-archive:/abs/x.tar", "docker-archive:/abs/x.tar:docker.io/a/b:1",
 * "docker-archive:/abs/x.tar:@0", "docker://oci:5000/x:latest" (the prefix kept only where the
 * string would otherwise read as another transport): the key of the cache's refs table. */
char *reference_to_string(const struct reference *r);
/* The host the API is served from: "registry-1.docker.io" for docker.io, else the domain;
 * NULL for a local transport. */
const char *reference_api_host(const struct reference *r);
/* A short name for the image, usable as a machine name ([a-z0-9-], at most 64): the last path
 * component of the repository ("debian"); for a local image the repository named by its tag
 * when the tag is a reference, else the file or directory name without ".tar".  Caller frees. */
char *reference_short_name(const struct reference *r);
