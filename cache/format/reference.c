/*
 * cache/format/reference.c: the distribution reference grammar, [domain/]path[:tag][@digest], with
 * docker.io normalisation ("debian" -> docker.io/library/debian:latest), and skopeo's local
 * transports oci:, oci-archive: and docker-archive:.  As skopeo does, a transport name followed
 * by ':' always selects that transport ("oci:5000/x" is a directory; a registry host named
 * "oci" is written "docker://oci:5000/x"), and the path ends at its first ':'.  Input comes
 * from the command line, so every rejection carries a short static reason.  String work only,
 * except realpath() of a local path.
 */
#include "reference.h"

#include <arpa/inet.h>
#include <limits.h>

#include "cache/base/digest.h"
#include "cache/base/error.h"
#include "cache/base/util.h"

#define NAME_TOTAL_MAX 255
#define TAG_MAX 128
#define REFERENCE_INPUT_MAX 4096

static const char *const transport_prefix = "docker://";

static const struct {
	const char *prefix;
	enum reference_transport transport;
} local_transports[] = {
	{ "oci:", REFERENCE_OCI },
	{ "oci-archive:", REFERENCE_OCI_ARCHIVE },
	{ "docker-archive:", REFERENCE_DOCKER_ARCHIVE },
};

/* skopeo's other transports: named so that "dir:/x" is not reported as a bad tag. */
static const char *const unsupported_transports[] = {
	"dir:", "containers-storage:", "docker-daemon:", "ostree:", "sif:", "tarball:",
};

static void reference_done(struct reference *r)
{
	free_many(r->domain, r->repository, r->tag, r->digest, r->path);
}
DEFINE_FREE_FUNC(struct reference, reference_free, reference_done);

static int strdup_opt(const char *s, char **ret)
{
	*ret = NULL;
	if (!s)
		return 0;
	*ret = strdup(s);
	return *ret ? 0 : -ENOMEM;
}

int reference_dup(const struct reference *from, struct reference **ret)
{
	_cleanup_(reference_freep) struct reference *ref = NULL;

	ref = calloc(1, sizeof(*ref));
	if (!ref)
		return -ENOMEM;
	ref->transport = from->transport;
	ref->index = from->index;
	if (strdup_opt(from->domain, &ref->domain) < 0 ||
	    strdup_opt(from->repository, &ref->repository) < 0 ||
	    strdup_opt(from->tag, &ref->tag) < 0 || strdup_opt(from->digest, &ref->digest) < 0 ||
	    strdup_opt(from->path, &ref->path) < 0)
		return -ENOMEM;
	*ret = TAKE_PTR(ref);
	return 0;
}

static bool is_lower_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static bool is_alnum(char c)
{
	return is_lower_alnum(c) || (c >= 'A' && c <= 'Z');
}

/* One path component: [a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*.  Upper-case letters are
 * accepted here when @allow_upper, so the caller can tell "not lower-case" from "malformed". */
static bool path_component_valid(const char *s, size_t n, bool allow_upper)
{
	size_t i = 0;

	for (;;) {
		size_t start = i;

		while (i < n && (is_lower_alnum(s[i]) || (allow_upper && is_alnum(s[i]))))
			i++;
		if (i == start)
			return false;  /* empty run: leading, trailing or doubled separator */
		if (i == n)
			return true;

		if (s[i] == '.') {
			i++;
		} else if (s[i] == '_') {
			i++;
			if (i < n && s[i] == '_')
				i++;
		} else if (s[i] == '-') {
			while (i < n && s[i] == '-')
				i++;
		} else {
			return false;
		}
	}
}

