/* tests/unit/test-tree.c: the merged tree of fs/tree.c: OCI layer rules (whiteouts, opaque
 * directories, replacements, implicit parents), hard links and their link counts, directory
 * order and positions, xattrs and lookups, file contents as chunks (tar files, lazy files,
 * zeros chunks, prefetch order), on hand-built layers and on the layers of the fixture image
 * described in tests/fixtures/README.md. */
#include "fs/tree.h"
#include "fs/tree_path.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include "cache/base/util.h"
#include "tap.h"

#define D1 "sha256:1111111111111111111111111111111111111111111111111111111111111111"
#define D2 "sha256:2222222222222222222222222222222222222222222222222222222222222222"
#define D3 "sha256:3333333333333333333333333333333333333333333333333333333333333333"

static int64_t cur_mtime = 1700000000;

static int add(struct fs_tree *t, enum entry_type type, const char *path, uint32_t mode,
	       const char *target, const char *digest, uint64_t size)
{
	struct entry e = {
		.path = path,
		.type = type,
		.mode = mode,
		.size = size,
		.mtime_sec = cur_mtime,
		.link_target = target,
		.digest = digest,
	};

	return fs_tree_add(t, &e);
}

static int add_dir(struct fs_tree *t, const char *path, uint32_t mode)
{
	return add(t, ENTRY_DIR, path, mode, NULL, NULL, 0);
}

static int add_file(struct fs_tree *t, const char *path, const char *digest, uint64_t size)
{
	return add(t, ENTRY_REG, path, 0644, NULL, digest, size);
}

static int add_symlink(struct fs_tree *t, const char *path, const char *target)
{
	return add(t, ENTRY_SYMLINK, path, 0777, target, NULL, 0);
}

static int add_hardlink(struct fs_tree *t, const char *path, const char *target)
{
	return add(t, ENTRY_HARDLINK, path, 0644, target, NULL, 0);
}

/* Whiteouts as umoci and buildah write them: empty regular files, mode 0000. */
static int add_whiteout(struct fs_tree *t, const char *path)
{
	return add(t, ENTRY_REG, path, 0, NULL, NULL, 0);
}

/* The inode at @path ("" is the root), 0 if there is none. */
static fs_ino_t resolve(const struct fs_tree *t, const char *path)
{
	char buf[4096];
	fs_ino_t ino = FS_ROOT_INO;
	char *p, *save = NULL;

	snprintf(buf, sizeof(buf), "%s", path);
	for (p = strtok_r(buf, "/", &save); p; p = strtok_r(NULL, "/", &save))
		if (fs_tree_lookup(t, ino, p, &ino) < 0)
			return 0;
	return ino;
}

static struct stat stat_of(const struct fs_tree *t, const char *path)
{
	struct stat st = {};

	(void)fs_tree_stat(t, resolve(t, path), &st);
	return st;
}

static bool exists(const struct fs_tree *t, const char *path)
{
	return resolve(t, path) != 0;
}

static bool is_type(const struct fs_tree *t, const char *path, mode_t type)
{
	return exists(t, path) && (stat_of(t, path).st_mode & S_IFMT) == type;
}

static size_t dir_count(const struct fs_tree *t, fs_ino_t dir)
{
	size_t n = 0;

	while (fs_tree_readdir(t, dir, n, NULL, NULL) == 0)
		n++;
	return n;
}

/* Counts every name reachable from the root (the root excluded). */
static size_t count_names(const struct fs_tree *t, fs_ino_t dir)
{
	const char *name;
	fs_ino_t ino;
	size_t n = 0;

	for (size_t pos = 0; fs_tree_readdir(t, dir, pos, &name, &ino) == 0; pos++) {
		struct stat st;

		n++;
		if (fs_tree_stat(t, ino, &st) == 0 && S_ISDIR(st.st_mode))
			n += count_names(t, ino);
	}
	return n;
}

