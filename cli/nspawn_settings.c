/*
 * cli/nspawn_settings.c: an image config as the text of a systemd.nspawn(5) settings file.
 *
 * How nspawn 252 reads the values written here (src/nspawn/nspawn-gperf.gperf):
 *   - Parameters= and Environment= are word lists (config_parse_strv: quotes removed, a
 *     backslash is an ordinary character, no specifiers).  Every word is written in double
 *     quotes; a double quote in it is closed, given in single quotes, and reopened, as a shell
 *     would.  A line cannot hold a newline: the command goes to lazyroot-exec C-escaped then
 *     (--escaped), an Env entry with one is refused.
 *   - WorkingDirectory= is a path taken as is (no quotes), trimmed: it must be absolute and
 *     without control characters or white space at its ends.
 *   - BindReadOnly= is SOURCE:DEST with backslash escapes: the helper's path is refused unless
 *     plain.
 * '%' has no meaning in any of them (nspawn expands no specifiers in settings files), so it is
 * written as is.
 */
#include "nspawn_settings.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cache/base/error.h"
#include "cli/exec_helper.h"

/* The inits nspawn --boot runs itself (in this order): an image whose command is one of them
 * is booted, its arguments passed on. */
static const char *const boot_inits[] = {
	"/usr/lib/systemd/systemd", "/lib/systemd/systemd", "/sbin/init",
};
/* Other inits: run as the container's PID 1 as they are, as root, without the helper. */
static const char *const other_inits[] = { "/init", "/usr/sbin/init", "/bin/init" };

static bool in_list(const char *s, const char *const *list, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (streq(s, list[i]))
			return true;
	return false;
}

/* Appends " \"word\"" to @f, quoted for config_parse_strv. */
static void put_word(FILE *f, const char *w)
{
	fputs(" \"", f);
	for (; *w; w++)
		if (*w == '"')
			fputs("\"'\"'\"", f);
		else
			fputc(*w, f);
	fputc('"', f);
}

static bool has_newline(const char *s)
{
	return strpbrk(s, "\n\r") != NULL;
}

static int put_parameters(FILE *f, char **argv)
{
	fputs("Parameters=", f);
	for (char **a = argv; *a; a++) {
		if (has_newline(*a))
			return error_set(-EINVAL, "argument '%s' has a newline a settings file "
					 "cannot hold", *a);
		put_word(f, *a);
	}
	fputc('\n', f);
	return 0;
}

static int put_environment(FILE *f, char **env)
{
	for (char **e = env; e && *e; e++) {
		if (has_newline(*e) || !strchr(*e, '='))
			return error_set(-EINVAL, "Env entry '%s': not NAME=VALUE on one line", *e);
		fputs("Environment=", f);
		put_word(f, *e);
		fputc('\n', f);
	}
	return 0;
}

static int put_working_dir(FILE *f, const char *dir)
{
	size_t n;

	if (!dir || !*dir)
		return 0;
	n = strlen(dir);
	if (dir[0] != '/' || exec_helper_needs_escape(dir) || dir[n - 1] == ' ')
		return error_set(-EINVAL, "WorkingDir '%s': not an absolute path a settings file "
				 "can hold", dir);
	fprintf(f, "WorkingDirectory=%s\n", dir);
	return 0;
}

static bool env_has(char **env, const char *name)
{
	size_t n = strlen(name);

	for (char **e = env; e && *e; e++)
		if (strncmp(*e, name, n) == 0 && (*e)[n] == '=')
			return true;
	return false;
}

/* Only characters that BindReadOnly= takes literally. */
static bool path_is_plain(const char *p)
{
	return p[0] == '/' && p[strspn(p, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
				   "0123456789/._+-@")] == 0;
}

static int image_command(const struct image_config *cfg, char ***ret)
{
	_cleanup_strv_free_ char **cmd = NULL;

	for (char **a = cfg->entrypoint; a && *a; a++)
		if (strv_push(&cmd, *a) < 0)
			return -ENOMEM;
	for (char **a = cfg->cmd; a && *a; a++)
		if (strv_push(&cmd, *a) < 0)
			return -ENOMEM;
	if (!cmd)
		return error_set(-ENOEXEC, "the image has no Entrypoint or Cmd");
	*ret = TAKE_PTR(cmd);
	return 0;
}

