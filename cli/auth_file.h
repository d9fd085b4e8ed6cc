/* cli/auth_file.h: the auth.json that `lazyroot login` writes and `lazyroot logout` edits
 * (containers-auth.json(5)): which file, reading it, its "auths" object, writing it back. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

/* The auth file: --authfile (@option), else the default one; 0 or -ERR_USAGE, logged with
 * "no auth file@what: …" (@what: " to write" for login, "" for logout). */
int auth_file_choose(const char *option, const char *what, char **ret);

/* Parses @path into an object; a missing file is an empty one.  Errors logged. */
int auth_file_load(const char *path, json_t **ret);

/* Writes @root to @path atomically: mode 0600, directory created 0700.  Errors logged. */
int auth_file_save(const char *path, json_t *root);

/* @root's "auths" object (created if @create; NULL if absent); -EBADMSG if not an object. */
int auth_file_auths(json_t *root, const char *path, bool create, json_t **ret);

/* Removes every "auths" entry that names @key; returns how many. */
size_t auths_remove(json_t *auths, const char *key);

/* The auths key for registry @arg; 0 or -ERR_USAGE (logged). */
int auth_registry_key(const char *arg, char **ret);