static void test_basics(void)
{
	struct fs_tree *t = NULL;
	const struct entry dev = {
		.path = "dev/loop7", .type = ENTRY_BLK, .mode = 0660, .dev_major = 7, .dev_minor = 7,
		.mtime_sec = 5, .mtime_nsec = 42,
	};
	const struct xattr xs[] = {
		{ .name = "user.a", .value = "1", .size = 1 },
		{ .name = "security.capability", .value = "\x01\x00\x00\x02", .size = 4 },
		{ .name = "user.empty", .value = NULL, .size = 0 },
	};
	const struct entry xfile = {
		.path = "xattr/two", .type = ENTRY_REG, .mode = 0644, .size = 3, .digest = D1,
		.xattrs = xs, .n_xattrs = ELEMENTSOF(xs),
	};
	struct stat st;
	const char *s;
	const void *v;
	size_t vs;
	fs_ino_t ino;

	check(fs_tree_new(&t) == 0, "a tree is created");
	check(fs_tree_begin_layer(t) == 0, "the first layer begins");
	cur_mtime = 1700000000;
	check(add_dir(t, "", 0700) == 0, "the root entry is accepted");
	check(add(t, ENTRY_REG, "", 0644, NULL, D1, 1) == -EINVAL, "a non-directory root is refused");
	check(add_dir(t, "bin", 0755) == 0 && add_file(t, "bin/busybox", D1, 1982256) == 0,
	      "a directory and a file are added");
	check(add_symlink(t, "bin/sh", "busybox") == 0, "a symlink is added");
	cur_mtime = 1234;
	check(add_file(t, "etc/ssl/certs/ca.pem", D2, 10) == 0, "a file with missing parents is added");
	cur_mtime = 1700000000;
	check(fs_tree_add(t, &dev) == 0, "a block device is added");
	check(add(t, ENTRY_FIFO, "run/fifo", 0644, NULL, NULL, 0) == 0, "a fifo is added");
	check(add_file(t, "empty", NULL, 0) == 0, "an empty file without a digest is accepted");
	check(add_file(t, "nodigest", NULL, 5) == -EINVAL, "a non-empty file without a digest is refused");
	check(add_symlink(t, "nolink", NULL) == -EINVAL, "a symlink without a target is refused");
	check(add_file(t, "a/../b", D1, 1) == -EINVAL, "a path with '..' is refused");
	check(add_file(t, "a//b", D1, 1) == -EINVAL, "a path with an empty component is refused");
	{
		char longname[300];

		memset(longname, 'n', 256);
		longname[256] = 0;
		check(add_file(t, longname, D1, 1) == -ENAMETOOLONG, "a 256-byte name is refused");
		longname[255] = 0;
		check(add_file(t, longname, D1, 1) == 0, "a 255-byte name is accepted");
	}
	check(fs_tree_add(t, &xfile) == 0, "a file with xattrs is added");
	check(fs_tree_finish(t) == 0, "the tree is frozen");
	check(add_file(t, "late", D1, 1) == -EBUSY, "nothing is added after fs_tree_finish()");
	check(fs_tree_finish(t) == -EBUSY, "a tree is frozen once");

	check(fs_tree_stat(t, FS_ROOT_INO, &st) == 0 && st.st_ino == FS_ROOT_INO &&
	      st.st_mode == (S_IFDIR | 0700), "the root entry sets the root's attributes");
	check(fs_tree_parent(t, FS_ROOT_INO) == FS_ROOT_INO, "the root is its own parent");

	st = stat_of(t, "bin/busybox");
	check(S_ISREG(st.st_mode) && (st.st_mode & 07777) == 0644 && st.st_size == 1982256 &&
	      st.st_blocks == (1982256 + 511) / 512 && st.st_nlink == 1 && st.st_mtime == 1700000000,
	      "a regular file's stat: mode, size, blocks, nlink, mtime");
	check(fs_tree_digest(t, resolve(t, "bin/busybox"), &s) == 0 && streq(s, D1),
	      "a regular file's digest");
	check(fs_tree_digest(t, resolve(t, "bin"), &s) == -EISDIR, "a directory has no digest");
	check(fs_tree_digest(t, resolve(t, "bin/sh"), &s) == -EINVAL, "a symlink has no digest");
	check(fs_tree_digest(t, resolve(t, "empty"), &s) == -EINVAL,
	      "an empty file added without a digest has none");
	check(stat_of(t, "empty").st_size == 0 && stat_of(t, "empty").st_blocks == 0,
	      "an empty file has no blocks");

	st = stat_of(t, "bin/sh");
	check(S_ISLNK(st.st_mode) && (st.st_mode & 07777) == 0777 && st.st_size == 7,
	      "a symlink is 0777 and its size is the target's length");
	check(fs_tree_readlink(t, resolve(t, "bin/sh"), &s) == 0 && streq(s, "busybox"),
	      "readlink gives the target");
	check(fs_tree_readlink(t, resolve(t, "bin/busybox"), &s) == -EINVAL,
	      "readlink of a file is -EINVAL");

	st = stat_of(t, "etc/ssl");
	check(S_ISDIR(st.st_mode) && (st.st_mode & 07777) == 0755 && st.st_uid == 0 &&
	      st.st_gid == 0 && st.st_mtime == 1234,
	      "implicit parents are 0755 root:root with the mtime of the entry that needed them");
	check(stat_of(t, "").st_nlink == 2 + 5, "the root's nlink counts its subdirectories");
	check(stat_of(t, "etc").st_nlink == 3 && stat_of(t, "etc/ssl/certs").st_nlink == 2,
	      "a directory's nlink is 2 + its subdirectories");
	check(stat_of(t, "etc").st_size == 4096 && stat_of(t, "etc").st_blocks == 8,
	      "a directory's size is 4096");

	st = stat_of(t, "dev/loop7");
	check(S_ISBLK(st.st_mode) && major(st.st_rdev) == 7 && minor(st.st_rdev) == 7 &&
	      (st.st_mode & 07777) == 0660 && st.st_mtim.tv_nsec == 42 && st.st_atime == 5 &&
	      st.st_ctime == 5, "a block device's rdev, mode and times");
	check(S_ISFIFO(stat_of(t, "run/fifo").st_mode), "a fifo is a fifo");

	check(fs_tree_lookup(t, FS_ROOT_INO, "missing", &ino) == -ENOENT, "a missing name is -ENOENT");
	check(fs_tree_lookup(t, resolve(t, "bin/busybox"), "x", &ino) == -ENOTDIR,
	      "a lookup in a file is -ENOTDIR");
	check(fs_tree_lookup(t, 0, "bin", &ino) == -ENOENT, "inode 0 does not exist");
	check(fs_tree_lookup(t, fs_tree_count(t) + 1, "bin", &ino) == -ENOENT,
	      "an inode past the count does not exist");
	check(fs_tree_stat(t, fs_tree_count(t) + 1, &st) == -ENOENT, "stat past the count is -ENOENT");
	check(fs_tree_lookup(t, resolve(t, "etc/ssl"), "..", &ino) == 0 && ino == resolve(t, "etc"),
	      "'..' looks up the parent");
	check(fs_tree_count(t) == 16, "the count is every inode, the root included");

	ino = resolve(t, "xattr/two");
	check(fs_tree_xattr_count(t, ino) == 3, "a file lists its xattrs");
	check(streq(fs_tree_xattr_name(t, ino, 0), "user.a") &&
	      streq(fs_tree_xattr_name(t, ino, 1), "security.capability") &&
	      streq(fs_tree_xattr_name(t, ino, 2), "user.empty"), "xattr names keep their order");
	check(fs_tree_xattr_name(t, ino, 3) == NULL, "no xattr name past the count");
	check(fs_tree_getxattr(t, ino, "security.capability", &v, &vs) == 0 && vs == 4 &&
	      memcmp(v, "\x01\x00\x00\x02", 4) == 0, "getxattr returns the binary value");
	check(fs_tree_getxattr(t, ino, "user.empty", &v, &vs) == 0 && vs == 0,
	      "an empty xattr value is found");
	check(fs_tree_getxattr(t, ino, "user.missing", &v, &vs) == -ENODATA,
	      "a missing xattr is -ENODATA");
	check(fs_tree_getxattr(t, resolve(t, "bin"), "user.a", &v, &vs) == -ENODATA &&
	      fs_tree_xattr_count(t, resolve(t, "bin")) == 0, "a node without xattrs has none");

	fs_tree_free(t);
}

