/* tests/unit/test-mount_records.c: where mounts are recorded, what a record says, and which
 * images count as mounted from which cache. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cache/store/mount_records.h"
#include "cache/base/util.h"
#include "tap.h"

/* A record for @target pinned to @digest, read from @cache_dir (NULL: an old record without
 * cache=), whose daemon is @pid. */
static int put_record(const char *target, const char *digest, const char *cache_dir, pid_t pid)
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
		.upper = "none", .image = "127.0.0.1:5000/demo:latest", .digest = (char *)digest,
		.cache_dir = (char *)cache_dir, .pid = pid,
	};
	return mount_record_write(&rec);
}

/* A pid that surely runs no daemon: a child we started and reaped. */
static pid_t dead_pid(void)
{
	pid_t pid = fork();

	if (pid == 0)
		_exit(0);
	(void)waitpid(pid, NULL, 0);
	return pid;
}

static void test_read_write(const char *rt)
{
	_cleanup_free_ char *dir1 = NULL, *dir2 = NULL, *sub = NULL;
	struct mount_record got = {};
	struct stat st;
	int r;

	check(mount_record_dir_for("/a/b", &dir1) == 0 && mount_record_dir_for("/a/c", &dir2) == 0 &&
	      !streq(dir1, dir2) && startswith(dir1, rt), "record dirs differ per target, under RUNTIME");
	check(mount_record_read("/a/b", &got) == -ENOENT, "no record yet is -ENOENT");

	check(put_record("/a/b", "sha256:00", "/var/cache/x", 1234) == 0, "record written");
	r = mount_record_read("/a/b", &got);
	check(r == 0 && streq(got.target, "/a/b") && streq(got.fuse_mountpoint, "/a/b") &&
	      streq(got.upper, "none") && streq(got.image, "127.0.0.1:5000/demo:latest") &&
	      streq(got.digest, "sha256:00") && streq(got.cache_dir, "/var/cache/x") &&
	      got.pid == 1234 && streq(got.dir, dir1), "record reads back as written");
	mount_record_done(&got);

	(void)asprintf(&sub, "%s/lower/deeper", dir1);
	check(mkdir_p(sub, 0755) == 0, "nested dirs in the record dir");
	check(mount_record_remove(dir1) == 0, "record dir removed with its contents");
	check(stat(dir1, &st) < 0 && errno == ENOENT, "record dir is gone");
	check(mount_record_remove(dir1) == 0, "removing a missing record dir is fine");
}

static void test_old_record(void)
{
	_cleanup_free_ char *dir = NULL, *info = NULL;
	struct mount_record got = {};
	FILE *f;

	(void)mount_record_dir_for("/old", &dir);
	(void)mkdir_p(dir, 0700);
	(void)asprintf(&info, "%s/info", dir);
	f = fopen(info, "we");
	if (f) {
		fprintf(f, "target=/old\nfuse=/old\nupper=none\nimage=x\ndigest=sha256:01\npid=%d\n",
			(int)getpid());
		fclose(f);
	}
	check(mount_record_read("/old", &got) == 0 && !got.cache_dir && streq(got.digest, "sha256:01"),
	      "a record without cache= reads, with no cache");
	mount_record_done(&got);
}

static int count_live(void *userdata, const struct mount_record *rec)
{
	(void)rec;
	(*(unsigned *)userdata)++;
	return 0;
}

int main(void)
{
	char rt[] = "/tmp/test-mount-records.XXXXXX";
	_cleanup_free_ char *cache_a = NULL, *cache_b = NULL, *link_a = NULL;
	_cleanup_strv_free_ char **in_a = NULL, **in_b = NULL, **via_link = NULL;
	unsigned live = 0;

	check(mkdtemp(rt) != NULL, "temporary runtime dir");
	setenv("LAZYROOT_RUNTIME_DIR", rt, 1);
	{
		_cleanup_free_ char *got = NULL;

		check(mount_records_runtime_dir(&got) == 0 && streq(got, rt),
		      "$LAZYROOT_RUNTIME_DIR is the runtime dir");
	}
	check(mount_records_mounted_digests(rt, &in_a) == 0 && !in_a,
	      "no mounts directory: nothing is mounted");
	test_read_write(rt);

	(void)asprintf(&cache_a, "%s/cache-a", rt);
	(void)asprintf(&cache_b, "%s/cache-b", rt);
	(void)asprintf(&link_a, "%s/link-a", rt);
	check(mkdir(cache_a, 0700) == 0 && mkdir(cache_b, 0700) == 0 && symlink(cache_a, link_a) == 0,
	      "two caches and a symlink to the first");
	check(put_record("/m/a", "sha256:aa", cache_a, getpid()) == 0 &&
	      put_record("/m/b", "sha256:bb", cache_b, getpid()) == 0 &&
	      put_record("/m/dead", "sha256:dd", cache_a, dead_pid()) == 0, "three records written");
	test_old_record();

	check(mount_records_foreach_live(count_live, &live) == 0 && live == 3,
	      "the live records are listed, not the one whose daemon died (got %u)", live);
	check(mount_records_mounted_digests(cache_a, &in_a) == 0 && strv_length(in_a) == 2 &&
	      strv_contains(in_a, "sha256:aa") && strv_contains(in_a, "sha256:01"),
	      "cache A: its own mount and the old record's image are mounted");
	check(mount_records_mounted_digests(cache_b, &in_b) == 0 && strv_length(in_b) == 2 &&
	      strv_contains(in_b, "sha256:bb") && !strv_contains(in_b, "sha256:aa"),
	      "cache B: a mount from cache A does not pin its image in B");
	check(mount_records_mounted_digests(link_a, &via_link) == 0 &&
	      strv_contains(via_link, "sha256:aa") && !strv_contains(via_link, "sha256:bb"),
	      "a cache named through a symlink is the same cache");
	check(mount_records_mounted_digests("/no/such/cache", &in_a) == -ENOENT,
	      "a cache directory that does not exist is -ENOENT");

	(void)unlink(link_a);
	{
		char *argv[] = { "rm", "-rf", rt, NULL };
		pid_t pid = fork();

		if (pid == 0) {
			execvp(argv[0], argv);
			_exit(127);
		}
		(void)waitpid(pid, NULL, 0);
	}
	return tap_done();
}
