/*
 * cache/registry/credentials.c: finds a registry's username and password in the files and credential
 * helpers that skopeo, podman and docker use (see credentials.h for the order).  Called only
 * when a registry asks for authentication, at most once per registry client, so a few small
 * files are read and perhaps one helper runs per client.
 *
 * Secrets: file contents and helper output are read into buffers that are wiped before they
 * are freed; errors name files, keys and helpers, never a value.  A helper gets the server
 * name on stdin and nothing secret on its command line or in its environment.
 */
#include "credentials.h"

#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "cache/base/base64.h"
#include "cache/base/error.h"
#include "cache/base/log.h"

#define AUTH_FILE_MAX (4U * 1024 * 1024)
#define PAIR_FILE_MAX (64U * 1024)
#define HELPER_TIMEOUT_MS 30000
#define HELPER_OUTPUT_MAX (64U * 1024)
#define HELPER_STDERR_MAX 4096
#define HELPER_NAME_MAX 64

extern char **environ;

static const char *const docker_io_aliases[] = {
	"docker.io", "index.docker.io", "registry-1.docker.io",
};

static void credentials_done(struct credentials *c)
{
	free_secret(c->username);
	free_secret(c->password);
	free(c->source);
}
DEFINE_FREE_FUNC(struct credentials, credentials_free, credentials_done);

/* The reason a lookup failed, as this thread's message (error.h). */
static void set_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void set_error(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	(void)error_setv(0, fmt, ap);
	va_end(ap);
}

static int credentials_make(const char *user, size_t user_len, const char *password,
			    const char *source, struct credentials **ret)
{
	_cleanup_(credentials_freep) struct credentials *c = calloc(1, sizeof(*c));

	if (!c)
		return -ENOMEM;
	c->username = strndup(user, user_len);
	c->password = strdup(password);
	c->source = strdup(source);
	if (!c->username || !c->password || !c->source)
		return -ENOMEM;
	*ret = TAKE_PTR(c);
	return 0;
}

int credentials_parse_pair(const char *s, const char *source, struct credentials **ret)
{
	const char *colon = strchr(s, ':');

	if (!colon || colon == s)
		return -EINVAL;
	return credentials_make(s, (size_t)(colon - s), colon + 1, source, ret);
}

/* Reads a small file whole into one allocation (no realloc leaves copies behind); the caller
 * wipes it.  Symlinks are followed, as the tools do for their config files. */
static int read_secret_file(const char *path, size_t max, char **ret, size_t *ret_len)
{
	_cleanup_close_ int fd = -EBADF;
	struct stat st;
	ssize_t n;
	char *buf;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (S_ISDIR(st.st_mode))
		return -EISDIR;
	if (!S_ISREG(st.st_mode))
		return -EBADF;
	if ((uint64_t)st.st_size > max)
		return -EFBIG;
	buf = malloc((size_t)st.st_size + 1);
	if (!buf)
		return -ENOMEM;
	/* Fewer bytes than its size when it shrank under us. */
	n = read_full(fd, buf, (size_t)st.st_size);
	if (n < 0) {
		explicit_bzero(buf, (size_t)st.st_size);
		free(buf);
		return (int)n;
	}
	buf[n] = 0;
	*ret = buf;
	*ret_len = (size_t)n;
	return 0;
}

int credentials_read_pair_file(const char *path, struct credentials **ret)
{
	_cleanup_free_ char *source = NULL;
	char *buf = NULL;
	size_t len;
	int r;

	r = read_secret_file(path, PAIR_FILE_MAX, &buf, &len);
	if (r < 0)
		return r;
	buf[strcspn(buf, "\r\n")] = 0;
	if (asprintf(&source, "'%s'", path) < 0)
		source = NULL;
	r = source ? credentials_parse_pair(buf, source, ret) : -ENOMEM;
	explicit_bzero(buf, len);
	free(buf);
	return r;
}

static bool is_docker_io(const char *host, size_t n)
{
	for (size_t i = 0; i < ELEMENTSOF(docker_io_aliases); i++)
		if (strlen(docker_io_aliases[i]) == n && strncmp(host, docker_io_aliases[i], n) == 0)
			return true;
	return false;
}