static void test_readdir(void)
{
	static const char *const sorted[] = { "-dash", ".hidden", "A", "B", "a", "b", "z",
					      "\xc3\xbc" /* ü */ };
	static const char *const added[] = { "z", "b", "\xc3\xbc", "a", "B", ".hidden", "A", "-dash" };
	struct fs_tree *t = NULL;
	const char *name;
	fs_ino_t dir, ino, seen[ELEMENTSOF(sorted)];
	bool ok = true, distinct = true;

	check(fs_tree_new(&t) == 0 && fs_tree_begin_layer(t) == 0, "readdir: tree created");
	for (size_t i = 0; i < ELEMENTSOF(added); i++) {
		char path[64];

		snprintf(path, sizeof(path), "d/%s", added[i]);
		ok = ok && add_file(t, path, D1, 1) == 0;
	}
	check(ok, "readdir: entries added in arbitrary order");
	check(add_dir(t, "d/sub", 0755) == 0 && add_dir(t, "emptydir", 0755) == 0,
	      "readdir: directories added");
	check(fs_tree_finish(t) == 0, "readdir: frozen");

	dir = resolve(t, "d");
	for (size_t i = 0; i < ELEMENTSOF(sorted); i++) {
		size_t pos = i + (i >= 6);  /* "sub" sorts between "b" and "z" */

		ok = fs_tree_readdir(t, dir, pos, &name, &ino) == 0;
		check(ok && streq(name, sorted[i]), "readdir position %zu is '%s'", pos, sorted[i]);
		seen[i] = ok ? ino : 0;
		check(ok && fs_tree_lookup(t, dir, sorted[i], &ino) == 0 && ino == seen[i],
		      "readdir and lookup agree on '%s'", sorted[i]);
	}
	check(fs_tree_readdir(t, dir, 6, &name, &ino) == 0 && streq(name, "sub"),
	      "readdir sorts bytewise");
	check(fs_tree_readdir(t, dir, 9, &name, &ino) == -ENOENT, "readdir past the end is -ENOENT");
	check(fs_tree_readdir(t, resolve(t, "emptydir"), 0, &name, &ino) == -ENOENT,
	      "an empty directory has no position 0");
	check(fs_tree_readdir(t, resolve(t, "d/a"), 0, &name, &ino) == -ENOTDIR,
	      "readdir of a file is -ENOTDIR");
	check(fs_tree_parent(t, resolve(t, "d/sub")) == dir, "a directory knows its parent");
	check(fs_tree_parent(t, resolve(t, "d/a")) == 0, "a file has no parent number");
	for (size_t i = 0; i < ELEMENTSOF(seen); i++)
		for (size_t j = i + 1; j < ELEMENTSOF(seen); j++)
			distinct = distinct && seen[i] != seen[j];
	check(distinct, "every file has its own inode number");
	check(fs_tree_count(t) == 1 + 2 + 8 + 1, "inode numbers are 1..count");
	/* Breadth first, a directory's children consecutive and in name order: the root's
	 * children "d" and "emptydir" get 2 and 3, then d's nine children 4..12. */
	check(resolve(t, "") == 1 && resolve(t, "d") == 2 && resolve(t, "emptydir") == 3,
	      "the root is 1, its children 2 and 3 in name order");
	ok = true;
	for (size_t i = 0; i < ELEMENTSOF(sorted); i++) {
		char path[64];

		snprintf(path, sizeof(path), "d/%s", sorted[i]);
		ok = ok && resolve(t, path) == 4 + i + (i >= 6);
	}
	check(ok && resolve(t, "d/sub") == 10, "d's children are 4..12 in name order, sub at 10");

	fs_tree_free(t);
}

