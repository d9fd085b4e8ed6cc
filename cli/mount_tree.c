/* cli/mount_tree.c: the merged tree of an image, from its layers' entries in the index. */
#include "mount_tree.h"

#include <stdio.h>

#include "cache/base/log.h"
#include "cache/base/util.h"

struct tree_builder {
	struct fs_tree *tree;
	const char *layer;
	int r;
	char path[256];
};

static int tree_add_entry(void *userdata, const struct entry *e)
{
	struct tree_builder *b = userdata;
	int r;

	r = fs_tree_add(b->tree, e);
	if (r < 0)
		snprintf(b->path, sizeof(b->path), "%s", e->path);
	return r;
}

int mount_tree_build(struct cache *c, const struct image *img, struct fs_tree **ret)
{
	_cleanup_(fs_tree_freep) struct fs_tree *tree = NULL;
	int r;

	r = fs_tree_new(&tree);
	if (r < 0)
		return log_error_errno(r, "cannot build the tree: %m");
	for (size_t i = 0; i < img->manifest->n_layers; i++) {
		const char *digest = img->manifest->layers[i].digest;
		struct tree_builder b = { .tree = tree, .layer = digest };

		r = fs_tree_begin_layer(tree);
		if (r >= 0)
			r = index_db_layer_foreach(c->db, digest, tree_add_entry, &b);
		if (r < 0)
			return log_error_errno(r, "cannot apply layer '%s'%s%s%s: %m", digest,
					       b.path[0] ? " (entry '" : "", b.path,
					       b.path[0] ? "')" : "");
	}
	r = fs_tree_finish(tree);
	if (r < 0)
		return log_error_errno(r, "cannot build the tree: %m");
	*ret = TAKE_PTR(tree);
	return 0;
}
