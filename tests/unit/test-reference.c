/* tests/unit/test-reference.c: the reference grammar as one table: docker references (docker.io
 * normalisation, hosts, ports, IPv6, digests) and skopeo's local transports (oci:,
 * oci-archive:, docker-archive:), each with its canonical string, short name, or the reason it
 * is rejected. */
#include "cache/format/reference.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cache/base/error.h"
#include "tap.h"

#define D64 "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define A64 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define A256 A64 A64 A64 A64 /* past every name limit */
/* In an expected path or canonical string, "@" stands for the working directory. */
#define CWD "@"

#define DOCKER REFERENCE_DOCKER
#define OCI REFERENCE_OCI
#define OCI_ARCHIVE REFERENCE_OCI_ARCHIVE
#define DOCKER_ARCHIVE REFERENCE_DOCKER_ARCHIVE

struct valid_case {
	const char *input;
	enum reference_transport transport;
	const char *domain, *repository, *tag, *digest;   /* docker */
	const char *path;                                 /* local */
	long index;
	const char *canonical;
	const char *short_name;                           /* NULL: not checked */
};

static const struct valid_case valid_cases[] = {
	/* docker.io normalisation */
	{ "debian", DOCKER, "docker.io", "library/debian", "latest", NULL, NULL, -1,
	  "docker.io/library/debian:latest", "debian" },
	{ "library/debian:12", DOCKER, "docker.io", "library/debian", "12", NULL, NULL, -1,
	  "docker.io/library/debian:12", "debian" },
	{ "user/img", DOCKER, "docker.io", "user/img", "latest", NULL, NULL, -1,
	  "docker.io/user/img:latest", "img" },
	{ "docker.io/debian", DOCKER, "docker.io", "library/debian", "latest", NULL, NULL, -1,
	  "docker.io/library/debian:latest", NULL },
	{ "index.docker.io/library/debian:bookworm-slim", DOCKER, "docker.io", "library/debian",
	  "bookworm-slim", NULL, NULL, -1, "docker.io/library/debian:bookworm-slim", NULL },
	{ "docker://debian:12", DOCKER, "docker.io", "library/debian", "12", NULL, NULL, -1,
	  "docker.io/library/debian:12", NULL },
	/* digests, tag + digest */
	{ "ghcr.io/a/b@sha256:" D64, DOCKER, "ghcr.io", "a/b", NULL, "sha256:" D64, NULL, -1,
	  "ghcr.io/a/b@sha256:" D64, "b" },
	{ "ghcr.io/a/b:v1.2@sha256:" D64, DOCKER, "ghcr.io", "a/b", "v1.2", "sha256:" D64, NULL,
	  -1, "ghcr.io/a/b:v1.2@sha256:" D64, NULL },
	/* hosts: localhost, ports, IPv4, IPv6 literals, upper-case host names */
	{ "localhost:5000/x", DOCKER, "localhost:5000", "x", "latest", NULL, NULL, -1,
	  "localhost:5000/x:latest", "x" },
	{ "localhost/x", DOCKER, "localhost", "x", "latest", NULL, NULL, -1, "localhost/x:latest",
	  NULL },
	{ "127.0.0.1:5000/demo:edge", DOCKER, "127.0.0.1:5000", "demo", "edge", NULL, NULL, -1,
	  "127.0.0.1:5000/demo:edge", NULL },
	{ "127.0.0.1:5000/a/b/demo", DOCKER, "127.0.0.1:5000", "a/b/demo", "latest", NULL, NULL,
	  -1, "127.0.0.1:5000/a/b/demo:latest", "demo" },
	{ "[::1]:5000/x:y", DOCKER, "[::1]:5000", "x", "y", NULL, NULL, -1, "[::1]:5000/x:y",
	  NULL },
	{ "[fe80::1]/x", DOCKER, "[fe80::1]", "x", "latest", NULL, NULL, -1, "[fe80::1]/x:latest",
	  NULL },
	{ "quay.io/org/sub/deep/name_with__seps-and---dashes.x:Tag_1.0-rc", DOCKER, "quay.io",
	  "org/sub/deep/name_with__seps-and---dashes.x", "Tag_1.0-rc", NULL, NULL, -1,
	  "quay.io/org/sub/deep/name_with__seps-and---dashes.x:Tag_1.0-rc", NULL },
	{ "Registry.Example.com/x", DOCKER, "Registry.Example.com", "x", "latest", NULL, NULL, -1,
	  "Registry.Example.com/x:latest", NULL },
	/* Without a '/', host:port cannot be told from name:tag; the grammar says name:tag. */
	{ "localhost:5000", DOCKER, "docker.io", "library/localhost", "5000", NULL, NULL, -1,
	  "docker.io/library/localhost:5000", NULL },
	{ "x:_tag", DOCKER, "docker.io", "library/x", "_tag", NULL, NULL, -1,
	  "docker.io/library/x:_tag", NULL },
	/* a registry host named like a transport needs docker:// */
	{ "docker://oci:5000/x", DOCKER, "oci:5000", "x", "latest", NULL, NULL, -1,
	  "docker://oci:5000/x:latest", NULL },
	{ "docker://dir:5000/x", DOCKER, "dir:5000", "x", "latest", NULL, NULL, -1,
	  "docker://dir:5000/x:latest", NULL },
	{ "oci-archive", DOCKER, "docker.io", "library/oci-archive", "latest", NULL, NULL, -1,
	  "docker.io/library/oci-archive:latest", NULL },
	{ "dir:tag", DOCKER, "docker.io", "library/dir", "tag", NULL, NULL, -1,
	  "docker.io/library/dir:tag", NULL },

	/* oci: */
	{ "oci:/nonexistent/layout:edge", OCI, NULL, NULL, "edge", NULL, "/nonexistent/layout", -1,
	  "oci:/nonexistent/layout:edge", "layout" },
	{ "oci:/nonexistent/layout", OCI, NULL, NULL, NULL, NULL, "/nonexistent/layout", -1,
	  "oci:/nonexistent/layout", NULL },
	{ "oci:/usr/../usr/bin:v1", OCI, NULL, NULL, "v1", NULL, "/usr/bin", -1, "oci:/usr/bin:v1",
	  "bin" },
	{ "oci:rel/My_Layout:edge", OCI, NULL, NULL, "edge", NULL, CWD "/rel/My_Layout", -1,
	  "oci:" CWD "/rel/My_Layout:edge", "my-layout" },
	{ "oci:5000/x", OCI, NULL, NULL, NULL, NULL, CWD "/5000/x", -1, "oci:" CWD "/5000/x", "x" },
	{ "oci:/l:localhost/fixtures/edge-estargz:edge", OCI, NULL, NULL,
	  "localhost/fixtures/edge-estargz:edge", NULL, "/l", -1,
	  "oci:/l:localhost/fixtures/edge-estargz:edge", "edge-estargz" },
	{ "oci:/l:v1.0_rc-2", OCI, NULL, NULL, "v1.0_rc-2", NULL, "/l", -1, "oci:/l:v1.0_rc-2",
	  NULL },
	/* oci-archive: */
	{ "oci-archive:/nonexistent/img.tar:edge", OCI_ARCHIVE, NULL, NULL, "edge", NULL,
	  "/nonexistent/img.tar", -1, "oci-archive:/nonexistent/img.tar:edge", "img" },
	{ "oci-archive:img.tar", OCI_ARCHIVE, NULL, NULL, NULL, NULL, CWD "/img.tar", -1,
	  "oci-archive:" CWD "/img.tar", "img" },
	/* docker-archive: the reference is canonical, ":latest" added as skopeo does */
	{ "docker-archive:/d/x.tar:fixtures/x:edge", DOCKER_ARCHIVE, NULL, NULL,
	  "docker.io/fixtures/x:edge", NULL, "/d/x.tar", -1,
	  "docker-archive:/d/x.tar:docker.io/fixtures/x:edge", "x" },
	{ "docker-archive:/d/x.tar:debian", DOCKER_ARCHIVE, NULL, NULL,
	  "docker.io/library/debian:latest", NULL, "/d/x.tar", -1,
	  "docker-archive:/d/x.tar:docker.io/library/debian:latest", "debian" },
	{ "docker-archive:/d/x.tar:localhost:5000/a/b:1", DOCKER_ARCHIVE, NULL, NULL,
	  "localhost:5000/a/b:1", NULL, "/d/x.tar", -1,
	  "docker-archive:/d/x.tar:localhost:5000/a/b:1", "b" },
	{ "docker-archive:/d/x.tar:@3", DOCKER_ARCHIVE, NULL, NULL, NULL, NULL, "/d/x.tar", 3,
	  "docker-archive:/d/x.tar:@3", "x" },
	{ "docker-archive:/d/save.tar", DOCKER_ARCHIVE, NULL, NULL, NULL, NULL, "/d/save.tar", -1,
	  "docker-archive:/d/save.tar", "save" },
};