/* The three layers of tests/fixtures (README "The image"), cut down to the parts with rules. */
static void test_fixture_layers(void)
{
	struct fs_tree *t = NULL;
	bool ok = true;
	const char *s;

	check(fs_tree_new(&t) == 0, "fixture: tree created");

	/* Layer 1: umoci, a "./" root entry, then everything in the rootfs. */
	check(fs_tree_begin_layer(t) == 0, "fixture: layer 1 begins");
	cur_mtime = 1700000000;
	ok = ok && add_dir(t, "", 0755) == 0;
	ok = ok && add_dir(t, "etc", 0755) == 0;
	ok = ok && add_file(t, "etc/chmod-me", D1, 40) == 0;
	ok = ok && add_file(t, "etc/delete-me", D1, 10) == 0;
	ok = ok && add_file(t, "etc/modify-me", D1, 10) == 0;
	ok = ok && add_dir(t, "hardlinks", 0755) == 0;
	ok = ok && add_file(t, "hardlinks/a", D1, 7) == 0;
	ok = ok && add_hardlink(t, "hardlinks/b", "hardlinks/a") == 0;
	ok = ok && add_dir(t, "opt", 0755) == 0;
	ok = ok && add_dir(t, "opt/opaque-dir", 0755) == 0;
	ok = ok && add_file(t, "opt/opaque-dir/a", D1, 1) == 0;
	ok = ok && add_file(t, "opt/opaque-dir/b", D1, 1) == 0;
	ok = ok && add_dir(t, "opt/opaque-dir/sub", 0755) == 0;
	ok = ok && add_file(t, "opt/opaque-dir/sub/c", D1, 1) == 0;
	ok = ok && add_dir(t, "srv", 0755) == 0;
	ok = ok && add_dir(t, "srv/dir-to-symlink", 0755) == 0;
	ok = ok && add_file(t, "srv/dir-to-symlink/x", D1, 1) == 0;
	ok = ok && add_dir(t, "srv/dir-to-symlink/y", 0755) == 0;
	ok = ok && add_file(t, "srv/dir-to-symlink/y/z", D1, 1) == 0;
	ok = ok && add_file(t, "srv/file-to-dir", D1, 1) == 0;
	ok = ok && add_dir(t, "usr", 0755) == 0;
	ok = ok && add_dir(t, "usr/share", 0755) == 0;
	ok = ok && add_dir(t, "usr/share/delete-dir", 0755) == 0;
	ok = ok && add_file(t, "usr/share/delete-dir/gone", D1, 1) == 0;
	ok = ok && add_dir(t, "usr/share/keep", 0755) == 0;
	ok = ok && add_file(t, "usr/share/keep/keep.txt", D1, 5) == 0;
	ok = ok && add_dir(t, "var", 0755) == 0;
	ok = ok && add_file(t, "var/l3-delete-file", D1, 1) == 0;
	ok = ok && add_dir(t, "var/l3-delete-dir", 0755) == 0;
	ok = ok && add_file(t, "var/l3-delete-dir/inner", D1, 1) == 0;
	check(ok, "fixture: layer 1 added");

	/* Layer 2: buildah, no root entry, parents repeated, opaque markers 0755. */
	check(fs_tree_begin_layer(t) == 0, "fixture: layer 2 begins");
	cur_mtime = 1700086400;
	ok = true;
	ok = ok && add_dir(t, "etc", 0755) == 0;
	ok = ok && add_whiteout(t, "etc/.wh.delete-me") == 0;
	ok = ok && add(t, ENTRY_REG, "etc/chmod-me", 0600, NULL, D1, 40) == 0;
	ok = ok && add_file(t, "etc/modify-me", D2, 25) == 0;
	ok = ok && add_file(t, "l2-added.txt", D2, 3) == 0;
	ok = ok && add_dir(t, "opt", 0755) == 0;
	ok = ok && add_dir(t, "opt/opaque-dir", 0755) == 0;
	ok = ok && add(t, ENTRY_REG, "opt/opaque-dir/.wh..wh..opq", 0755, NULL, NULL, 0) == 0;
	ok = ok && add_file(t, "opt/opaque-dir/new.txt", D2, 36) == 0;
	ok = ok && add_dir(t, "srv", 0755) == 0;
	ok = ok && add_symlink(t, "srv/dir-to-symlink", "file-to-dir") == 0;
	ok = ok && add_dir(t, "srv/file-to-dir", 0755) == 0;
	ok = ok && add(t, ENTRY_REG, "srv/file-to-dir/.wh..wh..opq", 0755, NULL, NULL, 0) == 0;
	ok = ok && add_file(t, "srv/file-to-dir/inside", D2, 44) == 0;
	ok = ok && add_dir(t, "usr", 0755) == 0;
	ok = ok && add_dir(t, "usr/share", 0755) == 0;
	ok = ok && add_whiteout(t, "usr/share/.wh.delete-dir") == 0;
	check(ok, "fixture: layer 2 added");

	/* Layer 3: umoci again, whiteouts with mtime 0, a re-created file, many small files. */
	check(fs_tree_begin_layer(t) == 0, "fixture: layer 3 begins");
	cur_mtime = 1700172800;
	ok = true;
	ok = ok && add_dir(t, "", 0755) == 0;
	ok = ok && add_dir(t, "data", 0755) == 0;
	ok = ok && add_dir(t, "data/tree", 0755) == 0;
	for (int d = 0; d < 200; d++) {
		char path[64];

		snprintf(path, sizeof(path), "data/tree/d%02d", d / 10);
		if (d % 10 == 0)
			ok = ok && add_dir(t, path, 0755) == 0;
		snprintf(path, sizeof(path), "data/tree/d%02d/s%d", d / 10, d % 10);
		ok = ok && add_dir(t, path, 0755) == 0;
		for (int f = 0; f < 10; f++) {
			snprintf(path, sizeof(path), "data/tree/d%02d/s%d/f%02d.txt", d / 10, d % 10, f);
			ok = ok && add_file(t, path, D3, 30) == 0;
		}
	}
	ok = ok && add_dir(t, "etc", 0755) == 0;
	ok = ok && add_file(t, "etc/delete-me", D3, 46) == 0;
	ok = ok && add_dir(t, "var", 0755) == 0;
	cur_mtime = 0;
	ok = ok && add_whiteout(t, "var/.wh.l3-delete-dir") == 0;
	ok = ok && add_whiteout(t, "var/.wh.l3-delete-file") == 0;
	check(ok, "fixture: layer 3 added");
	check(fs_tree_finish(t) == 0, "fixture: frozen");

	check(is_type(t, "etc/delete-me", S_IFREG) && stat_of(t, "etc/delete-me").st_size == 46,
	      "a file whited out in layer 2 and re-created in layer 3 is the new one");
	check((stat_of(t, "etc/chmod-me").st_mode & 07777) == 0600, "a chmod-only copy wins");
	check(stat_of(t, "etc/modify-me").st_size == 25 &&
	      fs_tree_digest(t, resolve(t, "etc/modify-me"), &s) == 0 && streq(s, D2),
	      "a modified file has the upper content");
	check(!exists(t, "etc/.wh.delete-me") && !exists(t, "usr/share/.wh.delete-dir") &&
	      !exists(t, "opt/opaque-dir/.wh..wh..opq") && !exists(t, "var/.wh.l3-delete-dir"),
	      "whiteout entries never appear");
	check(!exists(t, "usr/share/delete-dir") && !exists(t, "usr/share/delete-dir/gone"),
	      "a whited-out directory goes with its subtree");
	check(exists(t, "usr/share/keep/keep.txt"), "a sibling of a whiteout stays");
	check(dir_count(t, resolve(t, "opt/opaque-dir")) == 1 && exists(t, "opt/opaque-dir/new.txt"),
	      "an opaque directory shows only its new content");
	check(!exists(t, "opt/opaque-dir/sub/c"), "an opaque directory hides lower subdirectories");
	check(is_type(t, "srv/file-to-dir", S_IFDIR) && exists(t, "srv/file-to-dir/inside") &&
	      dir_count(t, resolve(t, "srv/file-to-dir")) == 1, "a file replaced by a directory");
	check(is_type(t, "srv/dir-to-symlink", S_IFLNK) &&
	      fs_tree_readlink(t, resolve(t, "srv/dir-to-symlink"), &s) == 0 &&
	      streq(s, "file-to-dir"), "a directory replaced by a symlink without a whiteout");
	check(fs_tree_lookup(t, resolve(t, "srv/dir-to-symlink"), "x", &(fs_ino_t) { 0 }) == -ENOTDIR,
	      "the replaced directory's children are gone");
	check(!exists(t, "var/l3-delete-file") && !exists(t, "var/l3-delete-dir") &&
	      is_type(t, "var", S_IFDIR), "umoci whiteouts delete a file and a directory");
	check(stat_of(t, "var").st_nlink == 2, "nlink drops with a whited-out subdirectory");
	check(exists(t, "data/tree/d19/s9/f09.txt") && dir_count(t, resolve(t, "data/tree")) == 20,
	      "layer 3's 2000 files are there");
	check(stat_of(t, "").st_mtime == 1700172800, "the last root entry sets the root's mtime");
	check(stat_of(t, "etc").st_mtime == 1700172800, "the last directory entry sets its mtime");
	check(stat_of(t, "hardlinks/a").st_ino == stat_of(t, "hardlinks/b").st_ino &&
	      stat_of(t, "hardlinks/a").st_nlink == 2, "a same-layer hard link shares one inode");
	/* One name per inode but the root, plus hardlinks/b. */
	check(count_names(t, FS_ROOT_INO) == fs_tree_count(t) - 1 + 1,
	      "every inode has one name except hard links: %zu names, %zu inodes",
	      count_names(t, FS_ROOT_INO), fs_tree_count(t));

	fs_tree_free(t);
}

