/* cli/mount_state.h: what a mount leaves in the runtime directory so that `umount` can undo it,
 * even after its daemon was killed: RUNTIME/mounts/<id>/ with an "info" file, the FUSE
 * mountpoint "lower/" (when an overlay sits on the target) and "volatile/" (tmpfs upper).
 * <id> is derived from the target path, so the target alone finds it. */
#pragma once

#include <sys/types.h>

struct mount_state {
	char *dir;          /* RUNTIME/mounts/<id> */
	char *target;       /* the user's mountpoint */
	char *fuse_mountpoint;
	char *upper;        /* "none", "overlay" or "volatile" */
	char *image;        /* canonical reference */
	char *digest;       /* manifest digest the mount is pinned to */
	pid_t pid;          /* the daemon */
};

/* RUNTIME is $LAZYROOT_RUNTIME_DIR or /run/lazyroot. */
int runtime_dir(char **ret);
/* @target must be absolute and normalised. */
int mount_state_dir_for(const char *target, char **ret);
int mount_state_write(const struct mount_state *s);
/* -ENOENT if there is none. */
int mount_state_read(const char *target, struct mount_state *ret);
void mount_state_done(struct mount_state *s);
/* Removes the state directory: files and empty directories only, never across a mount. */
int mount_state_remove(const char *dir);

/* The absolute, normalised form of @path without resolving its last component (which may be
 * a dead FUSE mount that cannot be stat'ed). */
int path_make_absolute(const char *path, char **ret);
/* 1 if @path is a mountpoint listed in /proc/self/mountinfo, with its fstype; 0 if not. */
int mountinfo_find(const char *path, char **ret_fstype);
