/* cli/nspawn.c: turns the image config (Entrypoint, Cmd, Env, WorkingDir, User) and the user's
 * nspawn options into one systemd-nspawn command line, as docker and podman would run it. */
#include "nspawn.h"

#include <inttypes.h>

#include "cache/base/util.h"

bool host_runs_systemd(void)
{
	return access("/run/systemd/system/", F_OK) == 0;
}

bool nspawn_args_have(char **args, const char *long_name, char short_name)
{
	size_t n = strlen(long_name);

	for (char **a = args; a && *a; a++) {
		if (strncmp(*a, long_name, n) == 0 && ((*a)[n] == 0 || (*a)[n] == '='))
			return true;
		/* A short option may start a group ("-qM name"), but never after the value. */
		if (short_name && (*a)[0] == '-' && (*a)[1] != '-' && strchr(*a + 1, short_name))
			return true;
	}
	return false;
}

static int push_option(char ***argv, const char *name, const char *value)
{
	_cleanup_free_ char *s = NULL;

	if (asprintf(&s, "%s=%s", name, value) < 0)
		return -ENOMEM;
	return strv_consume(argv, TAKE_PTR(s));
}

int nspawn_build_argv(const struct nspawn_request *r, char ***ret)
{
	_cleanup_strv_free_ char **argv = NULL;
	const struct image_config *cfg = r->config;
	char **user_args = r->user_args;
	int k = 0;

	k |= strv_push(&argv, "systemd-nspawn");
	k |= push_option(&argv, "--directory", r->directory);
	if (!host_runs_systemd()) {
		k |= strv_push(&argv, "--register=no");
		k |= strv_push(&argv, "--keep-unit");
	}
	if (r->quiet && !nspawn_args_have(user_args, "--quiet", 'q'))
		k |= strv_push(&argv, "--quiet");
	if (!nspawn_args_have(user_args, "--machine", 'M'))
		k |= push_option(&argv, "--machine", r->machine);
	/* The tree is owned by the range already: nothing to chown, and no other range. */
	if (r->private_users && !nspawn_args_have(user_args, "--private-users", 'U')) {
		_cleanup_free_ char *range = NULL;

		k |= asprintf(&range, "%" PRIu32 ":65536", r->private_users) < 0 ? -ENOMEM :
			push_option(&argv, "--private-users", range);
		k |= strv_push(&argv, "--private-users-ownership=off");
	}
	/* Without a terminal the container's stdio is ours, so output and status pass through. */
	if ((!isatty(STDIN_FILENO) || !isatty(STDOUT_FILENO)) &&
	    !nspawn_args_have(user_args, "--console", 0) && !nspawn_args_have(user_args, "--pipe", 'P'))
		k |= strv_push(&argv, "--console=pipe");
	if (cfg) {
		for (char **e = cfg->env; e && *e; e++)
			k |= push_option(&argv, "--setenv", *e);
		if (cfg->working_dir && *cfg->working_dir && !nspawn_args_have(user_args, "--chdir", 0))
			k |= push_option(&argv, "--chdir", cfg->working_dir);
		if (cfg->user && *cfg->user && !nspawn_args_have(user_args, "--user", 'u')) {
			/* nspawn takes a user name or number; "user:group" keeps the user part. */
			_cleanup_free_ char *user = strndup(cfg->user, strcspn(cfg->user, ":"));

			k |= user ? push_option(&argv, "--user", user) : -ENOMEM;
		}
	}
	if (k < 0)
		return -ENOMEM;
	/* The user's options come after ours, so that theirs win where nspawn lets the last win. */
	for (char **a = user_args; a && *a; a++)
		if (strv_push(&argv, *a) < 0)
			return -ENOMEM;

	if (strv_push(&argv, "--") < 0)
		return -ENOMEM;
	if (r->command && r->command[0]) {
		for (char **a = r->command; *a; a++)
			if (strv_push(&argv, *a) < 0)
				return -ENOMEM;
	} else {
		size_t n = 0;

		for (char **a = cfg ? cfg->entrypoint : NULL; a && *a; a++, n++)
			if (strv_push(&argv, *a) < 0)
				return -ENOMEM;
		for (char **a = cfg ? cfg->cmd : NULL; a && *a; a++, n++)
			if (strv_push(&argv, *a) < 0)
				return -ENOMEM;
		if (n == 0)
			return -ENOEXEC;
	}
	*ret = TAKE_PTR(argv);
	return 0;
}
