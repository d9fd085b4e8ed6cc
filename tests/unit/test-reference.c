/* tests/unit/test-reference.c: the reference grammar, docker.io normalisation and the reasons
 * given for rejected references. */
#include "../../cache/reference.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"

#define D64 "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

static bool eq(const char *a, const char *b)
{
	if (!a || !b)
		return a == b;
	return strcmp(a, b) == 0;
}

static void valid(const char *s, const char *domain, const char *repository, const char *tag,
		  const char *digest, const char *canonical)
{
	struct reference *r = NULL;
	const char *why = NULL;
	char *str;
	int k;

	k = reference_parse(s, &r, &why);
	check(k == 0, "'%s' parses%s%s", s, why ? ": " : "", why ? why : "");
	if (k < 0)
		return;
	check(eq(r->domain, domain), "'%s' has domain '%s' (got '%s')", s, domain, r->domain);
	check(eq(r->repository, repository), "'%s' has repository '%s' (got '%s')", s, repository,
	      r->repository);
	check(eq(r->tag, tag), "'%s' has tag '%s' (got '%s')", s, tag ? tag : "(none)",
	      r->tag ? r->tag : "(none)");
	check(eq(r->digest, digest), "'%s' has the expected digest", s);
	str = reference_to_string(r);
	check(eq(str, canonical), "'%s' prints as '%s' (got '%s')", s, canonical, str);
	free(str);
	reference_free(r);
}

static void invalid(const char *s, const char *reason)
{
	struct reference *r = NULL;
	const char *why = NULL;
	int k;

	k = reference_parse(s, &r, &why);
	check(k == -EINVAL && !r, "'%s' is rejected", s);
	if (reason)
		check(why && strcmp(why, reason) == 0, "'%s' is rejected with '%s' (got '%s')", s,
		      reason, why ? why : "(none)");
	else
		check(why && *why, "'%s' is rejected with a reason ('%s')", s, why ? why : "");
	reference_free(r);
}

