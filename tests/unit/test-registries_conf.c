/* tests/unit/test-registries_conf.c: the TOML subset of registries.conf, its checks, and how a
 * name finds its [[registry]] and endpoints. */
#include "cache/registry/registries_conf.h"

#include <stdlib.h>

#include "cache/base/error.h"
#include "tap.h"

/* The thread's message (error.h) after the call that returned @r, as a copy: NULL for none. */
static int message(int r, char **ret_error)
{
	*ret_error = error_message() ? strdup(error_message()) : NULL;
	error_clear();
	return r;
}

/* Parses @text as FILE; returns the error code and keeps the message in *ret_error. */
static int parse(struct registries_conf **c, const char *text, char **ret_error)
{
	error_clear();
	*c = registries_conf_new();
	if (!*c)
		return -ENOMEM;
	return message(registries_conf_add_text(*c, text, strlen(text), "FILE"), ret_error);
}

/* The endpoints for @name as "name[flags] name[flags]…", flags m(irror) t(ag) d(igest)
 * i(nsecure); "ERR:<errno>:<message>" on failure. */
static char *plan(const struct registries_conf *c, const char *name, bool by_digest)
{
	struct registries_endpoint *e = NULL;
	char *error = NULL, *out = NULL;
	size_t n = 0, len = 0;
	FILE *f;
	int r;

	f = open_memstream(&out, &len);
	if (!f)
		abort();
	error_clear();
	r = message(registries_conf_endpoints(c, name, by_digest, &e, &n), &error);
	if (r < 0)
		fprintf(f, "ERR:%d:%s", -r, error ? error : "");
	for (size_t i = 0; r >= 0 && i < n; i++)
		fprintf(f, "%s%s[%s%s%s%s]", i ? " " : "", e[i].name, e[i].mirror ? "m" : "",
			e[i].by_tag ? "t" : "", e[i].by_digest ? "d" : "", e[i].insecure ? "i" : "");
	fclose(f);
	registries_endpoints_free(e, n);
	free(error);
	return out;
}

static bool plan_is(const struct registries_conf *c, const char *name, bool by_digest,
		    const char *want)
{
	char *got = plan(c, name, by_digest);
	bool ok = streq(got, want);

	if (!ok)
		printf("# %s: got '%s', want '%s'\n", name, got, want);
	free(got);
	return ok;
}

static bool error_is(const char *text, const char *want)
{
	struct registries_conf *c = NULL;
	char *error = NULL;
	int r = parse(&c, text, &error);
	bool ok = r == -EINVAL && error && streq(error, want);

	if (!ok)
		printf("# r=%d error '%s', want '%s'\n", r, error ? error : "(none)", want);
	free(error);
	registries_conf_free(c);
	return ok;
}

static const char *full_v2 =
	"# a comment\n"
	"unqualified-search-registries = [\"registry.fedoraproject.org\", # inline comment\n"
	"    'docker.io',\n"
	"]\n"
	"short-name-mode = \"enforcing\"\n"
	"credential-helpers = [ \"containers-auth.json\" ]\n"
	"some-number = 42\n"
	"\n"
	"[[registry]]\n"
	"prefix = \"docker.io\"\n"
	"location = \"docker.io\"\n"
	"mirror-by-digest-only = false\n"
	"  [[registry.mirror]]\n"
	"  location = \"mirror-a.example:5000\"   # first\n"
	"  [[ registry.mirror ]]\n"
	"  location = \"mirror-b.example\"\n"
	"  insecure = true\n"
	"  pull-from-mirror = \"digest-only\"\n"
	"  [[registry.mirror]]\n"
	"  location = \"mirror-c.example/cache\"\n"
	"  pull-from-mirror = \"tag-only\"\n"
	"\n"
	"[[registry]]\n"
	"prefix = \"registry.example:5000/fixtures\"\n"
	"location = \"127.0.0.1:5000/real\"\n"
	"insecure = true\n"
	"\n"
	"[[registry]]\n"
	"prefix = \"registry.example:5000/fixtures/deep\"\n"
	"location = \"deep.example/d\"\n"
	"\n"
	"[[registry]]\n"
	"location = \"blocked.example\"\n"
	"blocked = true\n"
	"\n"
	"[[registry]]\n"
	"prefix = \"*.wild.example\"\n"
	"insecure = true\n"
	"[[registry.mirror]]\n"
	"location = \"wild-mirror.example\"\n"
	"\n"
	"[[registry]]\n"
	"location = \"digestonly.example\"\n"
	"mirror-by-digest-only = true\n"
	"[[registry.mirror]]\n"
	"location = \"dm.example\"\n"
	"\n"
	"[aliases]\n"
	"\"fedora\" = \"registry.fedoraproject.org/fedora\"\n"
	"'lit' = 'C:\\\\no\\escapes'\n"
	"\"esc\" = \"tab\\there \\u00e9 \\\"q\\\"\"\n"
	"inline = { a = 1, b = [\"x\"] }\n";

