/* tests/unit/test-image_user.c: an image's User resolved from passwd and group contents as
 * docker (runc's GetExecUser) resolves it, hostile lines included. */
#include "cli/image_user.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cache/base/error.h"
#include "tap.h"

static const char passwd[] =
	"root:x:0:0:root:/root:/bin/sh\n"
	"daemon:x:1:1:daemon:/usr/sbin:/bin/false\n"
	"  app:x:1000:1001:App:/home/app:/bin/sh  \r\n"
	"\n"
	"# a comment\n"
	"dup:x:1000:7:second entry for uid 1000:/nowhere:/bin/sh\n"
	"nohome:x:1200:1200\n";
static const char group[] =
	"root:x:0:root\n"
	"wheel:x:10:root,app\n"
	"staff:x:50:bob,app,carol\n"
	"apps:x:1001:\n"
	"video:x:44:application\n"   /* "application" is not "app" */
	"audio:x:29:bob,app\n";

/* Resolves @spec against the files above; NULL on failure (*r says why). */
static struct image_user *resolve(const char *spec, int *r)
{
	struct image_user *u = NULL;

	*r = image_user_resolve_buf(spec, passwd, strlen(passwd), group, strlen(group), &u);
	return *r < 0 ? NULL : u;
}

static bool groups_are(const struct image_user *u, size_t n, const uint32_t *want)
{
	if (!u || u->n_groups != n)
		return false;
	return n == 0 || memcmp(u->groups, want, n * sizeof(uint32_t)) == 0;
}

static void test_names_and_numbers(void)
{
	struct image_user *u;
	int r;

	u = resolve("app", &r);
	check(u && u->uid == 1000 && u->gid == 1001 && streq(u->home, "/home/app"),
	      "a name gives uid, gid and home from its passwd entry (white space trimmed)");
	check(groups_are(u, 3, (uint32_t[]) { 10, 50, 29 }),
	      "a name's supplementary groups are the groups listing it, in file order");
	image_user_free(u);

	u = resolve("1000", &r);
	check(u && u->uid == 1000 && u->gid == 1001 && streq(u->home, "/home/app") &&
	      groups_are(u, 3, (uint32_t[]) { 10, 50, 29 }),
	      "a uid with an entry is that entry (the first one), groups by its name");
	image_user_free(u);

	u = resolve("4242", &r);
	check(u && u->uid == 4242 && u->gid == 0 && streq(u->home, "/") && u->n_groups == 0,
	      "a uid without an entry runs as is, gid 0, home /, no groups");
	image_user_free(u);

	u = resolve(NULL, &r);
	check(u && u->uid == 0 && u->gid == 0 && streq(u->home, "/root") &&
	      groups_are(u, 2, (uint32_t[]) { 0, 10 }), "no user is root, from root's entry");
	image_user_free(u);

	u = resolve("", &r);
	check(u && u->uid == 0 && streq(u->home, "/root"), "an empty User is root");
	image_user_free(u);
}

static void test_groups(void)
{
	struct image_user *u;
	int r;

	u = resolve("app:staff", &r);
	check(u && u->uid == 1000 && u->gid == 50 && u->n_groups == 0,
	      "name:group sets the gid from the group, and no supplementary groups");
	image_user_free(u);

	u = resolve("1000:44", &r);
	check(u && u->uid == 1000 && u->gid == 44 && u->n_groups == 0, "uid:gid with entries");
	image_user_free(u);

	u = resolve("5000:6000", &r);
	check(u && u->uid == 5000 && u->gid == 6000 && streq(u->home, "/"),
	      "uid:gid without entries are used as they are");
	image_user_free(u);

	u = resolve("1000:wheel", &r);
	check(u && u->uid == 1000 && u->gid == 10, "uid:group");
	image_user_free(u);

	u = resolve("app:staff:ignored", &r);
	check(u && u->gid == 50, "a third part is ignored, as runc does");
	image_user_free(u);

	u = resolve("nohome", &r);
	check(u && u->uid == 1200 && streq(u->home, ""), "a short passwd line reads as empty fields");
	image_user_free(u);
}

