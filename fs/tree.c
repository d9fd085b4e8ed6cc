/*
 * fs/tree.c: the merged tree of an image.  Two phases:
 *
 * Build (fs_tree_add): a dentry per name, linked into its directory's child list, plus one
 * global open-addressing hash of (parent dentry, name) so that 100,000 adds stay O(1) each.
 * Every dentry remembers the last layer that wrote it or created something under it; the
 * whiteout rules are "remove what only lower layers put there".  Inodes are separate from
 * dentries because hard links share one.  Replaced and whited-out nodes are left behind as
 * unreachable garbage rather than freed one by one.
 *
 * Frozen (after fs_tree_finish): inodes numbered 1..N in breadth-first order (root = 1) in
 * one array, every directory's children a run of { name, ino } sorted bytewise by name in one
 * dirent array: lookup is a binary search, readdir an index.  Nothing is locked: the frozen
 * tree never changes, so any number of threads may read it.
 *
 * All strings (names, symlink targets, digests, xattrs) live in an arena of 256 KiB chunks
 * addressed by 32-bit references, so a file costs about 56 bytes of inode, 8 bytes of dirent
 * and its name (plus 72 bytes of digest) once frozen.
 *
 * A regular file's content is a run of struct fs_chunk_ref (72 bytes each, digests as raw
 * bytes) in one global array, which the inode addresses by first index and count: one chunk
 * naming the whole local blob for a file of a tar layer, the TOC's chunks for a file of a lazy
 * layer.  Hard links share the inode, so they share the run.  fs_tree_finish() copies the runs
 * of reachable files, in inode order, into an exact-size array: replaced files leave nothing
 * behind.  Lazy files are also listed in the order they were added, for prefetching.
 *
 * Implicit directories (a missing parent, or a non-directory in the way of a path) are 0755,
 * root:root, with the mtime of the entry that needed them.
 */
#include "tree.h"

#include <assert.h>
#include <endian.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include "cache/base/util.h"

#define NONE UINT32_MAX
#define NAME_MAX_LEN 255
#define DIR_SIZE 4096
#define OPAQUE_MARKER ".wh..wh..opq"
#define WHITEOUT_PREFIX ".wh."
#define AUFS_META_PREFIX ".wh..wh."
#define SYMLINKS_MAX 40          /* Linux's MAXSYMLINKS */

#define ARENA_CHUNK_SHIFT 18
#define ARENA_CHUNK_SIZE (UINT32_C(1) << ARENA_CHUNK_SHIFT)
#define ARENA_MAX_CHUNKS (UINT32_C(1) << (32 - ARENA_CHUNK_SHIFT))
/* Objects bigger than this get a chunk of their own (at offset 0 of it). */
#define ARENA_BIG (ARENA_CHUNK_SIZE / 8)

struct arena {
	char **chunks;
	uint32_t n_chunks;
	size_t cap_chunks;
	uint32_t cur;   /* chunk small objects go to, NONE before the first */
	uint32_t used;  /* bytes used in chunks[cur] */
};

struct inode {
	uint32_t mode;          /* S_IFMT | 07777 */
	uint32_t uid, gid;
	uint32_t nlink;
	uint64_t size;
	int64_t mtime_sec;
	uint32_t mtime_nsec;
	uint32_t data;          /* REG: digest ref (NONE: empty file without one); LNK: target
				 * ref; DIR (frozen): first dirent; CHR/BLK: major */
	uint32_t data2;         /* DIR (frozen): number of dirents; CHR/BLK: minor; REG: first
				 * chunk */
	union {
		uint32_t parent;        /* DIR (frozen): parent's number */
		uint32_t n_chunks;      /* REG: 0 for an empty file */
	};
	uint32_t xattrs;        /* ref of a struct xattr_table, NONE if none */
	uint32_t ino;           /* build: number given by fs_tree_finish(), 0 if unreachable */
};

struct xattr_rec {
	uint32_t name, value, size;
};

struct xattr_table {
	uint32_t n;
	struct xattr_rec recs[];
};

struct dentry {
	uint32_t name;          /* arena ref */
	uint32_t hash;          /* of (parent, name) */
	uint32_t parent;
	uint32_t inode;
	uint32_t first_child, next, prev;  /* NONE-terminated sibling list */
	uint32_t layer;         /* last layer that wrote this name or something below it */
};

struct dirent_rec {
	uint32_t name;          /* arena ref */
	uint32_t ino;           /* while freezing: dentry index */
};

/* A file of a lazy layer, in the order files were added. */
struct prefetch_rec {
	uint32_t ino;           /* build: inode index; frozen: number */
	bool prefetch;          /* its entry asked for it */
};

struct fs_tree {
	struct arena arena;

	struct inode *inodes;   /* build: in creation order; frozen: by number - 1 */
	uint32_t n_inodes;
	size_t cap_inodes;

	/* Build side, freed by fs_tree_finish(). */
	struct dentry *dentries;  /* [0] is the root */
	uint32_t n_dentries;
	size_t cap_dentries;
	uint32_t *slots;          /* dentry indexes or NONE, linear probing */
	uint32_t slots_mask, n_slots_used;
	uint32_t layer;

	/* Both sides: build appends (garbage included), fs_tree_finish() compacts. */
	struct fs_chunk_ref *chunks;
	uint32_t n_chunks;
	size_t cap_chunks;
	struct prefetch_rec *prefetch;
	uint32_t n_prefetch;
	size_t cap_prefetch;

	/* Frozen side. */
	struct dirent_rec *dirents;
	uint32_t n_dirents;
	bool frozen;
	uint32_t id_shift;        /* added to every uid and gid fs_tree_stat() reports */
};

/* ---- arena ---- */

static void arena_done(struct arena *a)
{
	for (uint32_t i = 0; i < a->n_chunks; i++)
		free(a->chunks[i]);
	free(a->chunks);
	*a = (struct arena) { .cur = NONE };
}

