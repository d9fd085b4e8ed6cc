/* cli/exec_helper.c: finds lazyroot-exec on the host and writes its command line; see
 * exec_helper.h. */
#include "exec_helper.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cache/base/error.h"

#ifndef LAZYROOT_LIBEXECDIR
#define LAZYROOT_LIBEXECDIR "/usr/local/libexec"
#endif

static int helper_next_to_self(char **ret)
{
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	char *slash;

	if (n <= 0)
		return -ENOENT;
	self[n] = 0;
	slash = strrchr(self, '/');
	if (!slash)
		return -ENOENT;
	*slash = 0;
	if (asprintf(ret, "%s/lazyroot-exec", self) < 0)
		return -ENOMEM;
	if (access(*ret, X_OK) < 0) {
		free(*ret);
		*ret = NULL;
		return -ENOENT;
	}
	return 0;
}

int exec_helper_path(char **ret)
{
	const char *env = getenv("LAZYROOT_EXEC_HELPER");
	const char *installed = LAZYROOT_LIBEXECDIR "/lazyroot/lazyroot-exec";
	char *p;

	if (env && *env) {
		if (access(env, X_OK) < 0)
			return error_set(-errno, "exec helper '%s' ($LAZYROOT_EXEC_HELPER)", env);
		p = strdup(env);
	} else if (helper_next_to_self(&p) == 0) {
		*ret = p;
		return 0;
	} else {
		if (access(installed, X_OK) < 0)
			return error_set(-errno, "exec helper '%s' (lazyroot-exec, not installed?)",
					 installed);
		p = strdup(installed);
	}
	if (!p)
		return -ENOMEM;
	*ret = p;
	return 0;
}

bool exec_helper_needs_escape(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return true;
	return false;
}

/* \\, \n, \t, \xHH for the other control characters; lazyroot_exec.c's unescape() undoes it. */
static char *escape(const char *s)
{
	char *out = malloc(strlen(s) * 4 + 1), *w = out;

	if (!out)
		return NULL;
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '\\')
			w += sprintf(w, "\\\\");
		else if (c == '\n')
			w += sprintf(w, "\\n");
		else if (c == '\t')
			w += sprintf(w, "\\t");
		else if (c < 0x20 || c == 0x7f)
			w += sprintf(w, "\\x%02x", c);
		else
			*w++ = (char)c;
	}
	*w = 0;
	return out;
}

static int push_fmt(char ***argv, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int push_fmt(char ***argv, const char *fmt, ...)
{
	va_list ap;
	char *s;
	int r;

	va_start(ap, fmt);
	r = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (r < 0)
		return -ENOMEM;
	r = strv_consume(argv, s);
	if (r < 0)
		free(s);
	return r;
}

static int push_ids(char ***argv, const struct image_user *u)
{
	_cleanup_free_ char *groups = NULL;
	size_t len = 0;
	int k = 0;

	groups = malloc(u->n_groups * 11 + 1);   /* "4294967295," at most per group */
	if (!groups)
		return -ENOMEM;
	groups[0] = 0;
	for (size_t i = 0; i < u->n_groups; i++)
		len += (size_t)sprintf(groups + len, "%s%u", i ? "," : "", u->groups[i]);
	k |= push_fmt(argv, "--uid=%u", u->uid);
	k |= push_fmt(argv, "--gid=%u", u->gid);
	k |= push_fmt(argv, "--groups=%s", groups);
	return k < 0 ? -ENOMEM : 0;
}

int exec_helper_argv(const struct exec_helper_args *a, char **command, char ***ret)
{
	_cleanup_strv_free_ char **argv = NULL;
	int k = 0;

	if (!command || !command[0])
		return -ENOEXEC;
	k |= strv_push(&argv, EXEC_HELPER_CONTAINER_PATH);
	if (a->started)
		k |= push_fmt(&argv, "--started=%s", a->started);
	if (a->user)
		k |= push_ids(&argv, a->user);
	if (a->home)
		k |= push_fmt(&argv, "--home=%s", a->home);
	if (a->escape)
		k |= strv_push(&argv, "--escaped");
	k |= strv_push(&argv, "--");
	if (k < 0)
		return -ENOMEM;
	for (char **c = command; *c; c++) {
		char *w = a->escape ? escape(*c) : strdup(*c);

		if (!w || strv_consume(&argv, w) < 0) {
			free(w);
			return -ENOMEM;
		}
	}
	*ret = TAKE_PTR(argv);
	return 0;
}
