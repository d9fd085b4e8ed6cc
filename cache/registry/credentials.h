/* cache/registry/credentials.h: registry credentials where skopeo, podman and docker keep them.
 *
 * Sources, first match wins:
 *   1. the first auth file: credentials_options.authfile, else $REGISTRY_AUTH_FILE, else
 *      ${XDG_RUNTIME_DIR}/containers/auth.json (as root without XDG_RUNTIME_DIR:
 *      /run/containers/0/auth.json)
 *   2. ${XDG_CONFIG_HOME:-$HOME/.config}/containers/auth.json
 *   3. ${DOCKER_CONFIG:-$HOME/.docker}/config.json
 *   4. $HOME/.dockercfg (the legacy format: the "auths" map alone)
 * Within one file: credHelpers[host] (that helper's answer is the file's answer), else the
 * most specific "auths" key ("host/ns/repo", "host/ns", "host", or docker's URL forms
 * "https://host/v1/"), else credsStore.  docker.io, index.docker.io and registry-1.docker.io
 * are one registry.  Helpers are `docker-credential-NAME get` from $PATH, given the server
 * name on stdin; they are bounded in time and output, and reaped.
 *
 * Passwords are secrets: they never appear in an error or a log line, and are wiped on free.
 * (jansson's own copies of a parsed file are freed, not wiped.)
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "cache/base/util.h"

struct credentials_options {
	const char *authfile;  /* replaces the default first auth file; NULL: none */
};

struct credentials {
	char *username;
	char *password;   /* secret */
	char *source;     /* "'/root/.docker/config.json'", "credential helper 'docker-credential-pass'" */
};

struct credentials *credentials_free(struct credentials *c);  /* NULL-safe, wipes */
DEFINE_CLEANUP_FUNC(struct credentials *, credentials_free);

/* Credentials for @registry ("host[:port]" as a reference names it, "docker.io") and
 * @repository ("library/debian"; NULL or "" for the registry itself).  0 with *ret NULL
 * when no source has any.  On failure, one line for the user in the thread's message
 * (error.h): -EBADMSG malformed
 * file or entry, -EFBIG file or helper output too large, -ETIMEDOUT helper too slow, -EPROTO
 * helper failed or answered nonsense, -ENOENT helper not on $PATH, other -errno reading. */
int credentials_lookup(const struct credentials_options *o, const char *registry,
		       const char *repository, struct credentials **ret);

/* "USER:PASS" (the password may contain ':'); -EINVAL without ':' or with an empty user. */
int credentials_parse_pair(const char *s, const char *source, struct credentials **ret);
/* The first line of @path as USER:PASS (--creds-file); -EINVAL if it is not one. */
int credentials_read_pair_file(const char *path, struct credentials **ret);

/* The auth file `login` writes and lookups read first when no --authfile is given (see
 * above); -ENOENT when there is none (not root and no XDG_RUNTIME_DIR). */
int credentials_default_auth_file(char **ret);

/* The "auths" key for registry name @name: "host[:port]", "docker.io" for docker.io and its
 * aliases; "https://host/v1/" forms are accepted.  -EINVAL for a name with a path or empty. */
int credentials_registry_key(const char *name, char **ret);
/* Whether auths key @key names registry @registry_key itself (no path), in any spelling. */
bool credentials_key_names_registry(const char *key, const char *registry_key);

/* base64 of "user:password" as auth files store it (caller wipes and frees). */
int credentials_encode_auth(const char *user, const char *password, char **ret);

int credentials_options_dup(const struct credentials_options *o, struct credentials_options **ret);
struct credentials_options *credentials_options_free(struct credentials_options *o);
