/* cli/auth_file.c: the auth.json login and logout share (see auth_file.h).  Its text holds
 * secrets: buffers that held it are wiped, and no error quotes it. */
#include "cli/auth_file.h"

#include <fcntl.h>
#include <libgen.h>
#include <sys/stat.h>

#include "cache/base/log.h"
#include "cache/base/util.h"
#include "cache/registry/credentials.h"
#include "cli/exit_status.h"

#define AUTH_FILE_MAX (4U * 1024 * 1024)

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

int auth_file_choose(const char *option, const char *what, char **ret)
{
	if (auth_file_path(option, ret) < 0)
		return log_error_errno(-ERR_USAGE, "no auth file%s: set XDG_RUNTIME_DIR or "
				       "REGISTRY_AUTH_FILE, or use --authfile", what);
	return 0;
}

int auth_registry_key(const char *arg, char **ret)
{
	if (credentials_registry_key(arg, ret) < 0)
		return log_error_errno(-ERR_USAGE, "invalid registry '%s': use host[:port] or "
				       "docker.io", arg);
	return 0;
}

int auth_file_load(const char *path, json_t **ret)
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

int auth_file_save(const char *path, json_t *root)
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

size_t auths_remove(json_t *auths, const char *key)
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

int auth_file_auths(json_t *root, const char *path, bool create, json_t **ret)
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
