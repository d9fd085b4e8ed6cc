/*
 * cli/login.c: `lazyroot login REGISTRY`.  It checks the credentials against the registry (a
 * /v2/ ping that must authenticate with them), then stores them in an auth.json as podman and
 * skopeo read it (containers-auth.json(5), see auth_file.h): every other key and entry of the
 * file is kept, the file is replaced atomically (temporary file, fsync, rename) with mode 0600
 * in a directory created 0700.  `lazyroot logout` (logout.c) removes the entry again.
 *
 * The password never goes into a log line or an error; -p's argument is overwritten in argv
 * as soon as it is copied, and the buffers that held it are wiped.
 */
#include <getopt.h>
#include <jansson.h>
#include <termios.h>

#include "cache/registry/credentials.h"
#include "cache/base/error.h"
#include "cache/base/log.h"
#include "cache/registry/registry.h"
#include "cache/base/util.h"
#include "cli/auth_file.h"
#include "cli/cli.h"
#include "cli/verb_args.h"

#define SECRET_INPUT_MAX 4096

/* Reads one line from @fd with read(2) into a fixed buffer (stdio would keep copies); a pipe
 * is read to its end, and its first line taken.  -EFBIG over SECRET_INPUT_MAX. */
static int read_secret_line(int fd, bool to_eof, char **ret)
{
	char *buf = malloc(SECRET_INPUT_MAX + 1);
	size_t len = 0;

	if (!buf)
		return -ENOMEM;
	for (;;) {
		ssize_t n;

		if (len == SECRET_INPUT_MAX) {
			explicit_bzero(buf, len);
			free(buf);
			return -EFBIG;
		}
		n = read(fd, buf + len, SECRET_INPUT_MAX - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int e = -errno;

			explicit_bzero(buf, len);
			free(buf);
			return e;
		}
		if (n == 0)
			break;
		len += (size_t)n;
		if (!to_eof && memchr(buf, '\n', len))
			break;
	}
	buf[len] = 0;
	buf[strcspn(buf, "\r\n")] = 0;
	*ret = buf;
	return 0;
}

/* Prompts on stderr and reads a line from the terminal on stdin, without echo if @secret. */
static int prompt(const char *what, bool secret, char **ret)
{
	struct termios old, quiet;
	bool restore = false;
	int r;

	fprintf(stderr, "%s: ", what);
	fflush(stderr);
	if (secret && tcgetattr(STDIN_FILENO, &old) == 0) {
		quiet = old;
		quiet.c_lflag &= ~(tcflag_t)ECHO;
		quiet.c_lflag |= ECHONL;
		restore = tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet) == 0;
	}
	r = read_secret_line(STDIN_FILENO, false, ret);
	if (restore)
		(void)tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
	return r;
}

/* /v2/ with the credentials: the registry or its token service must accept them. */
static int verify_login(const char *key, const char *user, const char *password,
			const char *cert_dir)
{
	_cleanup_(registry_freep) struct registry *reg = NULL;
	struct reference ref = { .domain = (char *)key, .repository = (char *)"" };
	struct registry_options ro = { .username = user, .password = password, .cert_dir = cert_dir };
	int r;

	r = registry_new(&ref, &ro, &reg);
	if (r < 0) {
		log_error_errno(r, "cannot set up a client for '%s': %m", key);
		return -ERR_OTHER;
	}
	r = registry_ping(reg);
	if (r == -EACCES) {
		log_error("%s", error_take(r));
		return -ERR_REGISTRY;
	}
	if (r < 0) {
		log_error("cannot log in to %s: %s", key, error_take(r));
		return -ERR_REGISTRY;
	}
	return 0;
}

static int store_login(const char *path, const char *key, const char *user, const char *password)
{
	_cleanup_(free_secretp) char *auth = NULL;
	json_t *root = NULL, *auths, *entry;
	int r;

	r = auth_file_load(path, &root);
	if (r < 0)
		return -ERR_OTHER;
	r = auth_file_auths(root, path, true, &auths);
	if (r >= 0) {
		(void)auths_remove(auths, key);
		r = credentials_encode_auth(user, password, &auth);
	}
	if (r >= 0) {
		entry = json_pack("{s:s}", "auth", auth);
		if (!entry || json_object_set_new(auths, key, entry) < 0)
			r = -ENOMEM;
		if (r == -ENOMEM)
			log_error("out of memory");
	}
	if (r >= 0)
		r = auth_file_save(path, root);
	json_decref(root);
	return r < 0 ? -ERR_OTHER : 0;
}

static int get_login(const char *key, const char *authfile)
{
	_cleanup_(credentials_freep) struct credentials *c = NULL;
	struct credentials_options o = { .authfile = authfile };
	int r;

	r = credentials_lookup(&o, key, NULL, &c);
	if (r < 0) {
		log_error("%s", error_take(r));
		return -ERR_OTHER;
	}
	if (!c) {
		log_error("not logged in to %s", key);
		return -ERR_OTHER;
	}
	printf("%s\n", c->username);
	return 0;
}

/* What the command line did not give: the username from the terminal, the password from the
 * terminal or (--password-stdin) standard input.  0 or -ERR_USAGE (logged). */