/* Validates "host[:port]" or "[ipv6][:port]". */
static int domain_validate(const char *s, size_t n, const char **ret_error)
{
	const char *port = NULL;
	size_t host_len;

	if (n > 0 && s[0] == '[') {
		const char *close = memchr(s, ']', n);
		char addr[INET6_ADDRSTRLEN + 1];
		struct in6_addr a;
		size_t alen;

		if (!close)
			goto invalid;
		alen = close - (s + 1);
		if (alen == 0 || alen >= sizeof(addr))
			goto invalid;
		memcpy(addr, s + 1, alen);
		addr[alen] = 0;
		if (inet_pton(AF_INET6, addr, &a) != 1)
			goto invalid;
		host_len = close + 1 - s;
		if (host_len < n) {
			if (s[host_len] != ':')
				goto invalid;
			port = s + host_len + 1;
		}
	} else {
		const char *colon = memchr(s, ':', n);
		size_t i = 0;

		host_len = colon ? (size_t)(colon - s) : n;
		if (colon)
			port = colon + 1;

		/* Labels [a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])? separated by single dots. */
		for (;;) {
			size_t start = i;

			while (i < host_len && (is_alnum(s[i]) || s[i] == '-'))
				i++;
			if (i == start || s[start] == '-' || s[i - 1] == '-')
				goto invalid;
			if (i == host_len)
				break;
			if (s[i] != '.')
				goto invalid;
			i++;
		}
	}

	if (port) {
		size_t plen = s + n - port;
		unsigned long v = 0;

		if (plen == 0 || plen > 5)
			goto bad_port;
		for (size_t i = 0; i < plen; i++) {
			if (port[i] < '0' || port[i] > '9')
				goto bad_port;
			v = v * 10 + (port[i] - '0');
		}
		if (v == 0 || v > 65535)
			goto bad_port;
	}
	return 0;

bad_port:
	if (ret_error)
		*ret_error = "invalid port in registry host";
	return -EINVAL;
invalid:
	if (ret_error)
		*ret_error = "invalid registry host name";
	return -EINVAL;
}

static int tag_validate(const char *s, const char **ret_error)
{
	size_t n = strlen(s);

	if (n == 0) {
		if (ret_error)
			*ret_error = "empty tag";
		return -EINVAL;
	}
	if (n > TAG_MAX) {
		if (ret_error)
			*ret_error = "tag longer than 128 characters";
		return -EINVAL;
	}
	for (size_t i = 0; i < n; i++) {
		bool ok = is_alnum(s[i]) || s[i] == '_' || (i > 0 && (s[i] == '.' || s[i] == '-'));

		if (!ok) {
			if (ret_error)
				*ret_error = "invalid tag format";
			return -EINVAL;
		}
	}
	return 0;
}

/* digest.h's grammar, with the reasons a user reads. */
static int digest_string_validate(const char *s, const char **ret_error)
{
	int r = digest_validate(s);

	if (r >= 0)
		return 0;
	if (ret_error)
		*ret_error = r == -EOPNOTSUPP ? "unsupported digest algorithm (only sha256)"
					      : "invalid digest";
	return -EINVAL;
}

/* Does the first path component name a registry host rather than a repository? */
static bool component_is_domain(const char *s, size_t n)
{
	if (n == 0)
		return false;
	if (s[0] == '[')
		return true;
	if (memchr(s, '.', n) || memchr(s, ':', n))
		return true;
	return n == 9 && strncmp(s, "localhost", 9) == 0;
}

static int path_validate(const char *path, const char **ret_error)
{
	const char *p = path;

	for (;;) {
		const char *slash = strchr(p, '/');
		size_t n = slash ? (size_t)(slash - p) : strlen(p);

		if (!path_component_valid(p, n, false)) {
			if (ret_error)
				*ret_error = path_component_valid(p, n, true) ?
					"repository name must be lowercase" :
					"invalid reference format";
			return -EINVAL;
		}
		if (!slash)
			return 0;
		p = slash + 1;
	}
}

static int fail(const char **ret_error, const char *reason)
{
	if (ret_error)
		*ret_error = reason;
	return -EINVAL;
}

