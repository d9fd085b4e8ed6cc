/* tests/unit/test-private_users.c: --private-users values, pick (in range, aligned, the same
 * for a name, another one when a live mount holds it) and the shift of a tree's owners (ids
 * the range cannot hold refused). */
#include "cli/private_users.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cache/base/util.h"
#include "cache/store/mount_records.h"
#include "cli/exit_status.h"
#include "fs/tree.h"
#include "tap.h"

static void test_parse(void)
{
	static const char *bad[] = { "70000", "4294901760", "4294967296", "-65536", "+65536",
				     "0x10000", "", "65536 ", "yes", "pick2" };
	uint32_t base = 1;

	check(private_users_parse("no", "x", &base) == 0 && base == 0, "no is off");
	base = 1;
	check(private_users_parse("off", "x", &base) == 0 && base == 0, "off is off");
	base = 1;
	check(private_users_parse("0", "x", &base) == 0 && base == 0, "0 is off");
	check(private_users_parse("65536", "x", &base) == 0 && base == 65536, "65536 is a base");
	check(private_users_parse("4294836224", "x", &base) == 0 && base == 4294836224u,
	      "the last whole range below 2^32-1 is a base");
	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		base = 7;
		check(private_users_parse(bad[i], "x", &base) == -ERR_USAGE && base == 7,
		      "'%s' is a usage error", bad[i]);
	}
}

static bool in_pick_range(uint32_t b)
{
	return b % PRIVATE_USERS_RANGE == 0 && b >= PRIVATE_USERS_PICK_MIN &&
	       b < PRIVATE_USERS_PICK_MAX;
}

/* A record of a live mount (this process) holding @base. */
static int hold(const char *target, uint32_t base)
{
	_cleanup_free_ char *dir = NULL;
	struct mount_record rec;
	int r;

	r = mount_record_dir_for(target, &dir);
	if (r >= 0)
		r = mkdir_p(dir, 0700);
	if (r < 0)
		return r;
	rec = (struct mount_record) {
		.dir = dir, .target = (char *)target, .fuse_mountpoint = (char *)target,
		.upper = "none", .pid = getpid(), .private_users = base,
	};
	return mount_record_write(&rec);
}

static void test_pick(void)
{
	uint32_t a = 0, a2 = 0, b = 0, c = 0, via_parse = 0;
	struct mount_record rec = {};

	check(private_users_pick("machine-one", &a) == 0 && in_pick_range(a),
	      "pick gives an aligned base in nspawn's range (%u)", a);
	check(private_users_pick("machine-one", &a2) == 0 && a2 == a, "the same name, the same base");
	check(private_users_parse("pick", "machine-one", &via_parse) == 0 && via_parse == a,
	      "--private-users=pick picks for the name");
	check(private_users_pick("machine-two", &b) == 0 && in_pick_range(b),
	      "another name gets a base too (%u)", b);

	check(hold("/srv/held", a) == 0, "a live mount records base %u", a);
	check(mount_record_read("/srv/held", &rec) == 0 && rec.private_users == a,
	      "the record keeps its base");
	mount_record_done(&rec);
	check(private_users_pick("machine-one", &c) == 0 && in_pick_range(c) && c != a,
	      "a range a live mount holds is skipped (%u)", c);

	check(private_users_pick_prefer("machine-one", 100 * PRIVATE_USERS_RANGE, &c) == 0 &&
	      c == 100 * PRIVATE_USERS_RANGE, "a free preferred range is taken");
	check(private_users_pick_prefer("machine-two", a, &c) == 0 && c == b,
	      "a preferred range a live mount holds is not");
	check(private_users_pick_prefer("machine-two", PRIVATE_USERS_RANGE, &c) == 0 && c == b &&
	      private_users_pick_prefer("machine-two", 100 * PRIVATE_USERS_RANGE + 1, &c) == 0 &&
	      c == b, "nor one outside pick's bounds or unaligned");
	check(private_users_parse_prefer("pick", "machine-two", 100 * PRIVATE_USERS_RANGE, &c) == 0 &&
	      c == 100 * PRIVATE_USERS_RANGE, "--private-users=pick takes the preference");
}

static int add_entry(struct fs_tree *t, enum entry_type type, const char *path, uint32_t uid,
		     uint32_t gid)
{
	struct entry e = {
		.path = path, .type = type, .mode = type == ENTRY_DIR ? 0755 : 0644,
		.uid = uid, .gid = gid,
	};

	return fs_tree_add(t, &e);
}

/* An access ACL as the kernel stores it (little-endian, this test runs on little-endian
 * hosts): user::rw-, user:@uid:r--, group::r--, group:@gid:r--, mask::r--, other::---. */