static int arena_new_chunk(struct arena *a, size_t size, uint32_t *ret_index)
{
	char *c;

	if (a->n_chunks >= ARENA_MAX_CHUNKS)
		return -ENOMEM;
	if (GREEDY_REALLOC(a->chunks, a->cap_chunks, a->n_chunks + 1) < 0)
		return -ENOMEM;
	c = malloc(size ? size : 1);
	if (!c)
		return -ENOMEM;
	a->chunks[a->n_chunks] = c;
	*ret_index = a->n_chunks++;
	return 0;
}

/* Reserves @size bytes aligned to @align (a power of two, at most 8). */
static int arena_alloc(struct arena *a, size_t size, size_t align, uint32_t *ret_ref)
{
	uint32_t idx, off;
	int r;

	if (size > ARENA_BIG) {
		if (size > UINT32_MAX)
			return -EFBIG;
		r = arena_new_chunk(a, size, &idx);
		if (r < 0)
			return r;
		*ret_ref = idx << ARENA_CHUNK_SHIFT;
		return 0;
	}

	off = (a->used + (align - 1)) & ~(uint32_t)(align - 1);
	if (a->cur == NONE || off + size > ARENA_CHUNK_SIZE) {
		r = arena_new_chunk(a, ARENA_CHUNK_SIZE, &idx);
		if (r < 0)
			return r;
		a->cur = idx;
		off = 0;
	}
	a->used = off + size;
	*ret_ref = (a->cur << ARENA_CHUNK_SHIFT) | off;
	return 0;
}

static inline void *arena_ptr(const struct arena *a, uint32_t ref)
{
	return a->chunks[ref >> ARENA_CHUNK_SHIFT] + (ref & (ARENA_CHUNK_SIZE - 1));
}

static int arena_strndup(struct arena *a, const char *s, size_t n, uint32_t *ret_ref)
{
	uint32_t ref;
	char *p;
	int r;

	r = arena_alloc(a, n + 1, 1, &ref);
	if (r < 0)
		return r;
	p = arena_ptr(a, ref);
	memcpy(p, s, n);
	p[n] = 0;
	*ret_ref = ref;
	return 0;
}

static inline const char *tree_str(const struct fs_tree *t, uint32_t ref)
{
	return arena_ptr(&t->arena, ref);
}

/* ---- build side: nodes and the (parent, name) hash ---- */

static uint32_t name_hash(uint32_t parent, const char *name, size_t len)
{
	uint32_t h = 2166136261u ^ (parent * 0x9e3779b1u);

	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)name[i];
		h *= 16777619u;
	}
	h ^= h >> 15;
	h *= 0x2c1b3c6du;
	h ^= h >> 12;
	return h;
}

static bool dentry_is(const struct fs_tree *t, uint32_t d, uint32_t h, uint32_t parent,
		      const char *name, size_t len)
{
	const struct dentry *de = &t->dentries[d];
	const char *n;

	if (de->hash != h || de->parent != parent)
		return false;
	n = tree_str(t, de->name);
	return memcmp(n, name, len) == 0 && n[len] == 0;
}

static uint32_t hash_find(const struct fs_tree *t, uint32_t parent, const char *name, size_t len)
{
	uint32_t h = name_hash(parent, name, len);

	for (uint32_t i = h & t->slots_mask;; i = (i + 1) & t->slots_mask) {
		uint32_t d = t->slots[i];

		if (d == NONE)
			return NONE;
		if (dentry_is(t, d, h, parent, name, len))
			return d;
	}
}

static void hash_put(struct fs_tree *t, uint32_t d)
{
	uint32_t i = t->dentries[d].hash & t->slots_mask;

	while (t->slots[i] != NONE)
		i = (i + 1) & t->slots_mask;
	t->slots[i] = d;
	t->n_slots_used++;
}

static int hash_grow(struct fs_tree *t)
{
	uint32_t cap = (t->slots_mask + 1) * 2;
	uint32_t *old = t->slots, old_cap = t->slots_mask + 1;

	if (cap == 0)
		return -ENOMEM;
	t->slots = malloc((size_t)cap * sizeof(uint32_t));
	if (!t->slots) {
		t->slots = old;
		return -ENOMEM;
	}
	memset(t->slots, 0xff, (size_t)cap * sizeof(uint32_t));
	t->slots_mask = cap - 1;
	t->n_slots_used = 0;
	for (uint32_t i = 0; i < old_cap; i++)
		if (old[i] != NONE)
			hash_put(t, old[i]);
	free(old);
	return 0;
}

/* Linear-probing delete: shift later members of the cluster back so no probe chain breaks. */
static void hash_remove(struct fs_tree *t, uint32_t d)
{
	uint32_t mask = t->slots_mask;
	uint32_t i = t->dentries[d].hash & mask, j;

	while (t->slots[i] != d) {
		assert(t->slots[i] != NONE);
		i = (i + 1) & mask;
	}
	t->slots[i] = NONE;
	t->n_slots_used--;

	for (j = (i + 1) & mask; t->slots[j] != NONE; j = (j + 1) & mask) {
		uint32_t home = t->dentries[t->slots[j]].hash & mask;
		bool stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);

		if (stays)
			continue;
		t->slots[i] = t->slots[j];
		t->slots[j] = NONE;
		i = j;
	}
}

static inline bool inode_is_dir(const struct fs_tree *t, uint32_t inode)
{
	return S_ISDIR(t->inodes[inode].mode);
}

static inline bool dentry_is_dir(const struct fs_tree *t, uint32_t d)
{
	return inode_is_dir(t, t->dentries[d].inode);
}

static int inode_new(struct fs_tree *t, uint32_t *ret)
{
	if (t->n_inodes == NONE)
		return -ENOMEM;
	if (GREEDY_REALLOC(t->inodes, t->cap_inodes, t->n_inodes + 1) < 0)
		return -ENOMEM;
	t->inodes[t->n_inodes] = (struct inode) {
		.data = NONE,
		.parent = NONE,
		.xattrs = NONE,
	};
	*ret = t->n_inodes++;
	return 0;
}