static void test_opaque_same_layer(void)
{
	struct fs_tree *t = NULL;
	bool ok = true;

	check(fs_tree_new(&t) == 0 && fs_tree_begin_layer(t) == 0, "opaque: tree created");
	ok = ok && add_file(t, "d/old", D1, 1) == 0;
	ok = ok && add_file(t, "d/sub/old", D1, 1) == 0;
	ok = ok && add_file(t, "d/other/old", D1, 1) == 0;
	ok = ok && add_file(t, "keep", D1, 1) == 0;
	ok = ok && fs_tree_begin_layer(t) == 0;
	ok = ok && add_file(t, "d/early", D2, 1) == 0;
	ok = ok && add_file(t, "d/sub/new", D2, 1) == 0;
	ok = ok && add_whiteout(t, "d/.wh..wh..opq") == 0;
	ok = ok && add_file(t, "d/late", D2, 1) == 0;
	ok = ok && add_file(t, "x", D2, 1) == 0;
	ok = ok && add_whiteout(t, ".wh.x") == 0;  /* same layer: x stays */
	ok = ok && add_whiteout(t, ".wh.never-there") == 0;
	ok = ok && add_whiteout(t, "no/such/.wh.dir") == 0;
	ok = ok && add_whiteout(t, "new-opaque/.wh..wh..opq") == 0;
	check(ok, "opaque: layers added");
	check(fs_tree_finish(t) == 0, "opaque: frozen");

	check(exists(t, "d/early"), "an entry of the same layer before the opaque marker stays");
	check(exists(t, "d/late"), "an entry after the opaque marker stays");
	check(!exists(t, "d/old") && !exists(t, "d/other"), "lower entries of an opaque dir go");
	check(exists(t, "d/sub/new") && !exists(t, "d/sub/old"),
	      "a directory written through in the same layer stays, without its lower content");
	check(dir_count(t, resolve(t, "d")) == 3, "the opaque directory holds exactly its layer's names");
	check(exists(t, "keep"), "the opaque marker does not touch the parent");
	check(exists(t, "x"), "a whiteout hides only lower layers' names");
	check(is_type(t, "new-opaque", S_IFDIR) && dir_count(t, resolve(t, "new-opaque")) == 0,
	      "an opaque marker in a missing directory leaves an empty directory");
	check(!exists(t, "no"), "a whiteout under a missing directory creates nothing");
	fs_tree_free(t);
}

static void test_replacements(void)
{
	struct fs_tree *t = NULL;
	bool ok = true;

	check(fs_tree_new(&t) == 0 && fs_tree_begin_layer(t) == 0, "replace: tree created");
	ok = ok && add_file(t, "f", D1, 1) == 0;
	ok = ok && add_file(t, "f/g", D1, 2) == 0;  /* a path through a file */
	ok = ok && add_file(t, "link/inner", D1, 1) == 0;
	ok = ok && add_dir(t, "tree", 0700) == 0;
	ok = ok && add_file(t, "tree/a/b", D1, 1) == 0;
	ok = ok && fs_tree_begin_layer(t) == 0;
	ok = ok && add_file(t, "tree", D2, 9) == 0;  /* a file over a directory */
	ok = ok && add_symlink(t, "link", "f") == 0; /* a symlink over a directory */
	ok = ok && fs_tree_begin_layer(t) == 0;
	ok = ok && add_dir(t, "tree", 0750) == 0;    /* a directory over the file */
	ok = ok && add_file(t, "tree/c", D3, 1) == 0;
	ok = ok && add_dir(t, "link/again", 0755) == 0; /* through the symlink */
	check(ok, "replace: layers added");
	check(fs_tree_finish(t) == 0, "replace: frozen");

	check(is_type(t, "f", S_IFDIR) && (stat_of(t, "f").st_mode & 07777) == 0755 &&
	      exists(t, "f/g"), "a path through a file turns the file into an implicit directory");
	check(is_type(t, "tree", S_IFDIR) && (stat_of(t, "tree").st_mode & 07777) == 0750 &&
	      !exists(t, "tree/a") && exists(t, "tree/c"),
	      "dir -> file -> dir: the old subtree stays gone");
	check(is_type(t, "link", S_IFLNK) && is_type(t, "f/again", S_IFDIR) &&
	      !exists(t, "f/inner"), "a path through a symlink lands where the symlink points");
	fs_tree_free(t);
}

/* Paths through symlinks resolve inside the tree, as containerd and umoci extract them. */
/* fs_tree_resolve() (fs/tree_path.c) on the frozen tree of test_symlink_paths(): as a process
 * in the container finds paths, the last symlink followed too. */
static void test_tree_resolve(const struct fs_tree *t)
{
	char deep[5000];
	fs_ino_t ino = 0;

	check(fs_tree_resolve(t, "/lib/x", &ino) == 0 && ino == resolve(t, "usr/lib/x"),
	      "resolve: through a relative symlink");
	check(fs_tree_resolve(t, "abs/keep", &ino) == 0 && ino == resolve(t, "usr/lib/keep"),
	      "resolve: through an absolute symlink, from a relative path");
	check(fs_tree_resolve(t, "/tofile", &ino) == 0 && ino == resolve(t, "usr/lib/keep"),
	      "resolve: the last component's symlink is followed");
	check(fs_tree_resolve(t, "/usr/up/usr/lib/keep", &ino) == 0 &&
	      ino == resolve(t, "usr/lib/keep"), "resolve: '..' stops at the root");
	check(fs_tree_resolve(t, "chain1/lib/w", &ino) == 0 && ino == resolve(t, "usr/lib/w"),
	      "resolve: chains of symlinks");
	check(fs_tree_resolve(t, "/", &ino) == 0 && ino == FS_ROOT_INO, "resolve: the root");
	check(fs_tree_resolve(t, "/loop1", &ino) == -ELOOP, "resolve: a loop is -ELOOP");
	check(fs_tree_resolve(t, "/empty", &ino) == -ENOENT, "resolve: an empty target is -ENOENT");
	check(fs_tree_resolve(t, "/nothing/here", &ino) == -ENOENT, "resolve: a missing path");
	check(fs_tree_resolve(t, "/tofile/x", &ino) == -ENOTDIR, "resolve: a file as a directory");
	memset(deep, 'a', sizeof(deep) - 1);
	deep[sizeof(deep) - 1] = '\0';
	check(fs_tree_resolve(t, deep, &ino) == -ENAMETOOLONG, "resolve: a path over PATH_MAX");
}

