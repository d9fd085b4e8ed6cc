/* tests/unit/test-nspawn.c: the systemd-nspawn command line that `lazyroot run` builds. */
#include "cli/nspawn.h"

#include <errno.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>

#include "cache/base/util.h"
#include "tap.h"

static bool has(char **argv, const char *s)
{
	return strv_contains(argv, s);
}

static int index_of(char **argv, const char *s)
{
	for (int i = 0; argv && argv[i]; i++)
		if (streq(argv[i], s))
			return i;
	return -1;
}

/* The argv for a host where systemd is PID 1 (@booted) or is not: --register=no and
 * --keep-unit exactly when it is not. */
static void check_host_flags(bool booted)
{
	struct image_config cfg = { .cmd = (char *[]) { "/bin/true", NULL } };
	char **argv = NULL;
	int r;

	check(host_runs_systemd() == booted, "systemd detected as %s",
	      booted ? "PID 1 (/run/systemd/system exists)" : "absent (no /run/systemd/system)");
	r = nspawn_build_argv(&(struct nspawn_request) {
		.directory = "/d", .machine = "m", .config = &cfg }, &argv);
	check(r == 0 && has(argv, "--register=no") == !booted && has(argv, "--keep-unit") == !booted,
	      "--register=no --keep-unit %s", booted ? "left out" : "added");
	argv = strv_free(argv);
}

/* Both kinds of host, made in a mount namespace of our own: a tmpfs over /run (nothing of
 * systemd there), then /run/systemd/system created in it (sd_booted()'s mark).  The expected
 * answers are the test's own, not the function's. */
static void test_host_detection(void)
{
	if (unshare(CLONE_NEWNS) < 0 && unshare(CLONE_NEWUSER | CLONE_NEWNS) < 0) {
		printf("ok %d # SKIP no mount namespace: %s\n", ++tap_n, strerror(errno));
		return;
	}
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
	    mount("tmpfs", "/run", "tmpfs", 0, "mode=0755") < 0) {
		printf("ok %d # SKIP cannot mount a tmpfs on /run: %s\n", ++tap_n, strerror(errno));
		return;
	}
	check_host_flags(false);
	check(mkdir("/run/systemd", 0755) == 0 && mkdir("/run/systemd/system", 0755) == 0,
	      "/run/systemd/system made");
	check_host_flags(true);
	(void)umount2("/run", MNT_DETACH);
}

int main(void)
{
	char *env[] = { "PATH=/bin", "FOO=bar baz", NULL };
	char *entrypoint[] = { "/bin/sh", "-c", NULL };
	char *cmd[] = { "echo hi", NULL };
	struct image_config cfg = {
		.entrypoint = entrypoint, .cmd = cmd, .env = env,
		.working_dir = "/srv/work", .user = "1000:1000",
	};
	char *user_args[] = { "--setenv=X=1", "--bind", "/a:/b", NULL };
	char *command[] = { "/bin/true", "arg", NULL };
	char **argv = NULL;
	int r;

	/* The image's config supplies everything. */
	r = nspawn_build_argv(&(struct nspawn_request) {
		.directory = "/mnt/x", .machine = "demo", .config = &cfg, .quiet = true }, &argv);
	check(r == 0, "argv from the image config builds");
	check(streq(argv[0], "systemd-nspawn"), "argv[0] is systemd-nspawn");
	check(has(argv, "--directory=/mnt/x"), "the directory is passed");
	check(has(argv, "--machine=demo"), "the machine is named");
	check(has(argv, "--quiet"), "quiet unless verbose");
	check(has(argv, "--setenv=PATH=/bin") && has(argv, "--setenv=FOO=bar baz"),
	      "Env becomes --setenv, values kept whole");
	check(has(argv, "--chdir=/srv/work"), "WorkingDir becomes --chdir");
	check(has(argv, "--user=1000"), "User 'uid:gid' keeps the user part");
	{
		int dd = index_of(argv, "--");

		check(dd > 0 && streq(argv[dd + 1], "/bin/sh") && streq(argv[dd + 2], "-c") &&
		      streq(argv[dd + 3], "echo hi") && argv[dd + 4] == NULL,
		      "Entrypoint then Cmd follow '--'");
	}
	argv = strv_free(argv);

	/* The command line wins over the config; the user's options come after ours. */
	r = nspawn_build_argv(&(struct nspawn_request) {
		.directory = "/mnt/x", .machine = "demo", .config = &cfg, .user_args = user_args,
		.command = command }, &argv);
	check(r == 0, "argv with a command builds");
	check(!has(argv, "--quiet"), "not quiet when verbose");
	{
		int dd = index_of(argv, "--");

		check(dd > 0 && streq(argv[dd + 1], "/bin/true") && streq(argv[dd + 2], "arg") &&
		      argv[dd + 3] == NULL, "the given command replaces Entrypoint and Cmd");
		check(index_of(argv, "--bind") > index_of(argv, "--setenv=FOO=bar baz") &&
		      index_of(argv, "--bind") < dd && streq(argv[index_of(argv, "--bind") + 1], "/a:/b"),
		      "nspawn options pass through in order, after ours, before '--'");
	}
	argv = strv_free(argv);

	/* --machine given by the user: ours is not added. */
	{
		char *named[] = { "-M", "foo", NULL };

		r = nspawn_build_argv(&(struct nspawn_request) {
			.directory = "/d", .machine = "demo", .config = &cfg, .user_args = named },
			&argv);
		check(r == 0 && !has(argv, "--machine=demo") && has(argv, "foo"),
		      "a machine name given with -M is kept and ours dropped");
		argv = strv_free(argv);
	}
	check(nspawn_args_have((char *[]) { "--machine=x", NULL }, "--machine", 'M'),
	      "--machine=x is recognised");
	check(!nspawn_args_have((char *[]) { "--machinex", NULL }, "--machine", 'M'),
	      "a longer option name is not --machine");
	check(nspawn_args_have((char *[]) { "-qM", "x", NULL }, "--machine", 'M'),
	      "a short option inside a group is recognised");

	/* Nothing to run. */
	{
		struct image_config empty = {};

		r = nspawn_build_argv(&(struct nspawn_request) {
			.directory = "/d", .machine = "m", .config = &empty }, &argv);
		check(r == -ENOEXEC && argv == NULL, "no command and no Entrypoint/Cmd is -ENOEXEC");
	}
	test_host_detection();
	return tap_done();
}