/* An auths or credHelpers key in one spelling: a URL ("https://host/v1/", as docker writes)
 * becomes its host; "host/ns/repo" keeps its path; docker.io's aliases become "docker.io". */
static char *normalize_key(const char *key)
{
	size_t host_len, n;
	const char *rest;
	bool url = false;
	char *out;

	if (startswith(key, "https://")) {
		key += strlen("https://");
		url = true;
	} else if (startswith(key, "http://")) {
		key += strlen("http://");
		url = true;
	}
	host_len = strcspn(key, "/");
	rest = key + host_len;
	n = url ? 0 : strlen(rest);
	while (n > 0 && rest[n - 1] == '/')
		n--;
	if (is_docker_io(key, host_len)) {
		key = "docker.io";
		host_len = strlen(key);
	}
	if (asprintf(&out, "%.*s%.*s", (int)host_len, key, (int)n, rest) < 0)
		return NULL;
	return out;
}

int credentials_registry_key(const char *name, char **ret)
{
	char *k;

	if (!name)
		return -EINVAL;
	k = normalize_key(name);
	if (!k)
		return -ENOMEM;
	if (!k[0] || strchr(k, '/') || strpbrk(k, " \t\r\n@")) {
		free(k);
		return -EINVAL;
	}
	*ret = k;
	return 0;
}

bool credentials_key_names_registry(const char *key, const char *registry_key)
{
	_cleanup_free_ char *k = normalize_key(key);

	return k && streq(k, registry_key);
}

int credentials_encode_auth(const char *user, const char *password, char **ret)
{
	char *plain = NULL;
	int k, r;

	k = asprintf(&plain, "%s:%s", user, password);
	if (k < 0)
		return -ENOMEM;
	r = base64_encode(plain, (size_t)k, ret);
	free_secret(plain);
	return r;
}

static bool helper_name_valid(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > HELPER_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '_' || c == '.'))
			return false;
	}
	return true;
}

struct helper_run {
	char *out;                 /* stdout, NUL-terminated; secret */
	size_t out_len;
	char err[HELPER_STDERR_MAX + 1];
	size_t err_len;
	int status;                /* from waitpid() */
};

static void helper_run_done(struct helper_run *h)
{
	if (h->out) {
		explicit_bzero(h->out, h->out_len);
		free(h->out);
		h->out = NULL;
	}
}

/* Reads what is there from @fd into the buffer; 0 at EOF, 1 if more may come, -EFBIG. */
static int drain(int fd, char *buf, size_t *len, size_t max, bool truncate)
{
	for (;;) {
		char scratch[512];
		size_t room = max - *len;
		ssize_t n;

		if (room == 0 && !truncate)
			return -EFBIG;
		if (room > 0)
			n = read(fd, buf + *len, room);
		else
			n = read(fd, scratch, sizeof(scratch));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return errno == EAGAIN ? 1 : -errno;
		if (n == 0)
			return 0;
		if (room > 0)
			*len += (size_t)n;
		else
			explicit_bzero(scratch, sizeof(scratch));
	}
}

static void kill_and_reap(pid_t pid)
{
	(void)kill(pid, SIGKILL);
	while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
		;
}

/* Writes "@line\n" to @fd (a pipe) with SIGPIPE blocked in this thread, then takes back a
 * SIGPIPE that the write raised, so the reader's early exit is only EPIPE. */
static void write_no_sigpipe(int fd, const char *line)
{
	sigset_t pipe_set, old;
	struct timespec zero = {};
	bool pending_before;

	(void)sigemptyset(&pipe_set);
	(void)sigaddset(&pipe_set, SIGPIPE);
	(void)pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
	{
		sigset_t pending;

		pending_before = sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE);
	}
	if (write_all(fd, line, strlen(line)) >= 0)
		(void)write_all(fd, "\n", 1);
	if (!pending_before)
		while (sigtimedwait(&pipe_set, NULL, &zero) < 0 && errno == EINTR)
			;
	(void)pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/* Runs `docker-credential-NAME get` with @server on stdin; collects stdout (bounded) and the
 * start of stderr; reaps it.  -ENOENT if the program is not on $PATH. */