struct invalid_case {
	const char *input;
	const char *reason;  /* NULL: any non-empty reason */
};

static const struct invalid_case invalid_cases[] = {
	{ "Upper/case", "repository name must be lowercase" },
	{ "Debian", "repository name must be lowercase" },
	{ "ghcr.io/Org/x", "repository name must be lowercase" },
	{ "x:", "empty tag" },
	{ "x:.tag", "invalid tag format" },
	{ "x:-tag", "invalid tag format" },
	{ "x:a/b", NULL },
	{ "x:tag!", "invalid tag format" },
	{ "x@sha256:abcd", "invalid digest" },
	{ "x@sha256:0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef",
	  "invalid digest" },
	{ "x@sha512:" D64 D64, "unsupported digest algorithm (only sha256)" },
	{ "x@", "invalid digest" },
	{ "x@" D64, "invalid digest" },
	{ "x@sha256:" D64 "@sha256:" D64, "invalid digest" },
	{ "", "empty reference" },
	{ "docker://", "empty reference" },
	{ ":tag", "empty repository name" },
	{ "a//b", "invalid reference format" },
	{ "a/b/", "invalid reference format" },
	{ "/a", "invalid reference format" },
	{ "a..b", "invalid reference format" },
	{ "a___b", "invalid reference format" },
	{ "-a", "invalid reference format" },
	{ "a-", "invalid reference format" },
	{ "a b", "invalid reference format" },
	{ "host:99999/x", "invalid port in registry host" },
	{ "host:0/x", "invalid port in registry host" },
	{ "host:/x", "invalid port in registry host" },
	{ "host:50a0/x", "invalid port in registry host" },
	{ "-host.com/x", "invalid registry host name" },
	{ "host..com/x", "invalid registry host name" },
	{ "[::1/x", "invalid registry host name" },
	{ "[zz::1]:5000/x", "invalid registry host name" },
	{ "[::1]x/y", "invalid registry host name" },
	{ "[::1]:5000", NULL },
	{ "example.com/" A256, "repository name must not be more than 255 characters" },
	/* the limit is on the normalised name: 18 + 238 > 255, though 238 alone fits */
	{ A64 A64 A64 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
	  "repository name must not be more than 255 characters" },
	/* local transports */
	{ "oci:", "empty path" },
	{ "oci::edge", "empty path" },
	{ "oci:/l:", "empty tag" },
	{ "oci:/l:bad!tag", "invalid tag format" },
	{ "oci:/l:a//b", "invalid tag format" },
	{ "oci:/l:/edge", "invalid tag format" },
	{ "oci:/l:edge/", "invalid tag format" },
	{ "oci:/l:" A256, "tag longer than 255 characters" },
	{ "oci-archive:", "empty path" },
	{ "docker-archive:", "empty path" },
	{ "docker-archive:/d/x.tar:", "empty tag" },
	{ "docker-archive:/d/x.tar:@", "invalid archive index" },
	{ "docker-archive:/d/x.tar:@-1", "invalid archive index" },
	{ "docker-archive:/d/x.tar:@1x", "invalid archive index" },
	{ "docker-archive:/d/x.tar:@99999999999999999999", "invalid archive index" },
	{ "docker-archive:/d/x.tar:Upper/x", "repository name must be lowercase" },
	{ "docker-archive:/d/x.tar:x@sha256:" D64,
	  "docker-archive reference must be a tag, not a digest" },
	{ "dir:/tmp/x", "unsupported transport (lazyroot reads docker://, oci:, oci-archive: and "
			"docker-archive:)" },
	{ "containers-storage:debian:12", "unsupported transport (lazyroot reads docker://, oci:, "
					  "oci-archive: and docker-archive:)" },
};

