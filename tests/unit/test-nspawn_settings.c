/* tests/unit/test-nspawn_settings.c: the settings file text for an image config: the lines, the
 * quoting nspawn's config_parse_strv undoes, init images booted, values a file cannot hold
 * refused.  tests/integration/test_run_user.py runs such files with systemd-nspawn. */
#include "cli/nspawn_settings.h"

#include <errno.h>
#include <string.h>

#include "cache/base/error.h"
#include "tap.h"

#define HELPER "/usr/libexec/lazyroot/lazyroot-exec"

static char *format(const struct image_config *cfg, const struct image_user *u, uint32_t pu,
		    int *r)
{
	char *text = NULL;

	*r = nspawn_settings_format(&(struct nspawn_settings_spec) {
		.config = cfg, .user = u, .exec_helper = HELPER, .private_users = pu,
		.comment = "image demo\nsecond line" }, &text);
	return text;
}

static bool has_line(const char *text, const char *line)
{
	size_t n = strlen(line);

	for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : "")
		if (strncmp(p, line, n) == 0 && (p[n] == '\n' || p[n] == 0))
			return true;
	return false;
}

static void test_command_through_helper(void)
{
	struct image_user u = { .uid = 1000, .gid = 1001, .groups = (uint32_t[]) { 10, 50 },
				.n_groups = 2, .home = "/home/app" };
	struct image_config cfg = {
		.entrypoint = (char *[]) { "/bin/sh", "-c", NULL },
		.cmd = (char *[]) { "echo \"$FOO\" 'x' \\ 100%h", NULL },
		.env = (char *[]) { "FOO=bar baz", "PATH=/bin", NULL },
		.working_dir = "/srv/work dir",
	};
	char *text;
	int r;

	text = format(&cfg, &u, 65536 * 3, &r);
	check(r == 0 && text, "settings for a plain command");
	check(has_line(text, "# written by lazyroot: image demo?second line"),
	      "the comment stays on one line");
	check(has_line(text, "Boot=no"), "Boot=no");
	check(has_line(text, "Parameters= \"/run/lazyroot/exec\" \"--uid=1000\" \"--gid=1001\" "
		       "\"--groups=10,50\" \"--home=/home/app\" \"--\" \"/bin/sh\" \"-c\" "
		       "\"echo \"'\"'\"$FOO\"'\"'\" 'x' \\ 100%h\""),
	      "the helper with the ids, then the command; double quotes given in single ones");
	check(has_line(text, "Environment= \"FOO=bar baz\"") &&
	      has_line(text, "Environment= \"PATH=/bin\""), "one Environment= per Env entry");
	check(has_line(text, "WorkingDirectory=/srv/work dir"), "WorkingDirectory= as is");
	check(has_line(text, "PrivateUsers=196608"), "PrivateUsers= the base");
	check(has_line(text, "[Files]") && has_line(text, "BindReadOnly=" HELPER ":/run/lazyroot/exec"),
	      "the helper bound read-only");
	free(text);

	cfg.env = (char *[]) { "HOME=/x", NULL };
	text = format(&cfg, &u, 0, &r);
	check(r == 0 && !strstr(text, "--home") && !strstr(text, "PrivateUsers"),
	      "HOME in Env wins over passwd's; private users 0 writes no line");
	free(text);

	cfg.cmd = (char *[]) { "printf 'a\\nb'\nexit 3", NULL };
	text = format(&cfg, &u, 0, &r);
	check(r == 0 && strstr(text, "\"--escaped\"") && strstr(text, "\"printf 'a\\\\nb'\\nexit 3\""),
	      "a newline in the command goes C-escaped to the helper");
	free(text);
}

static void test_inits_and_refusals(void)
{
	struct image_config cfg = { .cmd = (char *[]) { "/sbin/init", "--log-level=debug", NULL } };
	char *text;
	int r;

	text = format(&cfg, NULL, 0, &r);
	check(r == 0 && has_line(text, "Boot=yes") && has_line(text, "Parameters= \"--log-level=debug\"") &&
	      !strstr(text, "lazyroot/exec"), "an init image boots, without the helper");
	free(text);
	cfg.cmd = (char *[]) { "/init", NULL };
	text = format(&cfg, NULL, 0, &r);
	check(r == 0 && has_line(text, "Boot=no") && has_line(text, "Parameters= \"/init\""),
	      "an init nspawn does not know runs as PID 1 as it is");
	free(text);

	cfg.cmd = NULL;
	text = format(&cfg, NULL, 0, &r);
	check(r == -ENOEXEC && !text, "no Entrypoint or Cmd: -ENOEXEC");
	cfg.cmd = (char *[]) { "/bin/true", NULL };
	cfg.env = (char *[]) { "A=1\nB=2", NULL };
	text = format(&cfg, NULL, 0, &r);
	check(r == -EINVAL && !text, "an Env entry with a newline is refused");
	cfg.env = NULL;
	cfg.working_dir = "relative";
	text = format(&cfg, NULL, 0, &r);
	check(r == -EINVAL && !text, "a relative WorkingDir is refused");
	cfg.working_dir = NULL;
	cfg.user = "nobody";
	text = format(&cfg, NULL, 0, &r);
	check(r == -ESRCH && !text, "a user name without a tree to look it up in does not resolve");
	cfg.user = "7:8";
	text = format(&cfg, NULL, 0, &r);
	check(r == 0 && strstr(text, "\"--uid=7\" \"--gid=8\" \"--groups=\""),
	      "numbers resolve without a tree");
	free(text);
}

int main(void)
{
	test_command_through_helper();
	test_inits_and_refusals();
	return tap_done();
}