int main(void)
{
	struct registries_conf *c = NULL, *d = NULL;
	char *error = NULL;
	int r;

	r = parse(&c, full_v2, &error);
	check(r == 0, "a full v2 file parses (comments, arrays over lines, [aliases], ignored keys)");
	if (r < 0)
		printf("# %s\n", error);
	free(error);
	error = NULL;

	check(plan_is(c, "docker.io/library/debian", false,
		      "mirror-a.example:5000/library/debian[mtd] "
		      "mirror-b.example/library/debian[mdi] "
		      "mirror-c.example/cache/library/debian[mtd] "
		      "docker.io/library/debian[td]"),
	      "pull by tag: all mirrors in order, tag-only serves the whole pull, then the origin");
	check(plan_is(c, "docker.io/library/debian", true,
		      "mirror-a.example:5000/library/debian[mtd] "
		      "mirror-b.example/library/debian[mdi] "
		      "docker.io/library/debian[td]"),
	      "pull by digest: tag-only mirrors are left out");
	check(plan_is(c, "registry.example:5000/fixtures/oci-gzip", false,
		      "127.0.0.1:5000/real/oci-gzip[tdi]"),
	      "prefix rewritten to location, insecure kept");
	check(plan_is(c, "registry.example:5000/fixtures/deep/x", false, "deep.example/d/x[td]"),
	      "the longest prefix wins");
	check(plan_is(c, "registry.example:5000/fixturesX/y", false,
		      "registry.example:5000/fixturesX/y[td]"),
	      "a prefix matches only at a path-component boundary");
	check(plan_is(c, "registry.example:5000/fixtures", false, "127.0.0.1:5000/real[tdi]"),
	      "a name equal to the prefix becomes the location");
	check(plan_is(c, "blocked.example/a/b", false,
		      "ERR:1:registry 'blocked.example' is blocked in FILE"),
	      "a blocked registry is -EPERM with a message naming the file");
	check(plan_is(c, "x.wild.example:443/repo", false,
		      "wild-mirror.example/repo[mtd] x.wild.example:443/repo[tdi]"),
	      "a wildcard prefix matches a subdomain and rewrites only its mirrors");
	check(plan_is(c, "wild.example/repo", false, "wild.example/repo[td]"),
	      "'*.wild.example' does not match 'wild.example' itself");
	check(plan_is(c, "digestonly.example/r", false, "dm.example/r[md] digestonly.example/r[td]"),
	      "mirror-by-digest-only: the mirror resolves no tags but serves blobs");
	check(plan_is(c, "quay.io/a/b", false, "quay.io/a/b[td]"),
	      "an unconfigured registry is its own only endpoint");
	check(plan_is(NULL, "quay.io/a/b", true, "quay.io/a/b[td]"),
	      "no configuration at all: the name itself");

	/* Drop-ins: a later file replaces the entry of the same prefix, keeps the others. */
	{
		const char *dropin = "[[registry]]\nprefix = \"docker.io\"\n"
				     "location = \"other.example\"\n"
				     "[[registry]]\nprefix = \"a.example/x\"\n"
				     "location = \"b.example\"\n";

		r = message(registries_conf_add_text(c, dropin, strlen(dropin), "DROPIN"), &error);
	}
	check(r == 0, "a second file adds to the first");
	check(plan_is(c, "docker.io/library/debian", false, "other.example/library/debian[td]"),
	      "a later file's [[registry]] replaces the earlier one of the same prefix");
	check(plan_is(c, "registry.example:5000/fixtures/deep/x", false, "deep.example/d/x[td]"),
	      "entries of other prefixes stay");
	check(plan_is(c, "a.example/x", false,
		      "ERR:22:location 'b.example' in 'DROPIN' leaves no repository for 'b.example'"),
	      "a rewrite that leaves no repository is -EINVAL with a message");
	check(plan_is(c, "a.example/x/y", false, "b.example/y[td]"),
	      "... while a longer name rewrites to the location's host");
	free(error);
	error = NULL;
	registries_conf_free(c);

	r = parse(&d, "[registries.search]\nregistries = ['docker.io']\n"
		  "[registries.insecure]\nregistries = [\"insecure.example:5000\"]\n"
		  "[registries.block]\nregistries = [\"bad.example\"]\n", &error);
	check(r == 0, "a v1 file parses");
	check(plan_is(d, "insecure.example:5000/r", false, "insecure.example:5000/r[tdi]"),
	      "v1 [registries.insecure] makes the registry insecure");
	check(plan_is(d, "bad.example/r", false, "ERR:1:registry 'bad.example' is blocked in FILE"),
	      "v1 [registries.block] blocks it");
	free(error);
	error = NULL;
	registries_conf_free(d);

	check(error_is("[[registry]]\nlocation = \"a\"\ninsecure = \"yes\"\n",
		       "FILE:3: 'insecure' must be true or false"), "a string where a bool goes");
	check(error_is("[[registry]]\nlocation = \"a\n", "FILE:2: unterminated string"),
	      "an unterminated string");
	check(error_is("x = [\"a\",\n\"b\"\n", "FILE:3: unterminated array"),
	      "an unterminated array names where the file ends");
	check(error_is("\n\n[[registry]]\nprefix = \"\"\n",
		       "FILE:3: [[registry]] needs a prefix or a location"),
	      "a [[registry]] without prefix and location names its header's line");
	check(error_is("[[registry.mirror]]\nlocation = \"m\"\n",
		       "FILE:1: [[registry.mirror]] before any [[registry]]"),
	      "a mirror outside a registry");
	check(error_is("[[registry]]\nlocation = \"a\"\n[[registry.mirror]]\ninsecure = true\n",
		       "FILE:3: [[registry.mirror]] needs a location"),
	      "a mirror without a location");
	check(error_is("[[registry]]\nlocation = a.example\n",
		       "FILE:2: invalid value (strings need quotes)"), "an unquoted string");
	check(error_is("[[registry]]\nlocation \"a\"\n", "FILE:2: expected '=' after 'location'"),
	      "a key without '='");
	check(error_is("[registry]\nlocation = \"a\"\n",
		       "FILE:1: 'registry' must be an array of tables: write [[registry]]"),
	      "[registry] instead of [[registry]]");
	check(error_is("[[registry]\n", "FILE:1: table header 'registry' is not closed with ']]'"),
	      "an unclosed table header");
	check(error_is("[[registry]]\nlocation = \"a\" junk\n",
		       "FILE:2: unexpected 'j' after the value"), "junk after a value");
	check(error_is("[[registry]]\nlocation = \"a\"\n[[registry.mirror]]\nlocation = \"m\"\n"
		       "pull-from-mirror = \"sometimes\"\n",
		       "FILE:5: invalid pull-from-mirror 'sometimes': use all, digest-only or "
		       "tag-only"), "an unknown pull-from-mirror");
	check(error_is("[[registry]]\nlocation = \"https://a.example\"\n",
		       "FILE:1: 'https://a.example': prefix and location take no scheme (http:// or "
		       "https://)"), "a location with a scheme");
	check(error_is("[[registry]]\nprefix = \"*.a.example/path\"\n",
		       "FILE:1: wildcard prefix '*.a.example/path' must be '*.domain', without a "
		       "path"), "a wildcard prefix with a path");
	check(error_is("[[registry]]\nprefix = \"a.example/x:tag\"\nlocation = \"b.example/x\"\n",
		       "FILE:1: prefix 'a.example/x:tag' with a tag or digest is not supported"),
	      "a prefix with a tag");
	check(error_is("[registries.insecure]\nregistries = [\"a\"]\n[[registry]]\nlocation = \"b\"\n",
		       "FILE:1: mixes version 1 [registries.*] tables with version 2 [[registry]]"),
	      "v1 and v2 in one file");
	check(error_is("[[registry]]\nlocation = \"a\"\nmirror = [{ location = \"m\" }]\n",
		       "FILE:3: inline mirror tables are not supported: use [[registry.mirror]]"),
	      "inline mirror tables are refused clearly");
	check(error_is("[[registry]]\nlocation = \"\"\"a\"\"\"\n",
		       "FILE:2: multi-line strings are not supported"), "multi-line strings");
	check(error_is("[[registry]]\nlocation = \"a\\qb\"\n",
		       "FILE:2: unknown escape '\\q' in a string"), "an unknown escape");
	check(error_is("[[registry]]\nlocation = \"a\"\nmirror-by-digest-only = true\n"
		       "[[registry.mirror]]\nlocation = \"m\"\npull-from-mirror = \"tag-only\"\n",
		       "FILE:4: pull-from-mirror of 'm' contradicts mirror-by-digest-only"),
	      "tag-only under mirror-by-digest-only");
	check(error_is("registries.insecure = \n", "FILE:1: a value is missing"), "a missing value");

	/* A loaded file: CONTAINERS_REGISTRIES_CONF names one file, a missing one is empty. */
	setenv("CONTAINERS_REGISTRIES_CONF", "/nonexistent/registries.conf", 1);
	c = NULL;
	r = message(registries_conf_load(&c), &error);
	check(r == 0 && c, "a missing file named by CONTAINERS_REGISTRIES_CONF is an empty one");
	check(plan_is(c, "docker.io/library/debian", false, "docker.io/library/debian[td]"),
	      "... which configures nothing");
	registries_conf_free(c);
	free(error);

	return tap_done();
}