static void test_unknown(void)
{
	struct image_user *u;
	int r;

	error_clear();
	u = resolve("nobody", &r);
	check(!u && r == -ESRCH && error_message() &&
	      streq(error_message(), "unable to find user nobody: no matching entries in passwd file"),
	      "an unknown name fails as docker says it");
	u = resolve("app:nogroup", &r);
	check(!u && r == -ESRCH && error_message() &&
	      strstr(error_message(), "unable to find group nogroup"), "an unknown group fails");
	u = resolve("2147483648", &r);
	check(!u && r == -ERANGE, "a uid over 2^31-1 is refused");
	u = resolve("1:99999999999999999999", &r);
	check(!u && r == -ERANGE, "a gid over 2^31-1 is refused (no overflow)");
	u = resolve("-1", &r);
	check(!u && r == -ESRCH, "'-1' is a name, not a number, and has no entry");
	u = NULL;
	r = image_user_resolve_buf("app", NULL, 0, NULL, 0, &u);
	check(r == -ESRCH && !u, "a name with no /etc/passwd at all fails");
	r = image_user_resolve_buf("1000:1000", NULL, 0, NULL, 0, &u);
	check(r == 0 && u && u->uid == 1000 && u->gid == 1000, "numbers need no /etc/passwd");
	image_user_free(u);
}

static void test_hostile(void)
{
	static const char evil_passwd[] =
		"evil:x:abc:0:not a number:/:/bin/sh\n"          /* runc would read uid 0 */
		"neg:x:-5:-5::/:/bin/sh\n"
		"plus:x:+7:7::/:/bin/sh\n"
		"space:x: 8:8::/:/bin/sh\n"
		"big:x:99999999999999999999999:1::/:/bin/sh\n"
		"nul\0:x:0:0::/:/bin/sh\n"
		"::::::\n"
		"zero:x:0001000:01::/z:/bin/sh";                 /* no final newline */
	static const char *ignored[] = { "evil", "neg", "plus", "space", "big", "nul" };
	struct image_user *u = NULL;
	char *huge, *many, *spec;
	size_t n;
	int r;

	for (size_t i = 0; i < ELEMENTSOF(ignored); i++) {
		r = image_user_resolve_buf(ignored[i], evil_passwd, sizeof(evil_passwd) - 1, NULL, 0,
					   &u);
		check(r == -ESRCH && !u, "passwd line '%s' with a bad id or a NUL is no entry",
		      ignored[i]);
	}
	r = image_user_resolve_buf("zero", evil_passwd, sizeof(evil_passwd) - 1, NULL, 0, &u);
	check(r == 0 && u && u->uid == 1000 && u->gid == 1 && streq(u->home, "/z"),
	      "leading zeros are decimal, a last line without newline counts");
	u = image_user_free(u);

	/* one 4 MiB line: a name that long is looked up without a line limit */
	n = 4u << 20;
	huge = malloc(n + 32);
	memset(huge, 'a', n);
	memcpy(huge + n, ":x:3000:3000::/h:/bin/sh\n", 26);
	spec = strndup(huge, n);
	spec[n - 1] = 'b';
	r = image_user_resolve_buf(spec, huge, n + 25, NULL, 0, &u);
	check(r == -ESRCH && !u, "a 4 MiB name differing in its last byte does not match");
	spec[n - 1] = 'a';
	r = image_user_resolve_buf(spec, huge, n + 25, NULL, 0, &u);
	check(r == 0 && u && u->uid == 3000 && u->gid == 3000, "the same 4 MiB name matches");
	u = image_user_free(u);
	free(spec);
	free(huge);

	/* 70000 groups listing the user: more than setgroups() takes */
	many = malloc(70000 * 24);
	n = 0;
	for (int i = 0; i < 70000; i++)
		n += (size_t)sprintf(many + n, "g%d:x:%d:app\n", i, 10000 + i);
	r = image_user_resolve_buf("app", passwd, strlen(passwd), many, n, &u);
	check(r == -E2BIG && !u, "more than 65536 supplementary groups are refused");
	free(many);

	r = image_user_resolve_buf("app:", passwd, strlen(passwd), "apps:x:zz:\n", 11, &u);
	check(r == 0 && u && u->gid == 1001 && u->n_groups == 0,
	      "'name:' is the user alone; a group line with a bad gid is no group");
	u = image_user_free(u);
}

static void put(const char *dir, const char *rel, const char *text)
{
	char p[512];
	FILE *f;

	snprintf(p, sizeof(p), "%s/%s", dir, rel);
	f = fopen(p, "w");
	if (f) {
		fputs(text, f);
		fclose(f);
	}
}