static void test_symlink_paths(void)
{
	struct fs_tree *t = NULL;
	const char *s;
	bool ok = true;

	check(fs_tree_new(&t) == 0 && fs_tree_begin_layer(t) == 0, "symlink paths: tree created");
	ok = ok && add_dir(t, "usr/lib", 0755) == 0;
	ok = ok && add_file(t, "usr/lib/old", D1, 1) == 0;
	ok = ok && add_file(t, "usr/lib/keep", D1, 1) == 0;
	ok = ok && add_symlink(t, "lib", "usr/lib") == 0;
	ok = ok && add_file(t, "lib/x", D1, 1) == 0;                 /* the same layer's symlink */
	ok = ok && add_symlink(t, "abs", "/usr/lib") == 0;
	ok = ok && add_symlink(t, "usr/up", "../../../..") == 0;
	ok = ok && add_symlink(t, "chain1", "chain2/") == 0;
	ok = ok && add_symlink(t, "chain2", "./usr//") == 0;
	ok = ok && add_symlink(t, "dangling", "/opt/new") == 0;
	ok = ok && add_symlink(t, "loop1", "loop2") == 0;
	ok = ok && add_symlink(t, "loop2", "/loop1") == 0;
	ok = ok && add_symlink(t, "tofile", "usr/lib/keep") == 0;
	ok = ok && add_symlink(t, "empty", "") == 0;
	ok = ok && add_dir(t, "usr/lib/o", 0755) == 0;
	ok = ok && add_file(t, "usr/lib/o/lower", D1, 1) == 0;
	ok = ok && fs_tree_begin_layer(t) == 0;                      /* lower layers' symlinks */
	ok = ok && add_file(t, "abs/y", D2, 1) == 0;
	ok = ok && add_file(t, "usr/up/z", D2, 1) == 0;
	ok = ok && add_file(t, "chain1/lib/w", D2, 1) == 0;
	ok = ok && add_file(t, "dangling/deep/d", D2, 1) == 0;
	ok = ok && add_whiteout(t, "lib/.wh.old") == 0;
	ok = ok && add_whiteout(t, "abs/o/.wh..wh..opq") == 0;
	ok = ok && add_hardlink(t, "hl", "lib/x") == 0;
	check(ok, "symlink paths: layers added");
	check(add_file(t, "loop1/f", D2, 1) == -ELOOP, "a symlink loop is -ELOOP");
	check(add_hardlink(t, "hl2", "loop2/x") == -EINVAL, "a hard link through a loop is refused");
	check(add_file(t, "empty/f", D2, 1) == -ENOENT, "an empty symlink target resolves to nothing");
	check(fs_tree_finish(t) == 0, "symlink paths: frozen");

	check(is_type(t, "lib", S_IFLNK) && fs_tree_readlink(t, resolve(t, "lib"), &s) == 0 &&
	      streq(s, "usr/lib"), "the symlink stays a symlink");
	check(exists(t, "usr/lib/x"), "an entry below a symlink of its own layer lands at the target");
	check(exists(t, "usr/lib/y"), "an absolute target resolves from the image's root");
	check(exists(t, "z") && !exists(t, "usr/z"), "'..' in a target stops at the image's root");
	check(exists(t, "usr/lib/w"), "chains of symlinks are followed");
	check(is_type(t, "opt/new/deep", S_IFDIR) && exists(t, "opt/new/deep/d") &&
	      is_type(t, "dangling", S_IFLNK), "a dangling target's directories are made implicitly");
	check(!exists(t, "usr/lib/old") && exists(t, "usr/lib/keep"),
	      "a whiteout through a symlink hides the target's entry");
	check(is_type(t, "usr/lib/o", S_IFDIR) && dir_count(t, resolve(t, "usr/lib/o")) == 0,
	      "an opaque marker through a symlink hides the target's lower entries");
	check(resolve(t, "hl") == resolve(t, "usr/lib/x") && stat_of(t, "hl").st_nlink == 2,
	      "a hard link's target is resolved through symlinks");
	check(is_type(t, "loop1", S_IFLNK) && !exists(t, "f"), "nothing of a refused entry is added");
	test_tree_resolve(t);
	fs_tree_free(t);
}

static void test_hardlinks(void)
{
	struct fs_tree *t = NULL;
	bool ok = true;
	const char *s;

	check(fs_tree_new(&t) == 0 && fs_tree_begin_layer(t) == 0, "hardlink: tree created");
	ok = ok && add(t, ENTRY_REG, "h/a", 0755, NULL, D1, 100) == 0;
	ok = ok && add_hardlink(t, "h/b", "h/a") == 0;
	ok = ok && add_hardlink(t, "other/c", "h/b") == 0;  /* a link to a link name */
	ok = ok && add_file(t, "g/x", D2, 1) == 0;
	ok = ok && add_hardlink(t, "g/y", "g/x") == 0;
	check(ok, "hardlink: layer 1 added");
	check(add_hardlink(t, "h/bad", "h/missing") == -EINVAL, "a link to a missing name is refused");
	check(add_hardlink(t, "h/bad", "h") == -EINVAL, "a link to a directory is refused");
	check(add_hardlink(t, "h/bad", "h/a/x") == -EINVAL, "a link through a file is refused");
	check(!exists(t, "h/bad"), "a refused link leaves no name");
	check(add_symlink(t, "s/link", "../h/a") == 0 && add_hardlink(t, "s/link2", "s/link") == 0,
	      "a hard link to a symlink is accepted, as umoci does");

	ok = fs_tree_begin_layer(t) == 0;
	ok = ok && add_whiteout(t, "h/.wh.b") == 0;
	ok = ok && add_hardlink(t, "l2/d", "h/a") == 0;  /* a link to a lower layer's file */
	ok = ok && add_file(t, "g/x", D3, 2) == 0;       /* replacing one name unshares it */
	check(ok, "hardlink: layer 2 added");
	check(fs_tree_finish(t) == 0, "hardlink: frozen");

	check(stat_of(t, "h/a").st_ino == stat_of(t, "other/c").st_ino &&
	      stat_of(t, "h/a").st_ino == stat_of(t, "l2/d").st_ino, "hard links share one inode");
	check(stat_of(t, "h/a").st_nlink == 3,
	      "nlink counts the final names (a, c, d; b whited out)");
	check((stat_of(t, "l2/d").st_mode & 07777) == 0755 && stat_of(t, "l2/d").st_size == 100 &&
	      fs_tree_digest(t, resolve(t, "l2/d"), &s) == 0 && streq(s, D1),
	      "a link has its target's attributes and content");
	check(!exists(t, "h/b"), "the whited-out link name is gone");
	check(stat_of(t, "g/y").st_nlink == 1 && stat_of(t, "g/x").st_nlink == 1 &&
	      stat_of(t, "g/x").st_ino != stat_of(t, "g/y").st_ino &&
	      stat_of(t, "g/y").st_size == 1, "a replaced name leaves the other link alone");
	check(stat_of(t, "s/link2").st_ino == stat_of(t, "s/link").st_ino &&
	      S_ISLNK(stat_of(t, "s/link2").st_mode) && stat_of(t, "s/link").st_nlink == 2,
	      "a hard-linked symlink shares its inode");
	check(count_names(t, FS_ROOT_INO) == fs_tree_count(t) - 1 + 3,
	      "two extra names share inodes: %zu names, %zu inodes",
	      count_names(t, FS_ROOT_INO), fs_tree_count(t));
	fs_tree_free(t);
}

/* Many names in one directory, half of them whited out and some re-added: the hash's deletes
 * must keep every other name findable. */
