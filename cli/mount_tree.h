/* cli/mount_tree.h: the tree a mount serves, built from the cache's index. */
#pragma once

#include "cache/image.h"
#include "cache/store/cache.h"
#include "fs/fs.h"
#include "fs/tree.h"

/* Applies @img's layers in order; errors are logged.  0 or -errno. */
int mount_tree_build(struct cache *c, const struct image *img, struct fs_tree **ret);