/* Mounts anywhere on the system make openat2() RESOLVE_IN_ROOT fail with EAGAIN after a ".."
 * now and then: a child mounts and unmounts a tmpfs in a loop (in a mount namespace of its
 * own) while etc/passwd, a symlink full of "..", is resolved many times. */
static void test_racing_mounts(int fd)
{
	struct image_user *u = NULL;
	int failed = 0, r;
	pid_t pid;

	pid = fork();
	if (pid == 0) {
		if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
			_exit(1);
		for (;;)
			if (mount("tmpfs", "/mnt", "tmpfs", 0, NULL) == 0)
				(void)umount2("/mnt", MNT_DETACH);
	}
	for (int i = 0; i < 20000; i++) {
		r = image_user_resolve(fd, "root", &u);
		failed += r < 0;
		u = image_user_free(u);
	}
	if (pid > 0) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
	}
	check(pid > 0 && failed == 0, "20000 resolutions racing mounts: %d failed", failed);
}

/* A tree on disk: what image_user_resolve() opens is the tree's, whatever the links say. */
static void test_tree(void)
{
	char dir[] = "/tmp/test-image_user.XXXXXX", p[512], q[512];
	struct image_user *u = NULL;
	int fd, r;

	if (!mkdtemp(dir)) {
		check(false, "a temporary directory");
		return;
	}
	snprintf(p, sizeof(p), "%s/etc", dir);
	mkdir(p, 0755);
	snprintf(p, sizeof(p), "%s/srv", dir);
	mkdir(p, 0755);
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	r = image_user_resolve(fd, "1000", &u);
	check(r == 0 && u && u->uid == 1000 && u->gid == 0, "no /etc/passwd: numbers still work");
	u = image_user_free(u);
	r = image_user_resolve(fd, "root", &u);
	check(r == -ESRCH, "no /etc/passwd: 'root' does not resolve");

	/* etc/passwd -> ../../../../../srv/pw: inside the tree that is /srv/pw, never the host's */
	put(dir, "srv/pw", "root:x:4321:4321:r:/inside:/bin/sh\n");
	snprintf(p, sizeof(p), "%s/etc/passwd", dir);
	r = symlink("../../../../../../../../srv/pw", p);
	r = image_user_resolve(fd, "root", &u);
	check(r == 0 && u && u->uid == 4321 && streq(u->home, "/inside"),
	      "a symlink climbing out of the tree resolves inside it");
	u = image_user_free(u);
	test_racing_mounts(fd);
	unlink(p);
	r = symlink("/srv/pw", p);
	r = image_user_resolve(fd, "root", &u);
	check(r == 0 && u && u->uid == 4321, "an absolute symlink resolves inside the tree");
	u = image_user_free(u);

	snprintf(q, sizeof(q), "%s/etc/group", dir);
	r = mkfifo(q, 0644);
	r = image_user_resolve(fd, "root", &u);
	check(r == -EINVAL && !u && error_message() && strstr(error_message(), "/etc/group"),
	      "a FIFO for /etc/group is refused, without blocking on it");
	u = (struct image_user *)1;
	r = image_user_resolve_or_root(fd, "", &u);
	check(r == 0 && !u, "no user: files that cannot be read leave nspawn's root");
	r = image_user_resolve_or_root(fd, "root", &u);
	check(r == -EINVAL, "a user: files that cannot be read are an error");
	unlink(q);
	r = mkdir(q, 0755);
	r = image_user_resolve(fd, "root", &u);
	check(r == -EINVAL && !u, "a directory for /etc/group is refused");
	rmdir(q);

	/* a sparse file over the limit: refused by its size, not read */
	r = open(q, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	check(r >= 0 && ftruncate(r, (off_t)IMAGE_USER_FILE_MAX + 1) == 0, "a sparse 16 MiB group");
	if (r >= 0)
		close(r);
	r = image_user_resolve(fd, "root", &u);
	check(r == -EFBIG && !u, "an /etc/group over 16 MiB is refused");
	unlink(q);

	unlink(p);
	snprintf(p, sizeof(p), "%s/srv/pw", dir);
	unlink(p);
	snprintf(p, sizeof(p), "%s/srv", dir);
	rmdir(p);
	snprintf(p, sizeof(p), "%s/etc", dir);
	rmdir(p);
	rmdir(dir);
	close(fd);
}

int main(void)
{
	test_tree();
	test_names_and_numbers();
	test_groups();
	test_unknown();
	test_hostile();
	return tap_done();
}