/* The user's ids: given, or resolved from the tree (without one, numbers only). */
static int settings_user(const struct nspawn_settings_spec *spec, struct image_user **ret)
{
	_cleanup_close_ int fd = -EBADF;

	if (!spec->root_dir)
		return image_user_resolve_buf(spec->config->user, NULL, 0, NULL, 0, ret);
	fd = open(spec->root_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return error_set(-errno, "cannot open '%s'", spec->root_dir);
	return image_user_resolve(fd, spec->config->user, ret);
}

/* Boot=no and the helper's command line; *ret_helper the host path to bind. */
static int put_helper_command(FILE *f, const struct nspawn_settings_spec *spec, char **command,
			      char **ret_helper)
{
	_cleanup_(image_user_freep) struct image_user *resolved = NULL;
	_cleanup_strv_free_ char **argv = NULL;
	_cleanup_free_ char *helper = NULL;
	const struct image_user *user = spec->user;
	bool escape = false;
	int r;

	if (!user) {
		r = settings_user(spec, &resolved);
		if (r < 0)
			return r;
		user = resolved;
	}
	helper = strdup(spec->exec_helper ? spec->exec_helper : "");
	if (!helper)
		return -ENOMEM;
	if (!spec->exec_helper) {
		free(helper);
		r = exec_helper_path(&helper);
		if (r < 0)
			return r;
	}
	if (!path_is_plain(helper))
		return error_set(-EINVAL, "exec helper path '%s' has characters BindReadOnly= "
				 "would read otherwise", helper);
	for (char **a = command; *a; a++)
		escape = escape || exec_helper_needs_escape(*a);
	r = exec_helper_argv(&(struct exec_helper_args) {
		.user = user, .escape = escape,
		.home = env_has(spec->config->env, "HOME") ? NULL : user->home,
	}, command, &argv);
	if (r < 0)
		return r;
	fputs("Boot=no\n", f);
	r = put_parameters(f, argv);
	if (r < 0)
		return r;
	*ret_helper = TAKE_PTR(helper);
	return 0;
}

static int put_command(FILE *f, const struct nspawn_settings_spec *spec, char **ret_helper)
{
	_cleanup_strv_free_ char **command = NULL;
	int r;

	r = image_command(spec->config, &command);
	if (r < 0)
		return r;
	if (in_list(command[0], boot_inits, ELEMENTSOF(boot_inits))) {
		fputs("Boot=yes\n", f);
		return command[1] ? put_parameters(f, command + 1) : 0;
	}
	if (in_list(command[0], other_inits, ELEMENTSOF(other_inits))) {
		fputs("Boot=no\n", f);
		return put_parameters(f, command);
	}
	return put_helper_command(f, spec, command, ret_helper);
}

static void put_comment(FILE *f, const char *comment)
{
	fputs("# written by lazyroot", f);
	if (comment) {
		fputs(": ", f);
		for (const char *c = comment; *c; c++)
			fputc((unsigned char)*c < 0x20 ? '?' : *c, f);
	}
	fputc('\n', f);
}

int nspawn_settings_format(const struct nspawn_settings_spec *spec, char **ret_text)
{
	_cleanup_free_ char *text = NULL, *helper = NULL;
	size_t len = 0;
	FILE *f;
	int r;

	if (!spec || !spec->config)
		return -EINVAL;
	f = open_memstream(&text, &len);
	if (!f)
		return -ENOMEM;
	put_comment(f, spec->comment);
	fputs("[Exec]\n", f);
	r = put_command(f, spec, &helper);
	if (r >= 0)
		r = put_environment(f, spec->config->env);
	if (r >= 0)
		r = put_working_dir(f, spec->config->working_dir);
	if (r >= 0 && spec->private_users > 0)
		fprintf(f, "PrivateUsers=%u\n", spec->private_users);
	if (r >= 0 && helper)
		fprintf(f, "\n[Files]\nBindReadOnly=%s:%s\n", helper, EXEC_HELPER_CONTAINER_PATH);
	if (fclose(f) != 0 && r >= 0)
		r = -ENOMEM;
	if (r < 0)
		return r;
	*ret_text = TAKE_PTR(text);
	return 0;
}