static int inode_new_implicit_dir(struct fs_tree *t, int64_t mtime, uint32_t *ret)
{
	uint32_t i;
	int r;

	r = inode_new(t, &i);
	if (r < 0)
		return r;
	t->inodes[i].mode = S_IFDIR | 0755;
	t->inodes[i].mtime_sec = mtime;
	*ret = i;
	return 0;
}

static int dentry_new(struct fs_tree *t, uint32_t parent, const char *name, size_t len,
		      uint32_t inode, uint32_t *ret)
{
	struct dentry *p;
	uint32_t d, name_ref;
	int r;

	if ((t->n_slots_used + 1) * 2 > t->slots_mask + 1) {
		r = hash_grow(t);
		if (r < 0)
			return r;
	}
	if (t->n_dentries == NONE)
		return -ENOMEM;
	r = GREEDY_REALLOC(t->dentries, t->cap_dentries, t->n_dentries + 1);
	if (r < 0)
		return r;
	r = arena_strndup(&t->arena, name, len, &name_ref);
	if (r < 0)
		return r;

	d = t->n_dentries++;
	p = &t->dentries[parent];
	t->dentries[d] = (struct dentry) {
		.name = name_ref,
		.hash = name_hash(parent, name, len),
		.parent = parent,
		.inode = inode,
		.first_child = NONE,
		.next = p->first_child,
		.prev = NONE,
		.layer = t->layer,
	};
	if (p->first_child != NONE)
		t->dentries[p->first_child].prev = d;
	p->first_child = d;
	hash_put(t, d);
	*ret = d;
	return 0;
}

/* Takes every descendant of @d out of the hash; they stay in the array, unreachable. */
static void dentry_drop_children(struct fs_tree *t, uint32_t d)
{
	for (uint32_t c = t->dentries[d].first_child; c != NONE; c = t->dentries[c].next) {
		dentry_drop_children(t, c);
		hash_remove(t, c);
	}
	t->dentries[d].first_child = NONE;
}

static void dentry_remove(struct fs_tree *t, uint32_t d)
{
	struct dentry *de = &t->dentries[d];

	dentry_drop_children(t, d);
	if (de->prev != NONE)
		t->dentries[de->prev].next = de->next;
	else
		t->dentries[de->parent].first_child = de->next;
	if (de->next != NONE)
		t->dentries[de->next].prev = de->prev;
	hash_remove(t, d);
}

/* Removes everything below @dir that no entry of the current layer wrote. */
static void dentry_prune_lower(struct fs_tree *t, uint32_t dir)
{
	uint32_t c, next;

	for (c = t->dentries[dir].first_child; c != NONE; c = next) {
		next = t->dentries[c].next;
		if (t->dentries[c].layer < t->layer)
			dentry_remove(t, c);
		else if (dentry_is_dir(t, c))
			dentry_prune_lower(t, c);
	}
}

/* One step of tree_walk() to the non-symlink @child (NONE if missing) named @name in @cur. */
static int walk_step(struct fs_tree *t, uint32_t cur, const char *name, size_t n, uint32_t child,
		     bool create, int64_t mtime, uint32_t *ret)
{
	uint32_t inode;
	int r;

	if (child != NONE && dentry_is_dir(t, child)) {
		*ret = child;
		return 0;
	}
	if (!create)
		return child == NONE ? -ENOENT : -ENOTDIR;
	/* A symlink's target may name what no tar entry could: not as a directory. */
	if (n > NAME_MAX_LEN)
		return -ENAMETOOLONG;
	if (n >= strlen(WHITEOUT_PREFIX) && memcmp(name, WHITEOUT_PREFIX, strlen(WHITEOUT_PREFIX)) == 0)
		return -EINVAL;
	r = inode_new_implicit_dir(t, mtime, &inode);
	if (r < 0)
		return r;
	if (child == NONE)
		return dentry_new(t, cur, name, n, inode, ret);
	t->dentries[child].inode = inode;
	*ret = child;
	return 0;
}

/* Walks the first @len bytes of @path (a normalised directory path, "" for the root) as
 * containerd's fs.RootPath() and umoci's securejoin do: a symlink on the way, written by this
 * layer or a lower one, is followed inside the tree (an absolute target starts again at the
 * root, ".." stops at the root), so an entry below "lib -> usr/lib" lands in usr/lib and no
 * path resolves outside the image.  At most SYMLINKS_MAX symlinks are followed (-ELOOP), as
 * Linux does.  With @create, missing or non-directory components become implicit directories
 * and the directory reached and its ancestors are marked as touched by the current layer;
 * without, -ENOENT / -ENOTDIR.  An empty symlink target is -ENOENT, as for Linux. */
static int tree_walk(struct fs_tree *t, const char *path, size_t len, bool create, int64_t mtime,
		     uint32_t *ret)
{
	/* What is left to walk: the path, then each symlink target being followed.  Targets
	 * live in the arena, which never moves what it holds. */
	struct { const char *p, *end; } stack[SYMLINKS_MAX + 1] = { { path, path + len } };
	unsigned depth = 0, links = 0;
	uint32_t cur = 0;
	int r;

	for (;;) {
		const char *name, *slash;
		uint32_t child;
		size_t n;

		while (stack[depth].p < stack[depth].end && *stack[depth].p == '/')
			stack[depth].p++;
		if (stack[depth].p == stack[depth].end) {
			if (depth == 0)
				break;
			depth--;
			continue;
		}
		name = stack[depth].p;
		slash = memchr(name, '/', stack[depth].end - name);
		n = (slash ? slash : stack[depth].end) - name;
		stack[depth].p = name + n;

		if (n == 1 && name[0] == '.')
			continue;
		if (n == 2 && name[0] == '.' && name[1] == '.') {
			cur = t->dentries[cur].parent;  /* the root's is the root */
			continue;
		}
		child = hash_find(t, cur, name, n);
		if (child != NONE && S_ISLNK(t->inodes[t->dentries[child].inode].mode)) {
			const char *target = tree_str(t, t->inodes[t->dentries[child].inode].data);

			if (++links > SYMLINKS_MAX)
				return -ELOOP;
			if (!*target)
				return -ENOENT;
			stack[++depth].p = target;
			stack[depth].end = target + strlen(target);
			if (target[0] == '/')
				cur = 0;
			continue;
		}
		r = walk_step(t, cur, name, n, child, create, mtime, &cur);
		if (r < 0)
			return r;
	}
	if (create)
		for (uint32_t d = cur; d != 0; d = t->dentries[d].parent)
			t->dentries[d].layer = t->layer;
	*ret = cur;
	return 0;
}

