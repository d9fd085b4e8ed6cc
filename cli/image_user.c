/*
 * cli/image_user.c: an image's User resolved from its /etc/passwd and /etc/group (rules in
 * image_user.h).  Both files are image data: read through an fd of the tree with every lookup
 * kept inside it (openat2 RESOLVE_IN_ROOT), checked to be a regular file before they are opened
 * for reading (a FIFO would block, a device could do anything), and bounded in size.  Lines are
 * taken as they are: no line limit, any byte but NUL (a line with one never matches).
 */
#include "image_user.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdbool.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "cache/base/error.h"

struct image_user *image_user_free(struct image_user *u)
{
	if (!u)
		return NULL;
	free(u->groups);
	free(u->home);
	free(u);
	return NULL;
}

/* A decimal id, the whole of [s, s+n): 1 when it is one, 0 when it is no number at all (a
 * name), -ERANGE when it is digits over IMAGE_ID_MAX. */
static int parse_id(const char *s, size_t n, uint32_t *ret)
{
	uint64_t v = 0;

	if (n == 0)
		return 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return 0;
		v = v * 10 + (uint64_t)(s[i] - '0');
		if (v > IMAGE_ID_MAX)
			return -ERANGE;
	}
	*ret = (uint32_t)v;
	return 1;
}

/* One line split at ':' into at most @max fields (pointers and lengths into the line). */
struct fields {
	const char *f[7];
	size_t len[7];
	size_t n;
};

static void split_fields(const char *line, size_t len, size_t max, struct fields *out)
{
	size_t start = 0;

	out->n = 0;
	for (size_t i = 0; i <= len && out->n < max; i++)
		if (i == len || line[i] == ':') {
			out->f[out->n] = line + start;
			out->len[out->n++] = i - start;
			start = i + 1;
		}
	for (size_t i = out->n; i < max; i++) {
		out->f[i] = "";
		out->len[i] = 0;
	}
}

static bool field_is(const struct fields *f, size_t i, const char *s)
{
	return f->len[i] == strlen(s) && memcmp(f->f[i], s, f->len[i]) == 0;
}

/* Calls @fn for each line of @buf with @nfields fields: blank lines, comments ('#') and lines
 * with a NUL are skipped, leading and trailing white space dropped.  Stops when @fn returns
 * non-zero and returns that. */
static int for_each_line(const char *buf, size_t len, size_t nfields,
			 int (*fn)(const struct fields *f, void *userdata), void *userdata)
{
	const char *p = buf, *end = buf + len;

	while (buf && p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p)), *e = nl ? nl : end;
		const char *s = p;
		struct fields f;
		int r;

		p = nl ? nl + 1 : end;
		while (s < e && (*s == ' ' || *s == '\t' || *s == '\r'))
			s++;
		while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
			e--;
		if (s == e || *s == '#' || memchr(s, 0, (size_t)(e - s)))
			continue;
		split_fields(s, (size_t)(e - s), nfields, &f);
		r = fn(&f, userdata);
		if (r != 0)
			return r;
	}
	return 0;
}

struct passwd_match {
	const char *name;     /* match by name, or */
	uint32_t uid;         /* by uid when name is NULL */
	struct image_user *u;
	char *matched_name;
};

static int passwd_line(const struct fields *f, void *userdata)
{
	struct passwd_match *m = userdata;
	uint32_t uid, gid;

	/* name:password:uid:gid:gecos:home:shell; ids that are no numbers make no entry */
	if (parse_id(f->f[2], f->len[2], &uid) != 1 || parse_id(f->f[3], f->len[3], &gid) != 1)
		return 0;
	if (m->name ? !field_is(f, 0, m->name) : uid != m->uid)
		return 0;
	m->matched_name = strndup(f->f[0], f->len[0]);
	free(m->u->home);
	m->u->home = strndup(f->f[5], f->len[5]);
	if (!m->matched_name || !m->u->home)
		return -ENOMEM;
	m->u->uid = uid;
	m->u->gid = gid;
	return 1;
}

struct group_match {
	const char *member;   /* collect groups listing this member, or */
	const char *name;     /* find the group by name, or */
	uint32_t gid;         /* by gid when both are NULL */
	struct image_user *u;
	size_t allocated;
};

static bool member_listed(const struct fields *f, const char *member)
{
	const char *p = f->f[3], *end = f->f[3] + f->len[3];
	size_t n = strlen(member);

	while (p < end) {
		const char *c = memchr(p, ',', (size_t)(end - p)), *e = c ? c : end;

		if ((size_t)(e - p) == n && memcmp(p, member, n) == 0)
			return true;
		p = e + 1;
	}
	return false;
}

static int group_line(const struct fields *f, void *userdata)
{
	struct group_match *m = userdata;
	uint32_t gid;

	/* name:password:gid:member,member... */
	if (parse_id(f->f[2], f->len[2], &gid) != 1)
		return 0;
	if (!m->member) {
		if (m->name ? !field_is(f, 0, m->name) : gid != m->gid)
			return 0;
		m->u->gid = gid;
		return 1;
	}
	if (!member_listed(f, m->member))
		return 0;
	if (m->u->n_groups >= IMAGE_USER_GROUPS_MAX)
		return error_set(-E2BIG, "user %s is in more than %u groups", m->member,
				 IMAGE_USER_GROUPS_MAX);
	if (GREEDY_REALLOC(m->u->groups, m->allocated, m->u->n_groups + 1) < 0)
		return -ENOMEM;
	m->u->groups[m->u->n_groups++] = gid;
	return 0;
}