int main(void)
{
	struct reference *r = NULL;
	char *s;

	valid("debian", "docker.io", "library/debian", "latest", NULL,
	      "docker.io/library/debian:latest");
	valid("library/debian:12", "docker.io", "library/debian", "12", NULL,
	      "docker.io/library/debian:12");
	valid("user/img", "docker.io", "user/img", "latest", NULL, "docker.io/user/img:latest");
	valid("docker.io/debian", "docker.io", "library/debian", "latest", NULL,
	      "docker.io/library/debian:latest");
	valid("index.docker.io/library/debian:bookworm-slim", "docker.io", "library/debian",
	      "bookworm-slim", NULL, "docker.io/library/debian:bookworm-slim");
	valid("docker://debian:12", "docker.io", "library/debian", "12", NULL,
	      "docker.io/library/debian:12");
	valid("ghcr.io/a/b@sha256:" D64, "ghcr.io", "a/b", NULL, "sha256:" D64,
	      "ghcr.io/a/b@sha256:" D64);
	valid("ghcr.io/a/b:v1.2@sha256:" D64, "ghcr.io", "a/b", "v1.2", "sha256:" D64,
	      "ghcr.io/a/b:v1.2@sha256:" D64);
	valid("localhost:5000/x", "localhost:5000", "x", "latest", NULL, "localhost:5000/x:latest");
	valid("localhost/x", "localhost", "x", "latest", NULL, "localhost/x:latest");
	valid("127.0.0.1:5000/demo:edge", "127.0.0.1:5000", "demo", "edge", NULL,
	      "127.0.0.1:5000/demo:edge");
	valid("[::1]:5000/x:y", "[::1]:5000", "x", "y", NULL, "[::1]:5000/x:y");
	valid("[fe80::1]/x", "[fe80::1]", "x", "latest", NULL, "[fe80::1]/x:latest");
	valid("quay.io/org/sub/deep/name_with__seps-and---dashes.x:Tag_1.0-rc",
	      "quay.io", "org/sub/deep/name_with__seps-and---dashes.x", "Tag_1.0-rc", NULL,
	      "quay.io/org/sub/deep/name_with__seps-and---dashes.x:Tag_1.0-rc");
	valid("Registry.Example.com/x", "Registry.Example.com", "x", "latest", NULL,
	      "Registry.Example.com/x:latest");
	/* Without a '/', host:port cannot be told from name:tag; the grammar says name:tag. */
	valid("localhost:5000", "docker.io", "library/localhost", "5000", NULL,
	      "docker.io/library/localhost:5000");
	valid("x:_tag", "docker.io", "library/x", "_tag", NULL, "docker.io/library/x:_tag");

	invalid("Upper/case", "repository name must be lowercase");
	invalid("Debian", "repository name must be lowercase");
	invalid("ghcr.io/Org/x", "repository name must be lowercase");
	invalid("x:", "empty tag");
	invalid("x:.tag", "invalid tag format");
	invalid("x:-tag", "invalid tag format");
	invalid("x:a/b", NULL);
	invalid("x:tag!", "invalid tag format");
	invalid("x@sha256:abcd", "invalid digest");
	invalid("x@sha256:" "0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef",
		"invalid digest");
	invalid("x@sha512:" D64 D64, "unsupported digest algorithm (only sha256)");
	invalid("x@", "invalid digest");
	invalid("x@" D64, "invalid digest");
	invalid("x@sha256:" D64 "@sha256:" D64, "invalid digest");
	invalid("", "empty reference");
	invalid("docker://", "empty reference");
	invalid(":tag", "empty repository name");
	invalid("a//b", "invalid reference format");
	invalid("a/b/", "invalid reference format");
	invalid("/a", "invalid reference format");
	invalid("a..b", "invalid reference format");
	invalid("a___b", "invalid reference format");
	invalid("-a", "invalid reference format");
	invalid("a-", "invalid reference format");
	invalid("a b", "invalid reference format");
	invalid("host:99999/x", "invalid port in registry host");
	invalid("host:/x", "invalid port in registry host");
	invalid("-host.com/x", "invalid registry host name");
	invalid("host..com/x", "invalid registry host name");
	invalid("[::1/x", "invalid registry host name");
	invalid("[zz::1]:5000/x", "invalid registry host name");
	invalid("[::1]x/y", "invalid registry host name");
	invalid("[::1]:5000", NULL);
	invalid("example.com/"
		"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
		"repository name must not be more than 255 characters");

	{
		char ref[2 + 130];

		memcpy(ref, "x:", 2);
		memset(ref + 2, 'a', 128);
		ref[130] = 0;
		check(reference_parse(ref, &r, NULL) == 0 && strlen(r->tag) == 128,
		      "a 128-character tag is accepted");
		r = reference_free(r);
		ref[130] = 'a';
		ref[131] = 0;
		invalid(ref, "tag longer than 128 characters");
	}

	check(reference_parse("docker.io/library/debian", &r, NULL) == 0, "parse without a reason pointer");
	check(strcmp(reference_api_host(r), "registry-1.docker.io") == 0,
	      "docker.io is served by registry-1.docker.io");
	s = reference_short_name(r);
	check(s && strcmp(s, "debian") == 0, "short name of library/debian is debian");
	free(s);
	r = reference_free(r);

	check(reference_parse("127.0.0.1:5000/a/b/demo", &r, NULL) == 0, "parse a nested path");
	check(strcmp(reference_api_host(r), "127.0.0.1:5000") == 0, "other hosts serve themselves");
	s = reference_short_name(r);
	check(s && strcmp(s, "demo") == 0, "short name is the last path component");
	free(s);
	r = reference_free(r);

	check(reference_parse("Bad", &r, NULL) == -EINVAL && !r,
	      "a NULL reason pointer is allowed on failure");
	check(reference_free(NULL) == NULL, "reference_free(NULL) is a no-op");

	return tap_done();
}
