/*
 * cli/login.c: `lazyroot login REGISTRY` and `lazyroot logout REGISTRY`.  login checks the
 * credentials against the registry (a /v2/ ping that must authenticate with them), then stores
 * them in an auth.json as podman and skopeo read it (containers-auth.json(5)): every other key
 * and entry of the file is kept, the file is replaced atomically (temporary file, fsync,
 * rename) with mode 0600 in a directory created 0700.  logout removes the entry again.
 *
 * The password never goes into a log line or an error; -p's argument is overwritten in argv
 * as soon as it is copied, and the buffers that held it are wiped.
 */
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <libgen.h>
#include <sys/stat.h>
#include <termios.h>

#include "cache/registry/credentials.h"
#include "cache/base/error.h"
#include "cache/base/log.h"
#include "cache/registry/registry.h"
#include "cache/base/util.h"
#include "cli/cli.h"

#define SECRET_INPUT_MAX 4096
#define AUTH_FILE_MAX (4U * 1024 * 1024)

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

/* The auth file to write: --authfile, else the default first one, else (not root, no
 * XDG_RUNTIME_DIR) ${XDG_CONFIG_HOME:-$HOME/.config}/containers/auth.json. */
static int auth_file_path(const char *option, char **ret)
{
	const char *xdg = getenv("XDG_CONFIG_HOME"), *home = getenv("HOME");
	int r;

	if (option)
		return (*ret = strdup(option)) ? 0 : -ENOMEM;
	r = credentials_default_auth_file(ret);
	if (r != -ENOENT)
		return r;
	if (xdg && xdg[0] == '/')
		r = asprintf(ret, "%s/containers/auth.json", xdg);
	else if (home && home[0] == '/')
		r = asprintf(ret, "%s/.config/containers/auth.json", home);
	else
		return -ENOENT;
	return r < 0 ? -ENOMEM : 0;
}

/* Parses @path into an object; a missing file is an empty one. */
static int auth_file_load(const char *path, json_t **ret)
{
	json_error_t jerr;
	char *buf = NULL;
	size_t len;
	json_t *root;
	int r;

	r = read_full_file(path, AUTH_FILE_MAX, &buf, &len);
	if (r == -ENOENT) {
		*ret = json_object();
		return *ret ? 0 : -ENOMEM;
	}
	if (r < 0)
		return log_error_errno(r, "cannot read '%s': %m", path);
	root = json_loadb(buf, len, 0, &jerr);
	explicit_bzero(buf, len);
	free(buf);
	if (!json_is_object(root)) {
		json_decref(root);
		/* Position only: jansson's text may quote a secret. */
		log_error("'%s' is not a JSON object (line %d, column %d), not touching it", path,
			  jerr.line, jerr.column);
		return -EBADMSG;
	}
	*ret = root;
	return 0;
}

/* Writes @root to @path atomically: mode 0600, directory created 0700. */
static int auth_file_save(const char *path, json_t *root)
{
	_cleanup_free_ char *dir_copy = strdup(path), *tmp = NULL;
	_cleanup_(free_secretp) char *text = NULL;
	_cleanup_close_ int fd = -EBADF, dir_fd = -EBADF;
	const char *dir;
	int r;

	if (!dir_copy)
		return log_error("out of memory"), -ENOMEM;
	dir = dirname(dir_copy);
	r = mkdir_p(dir, 0700);
	if (r < 0)
		return log_error_errno(r, "cannot create directory '%s': %m", dir);
	if (asprintf(&tmp, "%s/.auth.json.XXXXXX", dir) < 0) {
		tmp = NULL;
		return log_error("out of memory"), -ENOMEM;
	}
	text = json_dumps(root, JSON_INDENT(1) | JSON_ENSURE_ASCII);
	if (!text)
		return log_error("out of memory"), -ENOMEM;

	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0)
		return log_error_errno(errno, "cannot create a temporary file in '%s': %m", dir);
	if (fchmod(fd, 0600) < 0 || write_all(fd, text, strlen(text)) < 0 ||
	    write_all(fd, "\n", 1) < 0 || fsync(fd) < 0) {
		r = -errno;
		goto fail;
	}
	if (rename(tmp, path) < 0) {
		r = -errno;
		goto fail;
	}
	dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dir_fd >= 0)
		(void)fsync(dir_fd);
	return 0;

fail:
	(void)unlink(tmp);
	return log_error_errno(r, "cannot write '%s': %m", path);
}

/* Removes every "auths" entry that names @key; returns how many. */
static size_t auths_remove(json_t *auths, const char *key)
{
	const char *k;
	json_t *v;
	void *tmp;
	size_t n = 0;

	json_object_foreach_safe(auths, tmp, k, v) {
		if (credentials_key_names_registry(k, key)) {
			(void)json_object_del(auths, k);
			n++;
		}
	}
	return n;
}

