/* cache/store/mount_records.h: the one place that knows where mounts are recorded and what a
 * record says.  A mount leaves RUNTIME/mounts/<id>/ behind, so that `umount` can undo it even
 * after its daemon was killed and so that gc and rm never take an image a mount reads from: an
 * "info" file, the FUSE mountpoint "lower/" (when an overlay sits on the target), "volatile/"
 * (tmpfs upper) and the daemon's "control" socket.  <id> is derived from the target path, so
 * the target alone finds it.
 *
 * RUNTIME is the runtime directory of whoever runs the command: $LAZYROOT_RUNTIME_DIR; else,
 * for users other than root, $XDG_RUNTIME_DIR/lazyroot (they cannot write /run/lazyroot); else
 * /run/lazyroot.  Every verb finds records here and nowhere else. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct mount_record {
	char *dir;          /* RUNTIME/mounts/<id> */
	char *target;       /* the user's mountpoint */
	char *fuse_mountpoint;
	char *upper;        /* "none", "overlay" or "volatile" */
	char *image;        /* canonical reference */
	char *digest;       /* manifest digest the mount is pinned to */
	char *cache_dir;    /* the cache it reads from, resolved; NULL in an older record */
	pid_t pid;          /* the daemon */
	uint32_t private_users;  /* the base its tree's ids are shifted by; 0: none */
};

/* RUNTIME (see above), allocated. */
int mount_records_runtime_dir(char **ret);
/* RUNTIME/mounts/<id> for @target, which must be absolute and normalised. */
int mount_record_dir_for(const char *target, char **ret);
/* Writes @rec->dir/info atomically; the directory must exist. */
int mount_record_write(const struct mount_record *rec);
/* The record of the mount at @target; -ENOENT if there is none, -EBADMSG if it is damaged. */
int mount_record_read(const char *target, struct mount_record *ret);
void mount_record_done(struct mount_record *rec);
/* Removes a record's directory: files and empty directories only, never across a mount. */
int mount_record_remove(const char *dir);
/* Whether the record's daemon still runs (a process we may not signal counts as running). */
bool mount_record_alive(const struct mount_record *rec);

/* Calls @cb for every record whose daemon is alive (records being written or torn down are
 * skipped); a negative return from @cb stops and is returned.  A runtime directory that does
 * not exist or that we may not read holds no record of ours: 0. */
int mount_records_foreach_live(int (*cb)(void *userdata, const struct mount_record *rec),
			       void *userdata);
/* The manifest digests that live mounts reading from cache @cache_dir are pinned to: a strv,
 * possibly empty (NULL).  This is "mounted" for images, rm and gc. */
int mount_records_mounted_digests(const char *cache_dir, char ***ret);