/* 0 for a usable path, 1 for one to skip (a component below a whiteout name), -errno. */
static int path_check(const char *path)
{
	const char *p = path;

	for (;;) {
		const char *slash = strchr(p, '/');
		size_t n = slash ? (size_t)(slash - p) : strlen(p);

		if (n == 0 || (n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.'))
			return -EINVAL;
		if (n > NAME_MAX_LEN)
			return -ENAMETOOLONG;
		if (!slash)
			return 0;
		/* ".wh..wh.plnk/…" and the like: aufs bookkeeping, never part of the image. */
		if (n >= strlen(WHITEOUT_PREFIX) && startswith(p, WHITEOUT_PREFIX))
			return 1;
		p = slash + 1;
	}
}

static int xattrs_copy(struct fs_tree *t, const struct entry *e, uint32_t *ret_ref)
{
	struct xattr_table *tab;
	uint32_t ref;
	int r;

	if (e->n_xattrs == 0) {
		*ret_ref = NONE;
		return 0;
	}
	if (e->n_xattrs > UINT16_MAX || !e->xattrs)
		return -EINVAL;

	r = arena_alloc(&t->arena, sizeof(struct xattr_table) + e->n_xattrs * sizeof(struct xattr_rec),
			_Alignof(struct xattr_table), &ref);
	if (r < 0)
		return r;
	for (size_t i = 0; i < e->n_xattrs; i++) {
		const struct xattr *x = &e->xattrs[i];
		struct xattr_rec rec = { .size = x->size };

		if (!x->name || x->name[0] == 0 || (x->size > 0 && !x->value) || x->size > UINT32_MAX)
			return -EINVAL;
		r = arena_strndup(&t->arena, x->name, strlen(x->name), &rec.name);
		if (r < 0)
			return r;
		r = arena_alloc(&t->arena, x->size, 1, &rec.value);
		if (r < 0)
			return r;
		if (x->size > 0)
			memcpy(arena_ptr(&t->arena, rec.value), x->value, x->size);
		/* Re-fetch: the allocations above never move existing objects. */
		tab = arena_ptr(&t->arena, ref);
		tab->recs[i] = rec;
	}
	tab = arena_ptr(&t->arena, ref);
	tab->n = (uint32_t)e->n_xattrs;
	*ret_ref = ref;
	return 0;
}

static int entry_check(const struct entry *e)
{
	switch (e->type) {
	case ENTRY_REG:
		if (e->n_chunks > 0 && !e->chunks)
			return -EINVAL;
		if (!e->digest && e->size > 0 && e->n_chunks == 0)
			return -EINVAL;
		return 0;
	case ENTRY_SYMLINK:
	case ENTRY_HARDLINK:
		return e->link_target ? 0 : -EINVAL;
	case ENTRY_DIR:
	case ENTRY_CHR:
	case ENTRY_BLK:
	case ENTRY_FIFO:
		return 0;
	}
	return -EINVAL;
}

/* ---- file contents ---- */

static int unhex(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* "sha256:" + 64 lower-case hex digits -> 32 bytes; -EINVAL for anything else. */
static int digest_to_raw(const char *s, uint8_t ret[32])
{
	if (!startswith(s, "sha256:") || strlen(s) != 7 + 64)
		return -EINVAL;
	s += 7;
	for (size_t i = 0; i < 32; i++) {
		int hi = unhex(s[2 * i]), lo = unhex(s[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return -EINVAL;
		ret[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

/* Appends @c, named by @digest unless it is a chunk of zeros. */
static int chunk_push(struct fs_tree *t, struct fs_chunk_ref *c, const char *digest)
{
	int r;

	if (!c->zeros) {
		r = digest_to_raw(digest, c->digest);
		if (r < 0)
			return r;
	}
	if (t->n_chunks == UINT32_MAX)
		return -ENOMEM;
	if (GREEDY_REALLOC(t->chunks, t->cap_chunks, t->n_chunks + 1) < 0)
		return -ENOMEM;
	t->chunks[t->n_chunks++] = *c;
	return 0;
}

/* Appends @e's content as chunks, returning the run.  The TOC's chunks must tile [0, size)
 * in order: a gap, an overlap or a wrong total is -EINVAL, so that readers can binary-search
 * the run and trust it to cover the file.  Empty chunks are dropped. */
static int chunks_add(struct fs_tree *t, const struct entry *e, uint32_t *ret_first,
		      uint32_t *ret_n)
{
	/* Layers are numbered from 1 by fs_tree_begin_layer(), chunk refs from 0. */
	unsigned layer = t->layer > 0 ? t->layer - 1 : 0;
	uint32_t first = t->n_chunks;
	uint64_t end = 0;
	int r;

	if (e->size == 0 && e->n_chunks == 0) {
		*ret_first = first;
		*ret_n = 0;
		return 0;
	}

	if (e->n_chunks == 0) {
		/* A file of a tar layer: one blob in the store, never fetched. */
		struct fs_chunk_ref c = { .size = e->size, .layer = layer };

		r = chunk_push(t, &c, e->digest);
		if (r < 0)
			return r;
		*ret_first = first;
		*ret_n = 1;
		return 0;
	}

	for (size_t i = 0; i < e->n_chunks; i++) {
		const struct chunk *ec = &e->chunks[i];
		struct fs_chunk_ref c = {
			.file_offset = ec->file_offset,
			.size = ec->size,
			.blob_offset = ec->blob_offset,
			.blob_length = ec->blob_length,
			.layer = layer,
			.zeros = !ec->digest,
		};

		if (ec->file_offset != end || ec->size > e->size - end)
			return -EINVAL;
		end += ec->size;
		if (ec->size == 0)
			continue;
		r = chunk_push(t, &c, ec->digest);
		if (r < 0)
			return r;
	}
	if (end != e->size)
		return -EINVAL;
	*ret_first = first;
	*ret_n = t->n_chunks - first;
	return 0;
}

static int prefetch_push(struct fs_tree *t, uint32_t inode, bool prefetch)
{
	if (t->n_prefetch == UINT32_MAX)
		return -ENOMEM;
	if (GREEDY_REALLOC(t->prefetch, t->cap_prefetch, t->n_prefetch + 1) < 0)
		return -ENOMEM;
	t->prefetch[t->n_prefetch++] = (struct prefetch_rec) { .ino = inode, .prefetch = prefetch };
	return 0;
}

/* Sets @inode's attributes from @e (not for hard links). */
static int inode_set(struct fs_tree *t, uint32_t inode, const struct entry *e)
{
	static const uint32_t type_bits[] = {
		[ENTRY_REG] = S_IFREG, [ENTRY_DIR] = S_IFDIR, [ENTRY_SYMLINK] = S_IFLNK,
		[ENTRY_CHR] = S_IFCHR, [ENTRY_BLK] = S_IFBLK, [ENTRY_FIFO] = S_IFIFO,
	};
	uint32_t data = NONE, data2 = 0, n_chunks = 0, xattrs;
	uint64_t size = 0;
	struct inode *i;
	int r;

	switch (e->type) {
	case ENTRY_REG:
		size = e->size;
		r = chunks_add(t, e, &data2, &n_chunks);
		if (r < 0)
			return r;
		if (e->digest) {
			r = arena_strndup(&t->arena, e->digest, strlen(e->digest), &data);
			if (r < 0)
				return r;
		}
		break;
	case ENTRY_SYMLINK:
		size = strlen(e->link_target);
		r = arena_strndup(&t->arena, e->link_target, size, &data);
		if (r < 0)
			return r;
		break;
	case ENTRY_CHR:
	case ENTRY_BLK:
		data = e->dev_major;
		data2 = e->dev_minor;
		break;
	default:
		break;
	}
	r = xattrs_copy(t, e, &xattrs);
	if (r < 0)
		return r;

	i = &t->inodes[inode];
	/* Linux shows every symlink as 0777, whatever the archive says. */
	i->mode = type_bits[e->type] | (e->type == ENTRY_SYMLINK ? 0777 : (e->mode & 07777));
	i->uid = e->uid;
	i->gid = e->gid;
	i->size = size;
	i->mtime_sec = e->mtime_sec;
	i->mtime_nsec = e->mtime_nsec < 1000000000 ? e->mtime_nsec : 0;
	i->data = data;
	i->data2 = data2;
	if (e->type == ENTRY_REG)
		i->n_chunks = n_chunks;
	i->xattrs = xattrs;
	return 0;
}

/* ".wh.NAME" in @dir_path: NAME leaves unless this layer wrote it (then only what lower layers
 * put below it goes); ".wh..wh..opq": everything lower layers put in the directory goes. */
static int tree_whiteout(struct fs_tree *t, const struct entry *e, size_t dir_len, const char *base)
{
	uint32_t dir, victim;
	int r;

	if (streq(base, OPAQUE_MARKER)) {
		r = tree_walk(t, e->path, dir_len, true, e->mtime_sec, &dir);
		if (r < 0)
			return r;
		dentry_prune_lower(t, dir);
		return 0;
	}
	if (startswith(base, AUFS_META_PREFIX))
		return 0;

	base += strlen(WHITEOUT_PREFIX);
	if (base[0] == 0)
		return -EINVAL;         /* entry_check_whiteout() refuses it first */
	r = tree_walk(t, e->path, dir_len, false, 0, &dir);
	if (r == -ENOENT || r == -ENOTDIR)
		return 0;
	if (r < 0)
		return r;
	victim = hash_find(t, dir, base, strlen(base));
	if (victim == NONE)
		return 0;
	if (t->dentries[victim].layer < t->layer)
		dentry_remove(t, victim);
	else if (dentry_is_dir(t, victim))
		dentry_prune_lower(t, victim);
	return 0;
}

int fs_tree_new(struct fs_tree **ret)
{
	_cleanup_(fs_tree_freep) struct fs_tree *t = NULL;
	uint32_t root_name;
	int r;

	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	t->arena.cur = NONE;

	t->slots = malloc(1024 * sizeof(uint32_t));
	if (!t->slots)
		return -ENOMEM;
	memset(t->slots, 0xff, 1024 * sizeof(uint32_t));
	t->slots_mask = 1023;
	r = GREEDY_REALLOC(t->dentries, t->cap_dentries, 1024);
	if (r < 0)
		return r;

	r = inode_new(t, &(uint32_t) { 0 });
	if (r < 0)
		return r;
	t->inodes[0].mode = S_IFDIR | 0755;
	r = arena_strndup(&t->arena, "", 0, &root_name);
	if (r < 0)
		return r;
	t->dentries[0] = (struct dentry) {
		.name = root_name,
		.inode = 0,
		.first_child = NONE,
		.next = NONE,
		.prev = NONE,
	};
	t->n_dentries = 1;

	*ret = TAKE_PTR(t);
	return 0;
}

/* Frees the build side: the dentries and their hash table, which a frozen tree has no use for. */
static void tree_build_done(struct fs_tree *t)
{
	free(t->dentries);
	t->dentries = NULL;
	t->n_dentries = 0;
	t->cap_dentries = 0;
	free(t->slots);
	t->slots = NULL;
}

static void fs_tree_done(struct fs_tree *t)
{
	arena_done(&t->arena);
	tree_build_done(t);
	free(t->inodes);
	free(t->dirents);
	free(t->chunks);
	free(t->prefetch);
}
DEFINE_FREE_FUNC(struct fs_tree, fs_tree_free, fs_tree_done);

int fs_tree_begin_layer(struct fs_tree *t)
{
	if (t->frozen)
		return -EBUSY;
	if (t->layer == UINT32_MAX)
		return -E2BIG;
	t->layer++;
	return 0;
}

int fs_tree_add(struct fs_tree *t, const struct entry *e)
{
	const char *slash, *base;
	size_t dir_len;
	uint32_t dir, child, inode, link_inode = NONE;
	int r;

	if (t->frozen)
		return -EBUSY;
	if (!e || !e->path)
		return -EINVAL;
	r = entry_check(e);
	if (r < 0)
		return r;

	if (e->path[0] == 0) {
		if (e->type != ENTRY_DIR)
			return -EINVAL;
		r = inode_set(t, t->dentries[0].inode, e);
		if (r < 0)
			return r;
		t->dentries[0].layer = t->layer;
		return 0;
	}

	r = entry_check_whiteout(e->path, e->type);
	if (r < 0)
		return r;
	r = path_check(e->path);
	if (r != 0)
		return r < 0 ? r : 0;
	slash = strrchr(e->path, '/');
	base = slash ? slash + 1 : e->path;
	dir_len = slash ? (size_t)(slash - e->path) : 0;

	if (startswith(base, WHITEOUT_PREFIX))
		return tree_whiteout(t, e, dir_len, base);

	/* Resolve the link before this entry's parents can change what the target names. */
	if (e->type == ENTRY_HARDLINK) {
		const char *ls = strrchr(e->link_target, '/');
		size_t llen = ls ? (size_t)(ls - e->link_target) : 0;
		const char *lbase = ls ? ls + 1 : e->link_target;
		uint32_t ldir, target;

		if (e->link_target[0] == 0 || path_check(e->link_target) != 0)
			return -EINVAL;
		r = tree_walk(t, e->link_target, llen, false, 0, &ldir);
		if (r < 0)
			return -EINVAL;
		target = hash_find(t, ldir, lbase, strlen(lbase));
		if (target == NONE || dentry_is_dir(t, target))
			return -EINVAL;
		link_inode = t->dentries[target].inode;
	}

	r = tree_walk(t, e->path, dir_len, true, e->mtime_sec, &dir);
	if (r < 0)
		return r;
	child = hash_find(t, dir, base, strlen(base));

	if (e->type == ENTRY_DIR && child != NONE && dentry_is_dir(t, child)) {
		/* A directory over a directory: new attributes, the children stay. */
		r = inode_set(t, t->dentries[child].inode, e);
		if (r < 0)
			return r;
		t->dentries[child].layer = t->layer;
		return 0;
	}

	if (link_inode != NONE) {
		inode = link_inode;
	} else {
		r = inode_new(t, &inode);
		if (r < 0)
			return r;
		r = inode_set(t, inode, e);
		if (r < 0)
			return r;
		if (e->type == ENTRY_REG && e->n_chunks > 0) {
			r = prefetch_push(t, inode, e->prefetch);
			if (r < 0)
				return r;
		}
	}

	if (child == NONE)
		return dentry_new(t, dir, base, strlen(base), inode, &child);

	/* Anything over a non-directory, or a non-directory over a directory: the old subtree
	 * goes, the name stays in place with the new inode. */
	dentry_drop_children(t, child);
	t->dentries[child].inode = inode;
	t->dentries[child].layer = t->layer;
	return 0;
}

/* ---- freezing ---- */

/* Keeps the chunk runs of the files in @final (numbered, @n of them) only, in inode order, and
 * turns the prefetch list's inode indexes into numbers, dropping unreachable files.  Needs
 * t->inodes still indexed as during the build. */
static int chunks_compact(struct fs_tree *t, struct inode *final, uint32_t n)
{
	struct fs_chunk_ref *chunks = NULL;
	uint32_t total = 0, k = 0, np = 0;

	for (uint32_t i = 0; i < n; i++)
		if (S_ISREG(final[i].mode))
			total += final[i].n_chunks;  /* a subset of t->n_chunks: no overflow */
	if (total > 0) {
		chunks = malloc((size_t)total * sizeof(*chunks));
		if (!chunks)
			return -ENOMEM;
	}
	for (uint32_t i = 0; i < n; i++) {
		struct inode *in = &final[i];

		if (!S_ISREG(in->mode) || in->n_chunks == 0)
			continue;
		memcpy(chunks + k, t->chunks + in->data2, (size_t)in->n_chunks * sizeof(*chunks));
		in->data2 = k;
		k += in->n_chunks;
	}
	free(t->chunks);
	t->chunks = chunks;
	t->n_chunks = total;
	t->cap_chunks = total;

	for (uint32_t i = 0; i < t->n_prefetch; i++) {
		uint32_t ino = t->inodes[t->prefetch[i].ino].ino;

		if (ino != 0)
			t->prefetch[np++] = (struct prefetch_rec) {
				.ino = ino, .prefetch = t->prefetch[i].prefetch,
			};
	}
	t->n_prefetch = np;
	return 0;
}

static int dirent_cmp(const void *a, const void *b, void *userdata)
{
	const struct fs_tree *t = userdata;
	const struct dirent_rec *x = a, *y = b;

	return strcmp(tree_str(t, x->name), tree_str(t, y->name));
}

int fs_tree_finish(struct fs_tree *t)
{
	_cleanup_free_ uint32_t *queue = NULL;
	struct dirent_rec *dirents;
	struct inode *final;
	uint32_t head = 0, tail = 0, next_ino = 1, nd = 0;
	int r;

	if (t->frozen)
		return -EBUSY;

	queue = malloc((size_t)t->n_dentries * sizeof(uint32_t));
	dirents = malloc(((size_t)t->n_dentries + 1) * sizeof(struct dirent_rec));
	if (!queue || !dirents) {
		free(dirents);
		return -ENOMEM;
	}

	for (uint32_t i = 0; i < t->n_inodes; i++) {
		t->inodes[i].ino = 0;
		t->inodes[i].nlink = 0;
	}

	/* Breadth first: a directory's children get consecutive numbers, in name order. */
	t->inodes[t->dentries[0].inode].ino = next_ino++;
	t->inodes[t->dentries[0].inode].parent = FS_ROOT_INO;
	queue[tail++] = 0;
	while (head < tail) {
		uint32_t d = queue[head++];
		struct inode *dir = &t->inodes[t->dentries[d].inode];
		uint32_t first = nd, subdirs = 0;

		for (uint32_t c = t->dentries[d].first_child; c != NONE; c = t->dentries[c].next)
			dirents[nd++] = (struct dirent_rec) { .name = t->dentries[c].name, .ino = c };
		qsort_r(dirents + first, nd - first, sizeof(struct dirent_rec), dirent_cmp, t);

		for (uint32_t k = first; k < nd; k++) {
			uint32_t c = dirents[k].ino;
			struct inode *in = &t->inodes[t->dentries[c].inode];

			if (in->ino == 0)
				in->ino = next_ino++;
			if (S_ISDIR(in->mode)) {
				in->parent = dir->ino;
				subdirs++;
				queue[tail++] = c;
			} else {
				in->nlink++;
			}
			dirents[k].ino = in->ino;
		}
		dir->data = first;
		dir->data2 = nd - first;
		dir->nlink = 2 + subdirs;
	}

	final = malloc((size_t)(next_ino - 1) * sizeof(struct inode));
	if (!final) {
		free(dirents);
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < t->n_inodes; i++)
		if (t->inodes[i].ino != 0)
			final[t->inodes[i].ino - 1] = t->inodes[i];

	r = chunks_compact(t, final, next_ino - 1);
	if (r < 0) {
		free(final);
		free(dirents);
		return r;
	}

	free(t->inodes);
	t->inodes = final;
	t->n_inodes = next_ino - 1;
	t->cap_inodes = t->n_inodes;
	t->dirents = realloc(dirents, ((size_t)nd + 1) * sizeof(struct dirent_rec)) ?: dirents;
	t->n_dirents = nd;
	tree_build_done(t);
	t->frozen = true;
	return 0;
}

/* ---- read side ---- */

static const struct inode *tree_inode(const struct fs_tree *t, fs_ino_t ino)
{
	if (!t->frozen || ino < 1 || ino > t->n_inodes)
		return NULL;
	return &t->inodes[ino - 1];
}

size_t fs_tree_count(const struct fs_tree *t)
{
	return t->frozen ? t->n_inodes : 0;
}

int fs_tree_lookup(const struct fs_tree *t, fs_ino_t parent, const char *name, fs_ino_t *ret)
{
	const struct inode *dir = tree_inode(t, parent);
	size_t lo, hi;

	if (!dir)
		return -ENOENT;
	if (!S_ISDIR(dir->mode))
		return -ENOTDIR;
	if (streq(name, ".")) {
		*ret = parent;
		return 0;
	}
	if (streq(name, "..")) {
		*ret = dir->parent;
		return 0;
	}

	lo = dir->data;
	hi = (size_t)dir->data + dir->data2;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(name, tree_str(t, t->dirents[mid].name));

		if (c == 0) {
			*ret = t->dirents[mid].ino;
			return 0;
		}
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return -ENOENT;
}

int fs_tree_stat(const struct fs_tree *t, fs_ino_t ino, struct stat *ret)
{
	const struct inode *i = tree_inode(t, ino);
	struct stat st = {};

	if (!i)
		return -ENOENT;

	st.st_ino = ino;
	st.st_mode = i->mode;
	st.st_nlink = i->nlink;
	st.st_uid = i->uid + t->id_shift;
	st.st_gid = i->gid + t->id_shift;
	st.st_size = S_ISDIR(i->mode) ? DIR_SIZE : (off_t)i->size;
	if (S_ISCHR(i->mode) || S_ISBLK(i->mode))
		st.st_rdev = makedev(i->data, i->data2);
	st.st_blksize = 4096;
	st.st_blocks = S_ISLNK(i->mode) ? 0 : (st.st_size + 511) / 512;
	st.st_mtim.tv_sec = i->mtime_sec;
	st.st_mtim.tv_nsec = i->mtime_nsec;
	st.st_atim = st.st_mtim;
	st.st_ctim = st.st_mtim;
	*ret = st;
	return 0;
}

int fs_tree_readdir(const struct fs_tree *t, fs_ino_t dir, size_t pos, const char **ret_name,
		    fs_ino_t *ret_ino)
{
	const struct inode *d = tree_inode(t, dir);
	const struct dirent_rec *de;

	if (!d)
		return -ENOENT;
	if (!S_ISDIR(d->mode))
		return -ENOTDIR;
	if (pos >= d->data2)
		return -ENOENT;
	de = &t->dirents[d->data + pos];
	if (ret_name)
		*ret_name = tree_str(t, de->name);
	if (ret_ino)
		*ret_ino = de->ino;
	return 0;
}

fs_ino_t fs_tree_parent(const struct fs_tree *t, fs_ino_t dir)
{
	const struct inode *d = tree_inode(t, dir);

	if (!d || !S_ISDIR(d->mode))
		return 0;
	return d->parent;
}

/* The inode @ino, which must be of @type (S_IFREG, S_IFLNK, ...): -ENOENT if there is no such
 * inode, -EINVAL if it is of another type. */
static int tree_inode_typed(const struct fs_tree *t, fs_ino_t ino, mode_t type,
			    const struct inode **ret)
{
	const struct inode *i = tree_inode(t, ino);

	if (!i)
		return -ENOENT;
	if ((i->mode & S_IFMT) != type)
		return -EINVAL;
	*ret = i;
	return 0;
}

int fs_tree_readlink(const struct fs_tree *t, fs_ino_t ino, const char **ret)
{
	const struct inode *i;
	int r = tree_inode_typed(t, ino, S_IFLNK, &i);

	if (r >= 0)
		*ret = tree_str(t, i->data);
	return r;
}

int fs_tree_digest(const struct fs_tree *t, fs_ino_t ino, const char **ret)
{
	const struct inode *i = tree_inode(t, ino);

	if (!i)
		return -ENOENT;
	if (S_ISDIR(i->mode))
		return -EISDIR;
	if (!S_ISREG(i->mode) || i->data == NONE)
		return -EINVAL;
	*ret = tree_str(t, i->data);
	return 0;
}

int fs_tree_file_chunks(const struct fs_tree *t, fs_ino_t ino, const struct fs_chunk_ref **ret,
			size_t *ret_n)
{
	const struct inode *i;
	int r = tree_inode_typed(t, ino, S_IFREG, &i);

	if (r < 0)
		return r;
	*ret = i->n_chunks > 0 ? &t->chunks[i->data2] : NULL;
	*ret_n = i->n_chunks;
	return 0;
}

int fs_tree_foreach_prefetch(const struct fs_tree *t, bool all,
			     int (*cb)(void *userdata, const struct fs_chunk_ref *c), void *userdata)
{
	int r;

	if (!t->frozen)
		return -EINVAL;
	for (uint32_t k = 0; k < t->n_prefetch; k++) {
		const struct inode *i = &t->inodes[t->prefetch[k].ino - 1];

		if (!all && !t->prefetch[k].prefetch)
			continue;
		for (uint32_t c = i->data2; c < i->data2 + i->n_chunks; c++) {
			if (t->chunks[c].zeros || t->chunks[c].blob_length == 0)
				continue;
			r = cb(userdata, &t->chunks[c]);
			if (r < 0)
				return r;
		}
	}
	return 0;
}

static const struct xattr_table *inode_xattrs(const struct fs_tree *t, const struct inode *i)
{
	if (!i || i->xattrs == NONE)
		return NULL;
	return arena_ptr(&t->arena, i->xattrs);
}

int fs_tree_getxattr(const struct fs_tree *t, fs_ino_t ino, const char *name,
		     const void **ret_value, size_t *ret_size)
{
	const struct inode *i = tree_inode(t, ino);
	const struct xattr_table *tab;

	if (!i)
		return -ENOENT;
	tab = inode_xattrs(t, i);
	for (uint32_t k = 0; tab && k < tab->n; k++) {
		if (!streq(tree_str(t, tab->recs[k].name), name))
			continue;
		*ret_value = arena_ptr(&t->arena, tab->recs[k].value);
		*ret_size = tab->recs[k].size;
		return 0;
	}
	return -ENODATA;
}

size_t fs_tree_xattr_count(const struct fs_tree *t, fs_ino_t ino)
{
	const struct xattr_table *tab = inode_xattrs(t, tree_inode(t, ino));

	return tab ? tab->n : 0;
}

const char *fs_tree_xattr_name(const struct fs_tree *t, fs_ino_t ino, size_t i)
{
	const struct xattr_table *tab = inode_xattrs(t, tree_inode(t, ino));

	if (!tab || i >= tab->n)
		return NULL;
	return tree_str(t, tab->recs[i].name);
}

/* POSIX ACLs as the kernel stores them in system.posix_acl_access / _default: a little-endian
 * version 2 header, then 8-byte entries (tag, perm, id); ACL_USER (2) and ACL_GROUP (8) entries
 * name an id.  Calls @f on each such id; false from @f stops and is returned. */
#define ACL_XATTR_VERSION 2
#define ACL_TAG_USER 0x02
#define ACL_TAG_GROUP 0x08

static bool acl_foreach_id(void *value, uint32_t size, bool (*f)(uint8_t *id, uint32_t arg),
			   uint32_t arg)
{
	uint8_t *p = value;
	uint32_t version;
	uint16_t tag;

	/* Values sit unaligned in the arena: read and write them with memcpy(). */
	if (size < 4 || (size - 4) % 8 != 0)
		return true;
	memcpy(&version, p, sizeof(version));
	if (le32toh(version) != ACL_XATTR_VERSION)
		return true;   /* not an ACL the kernel would take: served as stored */
	for (uint32_t off = 4; off < size; off += 8) {
		memcpy(&tag, p + off, sizeof(tag));
		tag = le16toh(tag);
		if ((tag == ACL_TAG_USER || tag == ACL_TAG_GROUP) && !f(p + off + 4, arg))
			return false;
	}
	return true;
}

static bool acl_id_below(uint8_t *id, uint32_t limit)
{
	uint32_t v;

	memcpy(&v, id, sizeof(v));
	return le32toh(v) < limit;
}

static bool acl_id_shift(uint8_t *id, uint32_t shift)
{
	uint32_t v;

	memcpy(&v, id, sizeof(v));
	v = htole32(le32toh(v) + shift);
	memcpy(id, &v, sizeof(v));
	return true;
}

static bool is_acl_name(const char *name)
{
	return streq(name, "system.posix_acl_access") || streq(name, "system.posix_acl_default");
}

/* Calls acl_foreach_id() on every ACL xattr of @i. */
static bool inode_acls_foreach(struct fs_tree *t, const struct inode *i,
			       bool (*f)(uint8_t *id, uint32_t arg), uint32_t arg)
{
	const struct xattr_table *tab = inode_xattrs(t, i);

	for (uint32_t k = 0; tab && k < tab->n; k++)
		if (is_acl_name(tree_str(t, tab->recs[k].name)) &&
		    !acl_foreach_id(arena_ptr(&t->arena, tab->recs[k].value), tab->recs[k].size, f, arg))
			return false;
	return true;
}

int fs_tree_shift_ids(struct fs_tree *t, uint32_t shift, uint32_t limit, fs_ino_t *ret_bad)
{
	if (!t->frozen)
		return -EINVAL;
	for (uint32_t n = 0; n < t->n_inodes; n++) {
		const struct inode *i = &t->inodes[n];

		if (i->uid >= limit || i->gid >= limit ||
		    !inode_acls_foreach(t, i, acl_id_below, limit)) {
			*ret_bad = n + 1;
			return -ERANGE;
		}
	}
	/* Xattr values are shared by the hard links of one inode only: each is shifted once. */
	for (uint32_t n = 0; n < t->n_inodes; n++)
		(void)inode_acls_foreach(t, &t->inodes[n], acl_id_shift, shift);
	t->id_shift = shift;
	return 0;
}