static void test_many(void)
{
	struct fs_tree *t = NULL;
	char path[64];
	bool ok = true, found = true;
	const int n = 20000;

	check(fs_tree_new(&t) == 0 && fs_tree_begin_layer(t) == 0, "many: tree created");
	for (int i = 0; i < n; i++) {
		snprintf(path, sizeof(path), "big/f%d", i);
		ok = ok && add_file(t, path, D1, (uint64_t)i) == 0;
		snprintf(path, sizeof(path), "dirs/d%d/x", i % 500);
		ok = ok && add_file(t, path, D1, 1) == 0;
	}
	ok = ok && fs_tree_begin_layer(t) == 0;
	for (int i = 0; i < n; i += 2) {
		snprintf(path, sizeof(path), "big/.wh.f%d", i);
		ok = ok && add_whiteout(t, path) == 0;
	}
	for (int i = 0; i < n; i += 10) {
		snprintf(path, sizeof(path), "big/f%d", i);
		ok = ok && add_file(t, path, D2, 7) == 0;
	}
	ok = ok && add_whiteout(t, "dirs/.wh..wh..opq") == 0;
	check(ok, "many: entries added");
	check(fs_tree_finish(t) == 0, "many: frozen");

	for (int i = 0; i < n; i++) {
		bool want = i % 2 == 1 || i % 10 == 0;
		uint64_t size = i % 10 == 0 ? 7 : (uint64_t)i;

		snprintf(path, sizeof(path), "big/f%d", i);
		found = found && exists(t, path) == want && (!want || stat_of(t, path).st_size == (off_t)size);
	}
	check(found, "every surviving name is found with its own size, no whited-out one is");
	check(dir_count(t, resolve(t, "big")) == (size_t)(n / 2 + n / 10), "the directory count adds up");
	check(dir_count(t, resolve(t, "dirs")) == 0, "an opaque marker empties a big directory");
	check(fs_tree_count(t) == 1 + 2 + (size_t)(n / 2 + n / 10), "pruned nodes get no number");
	fs_tree_free(t);
}

static void test_skipped(void)
{
	struct fs_tree *t = NULL;

	check(fs_tree_new(&t) == 0 && fs_tree_begin_layer(t) == 0, "skip: tree created");
	check(add_file(t, ".wh..wh.plnk/123.456", D1, 1) == 0, "aufs hard-link storage is skipped");
	check(add_whiteout(t, ".wh..wh..opq") == 0, "an opaque marker in the root is accepted");
	check(add_whiteout(t, ".wh.") == -EINVAL, "'.wh.' alone is refused");
	check(add_whiteout(t, "d/.wh.x/y") == -EINVAL, "an entry below a whiteout name is refused");
	check(add_dir(t, ".wh..wh..opq", 0755) == -EINVAL, "an opaque marker as a directory is refused");
	check(add_symlink(t, "d/.wh.x", "y") == -EINVAL, "a whiteout as a symlink is refused");
	check(fs_tree_finish(t) == 0 && fs_tree_count(t) == 1 && dir_count(t, FS_ROOT_INO) == 0,
	      "skipped entries leave nothing");
	fs_tree_free(t);
	check(fs_tree_free(NULL) == NULL, "fs_tree_free(NULL) is fine");
}

#define C1 "sha256:c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1"
#define C2 "sha256:c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2"

static int add_lazy(struct fs_tree *t, const char *path, const char *digest, uint64_t size,
		    const struct chunk *c, size_t n, bool prefetch)
{
	struct entry e = {
		.path = path, .type = ENTRY_REG, .mode = 0644, .size = size, .mtime_sec = cur_mtime,
		.digest = digest, .chunks = c, .n_chunks = n, .prefetch = prefetch,
	};

	return fs_tree_add(t, &e);
}

static bool raw_is(const uint8_t d[32], uint8_t byte)
{
	for (size_t i = 0; i < 32; i++)
		if (d[i] != byte)
			return false;
	return true;
}

static const struct fs_chunk_ref *chunks_of(const struct fs_tree *t, const char *path, size_t *ret_n)
{
	const struct fs_chunk_ref *c = NULL;

	*ret_n = SIZE_MAX;
	if (fs_tree_file_chunks(t, resolve(t, path), &c, ret_n) < 0)
		*ret_n = SIZE_MAX;
	return c;
}

struct seen {
	const struct fs_chunk_ref *c[16];
	size_t n, stop_at;
};

static int collect_chunk(void *userdata, const struct fs_chunk_ref *c)
{
	struct seen *s = userdata;

	if (s->n < ELEMENTSOF(s->c))
		s->c[s->n] = c;
	s->n++;
	return s->stop_at && s->n == s->stop_at ? -ECANCELED : 0;
}

