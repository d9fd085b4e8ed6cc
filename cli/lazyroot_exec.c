/*
 * cli/lazyroot_exec.c: lazyroot-exec, the first process of a container that `lazyroot run` or a
 * machine's settings start.  systemd-nspawn 252 resolves --user with getent inside the
 * container, which busybox, alpine and distroless images lack; lazyroot resolves the image's
 * User on the host instead (cli/image_user.c) and hands the numbers to this program, which is
 * bind-mounted read-only at /run/lazyroot/exec and runs as the container's command:
 *
 *   lazyroot-exec [--started=PATH] [--uid=N --gid=N --groups=N,...] [--home=DIR] [--escaped]
 *                 -- COMMAND [ARG...]
 *
 * It writes one byte to PATH (so the host knows the command's own exit status from nspawn's
 * failures), sets HOME, the supplementary groups, gid and uid, then executes COMMAND, searched
 * in the container's $PATH when it has no slash.  --escaped: COMMAND and ARGs are C-escaped
 * (\\, \n, \t, \xHH), for settings files, which cannot hold a newline.  Exit statuses as docker's:
 * 125 the ids could not be set, 126 COMMAND is not executable, 127 it does not exist.
 *
 * Statically linked (the image may have no libc), so it uses nothing but libc, and no stdio
 * beyond one message line.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum { EXIT_SETUP = 125, EXIT_NOEXEC = 126, EXIT_NOTFOUND = 127 };
#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define GROUPS_MAX 65536

struct opts {
	const char *started, *home;
	bool ids, escaped;
	uid_t uid;
	gid_t gid;
	gid_t *groups;
	size_t n_groups;
};

static int fail(int status, const char *fmt, const char *arg, int err)
{
	fprintf(stderr, "lazyroot-exec: ");
	fprintf(stderr, fmt, arg);
	if (err)
		fprintf(stderr, ": %s", strerror(err));
	fputc('\n', stderr);
	return status;
}

/* A decimal id up to 2^31-1, the whole string. */
static bool parse_id(const char *s, const char **end, unsigned long *ret)
{
	unsigned long v = 0;
	const char *p = s;

	for (; *p >= '0' && *p <= '9'; p++) {
		v = v * 10 + (unsigned long)(*p - '0');
		if (v > 2147483647ul)
			return false;
	}
	if (p == s)
		return false;
	*end = p;
	*ret = v;
	return true;
}

static bool parse_groups(const char *s, struct opts *o)
{
	size_t n = *s ? 1 : 0;
	const char *end;

	for (const char *p = s; *p; p++)
		n += *p == ',';
	if (n > GROUPS_MAX)
		return false;
	o->groups = calloc(n ? n : 1, sizeof(gid_t));
	if (!o->groups)
		return false;
	for (o->n_groups = 0; o->n_groups < n; o->n_groups++, s = end + 1) {
		unsigned long g;

		if (!parse_id(s, &end, &g) || (*end != ',' && *end != 0))
			return false;
		o->groups[o->n_groups] = (gid_t)g;
	}
	return true;
}

/* Returns the index of COMMAND in argv, or -1 after a message. */
static int parse_args(int argc, char **argv, struct opts *o)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *end;
		unsigned long v;

		if (strcmp(a, "--") == 0)
			return i + 1 < argc ? i + 1 : -1;
		if (strncmp(a, "--started=", 10) == 0)
			o->started = a + 10;
		else if (strncmp(a, "--home=", 7) == 0)
			o->home = a + 7;
		else if (strcmp(a, "--escaped") == 0)
			o->escaped = true;
		else if (strncmp(a, "--uid=", 6) == 0 && parse_id(a + 6, &end, &v) && !*end)
			o->uid = (uid_t)v, o->ids = true;
		else if (strncmp(a, "--gid=", 6) == 0 && parse_id(a + 6, &end, &v) && !*end)
			o->gid = (gid_t)v;
		else if (strncmp(a, "--groups=", 9) == 0 && parse_groups(a + 9, o))
			continue;
		else
			return fail(-1, "bad argument '%s'", a, 0);
	}
	return -1;
}