static int get_auths(json_t *root, const char *path, bool create, json_t **ret)
{
	json_t *auths = json_object_get(root, "auths");

	if (!auths && create) {
		auths = json_object();
		if (!auths || json_object_set_new(root, "auths", auths) < 0)
			return log_error("out of memory"), -ENOMEM;
	}
	if (auths && !json_is_object(auths)) {
		log_error("\"auths\" in '%s' is not an object, not touching it", path);
		return -EBADMSG;
	}
	*ret = auths;
	return 0;
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
	r = get_auths(root, path, true, &auths);
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

static void login_help(void)
{
	printf("Usage: lazyroot login [OPTIONS] REGISTRY\n\n"
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
	       "  -h, --help             this help\n");
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
	int c, r;

	optind = 1;
	while ((c = getopt_long(argc, argv, "u:p:vh", options, NULL)) >= 0) {
		switch (c) {
		case 'u':
			free_secret(user);
			user = strdup(optarg);
			if (!user)
				return log_error_errno(-ENOMEM, "out of memory");
			break;
		case 'p':
			free_secret(password);
			password = strdup(optarg);
			cli_hide_argument(optarg);
			if (!password)
				return log_error_errno(-ENOMEM, "out of memory");
			break;
		case OPT_PASSWORD_STDIN:
			password_stdin = true;
			break;
		case OPT_LOGIN_AUTHFILE:
			authfile = optarg;
			break;
		case OPT_CERT_DIR:
			cert_dir = optarg;
			break;
		case OPT_GET_LOGIN:
			get = true;
			break;
		case 'v':
			log_set_level(LOG_LEVEL_DEBUG);
			break;
		case 'h':
			login_help();
			return 0;
		default:
			return -ERR_USAGE;
		}
	}
	if (argc - optind != 1) {
		log_error("login needs one registry (see 'lazyroot login --help')");
		return -ERR_USAGE;
	}
	r = credentials_registry_key(argv[optind], &key);
	if (r < 0) {
		log_error("invalid registry '%s': use host[:port] or docker.io", argv[optind]);
		return -ERR_USAGE;
	}
	if (get)
		return get_login(key, authfile);
	if (password && password_stdin) {
		log_error("--password and --password-stdin exclude each other");
		return -ERR_USAGE;
	}
	r = auth_file_path(authfile, &path);
	if (r < 0) {
		log_error("no auth file to write: set XDG_RUNTIME_DIR or REGISTRY_AUTH_FILE, or use "
			  "--authfile");
		return -ERR_USAGE;
	}

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

static void logout_help(void)
{
	printf("Usage: lazyroot logout [OPTIONS] REGISTRY\n"
	       "       lazyroot logout [OPTIONS] --all\n\n"
	       "Remove REGISTRY's credentials from the auth file that 'lazyroot login' writes.\n\n"
	       "      --authfile=FILE    the auth file (default: as for login)\n"
	       "  -a, --all              remove every registry's credentials\n"
	       "  -h, --help             this help\n");
}

int verb_logout(int argc, char **argv)
{
	enum { OPT_LOGOUT_AUTHFILE = 0x100 };
	static const struct option options[] = {
		{ "authfile", required_argument, NULL, OPT_LOGOUT_AUTHFILE },
		{ "all", no_argument, NULL, 'a' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	_cleanup_free_ char *key = NULL, *path = NULL;
	const char *authfile = NULL;
	json_t *root = NULL, *auths = NULL;
	bool all = false;
	size_t removed;
	int c, r, status;

	optind = 1;
	while ((c = getopt_long(argc, argv, "avh", options, NULL)) >= 0) {
		switch (c) {
		case OPT_LOGOUT_AUTHFILE:
			authfile = optarg;
			break;
		case 'a':
			all = true;
			break;
		case 'v':
			log_set_level(LOG_LEVEL_DEBUG);
			break;
		case 'h':
			logout_help();
			return 0;
		default:
			return -ERR_USAGE;
		}
	}
	if (argc - optind != (all ? 0 : 1)) {
		log_error("logout needs one registry, or --all (see 'lazyroot logout --help')");
		return -ERR_USAGE;
	}
	if (!all && credentials_registry_key(argv[optind], &key) < 0) {
		log_error("invalid registry '%s': use host[:port] or docker.io", argv[optind]);
		return -ERR_USAGE;
	}
	r = auth_file_path(authfile, &path);
	if (r < 0) {
		log_error("no auth file: set XDG_RUNTIME_DIR or REGISTRY_AUTH_FILE, or use "
			  "--authfile");
		return -ERR_USAGE;
	}
	if (access(path, F_OK) < 0 && errno == ENOENT) {
		if (all)
			return 0;
		log_error("not logged in to %s ('%s' does not exist)", key, path);
		return -ERR_OTHER;
	}

	if (auth_file_load(path, &root) < 0 || get_auths(root, path, false, &auths) < 0) {
		status = -ERR_OTHER;
		goto finish;
	}
	if (all) {
		removed = auths ? json_object_size(auths) : 0;
		if (auths)
			(void)json_object_clear(auths);
	} else {
		removed = auths ? auths_remove(auths, key) : 0;
	}
	if (removed == 0 && !all) {
		log_error("not logged in to %s (no entry in '%s')", key, path);
		status = -ERR_OTHER;
		goto finish;
	}
	status = removed == 0 || auth_file_save(path, root) >= 0 ? 0 : -ERR_OTHER;
	if (status == 0 && !all)
		printf("Removed login credentials for %s\n", key);

finish:
	json_decref(root);
	return status;
}
