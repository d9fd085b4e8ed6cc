/* fs/fs.h: the FUSE low-level filesystem serving one immutable fs_tree, read-only and
 * multi-threaded, contents read from the blob store. */
#pragma once

#include <stdbool.h>

#include "cache/store/blob_store.h"
#include "cache/fetch.h"
#include "fs/exec_ahead.h"
#include "fs/tree.h"

struct fs;

struct fs_config {
	const char *mountpoint;
	const char *fsname;     /* shown in /proc/mounts: "lazyroot" */
	const char *subtype;    /* "lazyroot" -> type fuse.lazyroot */
	bool allow_other;       /* with default_permissions: the container's users see real modes */
	unsigned max_threads;   /* 0: 64, so that reads waiting on fetches leave threads free */
	bool debug;
	/* Off by default, so an untrusted image cannot hand the host's users a setuid root
	 * binary, file capabilities or a device node: the kernel mounts nosuid,nodev then. */
	bool suid;              /* honour setuid/setgid bits and security.capability */
	bool dev;               /* device nodes in the image open real devices */
};

/* Takes ownership of @tree (on success only; the tree must be frozen, else -EINVAL); borrows
 * @bs and @fetcher (NULL when the image has no lazy layer), which must outlive the fs.  Chunks
 * missing from @bs are fetched through @fetcher; a read that cannot get its bytes fails with
 * EIO. */
int fs_new(struct fs_tree *tree, struct blob_store *bs, struct fetcher *fetcher, struct fs **ret);
struct fs *fs_free(struct fs *fs);  /* NULL-safe; unmounts if still mounted */
/* The start profile the reads record into or count against (fs/profile.h; borrowed, must
 * outlive the fs; NULL: none).  Call before fs_mount(). */
struct fs_profile;
void fs_set_profile(struct fs *fs, struct fs_profile *profile);
/* Stops what the fs fetches on its own (exec_ahead.h's workers): call it before freeing the
 * fetcher.  NULL-safe, idempotent. */
void fs_stop_fetching(struct fs *fs);
/* What fs/exec_ahead.h fetched ahead of programs and their libraries; zeros for NULL. */
void fs_get_exec_ahead_stats(struct fs *fs, struct exec_ahead_stats *ret);

/* Creates the session and mounts it; on return the kernel has the mount and requests queue
 * until fs_serve() runs.  -ENODEV without /dev/fuse, other -errno from mount. */
int fs_mount(struct fs *fs, const struct fs_config *c);
/* SIGTERM, SIGINT and SIGHUP make fs_serve() return. */
int fs_install_signal_handlers(struct fs *fs);
/* Serves requests until the filesystem is unmounted or a signal arrives. */
int fs_serve(struct fs *fs);
/* Detaches the mount (lazy unmount) if it is still there. */
void fs_unmount(struct fs *fs);
