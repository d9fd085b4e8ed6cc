/*
 * cache/reference.c: the distribution reference grammar, [domain/]path[:tag][@digest], with
 * docker.io normalisation ("debian" -> docker.io/library/debian:latest).  Input comes from the
 * command line, so every rejection carries a short static reason.  Pure string work: no I/O,
 * no allocation beyond the result.
 */
#include "reference.h"

#include <arpa/inet.h>

#include "util.h"

#define NAME_TOTAL_MAX 255
#define TAG_MAX 128
#define REFERENCE_INPUT_MAX 4096

static const char *const transport_prefix = "docker://";

struct reference *reference_free(struct reference *r)
{
	if (!r)
		return NULL;
	free(r->domain);
	free(r->repository);
	free(r->tag);
	free(r->digest);
	free(r);
	return NULL;
}

static bool is_lower_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static bool is_alnum(char c)
{
	return is_lower_alnum(c) || (c >= 'A' && c <= 'Z');
}

static bool is_lower_hex(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
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

static int digest_string_validate(const char *s, const char **ret_error)
{
	const char *colon = strchr(s, ':');
	size_t alg_len;

	if (!colon || colon == s)
		goto invalid;
	alg_len = colon - s;

	if (alg_len != 6 || strncmp(s, "sha256", 6) != 0) {
		/* A well-formed name of another algorithm (sha512, blake3) gets its own reason. */
		for (size_t i = 0; i < alg_len; i++)
			if (!is_lower_alnum(s[i]) && !strchr("+._-", s[i]))
				goto invalid;
		if (ret_error)
			*ret_error = "unsupported digest algorithm (only sha256)";
		return -EINVAL;
	}

	if (strlen(colon + 1) != 64)
		goto invalid;
	for (const char *p = colon + 1; *p; p++)
		if (!is_lower_hex(*p))
			goto invalid;
	return 0;

invalid:
	if (ret_error)
		*ret_error = "invalid digest";
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

int reference_parse(const char *s, struct reference **ret, const char **ret_error)
{
	_cleanup_(reference_freep) struct reference *ref = NULL;
	_cleanup_free_ char *copy = NULL;
	char *name, *at, *slash, *colon, *path;
	int r;

	if (!s)
		return fail(ret_error, "empty reference");
	if (startswith(s, transport_prefix))
		s += strlen(transport_prefix);
	if (*s == 0)
		return fail(ret_error, "empty reference");
	if (strlen(s) > REFERENCE_INPUT_MAX)
		return fail(ret_error, "reference too long");

	copy = strdup(s);
	if (!copy)
		return -ENOMEM;

	ref = calloc(1, sizeof(*ref));
	if (!ref)
		return -ENOMEM;

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

	if (!ref->tag && !ref->digest) {
		ref->tag = strdup("latest");
		if (!ref->tag)
			return -ENOMEM;
	}

	*ret = TAKE_PTR(ref);
	return 0;
}

char *reference_to_string(const struct reference *r)
{
	char *s;

	if (asprintf(&s, "%s/%s%s%s%s%s", r->domain, r->repository,
		     r->tag ? ":" : "", r->tag ?: "",
		     r->digest ? "@" : "", r->digest ?: "") < 0)
		return NULL;
	return s;
}

const char *reference_api_host(const struct reference *r)
{
	if (streq(r->domain, "docker.io"))
		return "registry-1.docker.io";
	return r->domain;
}

char *reference_short_name(const struct reference *r)
{
	const char *slash = strrchr(r->repository, '/');

	return strdup(slash ? slash + 1 : r->repository);
}