static int docker_parse(const char *s, struct reference **ret, const char **ret_error)
{
	_cleanup_(reference_freep) struct reference *ref = NULL;
	_cleanup_free_ char *copy = NULL;
	char *name, *at, *slash, *colon, *path;
	int r;

	if (*s == 0)
		return fail(ret_error, "empty reference");

	copy = strdup(s);
	if (!copy)
		return -ENOMEM;

	ref = calloc(1, sizeof(*ref));
	if (!ref)
		return -ENOMEM;
	ref->transport = REFERENCE_DOCKER;
	ref->index = -1;

	name = copy;
	at = strchr(name, '@');
	if (at) {
		*at = 0;
		if (at[1] == 0)
			return fail(ret_error, "invalid digest");
		r = digest_string_validate(at + 1, ret_error);
		if (r < 0)
			return r;
		ref->digest = strdup(at + 1);
		if (!ref->digest)
			return -ENOMEM;
	}

	/* A ':' after the last '/' starts the tag; earlier ones belong to host:port or [v6]. */
	slash = strrchr(name, '/');
	colon = strrchr(slash ? slash : name, ':');
	if (colon && !(name[0] == '[' && !slash)) {
		*colon = 0;
		r = tag_validate(colon + 1, ret_error);
		if (r < 0)
			return r;
		ref->tag = strdup(colon + 1);
		if (!ref->tag)
			return -ENOMEM;
	}

	if (*name == 0)
		return fail(ret_error, "empty repository name");
	if (strlen(name) > NAME_TOTAL_MAX)
		return fail(ret_error, "repository name must not be more than 255 characters");

	slash = strchr(name, '/');
	if (slash && component_is_domain(name, slash - name)) {
		size_t n = slash - name;

		r = domain_validate(name, n, ret_error);
		if (r < 0)
			return r;
		if (n == 15 && strncmp(name, "index.docker.io", n) == 0)
			ref->domain = strdup("docker.io");
		else
			ref->domain = strndup(name, n);
		path = slash + 1;
	} else {
		ref->domain = strdup("docker.io");
		path = name;
	}
	if (!ref->domain)
		return -ENOMEM;

	r = path_validate(path, ret_error);
	if (r < 0)
		return r;

	if (streq(ref->domain, "docker.io") && !strchr(path, '/')) {
		if (asprintf(&ref->repository, "library/%s", path) < 0) {
			ref->repository = NULL;
			return -ENOMEM;
		}
	} else {
		ref->repository = strdup(path);
		if (!ref->repository)
			return -ENOMEM;
	}

	/* The limit is on the name as normalised ("docker.io/library/x"), as in docker's grammar:
	 * a name that fits only as written would print to a key that no longer parses. */
	if (strlen(ref->domain) + 1 + strlen(ref->repository) > NAME_TOTAL_MAX)
		return fail(ret_error, "repository name must not be more than 255 characters");

	if (!ref->tag && !ref->digest) {
		ref->tag = strdup("latest");
		if (!ref->tag)
			return -ENOMEM;
	}

	*ret = TAKE_PTR(ref);
	return 0;
}

/* The name an OCI layout gives a manifest (org.opencontainers.image.ref.name): runs of
 * [A-Za-z0-9._-] separated by single '/', ':' or '@', as skopeo accepts after "oci:DIR:". */
static int oci_tag_validate(const char *s, const char **ret_error)
{
	size_t n = strlen(s);
	bool run = false;

	if (n == 0)
		return fail(ret_error, "empty tag");
	if (n > NAME_TOTAL_MAX)
		return fail(ret_error, "tag longer than 255 characters");
	for (size_t i = 0; i < n; i++) {
		if (is_alnum(s[i]) || strchr("._-", s[i]))
			run = true;
		else if (strchr("/:@", s[i]) && run)
			run = false;
		else
			return fail(ret_error, "invalid tag format");
	}
	return run ? 0 : fail(ret_error, "invalid tag format");
}

/* ":@N" of docker-archive: a decimal manifest index. */
static int archive_index_parse(const char *s, long *ret, const char **ret_error)
{
	long v = 0;

	if (*s == 0)
		return fail(ret_error, "invalid archive index");
	for (const char *p = s; *p; p++) {
		if (*p < '0' || *p > '9' || v > (LONG_MAX - 9) / 10)
			return fail(ret_error, "invalid archive index");
		v = v * 10 + (*p - '0');
	}
	*ret = v;
	return 0;
}