static int helper_exec(const char *program, const char *server, struct helper_run *h)
{
	int in[2] = { -EBADF, -EBADF }, out[2] = { -EBADF, -EBADF }, err[2] = { -EBADF, -EBADF };
	char *argv[] = { (char *)program, (char *)"get", NULL };
	posix_spawn_file_actions_t fa;
	bool out_open = true, err_open = true, reaped = false;
	int64_t deadline = now_ms() + HELPER_TIMEOUT_MS;
	pid_t pid = -1;
	int r;

	h->out = malloc(HELPER_OUTPUT_MAX + 1);
	if (!h->out)
		return -ENOMEM;
	if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0) {
		r = -errno;
		goto finish;
	}
	(void)fcntl(out[0], F_SETFL, O_NONBLOCK);
	(void)fcntl(err[0], F_SETFL, O_NONBLOCK);

	r = -posix_spawn_file_actions_init(&fa);
	if (r < 0)
		goto finish;
	if (posix_spawn_file_actions_adddup2(&fa, in[0], STDIN_FILENO) != 0 ||
	    posix_spawn_file_actions_adddup2(&fa, out[1], STDOUT_FILENO) != 0 ||
	    posix_spawn_file_actions_adddup2(&fa, err[1], STDERR_FILENO) != 0)
		r = -ENOMEM;
	else
		r = -posix_spawnp(&pid, program, &fa, NULL, argv, environ);
	(void)posix_spawn_file_actions_destroy(&fa);
	if (r < 0)
		goto finish;
	closep(&in[0]);
	closep(&out[1]);
	closep(&err[1]);
	in[0] = out[1] = err[1] = -EBADF;

	/* A few bytes fit in the pipe; a helper that exits without reading gives EPIPE, and
	 * SIGPIPE, which would kill a process that does not ignore it (the CLI does, a library
	 * user need not): it is blocked around the write and any pending one taken back. */
	write_no_sigpipe(in[1], server);
	closep(&in[1]);
	in[1] = -EBADF;

	while (out_open || err_open || !reaped) {
		struct pollfd p[2];
		int64_t left = deadline - now_ms();
		nfds_t n = 0;
		int k;

		if (left <= 0) {
			if (!reaped)
				kill_and_reap(pid);
			r = -ETIMEDOUT;
			goto finish;
		}
		if (out_open)
			p[n++] = (struct pollfd) { .fd = out[0], .events = POLLIN };
		if (err_open)
			p[n++] = (struct pollfd) { .fd = err[0], .events = POLLIN };
		/* Short slices: a helper that exits while a child of its (an agent) keeps the pipes
		 * open must not hold us until the deadline. */
		(void)poll(p, n, left < 50 ? (int)left : 50);

		if (out_open) {
			k = drain(out[0], h->out, &h->out_len, HELPER_OUTPUT_MAX, false);
			if (k < 0) {
				if (!reaped)
					kill_and_reap(pid);
				r = k;
				goto finish;
			}
			out_open = k > 0;
		}
		if (err_open) {
			k = drain(err[0], h->err, &h->err_len, HELPER_STDERR_MAX, true);
			err_open = k > 0;
		}
		if (!reaped) {
			pid_t w = waitpid(pid, &h->status, WNOHANG);

			if (w == pid)
				reaped = true;
			else if (w < 0 && errno != EINTR) {
				r = -errno;
				goto finish;
			}
		}
		if (reaped) {
			/* What the helper wrote before exiting is in the pipes already. */
			if (out_open && drain(out[0], h->out, &h->out_len, HELPER_OUTPUT_MAX,
					      false) < 0) {
				r = -EFBIG;
				goto finish;
			}
			if (err_open)
				(void)drain(err[0], h->err, &h->err_len, HELPER_STDERR_MAX, true);
			break;
		}
	}
	r = 0;

finish:
	for (size_t i = 0; i < 2; i++) {
		closep(&in[i]);
		closep(&out[i]);
		closep(&err[i]);
	}
	if (h->out)
		h->out[h->out_len] = 0;
	h->err[h->err_len] = 0;
	return r;
}