static bool eq(const char *a, const char *b)
{
	if (!a || !b)
		return a == b;
	return strcmp(a, b) == 0;
}

/* @s with a leading CWD replaced by the working directory. */
static char *expand(const char *s, const char *cwd)
{
	char *out;
	const char *at;

	if (!s || !(at = strstr(s, CWD "/")))
		return s ? strdup(s) : NULL;
	if (asprintf(&out, "%.*s%s%s", (int)(at - s), s, cwd, at + 1) < 0)
		return NULL;
	return out;
}

static void check_valid(const struct valid_case *c, const char *cwd)
{
	struct reference *r = NULL;
	const char *why = NULL;
	char *str, *path = expand(c->path, cwd), *canonical = expand(c->canonical, cwd);
	int k;

	error_clear();
	k = reference_parse(c->input, &r);
	why = error_message();
	check(k == 0, "'%s' parses%s%s", c->input, why ? ": " : "", why ? why : "");
	if (k == 0) {
		check(r->transport == c->transport && eq(r->domain, c->domain) &&
		      eq(r->repository, c->repository) && eq(r->tag, c->tag) &&
		      eq(r->digest, c->digest) && eq(r->path, path) && r->index == c->index,
		      "'%s' has the expected parts (transport %d, domain '%s', repository '%s', "
		      "tag '%s', path '%s', index %ld)", c->input, r->transport,
		      r->domain ?: "-", r->repository ?: "-", r->tag ?: "-", r->path ?: "-", r->index);
		str = reference_to_string(r);
		check(eq(str, canonical), "'%s' prints as '%s' (got '%s')", c->input, canonical, str);
		/* The canonical string is the refs table key: it must parse back to itself. */
		if (str) {
			struct reference *again = NULL;
			char *str2 = NULL;

			if (reference_parse(str, &again) == 0)
				str2 = reference_to_string(again);
			check(eq(str2, str), "'%s' parses back to itself", str);
			free(str2);
			reference_free(again);
		}
		free(str);
		if (c->short_name) {
			char *sn = reference_short_name(r);

			check(eq(sn, c->short_name), "short name of '%s' is '%s' (got '%s')", c->input,
			      c->short_name, sn);
			free(sn);
		}
	}
	free(path);
	free(canonical);
	reference_free(r);
}