static void test_chunks(void)
{
	static const struct chunk x[] = {
		{ .file_offset = 0, .size = 100, .blob_offset = 1000, .blob_length = 50, .digest = C1 },
		{ .file_offset = 100, .size = 200, .blob_offset = 1050, .blob_length = 0 },
		{ .file_offset = 300, .size = 0, .blob_offset = 1050, .blob_length = 0, .digest = C2 },
		{ .file_offset = 300, .size = 10, .blob_offset = 2000, .blob_length = 7, .digest = C2 },
	};
	static const struct chunk y[] = {
		{ .file_offset = 0, .size = 5, .blob_offset = 3000, .blob_length = 9, .digest = C2 },
	};
	static const struct chunk gap[] = {
		{ .file_offset = 0, .size = 5, .blob_length = 9, .digest = C1 },
		{ .file_offset = 6, .size = 4, .blob_length = 9, .digest = C1 },
	};
	static const struct chunk late[] = {
		{ .file_offset = 1, .size = 9, .blob_length = 9, .digest = C1 },
	};
	static const struct chunk bad_digest[] = {
		{ .file_offset = 0, .size = 10, .blob_length = 9, .digest = "sha256:C1" },
	};
	struct fs_tree *t = NULL;
	const struct fs_chunk_ref *c, *c2;
	struct seen seen = {};
	const char *s;
	size_t n, n2;

	check(fs_tree_new(&t) == 0 && fs_tree_begin_layer(t) == 0, "chunks: tree created");
	check(add_file(t, "tar/a", D1, 10) == 0 && add_file(t, "tar/empty", D3, 0) == 0 &&
	      add_hardlink(t, "tar/a-link", "tar/a") == 0 && add_file(t, "tar/replaced", D2, 3) == 0,
	      "chunks: a tar layer");
	check(fs_tree_foreach_prefetch(t, true, collect_chunk, &seen) == -EINVAL,
	      "prefetch before the tree is frozen is -EINVAL");

	check(fs_tree_begin_layer(t) == 0, "chunks: second layer");
	check(add_lazy(t, "lazy/x", D2, 310, x, ELEMENTSOF(x), true) == 0,
	      "a lazy file with a zeros chunk and an empty chunk is accepted");
	check(add_lazy(t, "lazy/y", NULL, 5, y, 1, false) == 0,
	      "a lazy file without a file digest is accepted");
	check(add_lazy(t, "lazy/gone", NULL, 5, y, 1, true) == 0 &&
	      add_lazy(t, "lazy/over", NULL, 5, y, 1, true) == 0, "chunks: two lazy files to replace");
	check(add_lazy(t, "lazy/gap", NULL, 10, gap, 2, false) == -EINVAL,
	      "chunks with a gap are -EINVAL");
	check(add_lazy(t, "lazy/late", NULL, 10, late, 1, false) == -EINVAL,
	      "chunks not starting at 0 are -EINVAL");
	check(add_lazy(t, "lazy/short", NULL, 11, x, ELEMENTSOF(x), false) == -EINVAL &&
	      add_lazy(t, "lazy/long", NULL, 309, x, ELEMENTSOF(x), false) == -EINVAL,
	      "chunks not adding up to the size are -EINVAL");
	check(add_lazy(t, "lazy/bad", NULL, 10, bad_digest, 1, false) == -EINVAL,
	      "a chunk digest that is not sha256 hex is -EINVAL");
	check(add_lazy(t, "lazy/null", NULL, 10, NULL, 1, false) == -EINVAL,
	      "n_chunks without chunks is -EINVAL");
	check(add_lazy(t, "lazy/empty", NULL, 0, NULL, 0, true) == 0,
	      "an empty lazy file is accepted");

	check(fs_tree_begin_layer(t) == 0, "chunks: third layer");
	check(add_whiteout(t, "lazy/.wh.gone") == 0 && add_file(t, "lazy/over", D3, 4) == 0 &&
	      add_lazy(t, "tar/replaced", NULL, 5, y, 1, true) == 0 &&
	      add_hardlink(t, "x-link", "lazy/x") == 0, "chunks: whiteouts, replacements, a link");
	check(fs_tree_finish(t) == 0, "chunks: frozen");

	c = chunks_of(t, "tar/a", &n);
	check(n == 1 && c[0].file_offset == 0 && c[0].size == 10 && c[0].blob_length == 0 &&
	      !c[0].zeros && c[0].layer == 0 && raw_is(c[0].digest, 0x11),
	      "a tar file is one local chunk named by its digest, in layer 0");
	c2 = chunks_of(t, "tar/a-link", &n2);
	check(n2 == 1 && c2 == c, "a hard link shares the content");
	check(fs_tree_digest(t, resolve(t, "tar/a"), &s) == 0 && streq(s, D1),
	      "fs_tree_digest still gives the file's digest");
	c = chunks_of(t, "tar/empty", &n);
	check(n == 0 && c == NULL, "an empty file has no chunks");

	c = chunks_of(t, "lazy/x", &n);
	check(n == 3, "a lazy file has its chunks, the empty one dropped (%zu)", n);
	if (n == 3) {
		check(c[0].file_offset == 0 && c[0].size == 100 && c[0].blob_offset == 1000 &&
		      c[0].blob_length == 50 && !c[0].zeros && raw_is(c[0].digest, 0xc1) &&
		      c[0].layer == 1, "a fetchable chunk round-trips, in layer 1");
		check(c[1].file_offset == 100 && c[1].size == 200 && c[1].zeros && c[1].layer == 1,
		      "a chunk without a digest is zeros");
		check(c[2].file_offset == 300 && c[2].size == 10 && c[2].blob_offset == 2000 &&
		      c[2].blob_length == 7 && raw_is(c[2].digest, 0xc2), "the last chunk");
	}
	check(fs_tree_digest(t, resolve(t, "lazy/x"), &s) == 0 && streq(s, D2),
	      "a lazy file keeps its file digest");
	check(fs_tree_digest(t, resolve(t, "lazy/y"), &s) == -EINVAL &&
	      (c = chunks_of(t, "lazy/y", &n)) && n == 1 && raw_is(c[0].digest, 0xc2),
	      "a lazy file without a file digest has none, but its chunks");
	c2 = chunks_of(t, "x-link", &n2);
	check(n2 == 3 && c2 == chunks_of(t, "lazy/x", &n) && c2[0].layer == 1,
	      "a later layer's hard link shares the content of the lazy file");
	c = chunks_of(t, "lazy/over", &n);
	check(n == 1 && c[0].blob_length == 0 && c[0].layer == 2 && raw_is(c[0].digest, 0x33),
	      "a tar file over a lazy file has its own single chunk, in layer 2");
	c = chunks_of(t, "tar/replaced", &n);
	check(n == 1 && c[0].blob_length == 9 && c[0].layer == 2,
	      "a lazy file over a tar file has its chunks");
	c = chunks_of(t, "lazy/empty", &n);
	check(n == 0, "an empty lazy file has no chunks");
	check(fs_tree_file_chunks(t, resolve(t, "lazy"), &c, &n) == -EINVAL &&
	      fs_tree_file_chunks(t, fs_tree_count(t) + 1, &c, &n) == -ENOENT,
	      "chunks of a directory are -EINVAL, of a bad number -ENOENT");

	/* prefetch: lazy/x (prefetch), lazy/y, tar/replaced (prefetch); not gone or over. */
	seen = (struct seen) {};
	check(fs_tree_foreach_prefetch(t, false, collect_chunk, &seen) == 0 && seen.n == 3,
	      "prefetch visits the fetchable chunks of files marked for it (%zu)", seen.n);
	check(seen.n == 3 && seen.c[0]->blob_offset == 1000 && seen.c[1]->blob_offset == 2000 &&
	      seen.c[2]->blob_offset == 3000 && seen.c[2]->layer == 2,
	      "in the order the files were added, zeros chunks and replaced files left out");
	seen = (struct seen) {};
	check(fs_tree_foreach_prefetch(t, true, collect_chunk, &seen) == 0 && seen.n == 4 &&
	      seen.c[0]->blob_offset == 1000 && seen.c[1]->blob_offset == 2000 &&
	      seen.c[2]->blob_offset == 3000 && seen.c[2]->layer == 1 &&
	      seen.c[3]->blob_offset == 3000 && seen.c[3]->layer == 2,
	      "prefetch of all visits every lazy file's fetchable chunks, in order (%zu)", seen.n);
	seen = (struct seen) { .stop_at = 2 };
	check(fs_tree_foreach_prefetch(t, true, collect_chunk, &seen) == -ECANCELED && seen.n == 2,
	      "a negative callback return stops prefetch iteration and is returned");
	fs_tree_free(t);
}

int main(void)
{
	test_basics();
	test_readdir();
	test_fixture_layers();
	test_opaque_same_layer();
	test_replacements();
	test_symlink_paths();
	test_hardlinks();
	test_many();
	test_skipped();
	test_chunks();
	return tap_done();
}
