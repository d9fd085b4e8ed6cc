/* fs/tree_path.h: a path of the image resolved to its inode in a frozen tree, as a process in
 * the container would find it: every symlink followed inside the tree, the last one too. */
#pragma once

#include "fs/tree.h"

/* Resolves @path (absolute, or relative to the root) in @t: an absolute symlink target starts
 * again at the root, ".." stops at the root, at most 40 symlinks are followed (-ELOOP, as
 * Linux).  -ENOENT, -ENOTDIR, -ENAMETOOLONG (a path or expansion over PATH_MAX). */
int fs_tree_resolve(const struct fs_tree *t, const char *path, fs_ino_t *ret);
