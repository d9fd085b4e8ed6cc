/* fs/tree.h: the merged, read-only tree of an image, built once in memory from its layers'
 * entries (bottom layer first, each layer's entries in archive order) and immutable after
 * fs_tree_finish().  Applies the OCI layer rules: later layers win, ".wh.NAME" hides NAME
 * from lower layers, ".wh..wh..opq" hides every lower-layer child of its directory, a
 * non-directory replaces a directory's whole subtree, missing parents are created 0755
 * root:root, whiteout entries never appear.  Hardlinks share one inode. */
#pragma once

#include "cache/base/util.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "cache/store/entry.h"

struct fs_tree;
struct stat;

int fs_tree_new(struct fs_tree **ret);
struct fs_tree *fs_tree_free(struct fs_tree *t);  /* NULL-safe */

/* Starts the next layer: entries added after this belong to it. */
int fs_tree_begin_layer(struct fs_tree *t);
/* Copies what it needs from @e.  The directories of @e's path (and of a hard link's target)
 * are resolved in the tree built so far, following symlinks inside it as containerd and umoci
 * do when they extract: "lib -> usr/lib" then "lib/x" puts x in usr/lib; an absolute target
 * starts at the root, ".." stops there; -ELOOP after 40 symlinks.  A missing directory, or a
 * non-directory in the way (not a symlink), becomes an implicit directory, as umoci does.
 * -EINVAL for an entry that cannot apply: a hardlink to a missing or directory target (like
 * umoci, a hard link to any non-directory is accepted), a regular file whose chunks do not
 * tile [0, size) in order or whose content digest (a tar file's, or a chunk's) is not
 * "sha256:" + 64 lower-case hex digits, a whiteout name entry_check_whiteout() refuses.
 * -ENAMETOOLONG for a component over 255 bytes, -EBUSY once frozen.
 * Entries below aufs's ".wh..wh.*" directories (".wh..wh.plnk/…") are skipped, returning 0. */
int fs_tree_add(struct fs_tree *t, const struct entry *e);
/* Freezes the tree: assigns inode numbers, counts links and directory sizes. */
int fs_tree_finish(struct fs_tree *t);

/* Read side, valid after fs_tree_finish(); safe from many threads at once (no locks: the
 * tree never changes).  Inode numbers are 1 (root) .. fs_tree_count(). */
typedef uint64_t fs_ino_t;
#define FS_ROOT_INO 1

size_t fs_tree_count(const struct fs_tree *t);
/* 0 or -ENOENT / -ENOTDIR.  "." and ".." resolve too (the root's ".." is the root). */
int fs_tree_lookup(const struct fs_tree *t, fs_ino_t parent, const char *name, fs_ino_t *ret);
/* Makes fs_tree_stat() report every uid and gid plus @shift (a mount's private users range),
 * and shifts the ids of the POSIX ACLs in system.posix_acl_access/_default alike, as nspawn's
 * chown does: once, after fs_tree_finish() and before the tree is read by other threads.
 * -ERANGE, with nothing changed and *ret_bad the first inode, if an owner, group or ACL id is
 * @limit or more; @shift + @limit - 1 must not overflow. */
int fs_tree_shift_ids(struct fs_tree *t, uint32_t shift, uint32_t limit, fs_ino_t *ret_bad);
/* Fills a struct stat (st_ino, st_mode incl. type, st_nlink, uid, gid, size, rdev, mtime —
 * also used for atime and ctime —, st_blocks); -ENOENT for a bad number. */
int fs_tree_stat(const struct fs_tree *t, fs_ino_t ino, struct stat *ret);
/* Directory iteration: the entry at position @pos (0-based, "." and ".." not included);
 * -ENOENT past the end, -ENOTDIR if @dir is not a directory. */
int fs_tree_readdir(const struct fs_tree *t, fs_ino_t dir, size_t pos, const char **ret_name,
		    fs_ino_t *ret_ino);
/* The parent directory's number (the root's is the root); 0 if @dir is not a directory. */
fs_ino_t fs_tree_parent(const struct fs_tree *t, fs_ino_t dir);
/* Symlink target; -EINVAL if not a symlink. */
int fs_tree_readlink(const struct fs_tree *t, fs_ino_t ino, const char **ret);
/* Content digest of a regular file; -EISDIR / -EINVAL otherwise. */
int fs_tree_digest(const struct fs_tree *t, fs_ino_t ino, const char **ret);
/* The content of a regular file as chunks covering [0, size) in order.  A file of a
 * whole-blob (tar) layer has one chunk with blob_length 0: it is always local, named by the
 * file's digest.  A file of a lazy layer has the chunks its TOC gives; a chunk whose blob is
 * not in the store is fetched by the fs's fetcher.  Empty files have no chunks. */
struct fs_chunk_ref {
	uint64_t file_offset;
	uint64_t size;
	uint64_t blob_offset;
	uint64_t blob_length;    /* 0: local only */
	unsigned layer;          /* 0-based, in fs_tree_begin_layer() order */
	bool zeros;              /* a run of zeros: nothing to fetch or read */
	uint8_t digest[32];      /* raw sha256 of the chunk's bytes (unset when zeros) */
};
/* -EINVAL if @ino is not a regular file. */
int fs_tree_file_chunks(const struct fs_tree *t, fs_ino_t ino, const struct fs_chunk_ref **ret,
			size_t *ret_n);
/* Calls @cb for every fetchable chunk (blob_length > 0) of the files to prefetch: those whose
 * entry had prefetch=true, or, with @all, every file of a lazy layer; in the order the files
 * were added.  A negative return from @cb stops and is returned. */
int fs_tree_foreach_prefetch(const struct fs_tree *t, bool all,
			     int (*cb)(void *userdata, const struct fs_chunk_ref *c), void *userdata);

/* Extended attributes: -ENODATA if the name is not set. */
int fs_tree_getxattr(const struct fs_tree *t, fs_ino_t ino, const char *name,
		     const void **ret_value, size_t *ret_size);
size_t fs_tree_xattr_count(const struct fs_tree *t, fs_ino_t ino);
const char *fs_tree_xattr_name(const struct fs_tree *t, fs_ino_t ino, size_t i);
DEFINE_CLEANUP_FUNC(struct fs_tree *, fs_tree_free);