/* The user part: uid, gid, home from passwd; sets *ret_name to the entry's name if one matched. */
static int resolve_user(const char *arg, const char *passwd, size_t passwd_len,
			struct image_user *u, char **ret_name)
{
	struct passwd_match m = { .u = u };
	int numeric, r;

	numeric = parse_id(arg, strlen(arg), &m.uid);
	if (numeric < 0)
		return error_set(numeric, "user %s: uids must be in range 0-%u", arg, IMAGE_ID_MAX);
	if (*arg && !numeric)
		m.name = arg;
	r = for_each_line(passwd, passwd_len, 7, passwd_line, &m);
	if (r < 0) {
		free(m.matched_name);
		return r;
	}
	if (r == 0 && *arg && !numeric)
		return error_set(-ESRCH, "unable to find user %s: no matching entries in passwd file",
				 arg);
	if (r == 0)
		u->uid = m.uid;
	*ret_name = m.matched_name;
	return 0;
}

static int resolve_group(const char *arg, const char *member, const char *group,
			 size_t group_len, struct image_user *u)
{
	struct group_match m = { .u = u, .member = *arg ? NULL : member };
	int numeric = 0, r;

	if (*arg) {
		numeric = parse_id(arg, strlen(arg), &m.gid);
		if (numeric < 0)
			return error_set(numeric, "group %s: gids must be in range 0-%u", arg,
					 IMAGE_ID_MAX);
		if (!numeric)
			m.name = arg;
	}
	r = for_each_line(group, group_len, 4, group_line, &m);
	if (r < 0)
		return r;
	if (r == 0 && m.name)
		return error_set(-ESRCH, "unable to find group %s: no matching entries in group file",
				 arg);
	if (r == 0 && *arg)
		u->gid = m.gid;
	return 0;
}

int image_user_resolve_buf(const char *spec, const char *passwd, size_t passwd_len,
			   const char *group, size_t group_len, struct image_user **ret)
{
	_cleanup_(image_user_freep) struct image_user *u = NULL;
	_cleanup_free_ char *user_arg = NULL, *matched = NULL;
	const char *group_arg = "";
	char *colon;
	int r;

	/* "user:group[:ignored]", as runc splits it */
	user_arg = strdup(spec ? spec : "");
	u = calloc(1, sizeof(*u));
	if (!user_arg || !u)
		return -ENOMEM;
	colon = strchr(user_arg, ':');
	if (colon) {
		*colon = 0;
		group_arg = colon + 1;
		colon = strchr(colon + 1, ':');
		if (colon)
			*colon = 0;
	}
	u->home = strdup("/");
	if (!u->home)
		return -ENOMEM;
	r = resolve_user(user_arg, passwd, passwd_len, u, &matched);
	if (r < 0)
		return r;
	if (*group_arg || matched) {
		r = resolve_group(group_arg, matched, group, group_len, u);
		if (r < 0)
			return r;
	}
	*ret = TAKE_PTR(u);
	return 0;
}

/* The contents of @path (relative) under @root_fd, resolved as inside the tree; *ret NULL when
 * it does not exist. */
static int read_image_file(int root_fd, const char *path, char **ret, size_t *ret_len)
{
	struct open_how how = {
		.flags = O_PATH | O_CLOEXEC,
		.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV,
	};
	_cleanup_close_ int pfd = -EBADF, fd = -EBADF;
	char proc[64];
	struct stat st;
	int r;

	pfd = (int)syscall(SYS_openat2, root_fd, path, &how, sizeof(how));
	if (pfd < 0 && (errno == ENOENT || errno == ENOTDIR)) {
		*ret = NULL;
		*ret_len = 0;
		return 0;
	}
	if (pfd < 0)
		return error_set(-errno, "image file /%s: cannot open it", path);
	if (fstat(pfd, &st) < 0)
		return error_set(-errno, "image file /%s: cannot stat it", path);
	if (!S_ISREG(st.st_mode))
		return error_set(-EINVAL, "image file /%s: not a regular file", path);
	if ((uint64_t)st.st_size > IMAGE_USER_FILE_MAX)
		return error_set(-EFBIG, "image file /%s: larger than %u MiB", path,
				 IMAGE_USER_FILE_MAX >> 20);
	/* Opened for reading only now that it is known to be a regular file. */
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", pfd);
	fd = open(proc, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0)
		return error_set(-errno, "image file /%s: cannot open it", path);
	r = read_full_fd(fd, IMAGE_USER_FILE_MAX, ret, ret_len);
	if (r == -EFBIG)
		return error_set(r, "image file /%s: larger than %u MiB", path,
				 IMAGE_USER_FILE_MAX >> 20);
	if (r < 0)
		return error_set(r, "image file /%s: cannot read it", path);
	return 0;
}

int image_user_resolve(int root_fd, const char *spec, struct image_user **ret)
{
	_cleanup_free_ char *passwd = NULL, *group = NULL;
	size_t passwd_len = 0, group_len = 0;
	int r;

	r = read_image_file(root_fd, "etc/passwd", &passwd, &passwd_len);
	if (r >= 0)
		r = read_image_file(root_fd, "etc/group", &group, &group_len);
	if (r < 0)
		return r;
	return image_user_resolve_buf(spec, passwd, passwd_len, group, group_len, ret);
}