/* docker-archive's ":REF": a tagged docker reference (skopeo adds ":latest"), kept canonical so
 * that it compares with RepoTags however those spell it. */
static int archive_ref_parse(const char *s, char **ret, const char **ret_error)
{
	_cleanup_(reference_freep) struct reference *ref = NULL;
	int r;

	r = docker_parse(s, &ref, ret_error);
	if (r < 0)
		return r;
	if (ref->digest)
		return fail(ret_error, "docker-archive reference must be a tag, not a digest");
	*ret = reference_to_string(ref);
	return *ret ? 0 : -ENOMEM;
}

/* An absolute path naming the same file from any working directory. */
static int path_absolute(const char *path, char **ret)
{
	_cleanup_free_ char *cwd = NULL;
	char *abs;

	abs = realpath(path, NULL);
	if (abs) {
		*ret = abs;
		return 0;
	}
	if (errno == ENOMEM)
		return -ENOMEM;
	/* Missing: reading the image says so, with the path the user gave made absolute. */
	if (path[0] == '/') {
		abs = strdup(path);
	} else {
		cwd = getcwd(NULL, 0);
		if (!cwd)
			return -errno;
		if (asprintf(&abs, "%s/%s", cwd, path) < 0)
			abs = NULL;
	}
	if (!abs)
		return -ENOMEM;
	*ret = abs;
	return 0;
}

static int local_parse(enum reference_transport t, const char *s, struct reference **ret,
		       const char **ret_error)
{
	_cleanup_(reference_freep) struct reference *ref = NULL;
	_cleanup_free_ char *path = NULL;
	const char *colon = strchr(s, ':');
	int r;

	path = colon ? strndup(s, colon - s) : strdup(s);
	if (!path)
		return -ENOMEM;
	if (*path == 0)
		return fail(ret_error, "empty path");
	if (strlen(path) >= PATH_MAX)
		return fail(ret_error, "path too long");

	ref = calloc(1, sizeof(*ref));
	if (!ref)
		return -ENOMEM;
	ref->transport = t;
	ref->index = -1;

	if (colon && t == REFERENCE_DOCKER_ARCHIVE) {
		if (colon[1] == '@')
			r = archive_index_parse(colon + 2, &ref->index, ret_error);
		else if (colon[1] == 0)
			r = fail(ret_error, "empty tag");
		else
			r = archive_ref_parse(colon + 1, &ref->tag, ret_error);
		if (r < 0)
			return r;
	} else if (colon) {
		r = oci_tag_validate(colon + 1, ret_error);
		if (r < 0)
			return r;
		ref->tag = strdup(colon + 1);
		if (!ref->tag)
			return -ENOMEM;
	}

	r = path_absolute(path, &ref->path);
	if (r < 0)
		return r;
	/* The canonical string ends the path at its first ':', so it must have none. */
	if (strchr(ref->path, ':'))
		return fail(ret_error, "local path may not contain ':'");
	if (strlen(ref->path) >= PATH_MAX)
		return fail(ret_error, "path too long");

	*ret = TAKE_PTR(ref);
	return 0;
}

static int parse(const char *s, struct reference **ret, const char **ret_error)
{
	if (!s || *s == 0)
		return fail(ret_error, "empty reference");
	if (strlen(s) > REFERENCE_INPUT_MAX)
		return fail(ret_error, "reference too long");
	if (startswith(s, transport_prefix))
		return docker_parse(s + strlen(transport_prefix), ret, ret_error);

	for (size_t i = 0; i < ELEMENTSOF(local_transports); i++)
		if (startswith(s, local_transports[i].prefix))
			return local_parse(local_transports[i].transport,
					   s + strlen(local_transports[i].prefix), ret, ret_error);

	for (size_t i = 0; i < ELEMENTSOF(unsupported_transports); i++) {
		const char *rest = s + strlen(unsupported_transports[i]);

		/* "dir:x" is still the docker image "dir" with tag "x". */
		if (startswith(s, unsupported_transports[i]) && tag_validate(rest, NULL) < 0)
			return fail(ret_error, "unsupported transport (lazyroot reads docker://, oci:, "
					       "oci-archive: and docker-archive:)");
	}
	return docker_parse(s, ret, ret_error);
}