static int login_ask(char **user_p, char **password_p, bool password_stdin)
{
	int r = 0;

	if (!*user_p) {
		if (!isatty(STDIN_FILENO) || password_stdin) {
			log_error("no username: give --username");
			return -ERR_USAGE;
		}
		r = prompt("Username", false, user_p);
		if (r < 0)
			return log_error_errno(r, "cannot read the username: %m"), -ERR_USAGE;
	}
	if (!(*user_p)[0] || strchr(*user_p, ':')) {
		log_error("invalid username: it must be non-empty and may not contain ':'");
		return -ERR_USAGE;
	}
	if (!*password_p) {
		if (password_stdin)
			r = read_secret_line(STDIN_FILENO, true, password_p);
		else if (isatty(STDIN_FILENO))
			r = prompt("Password", true, password_p);
		else {
			log_error("stdin is not a terminal: refusing to read a password from it "
				  "without --password-stdin");
			return -ERR_USAGE;
		}
		if (r < 0)
			return log_error_errno(r, "cannot read the password: %m"), -ERR_USAGE;
	}
	if (!(*password_p)[0]) {
		log_error("empty password");
		return -ERR_USAGE;
	}
	return 0;
}

static const char login_usage[] =
	"Usage: lazyroot login [OPTIONS] REGISTRY\n\n"
	"Check a username and password against REGISTRY (host[:port] or docker.io) and\n"
	"store them in an auth.json that lazyroot, podman and skopeo read.\n\n"
	"  -u, --username=USER    the username (prompted for on a terminal)\n"
	"  -p, --password=PASS    the password (visible to ps until parsed: prefer\n"
	"                         --password-stdin or the prompt)\n"
	"      --password-stdin   read the password from stdin\n"
	"      --authfile=FILE    write FILE (default: $REGISTRY_AUTH_FILE, else\n"
	"                         $XDG_RUNTIME_DIR/containers/auth.json)\n"
	"      --cert-dir=DIR     CA and client certificates for the registry\n"
	"      --get-login        print the username lazyroot would use, and exit\n"
	"  -v, --verbose          more messages\n"
	"  -h, --help             this help\n";

/* -u and -p are copied (the password hidden in argv at once); the copies are wiped later. */
static int login_opt(int c, char *arg, void *userdata)
{
	char **secrets = userdata, **p;

	if (c != 'u' && c != 'p')
		return 1;
	p = &secrets[c == 'p'];
	free_secret(*p);
	*p = strdup(arg);
	if (c == 'p')
		cli_hide_argument(arg);
	if (!*p)
		return log_error_errno(-ENOMEM, "out of memory");
	return 0;
}

int verb_login(int argc, char **argv)
{
	enum { OPT_PASSWORD_STDIN = 0x100, OPT_GET_LOGIN, OPT_LOGIN_AUTHFILE, OPT_CERT_DIR };
	static const struct option options[] = {
		{ "username", required_argument, NULL, 'u' },
		{ "password", required_argument, NULL, 'p' },
		{ "password-stdin", no_argument, NULL, OPT_PASSWORD_STDIN },
		{ "authfile", required_argument, NULL, OPT_LOGIN_AUTHFILE },
		{ "cert-dir", required_argument, NULL, OPT_CERT_DIR },
		{ "get-login", no_argument, NULL, OPT_GET_LOGIN },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	_cleanup_free_ char *key = NULL, *path = NULL;
	_cleanup_(free_secretp) char *user = NULL, *password = NULL;
	const char *authfile = NULL, *cert_dir = NULL;
	bool password_stdin = false, get = false;
	char *secrets[2] = {};
	int r;

	r = verb_args_parse(argc, argv, &(struct verb_args) {
		.name = "login", .operands = "needs one registry", .min_operands = 1,
		.max_operands = 1,
		.usage = login_usage, .optstring = "u:p:vh", .options = options,
		.opt = login_opt, .userdata = secrets,
		.args = (const struct verb_arg[]) {
			VERB_SWITCH(OPT_PASSWORD_STDIN, &password_stdin),
			VERB_VALUE(OPT_LOGIN_AUTHFILE, &authfile), VERB_VALUE(OPT_CERT_DIR, &cert_dir),
			VERB_SWITCH(OPT_GET_LOGIN, &get), {}
		},
	});
	user = secrets[0];
	password = secrets[1];
	if (r != 0)
		return r > 0 ? 0 : r;
	r = auth_registry_key(argv[optind], &key);
	if (r < 0)
		return r;
	if (get)
		return get_login(key, authfile);
	if (password && password_stdin) {
		log_error("--password and --password-stdin exclude each other");
		return -ERR_USAGE;
	}
	r = auth_file_choose(authfile, " to write", &path);
	if (r < 0)
		return r;

	r = login_ask(&user, &password, password_stdin);
	if (r < 0)
		return r;

	r = verify_login(key, user, password, cert_dir);
	if (r != 0)
		return r;
	r = store_login(path, key, user, password);
	if (r != 0)
		return r;
	printf("Login succeeded\n");
	return 0;
}
