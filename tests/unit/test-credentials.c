/* tests/unit/test-credentials.c: where credentials are found, in which order, and how
 * malformed files and failing helpers are reported; with a throw-away HOME, XDG dirs, auth
 * files and real helper scripts on $PATH. */
#include <signal.h>
#include <stdarg.h>
#include <sys/stat.h>

#include "cache/registry/credentials.h"
#include "cache/base/error.h"
#include "cache/base/util.h"
#include "tap.h"

static char root[] = "/tmp/test-credentials-XXXXXX";

static void write_file(const char *rel, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void write_file(const char *rel, const char *fmt, ...)
{
	char path[512], *dir;
	va_list ap;
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", root, rel);
	dir = strdup(path);
	*strrchr(dir, '/') = 0;
	(void)mkdir_p(dir, 0700);
	free(dir);
	f = fopen(path, "w");
	if (!f)
		abort();
	va_start(ap, fmt);
	vfprintf(f, fmt, ap);
	va_end(ap);
	fclose(f);
	if (strstr(rel, "bin/"))
		chmod(path, 0755);
}

static void remove_file(const char *rel)
{
	char path[512];

	snprintf(path, sizeof(path), "%s/%s", root, rel);
	(void)unlink(path);
}

static void set_env(const char *name, const char *rel)
{
	char path[512];

	if (!rel) {
		unsetenv(name);
		return;
	}
	snprintf(path, sizeof(path), "%s/%s", root, rel);
	setenv(name, path, 1);
}

static char error[1024];

/* "user:password" found for (registry, repository), or "" for none, or "error" */
static const char *found(const struct credentials_options *o, const char *registry,
			 const char *repository)
{
	static char buf[512];
	struct credentials *c = NULL;
	int r;

	error_clear();
	r = credentials_lookup(o, registry, repository, &c);
	snprintf(error, sizeof(error), "%s", error_message() ?: "");
	if (r < 0)
		return "error";
	if (!c)
		return "";
	snprintf(buf, sizeof(buf), "%s:%s", c->username, c->password);
	credentials_free(c);
	return buf;
}

static int lookup_errno(const char *registry)
{
	struct credentials *c = NULL;
	int r;

	error_clear();
	r = credentials_lookup(NULL, registry, "repo", &c);
	snprintf(error, sizeof(error), "%s", error_message() ?: "");
	credentials_free(c);
	return r;
}

static void test_names(void)
{
	char *k = NULL;

	check(credentials_registry_key("https://index.docker.io/v1/", &k) == 0 &&
	      streq(k, "docker.io"), "docker's URL key for Docker Hub is docker.io");
	free(k);
	check(credentials_registry_key("registry-1.docker.io", &k) == 0 && streq(k, "docker.io"),
	      "registry-1.docker.io is docker.io");
	free(k);
	check(credentials_registry_key("127.0.0.1:5000", &k) == 0 && streq(k, "127.0.0.1:5000"),
	      "host:port stays as it is");
	free(k);
	check(credentials_registry_key("host/ns", &k) == -EINVAL, "a name with a path is no registry");
	check(credentials_registry_key("", &k) == -EINVAL, "an empty name is no registry");
	check(credentials_key_names_registry("http://reg:5000", "reg:5000"),
	      "an http:// key names its host");
	check(!credentials_key_names_registry("reg:5000/ns", "reg:5000"),
	      "a repository-scoped key does not name the registry");
}

static void test_pairs(void)
{
	struct credentials *c = NULL;

	check(credentials_parse_pair("me:pa:ss", "t", &c) == 0 && streq(c->username, "me") &&
	      streq(c->password, "pa:ss"), "USER:PASS splits at the first ':'");
	c = credentials_free(c);
	check(credentials_parse_pair("nopassword", "t", &c) == -EINVAL, "USER alone is refused");
	check(credentials_parse_pair(":pass", "t", &c) == -EINVAL, "an empty user is refused");
	write_file("pair", "fileuser:filepass\nsecond line\n");
	check(credentials_read_pair_file("/nonexistent/pair", &c) == -ENOENT,
	      "a missing --creds-file is -ENOENT");
	{
		char path[512];

		snprintf(path, sizeof(path), "%s/pair", root);
		check(credentials_read_pair_file(path, &c) == 0 && streq(c->username, "fileuser") &&
		      streq(c->password, "filepass"), "--creds-file takes the first line");
		c = credentials_free(c);
	}
}

static void test_files(void)
{
	struct credentials_options o = {};
	char path[512], *enc = NULL;
	int r;

	check(streq(found(NULL, "reg:5000", "repo"), ""), "no files: no credentials");

	/* base64("duser:dpass") */
	write_file("home/.docker/config.json",
		   "{\"auths\": {\"https://reg:5000/v1/\": {\"auth\": \"ZHVzZXI6ZHBhc3M=\"}}}");
	check(streq(found(NULL, "reg:5000", "repo"), "duser:dpass"),
	      "docker config.json with a URL key and base64 auth");
	/* base64("duser:dpass") without padding, under docker's Hub key */
	write_file("home/.docker/config.json",
		   "{\"auths\": {\"https://index.docker.io/v1/\": {\"auth\": \"ZHVzZXI6ZHBhc3M\"}}}");
	check(streq(found(NULL, "docker.io", "library/debian"), "duser:dpass"),
	      "docker.io finds docker's https://index.docker.io/v1/ entry (padding optional)");
	check(streq(found(NULL, "index.docker.io", "library/debian"), "duser:dpass"),
	      "index.docker.io is docker.io");
	check(streq(found(NULL, "reg:5000", "repo"), ""), "another registry finds nothing");

	write_file("home/.config/containers/auth.json",
		   "{\"auths\": {\"reg:5000\": {\"username\": \"xuser\", \"password\": \"xpass\"},"
		   " \"registry-1.docker.io\": {\"auth\": \"eHVzZXI6eHBhc3M=\"}}}");
	check(streq(found(NULL, "reg:5000", "repo"), "xuser:xpass"),
	      "username/password fields of the XDG config auth.json");
	check(streq(found(NULL, "docker.io", "library/debian"), "xuser:xpass"),
	      "the XDG config auth.json goes before docker's config.json (alias key)");

	write_file("run/containers/auth.json",
		   "{\"auths\": {\"reg:5000\": {\"auth\": \"cnVzZXI6cnBhc3M=\"}}}");
	check(streq(found(NULL, "reg:5000", "repo"), "ruser:rpass"),
	      "$XDG_RUNTIME_DIR/containers/auth.json goes first");

	write_file("env-auth.json", "{\"auths\": {\"reg:5000\": {\"auth\": \"ZXVzZXI6ZXBhc3M=\"}}}");
	set_env("REGISTRY_AUTH_FILE", "env-auth.json");
	check(streq(found(NULL, "reg:5000", "repo"), "euser:epass"),
	      "$REGISTRY_AUTH_FILE replaces the runtime auth.json");
	remove_file("env-auth.json");
	check(streq(found(NULL, "reg:5000", "repo"), "xuser:xpass"),
	      "with $REGISTRY_AUTH_FILE the runtime auth.json is not read");
	unsetenv("REGISTRY_AUTH_FILE");

	r = credentials_encode_auth("ouser", "o:pass", &enc);
	write_file("opt-auth.json", "{\"auths\": {\"reg:5000\": {\"auth\": \"%s\"}}}", r == 0 ? enc : "");
	free(enc);
	snprintf(path, sizeof(path), "%s/opt-auth.json", root);
	o.authfile = path;
	check(streq(found(&o, "reg:5000", "repo"), "ouser:o:pass"),
	      "--authfile goes first; encode_auth round-trips a password with ':'");
	o.authfile = NULL;

	/* repository-scoped keys, most specific first */
	write_file("run/containers/auth.json",
		   "{\"auths\": {\"reg:5000\": {\"auth\": \"aG9zdDpo\"},"
		   " \"reg:5000/team\": {\"auth\": \"dGVhbTp0\"},"
		   " \"reg:5000/team/app\": {\"auth\": \"YXBwOmE=\"},"
		   " \"reg:5000/team/ap\": {\"auth\": \"d3Jvbmc6dw==\"}}}");
	check(streq(found(NULL, "reg:5000", "team/app"), "app:a"), "host/ns/repo key first");
	check(streq(found(NULL, "reg:5000", "team/app/sub"), "app:a"),
	      "a nested repository finds its parent's key");
	check(streq(found(NULL, "reg:5000", "team/other"), "team:t"), "then host/ns");
	check(streq(found(NULL, "reg:5000", "team/apple"), "team:t"),
	      "keys match whole path components only");
	check(streq(found(NULL, "reg:5000", "other/x"), "host:h"), "then the host");
	check(streq(found(NULL, "reg:5000", NULL), "host:h"), "no repository: the host");

	/* an entry without credentials (docker's {} with credsStore) falls through */
	write_file("run/containers/auth.json",
		   "{\"auths\": {\"reg:5000\": {}, \"other:1\": {\"identitytoken\": \"tok\"}}}");
	check(streq(found(NULL, "reg:5000", "repo"), "xuser:xpass"),
	      "an empty entry falls through to the next file");
	check(streq(found(NULL, "other:1", "repo"), ""), "an identity token alone is ignored");

	/* DOCKER_CONFIG and the legacy file */
	remove_file("run/containers/auth.json");
	remove_file("home/.config/containers/auth.json");
	write_file("dockercfg/config.json", "{\"auths\": {\"reg:5000\": {\"auth\": \"Yzpk\"}}}");
	set_env("DOCKER_CONFIG", "dockercfg");
	check(streq(found(NULL, "reg:5000", "repo"), "c:d"), "$DOCKER_CONFIG/config.json");
	unsetenv("DOCKER_CONFIG");
	remove_file("home/.docker/config.json");
	write_file("home/.dockercfg", "{\"https://reg:5000\": {\"auth\": \"bGVnOmFjeQ==\"}}");
	check(streq(found(NULL, "reg:5000", "repo"), "leg:acy"), "legacy ~/.dockercfg");
	remove_file("home/.dockercfg");
}

static void test_malformed(void)
{
	write_file("run/containers/auth.json", "{\"auths\": {\"reg:5000\": {\"auth\": \"s3cr3tpw");
	check(lookup_errno("reg:5000") == -EBADMSG, "truncated JSON is -EBADMSG");
	check(strstr(error, "run/containers/auth.json") && strstr(error, "not valid JSON") &&
	      !strstr(error, "s3cr3tpw"), "the error names the file, not its contents: %s", error);

	write_file("run/containers/auth.json", "[1, 2]");
	check(lookup_errno("reg:5000") == -EBADMSG && strstr(error, "JSON object"),
	      "an array is refused: %s", error);

	write_file("run/containers/auth.json", "{\"auths\": {\"reg:5000\": {\"auth\": \"#not*b64\"}}}");
	check(lookup_errno("reg:5000") == -EBADMSG && strstr(error, "base64") &&
	      !strstr(error, "#not*b64"), "bad base64 is -EBADMSG: %s", error);

	/* base64("nocolon") */
	write_file("run/containers/auth.json", "{\"auths\": {\"reg:5000\": {\"auth\": \"bm9jb2xvbg==\"}}}");
	check(lookup_errno("reg:5000") == -EBADMSG && !strstr(error, "nocolon"),
	      "auth without ':' is -EBADMSG: %s", error);

	write_file("run/containers/auth.json", "{\"auths\": [\"reg:5000\"]}");
	check(lookup_errno("reg:5000") == -EBADMSG, "auths that is no object is -EBADMSG");
	check(lookup_errno("other:1") == -EBADMSG, "... whatever the registry");

	write_file("run/containers/auth.json", "{\"auths\": {\"reg:5000\": \"x\"}}");
	check(lookup_errno("reg:5000") == -EBADMSG, "an entry that is no object is -EBADMSG");
	check(lookup_errno("other:1") == 0, "... but only for its registry");
	remove_file("run/containers/auth.json");
}

static void test_helpers(void)
{
	char path[1024];

	snprintf(path, sizeof(path), "%s/bin:%s", root, getenv("PATH"));
	setenv("PATH", path, 1);
	/* A helper that checks its argv, answers for reg:5000 and docker's Hub name only. */
	write_file("bin/docker-credential-unit",
		   "#!/bin/sh\n"
		   "[ \"$#\" = 1 ] && [ \"$1\" = get ] || { echo bad argv >&2; exit 9; }\n"
		   "read -r server\n"
		   "case \"$server\" in\n"
		   "reg:5000) printf '{\"ServerURL\":\"%%s\",\"Username\":\"huser\",\"Secret\":\"hpass\"}' "
		   "\"$server\";;\n"
		   "https://index.docker.io/v1/) echo '{\"Username\":\"hub\",\"Secret\":\"hubpass\"}';;\n"
		   "tok:1) echo '{\"Username\":\"<token>\",\"Secret\":\"t\"}';;\n"
		   "*) echo 'credentials not found in native keychain'; exit 1;;\n"
		   "esac\n");
	write_file("bin/docker-credential-broken", "#!/bin/sh\necho 'gpg: decryption failed' >&2\nexit 4\n");
	write_file("bin/docker-credential-garbage", "#!/bin/sh\necho 'not json'\n");
	write_file("bin/docker-credential-huge", "#!/bin/sh\nhead -c 200000 /dev/zero\n");

	write_file("home/.docker/config.json",
		   "{\"auths\": {\"reg:5000\": {\"auth\": \"ZHVzZXI6ZHBhc3M=\"}, \"other:1\": {}},"
		   " \"credsStore\": \"unit\"}");
	check(streq(found(NULL, "reg:5000", "repo"), "duser:dpass"), "auths before credsStore");
	check(streq(found(NULL, "docker.io", "library/x"), "hub:hubpass"),
	      "credsStore asked with docker's Hub server name");
	check(streq(found(NULL, "nowhere:1", "repo"), ""), "\"credentials not found\" is none");
	check(streq(found(NULL, "tok:1", "repo"), ""), "an identity token from a helper is ignored");

	write_file("home/.docker/config.json",
		   "{\"auths\": {\"reg:5000\": {\"auth\": \"ZHVzZXI6ZHBhc3M=\"}},"
		   " \"credHelpers\": {\"https://reg:5000\": \"unit\", \"bad:1\": \"broken\","
		   " \"junk:1\": \"garbage\", \"big:1\": \"huge\", \"gone:1\": \"absent\","
		   " \"evil:1\": \"../x\"}}");
	check(streq(found(NULL, "reg:5000", "repo"), "huser:hpass"), "credHelpers before auths");
	check(lookup_errno("bad:1") == -EPROTO && strstr(error, "docker-credential-broken") &&
	      strstr(error, "status 4") && strstr(error, "decryption failed"),
	      "a failing helper is -EPROTO, with its status and message: %s", error);
	check(lookup_errno("junk:1") == -EPROTO, "a helper answering nonsense is -EPROTO: %s", error);
	check(lookup_errno("big:1") == -EFBIG, "a helper writing too much is -EFBIG: %s", error);
	check(lookup_errno("gone:1") == -ENOENT && strstr(error, "not found"),
	      "a helper not on $PATH is -ENOENT: %s", error);
	check(lookup_errno("evil:1") == -EBADMSG, "a helper name with '/' is refused: %s", error);
	remove_file("home/.docker/config.json");
}

int main(void)
{
	char cmd[600];

	/* As lazyroot's main() does: a helper that exits before reading its stdin makes the
	 * write fail with EPIPE instead of killing the test (it did, now and then). */
	signal(SIGPIPE, SIG_IGN);
	if (!mkdtemp(root))
		return 1;
	set_env("HOME", "home");
	set_env("XDG_RUNTIME_DIR", "run");
	unsetenv("XDG_CONFIG_HOME");
	unsetenv("REGISTRY_AUTH_FILE");
	unsetenv("DOCKER_CONFIG");

	test_names();
	test_pairs();
	test_files();
	test_malformed();
	test_helpers();

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
	(void)system(cmd);
	return tap_done();
}
