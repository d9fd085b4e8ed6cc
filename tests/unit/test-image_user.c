/* tests/unit/test-image_user.c: an image's User resolved from passwd and group contents as
 * docker (runc's GetExecUser) resolves it, hostile lines included. */
#include "cli/image_user.h"

#include <errno.h>
#include <string.h>

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

int main(void)
{
	test_names_and_numbers();
	test_groups();
	test_unknown();
	test_hostile();
	return tap_done();
}
