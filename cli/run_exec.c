/*
 * cli/run_exec.c: the command of `lazyroot run` through lazyroot-exec; see run_exec.h.
 *
 * The mark is a file in lazyroot's private runtime directory, mode 0666 and bound read-write at
 * EXEC_HELPER_STARTED_PATH: the helper runs as container root, which under private users is an
 * unprivileged host uid, and writing a file every uid may write needs no mapping.  Only the
 * container sees it; the worst it can do is make its own exit status read as 125.
 */
#include "run_exec.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cache/base/error.h"
#include "cache/base/log.h"
#include "cache/base/util.h"
#include "cli/exec_helper.h"
#include "cli/image_user.h"
#include "cli/nspawn.h"

/* Takes --user=X, --user X, -u X and -uX out of @args (the last one given wins). */
static int take_user_option(char **args, char ***ret_rest, const char **ret_user)
{
	_cleanup_strv_free_ char **rest = NULL;

	*ret_user = NULL;
	for (char **a = args; a && *a; a++) {
		if (startswith(*a, "--user="))
			*ret_user = *a + 7;
		else if ((streq(*a, "--user") || streq(*a, "-u")) && a[1])
			*ret_user = *++a;
		else if (startswith(*a, "-u") && (*a)[2])
			*ret_user = *a + 2;
		else if (strv_push(&rest, *a) < 0)
			return -ENOMEM;
	}
	*ret_rest = TAKE_PTR(rest);
	return 0;
}

/* True when the user's options set HOME (--setenv/-E), which then wins over passwd's. */
static bool args_set_home(char **args)
{
	for (char **a = args; a && *a; a++) {
		const char *v = NULL;

		if (startswith(*a, "--setenv="))
			v = *a + 9;
		else if (startswith(*a, "-E") && (*a)[2])
			v = *a + 2;
		else if ((streq(*a, "--setenv") || streq(*a, "-E")) && a[1])
			v = *++a;
		if (v && startswith(v, "HOME="))
			return true;
	}
	return false;
}

static bool env_sets_home(char **env)
{
	for (char **e = env; e && *e; e++)
		if (startswith(*e, "HOME="))
			return true;
	return false;
}

static int resolve_user(const char *root, const char *spec, struct image_user **ret)
{
	_cleanup_close_ int fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int r;

	if (fd < 0)
		return log_error_errno(errno, "cannot open '%s': %m", root);
	error_clear();
	r = image_user_resolve(fd, spec, ret);
	if (r == -ESRCH) {
		/* docker's words: "unable to find user NAME: no matching entries in passwd file" */
		log_error("%s", error_message());
		error_clear();
	} else if (r < 0) {
		log_error("cannot resolve user '%s': %s", spec ? spec : "", error_take(r));
	}
	return r;
}

/* The mark file, empty, writable by every uid. */
static int started_file_new(const char *root, char **ret)
{
	_cleanup_free_ char *p = NULL;
	_cleanup_close_ int fd = -EBADF;

	if (asprintf(&p, "%s.started", root) < 0)
		return -ENOMEM;
	fd = open(p, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0666);
	if (fd < 0 || fchmod(fd, 0666) < 0)
		return log_error_errno(errno, "cannot create '%s': %m", p);
	*ret = TAKE_PTR(p);
	return 0;
}

/* The command to run: the user's, else the image's Entrypoint + Cmd; -ENOEXEC for none. */
static int command_of(const struct image_config *config, char **command, char ***ret)
{
	_cleanup_strv_free_ char **c = NULL;

	for (char **a = command; a && *a; a++)
		if (strv_push(&c, *a) < 0)
			return -ENOMEM;
	for (char **a = command ? NULL : config->entrypoint; a && *a; a++)
		if (strv_push(&c, *a) < 0)
			return -ENOMEM;
	for (char **a = command ? NULL : config->cmd; a && *a; a++)
		if (strv_push(&c, *a) < 0)
			return -ENOMEM;
	if (!c)
		return -ENOEXEC;
	*ret = TAKE_PTR(c);
	return 0;
}

static int push_bind(char ***args, const char *option, const char *host, const char *dest)
{
	char *s;

	if (asprintf(&s, "%s=%s:%s", option, host, dest) < 0)
		return -ENOMEM;
	if (strv_consume(args, s) < 0) {
		free(s);
		return -ENOMEM;
	}
	return 0;
}

/* Our binds first, then the user's options: theirs come later, as nspawn_build_argv wants. */
static int nspawn_args_with_binds(const char *helper, const char *started, char **user_args,
				  char ***ret)
{
	_cleanup_strv_free_ char **args = NULL;

	if (push_bind(&args, "--bind-ro", helper, EXEC_HELPER_CONTAINER_PATH) < 0 ||
	    push_bind(&args, "--bind", started, EXEC_HELPER_STARTED_PATH) < 0)
		return -ENOMEM;
	for (char **a = user_args; a && *a; a++)
		if (strv_push(&args, *a) < 0)
			return -ENOMEM;
	*ret = TAKE_PTR(args);
	return 0;
}

int run_exec_prepare(struct run_exec *x, const char *root, const struct image_config *config,
		     char **nspawn_args, char **command)
{
	_cleanup_(image_user_freep) struct image_user *user = NULL;
	_cleanup_strv_free_ char **rest = NULL, **cmd = NULL;
	_cleanup_free_ char *helper = NULL;
	const char *user_spec;
	int r;

	if (config)
		x->config = *config;
	if (nspawn_args_have(nspawn_args, "--boot", 'b')) {
		/* An init runs as root and takes its arguments from nspawn: nothing to do. */
		for (char **a = nspawn_args; a && *a; a++)
			if (strv_push(&x->nspawn_args, *a) < 0)
				return -ENOMEM;
		for (char **a = command; a && *a; a++)
			if (strv_push(&x->command, *a) < 0)
				return -ENOMEM;
		return 0;
	}
	x->config.user = NULL;
	r = command_of(&x->config, command, &cmd);
	if (r < 0)
		return r;
	if (take_user_option(nspawn_args, &rest, &user_spec) < 0)
		return log_error_errno(ENOMEM, "out of memory");
	r = resolve_user(root, user_spec ? user_spec : config ? config->user : NULL, &user);
	if (r < 0)
		return r;
	r = exec_helper_path(&helper);
	if (r < 0)
		return log_error("cannot start the command: %s", error_take(r)), r;
	r = started_file_new(root, &x->started);
	if (r < 0)
		return r;
	r = nspawn_args_with_binds(helper, x->started, rest, &x->nspawn_args);
	if (r >= 0)
		r = exec_helper_argv(&(struct exec_helper_args) {
			.user = user,
			.started = EXEC_HELPER_STARTED_PATH,
			.home = env_sets_home(x->config.env) || args_set_home(rest) ? NULL : user->home,
		}, cmd, &x->command);
	if (r < 0)
		return log_error_errno(r, "out of memory");
	return 0;
}

int run_exec_status(const struct run_exec *x, int status)
{
	struct stat st;

	if (status < 0 || !x->started)
		return status;
	if (stat(x->started, &st) < 0 || st.st_size == 0) {
		log_debug("systemd-nspawn exited with %d before the command started", status);
		return -ECANCELED;
	}
	return status;
}

void run_exec_done(struct run_exec *x)
{
	if (x->started)
		(void)unlink(x->started);
	free(x->started);
	x->started = NULL;
	x->nspawn_args = strv_free(x->nspawn_args);
	x->command = strv_free(x->command);
}
