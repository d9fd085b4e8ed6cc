/* cli/image_user.h: the ids an image's command runs with, as docker and podman choose them.
 *
 * The User of an image config (or of `run --user`) is "user[:group]", each part a name or a
 * number; names are looked up in the image's own /etc/passwd and /etc/group, read from the
 * mounted tree (image data: any size, any bytes, symlinks anywhere).  The rules are runc's
 * (libcontainer/user GetExecUser), which docker and podman follow:
 *   - no user: uid 0, its passwd entry if any (else gid 0, home "/");
 *   - a user (name, or uid looked up by number): uid, gid and home from its passwd entry; a uid
 *     without an entry is used as is, with gid 0 and home "/"; a name without one is an error;
 *   - a group (name, or gid looked up by number) replaces the gid; a gid without an entry is
 *     used as is; a name without one is an error;
 *   - supplementary groups: without a group part, every group of /etc/group whose member list
 *     names the user (its passwd name), in file order; with a group part, none.
 * Unlike runc, a passwd or group line whose id is not a decimal number in range is ignored
 * rather than read as 0 (root). */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "cache/base/util.h"

#define IMAGE_ID_MAX 2147483647u          /* runc's and docker's limit, for 32-bit readers */
#define IMAGE_USER_FILE_MAX (16u << 20)   /* /etc/passwd or /etc/group larger than this: -EFBIG */
#define IMAGE_USER_GROUPS_MAX 65536u      /* the kernel's NGROUPS_MAX */

struct image_user {
	uint32_t uid;
	uint32_t gid;
	uint32_t *groups;    /* supplementary groups, n_groups of them */
	size_t n_groups;
	char *home;          /* passwd's home directory, "/" without an entry */
};

struct image_user *image_user_free(struct image_user *u);   /* NULL-safe */
DEFINE_CLEANUP_FUNC(struct image_user *, image_user_free);

/* Resolves @spec (NULL or "" for root) against the contents of /etc/passwd and /etc/group
 * (@passwd / @group, NULL when the file is absent; need not be NUL-terminated).
 * -ESRCH: a name with no entry ("unable to find user NAME ..." in error_message());
 * -ERANGE: a number over IMAGE_ID_MAX; -E2BIG: more than IMAGE_USER_GROUPS_MAX groups. */
int image_user_resolve_buf(const char *spec, const char *passwd, size_t passwd_len,
			   const char *group, size_t group_len, struct image_user **ret);

/* The same, reading etc/passwd and etc/group under @root_fd (a directory fd of the container's
 * tree), resolved as inside it: symlinks cannot leave the tree, and what is not a regular file
 * is refused (-EINVAL) before it is opened.  A missing file counts as absent; -EFBIG for one
 * over IMAGE_USER_FILE_MAX. */
int image_user_resolve(int root_fd, const char *spec, struct image_user **ret);