static void check_invalid(const struct invalid_case *c)
{
	struct reference *r = NULL;
	const char *why = NULL;
	int k;

	error_clear();
	k = reference_parse(c->input, &r);
	why = error_message();
	if (c->reason)
		check(k == -EINVAL && !r && eq(why, c->reason), "'%.60s' is rejected with '%s' (got '%s')",
		      c->input, c->reason, why ? why : "(none)");
	else
		check(k == -EINVAL && !r && why && *why, "'%s' is rejected with a reason ('%s')",
		      c->input, why ? why : "");
	reference_free(r);
}

int main(void)
{
	struct reference *r = NULL, *copy = NULL;
	char *cwd = getcwd(NULL, 0), *s;

	check(cwd != NULL, "the working directory is known");
	check(ELEMENTSOF(valid_cases) + ELEMENTSOF(invalid_cases) >= 40, "the table has %zu cases",
	      ELEMENTSOF(valid_cases) + ELEMENTSOF(invalid_cases));
	for (size_t i = 0; i < ELEMENTSOF(valid_cases); i++)
		check_valid(&valid_cases[i], cwd);
	for (size_t i = 0; i < ELEMENTSOF(invalid_cases); i++)
		check_invalid(&invalid_cases[i]);

	{
		char ref[2 + 130];

		memcpy(ref, "x:", 2);
		memset(ref + 2, 'a', 128);
		ref[130] = 0;
		check(reference_parse(ref, &r) == 0 && strlen(r->tag) == 128,
		      "a 128-character tag is accepted");
		r = reference_free(r);
		ref[130] = 'a';
		ref[131] = 0;
		check(reference_parse(ref, &r) == -EINVAL, "a 129-character tag is rejected");
	}

	check(reference_parse("docker.io/library/debian", &r) == 0,
	      "parse without a reason pointer");
	check(eq(reference_api_host(r), "registry-1.docker.io"),
	      "docker.io is served by registry-1.docker.io");
	r = reference_free(r);
	check(reference_parse("127.0.0.1:5000/a/b/demo", &r) == 0, "parse a nested path");
	check(eq(reference_api_host(r), "127.0.0.1:5000"), "other hosts serve themselves");
	r = reference_free(r);

	check(reference_parse("docker-archive:/d/x.tar:@2", &r) == 0, "parse a local reference");
	check(reference_api_host(r) == NULL && reference_is_local(r), "a local image has no API host");
	check(reference_dup(r, &copy) == 0 && copy->transport == r->transport &&
	      copy->index == 2 && eq(copy->path, r->path) && copy->path != r->path,
	      "reference_dup() copies every field");
	s = copy ? reference_to_string(copy) : NULL;
	check(eq(s, "docker-archive:/d/x.tar:@2"), "the copy prints the same");
	free(s);
	copy = reference_free(copy);
	r = reference_free(r);

	check(reference_parse("Bad", &r) == -EINVAL && !r,
	      "a NULL reason pointer is allowed on failure");
	check(reference_free(NULL) == NULL, "reference_free(NULL) is a no-op");
	free(cwd);
	return tap_done();
}