/* The first line of @s, printable characters only, for an error message. */
static void first_line(char *dst, size_t size, const char *s)
{
	size_t i = 0;

	while (*s == '\n' || *s == '\r' || *s == ' ')
		s++;
	for (; s[i] && s[i] != '\n' && s[i] != '\r' && i + 1 < size && i < 200; i++)
		dst[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
	dst[i] = 0;
}

/* 1 with credentials, 0 if the helper has none for @server, or -errno (@error set). */
static int helper_get(const char *name, const char *server, struct credentials **ret)
{
	_cleanup_free_ char *program = NULL, *source = NULL;
	struct helper_run h = {};
	const char *user, *secret;
	char line[256];
	json_t *root = NULL;
	int r;

	if (!helper_name_valid(name)) {
		set_error("invalid credential helper name '%.64s'", name);
		return -EBADMSG;
	}
	if (asprintf(&program, "docker-credential-%s", name) < 0) {
		program = NULL;
		return -ENOMEM;
	}
	log_debug("asking credential helper '%s' for '%s'", program, server);
	r = helper_exec(program, server, &h);
	if (r < 0) {
		if (r == -ENOENT)
			set_error("credential helper '%s' not found in $PATH",
				  program);
		else if (r == -ETIMEDOUT)
			set_error("credential helper '%s' did not answer within "
				  "%d s", program, HELPER_TIMEOUT_MS / 1000);
		else if (r == -EFBIG)
			set_error("credential helper '%s' wrote more than %u KiB",
				  program, HELPER_OUTPUT_MAX / 1024);
		else
			set_error("cannot run credential helper '%s': %s", program,
				  strerror(-r));
		goto finish;
	}

	if (!WIFEXITED(h.status) || WEXITSTATUS(h.status) != 0) {
		/* docker-credential-helpers print their errors on stdout. */
		if (strstr(h.out, "credentials not found") || strstr(h.err, "credentials not found")) {
			log_debug("credential helper '%s' has no credentials for '%s'", program,
				  server);
			r = 0;
			goto finish;
		}
		first_line(line, sizeof(line), h.err[0] ? h.err : h.out);
		if (WIFEXITED(h.status))
			set_error("credential helper '%s' failed with status %d%s%s",
				  program, WEXITSTATUS(h.status), line[0] ? ": " : "", line);
		else
			set_error("credential helper '%s' was killed by signal %d",
				  program, WTERMSIG(h.status));
		r = -EPROTO;
		goto finish;
	}

	root = json_loadb(h.out, h.out_len, 0, NULL);
	user = json_string_value(json_object_get(root, "Username"));
	secret = json_string_value(json_object_get(root, "Secret"));
	if (!json_is_object(root) || !user || !secret) {
		set_error("credential helper '%s' answered without Username and "
			  "Secret", program);
		r = -EPROTO;
		goto finish;
	}
	if (streq(user, "<token>")) {
		log_debug("credential helper '%s' has an identity token for '%s', ignoring it",
			  program, server);
		r = 0;
		goto finish;
	}
	if (!user[0] || !secret[0]) {
		r = 0;
		goto finish;
	}
	if (asprintf(&source, "credential helper '%s'", program) < 0) {
		source = NULL;
		r = -ENOMEM;
		goto finish;
	}
	r = credentials_make(user, strlen(user), secret, source, ret);
	if (r >= 0)
		r = 1;

finish:
	json_decref(root);
	helper_run_done(&h);
	return r;
}

/* Asks helper @name for @registry; docker.io under both names docker and podman use. */
static int helper_lookup(const char *name, const char *registry, struct credentials **ret)
{
	int r;

	if (!streq(registry, "docker.io"))
		return helper_get(name, registry, ret);
	r = helper_get(name, "https://index.docker.io/v1/", ret);
	if (r != 0)
		return r;
	return helper_get(name, "docker.io", ret);
}

/* The value of @map's key that names @scope in any spelling, or NULL. */
static json_t *map_find(json_t *map, const char *scope, const char **ret_key)
{
	const char *key;
	json_t *v;

	json_object_foreach(map, key, v) {
		_cleanup_free_ char *k = normalize_key(key);

		if (k && streq(k, scope)) {
			*ret_key = key;
			return v;
		}
	}
	return NULL;
}

/* One "auths" entry: 1 with credentials, 0 if it has none usable, -EBADMSG. */
static int auth_entry(json_t *entry, const char *path, const char *key,
		      struct credentials **ret)
{
	_cleanup_free_ char *source = NULL;
	const char *auth, *user, *password;
	char *plain = NULL, *colon;
	size_t len;
	int r;

	if (!json_is_object(entry)) {
		set_error("entry '%.200s' in '%s' is not an object", key, path);
		return -EBADMSG;
	}
	if (asprintf(&source, "'%s'", path) < 0) {
		source = NULL;
		return -ENOMEM;
	}
	auth = json_string_value(json_object_get(entry, "auth"));
	if (auth && auth[0]) {
		r = base64_decode(auth, strlen(auth), &plain, &len);
		if (r == -EBADMSG) {
			set_error("entry '%.200s' in '%s' has an \"auth\" that is not "
				  "base64", key, path);
			return r;
		}
		if (r < 0)
			return r;
		colon = memchr(plain, ':', len);
		if (!colon || colon == plain || memchr(plain, 0, len)) {
			explicit_bzero(plain, len);
			free(plain);
			set_error("entry '%.200s' in '%s' has an \"auth\" that is not "
				  "base64 of USER:PASSWORD", key, path);
			return -EBADMSG;
		}
		r = credentials_make(plain, (size_t)(colon - plain), colon + 1, source, ret);
		explicit_bzero(plain, len);
		free(plain);
		return r < 0 ? r : 1;
	}
	user = json_string_value(json_object_get(entry, "username"));
	password = json_string_value(json_object_get(entry, "password"));
	if (user && user[0] && password) {
		r = credentials_make(user, strlen(user), password, source, ret);
		return r < 0 ? r : 1;
	}
	if (json_object_get(entry, "identitytoken"))
		log_debug("entry '%s' in '%s' holds an identity token, ignoring it", key, path);
	return 0;
}

/* Looks in one parsed auth file: 1 with credentials, 0 none, -errno (@error set). */
static int lookup_in_document(json_t *root, bool legacy, const char *path, const char *registry,
			      const char *repository, struct credentials **ret)
{
	_cleanup_free_ char *scope = NULL;
	json_t *auths, *helpers, *v;
	const char *key, *store;
	int r;

	if (!json_is_object(root)) {
		set_error("credentials file '%s' does not hold a JSON object", path);
		return -EBADMSG;
	}
	auths = legacy ? root : json_object_get(root, "auths");
	helpers = legacy ? NULL : json_object_get(root, "credHelpers");
	if ((auths && !json_is_object(auths)) || (helpers && !json_is_object(helpers))) {
		set_error("credentials file '%s': \"auths\" and \"credHelpers\" "
			  "must be objects", path);
		return -EBADMSG;
	}

	v = helpers ? map_find(helpers, registry, &key) : NULL;
	if (v) {
		if (!json_is_string(v)) {
			set_error("credentials file '%s': credHelpers entry '%.200s' "
				  "is not a string", path, key);
			return -EBADMSG;
		}
		log_debug("'%s' names credential helper '%s' for '%s'", path, json_string_value(v),
			  registry);
		return helper_lookup(json_string_value(v), registry, ret);
	}

	/* "host/ns/repo", then "host/ns", then "host". */
	if (asprintf(&scope, "%s%s%s", registry, repository && repository[0] ? "/" : "",
		     repository ?: "") < 0) {
		scope = NULL;
		return -ENOMEM;
	}
	for (size_t n = strlen(scope); auths;) {
		scope[n] = 0;
		v = map_find(auths, scope, &key);
		if (v) {
			r = auth_entry(v, path, key, ret);
			if (r != 0) {
				if (r > 0)
					log_debug("credentials for '%s' from entry '%s' of '%s'", registry,
						  key, path);
				return r;
			}
		}
		if (n == strlen(registry))
			break;
		while (n > strlen(registry) && scope[n] != '/')
			n--;
	}

	store = legacy ? NULL : json_string_value(json_object_get(root, "credsStore"));
	if (store && store[0])
		return helper_lookup(store, registry, ret);
	return 0;
}

static int lookup_in_file(const char *path, bool legacy, const char *registry,
			  const char *repository, struct credentials **ret)
{
	json_error_t jerr;
	json_t *root;
	char *buf = NULL;
	size_t len;
	int r;

	r = read_secret_file(path, AUTH_FILE_MAX, &buf, &len);
	if (r == -ENOENT || r == -ENOTDIR) {
		log_debug("no credentials file '%s'", path);
		return 0;
	}
	if (r < 0) {
		set_error("cannot read credentials file '%s': %s", path,
			  r == -EFBIG ? "larger than 4 MiB" : strerror(-r));
		return r;
	}
	root = json_loadb(buf, len, 0, &jerr);
	explicit_bzero(buf, len);
	free(buf);
	if (!root) {
		/* jerr.text may quote the text near the error: a secret.  Position only. */
		set_error("credentials file '%s' is not valid JSON (line %d, "
			  "column %d)", path, jerr.line, jerr.column);
		return -EBADMSG;
	}
	r = lookup_in_document(root, legacy, path, registry, repository, ret);
	json_decref(root);
	return r;
}

static char *home_dir(void)
{
	const char *h = getenv("HOME");
	struct passwd pw, *res = NULL;
	char buf[4096];

	if (h && h[0] == '/')
		return strdup(h);
	if (getpwuid_r(getuid(), &pw, buf, sizeof(buf), &res) != 0 || !res || !res->pw_dir)
		return NULL;
	return strdup(res->pw_dir);
}

int credentials_default_auth_file(char **ret)
{
	const char *e = getenv("REGISTRY_AUTH_FILE");
	char *p;

	if (e && e[0])
		p = strdup(e);
	else if ((e = getenv("XDG_RUNTIME_DIR")) && e[0] == '/') {
		if (asprintf(&p, "%s/containers/auth.json", e) < 0)
			p = NULL;
	} else if (geteuid() == 0)
		p = strdup("/run/containers/0/auth.json");
	else
		return -ENOENT;
	if (!p)
		return -ENOMEM;
	*ret = p;
	return 0;
}

int credentials_lookup(const struct credentials_options *o, const char *registry,
		       const char *repository, struct credentials **ret)
{
	_cleanup_free_ char *key = NULL, *home = NULL, *first = NULL;
	char *files[4] = {};
	bool legacy[4] = { false, false, false, true };
	const char *xdg = getenv("XDG_CONFIG_HOME"), *docker = getenv("DOCKER_CONFIG");
	int r;

	r = credentials_registry_key(registry, &key);
	if (r < 0) {
		set_error("invalid registry name '%.200s'", registry);
		return r;
	}
	home = home_dir();
	if (o && o->authfile)
		first = strdup(o->authfile);
	else
		(void)credentials_default_auth_file(&first);

	files[0] = TAKE_PTR(first);
	r = -ENOMEM;
	if (xdg && xdg[0] == '/') {
		if (asprintf(&files[1], "%s/containers/auth.json", xdg) < 0)
			goto finish;
	} else if (home && asprintf(&files[1], "%s/.config/containers/auth.json", home) < 0)
		goto finish;
	if (docker && docker[0]) {
		if (asprintf(&files[2], "%s/config.json", docker) < 0)
			goto finish;
	} else if (home && asprintf(&files[2], "%s/.docker/config.json", home) < 0)
		goto finish;
	if (home && asprintf(&files[3], "%s/.dockercfg", home) < 0)
		goto finish;

	r = 0;
	for (size_t i = 0; i < ELEMENTSOF(files) && r == 0; i++) {
		if (!files[i])
			continue;
		/* The same file twice (REGISTRY_AUTH_FILE pointing at docker's) is read once. */
		if (i > 0 && files[0] && streq(files[i], files[0]))
			continue;
		r = lookup_in_file(files[i], legacy[i], key, repository, ret);
	}
	if (r == 0) {
		log_debug("no credentials for '%s'", key);
		*ret = NULL;
	}

finish:
	for (size_t i = 0; i < ELEMENTSOF(files); i++)
		free(files[i]);
	return r < 0 ? r : 0;
}

int credentials_options_dup(const struct credentials_options *o, struct credentials_options **ret)
{
	struct credentials_options *c;

	if (!o) {
		*ret = NULL;
		return 0;
	}
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	if (o->authfile) {
		c->authfile = strdup(o->authfile);
		if (!c->authfile) {
			free(c);
			return -ENOMEM;
		}
	}
	*ret = c;
	return 0;
}

static void credentials_options_done(struct credentials_options *o)
{
	free((char *)o->authfile);
}
DEFINE_FREE_FUNC(struct credentials_options, credentials_options_free, credentials_options_done);
