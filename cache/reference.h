/* cache/reference.h: image references as the distribution reference grammar writes them:
 * [host[:port]/]path[:tag][@sha256:hex], with docker.io normalisation
 * ("debian" -> docker.io/library/debian:latest). */
#pragma once

#include "util.h"

struct reference {
	char *domain;      /* "docker.io", "127.0.0.1:5000", "[::1]:5000", "localhost" */
	char *repository;  /* "library/debian", "demo" */
	char *tag;         /* "latest" when neither tag nor digest was given; NULL with a digest only */
	char *digest;      /* "sha256:…" or NULL */
};

/* -EINVAL (with a reason through *ret_error, a static string, if non-NULL) for anything the
 * grammar rejects: upper-case repository, bad digest, empty tag, over-long names… */
int reference_parse(const char *s, struct reference **ret, const char **ret_error);
struct reference *reference_free(struct reference *r);  /* NULL-safe */
DEFINE_CLEANUP_FUNC(struct reference *, reference_free);

/* "docker.io/library/debian:latest", "host/repo@sha256:…", "host/repo:tag@sha256:…". */
char *reference_to_string(const struct reference *r);
/* The host the API is served from: "registry-1.docker.io" for docker.io, else the domain. */
const char *reference_api_host(const struct reference *r);
/* A short name for the image, usable as a machine name: last path component of the
 * repository, e.g. "debian". Caller frees. */
char *reference_short_name(const struct reference *r);
