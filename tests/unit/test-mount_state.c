/* tests/unit/test-mount_state.c: runtime state of mounts, path handling and mountinfo. */
#include <stdlib.h>
#include <sys/stat.h>

#include "cli/mount_state.h"
#include "cache/base/util.h"
#include "tap.h"

int main(void)
{
	char tmpl[] = "/tmp/test-mount-state.XXXXXX";
	_cleanup_free_ char *abs = NULL, *dir1 = NULL, *dir2 = NULL, *fstype = NULL;
	struct mount_state s = {}, got = {};
	int r;

	check(mkdtemp(tmpl) != NULL, "temporary runtime dir");
	setenv("LAZYROOT_RUNTIME_DIR", tmpl, 1);

	r = path_make_absolute("/tmp/../tmp/./nonexistent-leaf/", &abs);
	check(r == 0 && streq(abs, "/tmp/nonexistent-leaf"),
	      "the parent is resolved, the leaf is kept unresolved and trailing '/' dropped (got %s)",
	      abs ? abs : "(null)");
	free(abs);
	abs = NULL;
	check(path_make_absolute("/no/such/parent/leaf", &abs) == -ENOENT,
	      "a missing parent is -ENOENT");

	check(mount_state_dir_for("/a/b", &dir1) == 0 && mount_state_dir_for("/a/c", &dir2) == 0 &&
	      !streq(dir1, dir2) && startswith(dir1, tmpl), "state dirs differ per target, under RUNTIME");
	check(mount_state_read("/a/b", &got) == -ENOENT, "no state yet is -ENOENT");

	check(mkdir_p(dir1, 0700) == 0, "state dir created");
	s = (struct mount_state) {
		.dir = dir1, .target = "/a/b", .fuse_mountpoint = "/x/lower", .upper = "overlay",
		.image = "127.0.0.1:5000/demo:latest", .digest = "sha256:00", .pid = 1234,
	};
	check(mount_state_write(&s) == 0, "state written");
	r = mount_state_read("/a/b", &got);
	check(r == 0 && streq(got.target, "/a/b") && streq(got.fuse_mountpoint, "/x/lower") &&
	      streq(got.upper, "overlay") && streq(got.image, "127.0.0.1:5000/demo:latest") &&
	      streq(got.digest, "sha256:00") && got.pid == 1234 && streq(got.dir, dir1),
	      "state reads back as written");
	mount_state_done(&got);

	{
		_cleanup_free_ char *sub = NULL;

		(void)asprintf(&sub, "%s/lower/deeper", dir1);
		check(mkdir_p(sub, 0755) == 0, "nested dirs in the state dir");
	}
	check(mount_state_remove(dir1) == 0, "state dir removed with its contents");
	{
		struct stat st;

		check(stat(dir1, &st) < 0 && errno == ENOENT, "state dir is gone");
	}
	check(mount_state_remove(dir1) == 0, "removing a missing state dir is fine");

	check(mountinfo_find("/", &fstype) == 1 && fstype && *fstype, "'/' is a mountpoint with a type");
	check(mountinfo_find(tmpl, NULL) == 0, "a plain directory is not a mountpoint");

	(void)rmdir(tmpl);
	return tap_done();
}