static void acl_value(uint32_t uid, uint32_t gid, uint8_t ret[52])
{
	const struct { uint16_t tag, perm; uint32_t id; } e[] = {
		{ 0x01, 6, UINT32_MAX }, { 0x02, 4, uid }, { 0x04, 4, UINT32_MAX }, { 0x08, 4, gid },
		{ 0x10, 4, UINT32_MAX }, { 0x20, 0, UINT32_MAX },
	};
	uint32_t version = 2;

	memcpy(ret, &version, 4);
	for (size_t i = 0; i < ELEMENTSOF(e); i++) {
		memcpy(ret + 4 + 8 * i, &e[i].tag, 2);
		memcpy(ret + 6 + 8 * i, &e[i].perm, 2);
		memcpy(ret + 8 + 8 * i, &e[i].id, 4);
	}
}

/* /home/u/f owned by @uid:@gid, with an ACL naming @acl_uid and @acl_gid. */
static struct fs_tree *tree_with_acl(uint32_t uid, uint32_t gid, uint32_t acl_uid, uint32_t acl_gid)
{
	struct fs_tree *t = NULL;
	uint8_t acl[52];
	struct xattr x = { .name = "system.posix_acl_access", .value = acl, .size = sizeof(acl) };
	struct entry f = { .path = "home/u/f", .type = ENTRY_REG, .mode = 0640, .uid = uid,
			   .gid = gid, .xattrs = &x, .n_xattrs = 1 };

	acl_value(acl_uid, acl_gid, acl);
	if (fs_tree_new(&t) < 0 || fs_tree_begin_layer(t) < 0 ||
	    add_entry(t, ENTRY_DIR, "", 0, 0) < 0 || add_entry(t, ENTRY_DIR, "home", 0, 0) < 0 ||
	    add_entry(t, ENTRY_DIR, "home/u", 1000, 1000) < 0 || fs_tree_add(t, &f) < 0 ||
	    fs_tree_finish(t) < 0)
		return fs_tree_free(t);
	return t;
}

static struct fs_tree *tree_with(uint32_t uid, uint32_t gid)
{
	return tree_with_acl(uid, gid, 1, 1);
}

static void test_acl(void)
{
	_cleanup_(fs_tree_freep) struct fs_tree *t = tree_with_acl(0, 0, 1000, 1001), *bad = NULL;
	uint8_t want[52];
	const void *v = NULL;
	fs_ino_t ino = 0;
	size_t n = 0;

	acl_value(5 * 65536 + 1000, 5 * 65536 + 1001, want);
	check(t && private_users_apply(t, 5 * PRIVATE_USERS_RANGE) == 0, "a tree with an ACL shifts");
	ino = t ? fs_tree_count(t) : 0;   /* breadth first: the file is numbered last */
	check(t && fs_tree_getxattr(t, ino, "system.posix_acl_access", &v, &n) == 0 &&
	      n == sizeof(want) && memcmp(v, want, n) == 0,
	      "the ACL's user and group entries are shifted, the others kept");
	bad = tree_with_acl(0, 0, 1000, 65536);
	check(bad && private_users_apply(bad, PRIVATE_USERS_RANGE) == -ERANGE,
	      "an ACL naming an id of 65536 or more is refused");
}

static void test_apply(void)
{
	_cleanup_(fs_tree_freep) struct fs_tree *t = tree_with(1000, 65535), *off = NULL,
						*bad = NULL, *badgid = NULL;
	fs_ino_t ino = 0, dir = 0;
	struct stat st;

	check(t && private_users_apply(t, 3 * PRIVATE_USERS_RANGE) == 0, "ids below 65536 shift");
	check(fs_tree_lookup(t, FS_ROOT_INO, "home", &dir) == 0 &&
	      fs_tree_lookup(t, dir, "u", &dir) == 0 && fs_tree_lookup(t, dir, "f", &ino) == 0 &&
	      fs_tree_stat(t, ino, &st) == 0 && st.st_uid == 3 * 65536 + 1000 &&
	      st.st_gid == 3 * 65536 + 65535, "a file's owner and group show shifted");
	check(fs_tree_stat(t, FS_ROOT_INO, &st) == 0 && st.st_uid == 3 * 65536 &&
	      st.st_gid == 3 * 65536, "the root shows owned by the base");

	off = tree_with(70000, 1);
	check(off && private_users_apply(off, 0) == 0 && fs_tree_stat(off, FS_ROOT_INO, &st) == 0 &&
	      st.st_uid == 0, "off: any id, nothing shifted");
	bad = tree_with(70000, 1);
	check(bad && private_users_apply(bad, PRIVATE_USERS_RANGE) == -ERANGE,
	      "an owner of 65536 or more is refused");
	badgid = tree_with(1, 65536);
	check(badgid && private_users_apply(badgid, PRIVATE_USERS_RANGE) == -ERANGE,
	      "a group of 65536 or more is refused");
}

int main(void)
{
	char dir[] = "/tmp/test-private-users.XXXXXX";

	if (!mkdtemp(dir))
		return 1;
	setenv("LAZYROOT_RUNTIME_DIR", dir, 1);
	test_parse();
	test_pick();
	test_apply();
	test_acl();
	{
		char cmd[64];

		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
		if (system(cmd) != 0)
			fprintf(stderr, "could not remove %s\n", dir);
	}
	return tap_done();
}