static int hex(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Undoes the escaping of cli/exec_helper.c in place; false on a bad sequence. */
static bool unescape(char *s)
{
	char *w = s;

	for (const char *p = s; *p; p++) {
		if (*p != '\\') {
			*w++ = *p;
			continue;
		}
		p++;
		if (*p == '\\')
			*w++ = '\\';
		else if (*p == 'n')
			*w++ = '\n';
		else if (*p == 't')
			*w++ = '\t';
		else if (*p == 'x' && hex(p[1]) >= 0 && hex(p[2]) >= 0 && (hex(p[1]) | hex(p[2])))
			*w++ = (char)(hex(p[1]) << 4 | hex(p[2])), p += 2;
		else
			return false;
	}
	*w = 0;
	return true;
}

static int set_ids(const struct opts *o)
{
	char num[32];

	if (setgroups(o->n_groups, o->groups) < 0)
		return fail(EXIT_SETUP, "cannot set the supplementary groups%s", "", errno);
	snprintf(num, sizeof(num), "%lu", (unsigned long)o->gid);
	if (setgid(o->gid) < 0)
		return fail(EXIT_SETUP, "cannot set gid %s", num, errno);
	snprintf(num, sizeof(num), "%lu", (unsigned long)o->uid);
	if (setuid(o->uid) < 0)
		return fail(EXIT_SETUP, "cannot set uid %s", num, errno);
	return 0;
}

/* As docker reports it: 127 and "executable file not found in $PATH" / "no such file or
 * directory", 126 and the reason otherwise. */
static int exec_failed(const char *cmd, int err, bool searched)
{
	char what[PATH_MAX + 16];

	snprintf(what, sizeof(what), "exec: \"%s\"", cmd);
	if (err == ENOENT || err == ENOTDIR) {
		if (searched)
			return fail(EXIT_NOTFOUND, "%s: executable file not found in $PATH", what, 0);
		return fail(EXIT_NOTFOUND, "%s", what, ENOENT);
	}
	return fail(EXIT_NOEXEC, "%s", what, err);
}

/* execve of @cmd, searched in $PATH without a slash.  Unlike execvp, a file that is not a
 * binary or script is an error (126), never handed to /bin/sh. */
static int exec_command(char **argv)
{
	const char *path = getenv("PATH"), *p;
	char buf[PATH_MAX];
	int err = ENOENT;

	if (strchr(argv[0], '/')) {
		execve(argv[0], argv, environ);
		return exec_failed(argv[0], errno, false);
	}
	if (!path || !*path)
		path = DEFAULT_PATH;
	for (p = path;; p++) {
		size_t n = strcspn(p, ":");

		/* An empty element is the current directory for execvp; docker ignores it. */
		if (n > 0 && n + 1 + strlen(argv[0]) < sizeof(buf)) {
			snprintf(buf, sizeof(buf), "%.*s/%s", (int)n, p, argv[0]);
			execve(buf, argv, environ);
			/* A later directory may hold an executable one: remember why, go on. */
			if (errno != ENOENT && errno != ENOTDIR)
				err = errno;
		}
		p += n;
		if (!*p)
			break;
	}
	return exec_failed(argv[0], err, true);
}

int main(int argc, char **argv)
{
	struct opts o = {};
	int cmd, r;

	cmd = parse_args(argc, argv, &o);
	if (cmd < 0)
		return fail(EXIT_SETUP, "usage: lazyroot-exec [OPTIONS] -- COMMAND [ARG...]%s", "", 0);
	if (o.started) {
		int fd = open(o.started, O_WRONLY | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW);

		if (fd < 0 || write(fd, "1", 1) != 1)
			fail(0, "cannot mark '%s' as started, ignoring", o.started, errno);
		if (fd >= 0)
			close(fd);
	}
	if (o.home && setenv("HOME", o.home, 1) < 0)
		return fail(EXIT_SETUP, "cannot set HOME%s", "", errno);
	if (o.ids) {
		r = set_ids(&o);
		if (r != 0)
			return r;
	}
	if (o.escaped)
		for (int i = cmd; i < argc; i++)
			if (!unescape(argv[i]))
				return fail(EXIT_SETUP, "bad escape in '%s'", argv[i], 0);
	return exec_command(argv + cmd);
}