int reference_parse(const char *s, struct reference **ret)
{
	const char *why = NULL;
	int r;

	r = parse(s, ret, &why);
	if (r == -EINVAL)
		return error_set(r, "%s", why ?: "malformed reference");
	return r;
}

static char *local_to_string(const struct reference *r)
{
	const char *prefix = NULL;
	char *s;
	int k;

	for (size_t i = 0; i < ELEMENTSOF(local_transports); i++)
		if (local_transports[i].transport == r->transport)
			prefix = local_transports[i].prefix;
	if (!prefix)
		return NULL;
	if (r->index >= 0)
		k = asprintf(&s, "%s%s:@%ld", prefix, r->path, r->index);
	else
		k = asprintf(&s, "%s%s%s%s", prefix, r->path, r->tag ? ":" : "", r->tag ?: "");
	return k < 0 ? NULL : s;
}

/* Would a docker reference's string read as another transport ("oci:5000/x")? */
static bool domain_looks_like_transport(const char *domain)
{
	for (size_t i = 0; i < ELEMENTSOF(local_transports); i++)
		if (startswith(domain, local_transports[i].prefix))
			return true;
	for (size_t i = 0; i < ELEMENTSOF(unsupported_transports); i++)
		if (startswith(domain, unsupported_transports[i]))
			return true;
	return false;
}

char *reference_to_string(const struct reference *r)
{
	char *s;

	if (reference_is_local(r))
		return local_to_string(r);
	/* Keep "docker://" where it is needed to parse the string back to this reference. */
	if (asprintf(&s, "%s%s/%s%s%s%s%s",
		     domain_looks_like_transport(r->domain) ? transport_prefix : "",
		     r->domain, r->repository,
		     r->tag ? ":" : "", r->tag ?: "",
		     r->digest ? "@" : "", r->digest ?: "") < 0)
		return NULL;
	return s;
}

const char *reference_api_host(const struct reference *r)
{
	if (reference_is_local(r))
		return NULL;
	if (streq(r->domain, "docker.io"))
		return "registry-1.docker.io";
	return r->domain;
}

/* Machine names are host names: lower-case letters, digits and '-', at most 64. */
static char *machine_name(const char *s, size_t n)
{
	char *m;

	if (n > 64)
		n = 64;
	m = n > 0 ? strndup(s, n) : strdup("image");
	if (!m)
		return NULL;
	for (char *p = m; *p; p++) {
		if (*p >= 'A' && *p <= 'Z')
			*p += 'a' - 'A';
		else if (!is_lower_alnum(*p))
			*p = '-';
	}
	return m;
}

static char *local_short_name(const struct reference *r)
{
	const char *base, *end;

	/* A tag that is itself a reference ("fixtures/x:edge") names the repository. */
	if (r->tag && (strchr(r->tag, '/') || r->transport == REFERENCE_DOCKER_ARCHIVE)) {
		_cleanup_(reference_freep) struct reference *named = NULL;

		if (docker_parse(r->tag, &named, NULL) >= 0)
			return reference_short_name(named);
	}
	base = strrchr(r->path, '/');
	base = base && base[1] ? base + 1 : r->path;
	end = base + strlen(base);
	if (end - base > 4 && streq(end - 4, ".tar"))
		end -= 4;
	return machine_name(base, end - base);
}

char *reference_short_name(const struct reference *r)
{
	const char *slash;

	if (reference_is_local(r))
		return local_short_name(r);
	slash = strrchr(r->repository, '/');
	return strdup(slash ? slash + 1 : r->repository);
}
