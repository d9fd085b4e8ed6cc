/*
 * cache/registry/cert_dir.c: a registry's TLS material, as docker, podman and skopeo find it: the
 * certificate directory named by --cert-dir, else the first of /etc/containers/certs.d/HOST
 * and /etc/docker/certs.d/HOST that exists.  Its *.crt files are extra trusted CAs (appended
 * to the system bundle, since libcurl's CAINFO_BLOB replaces the default CA file), and a
 * *.cert with the *.key of the same stem is the client certificate.  Files have ceilings (1
 * MiB each, 4 MiB for the CA bundle, under libcurl's 8 MB blob limit); the key is a secret,
 * wiped when freed.
 */
#include "cert_dir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cache/base/error.h"
#include "cache/base/log.h"
#include "cache/base/util.h"

#define CERT_FILE_MAX (1U * 1024 * 1024)
#define CA_BUNDLE_MAX (4U * 1024 * 1024)
#define CERT_DIR_ENTRIES_MAX 256
#define SYSTEM_CA_BUNDLE "/etc/ssl/certs/ca-certificates.crt"

static const char *const cert_dir_roots[] = { "/etc/containers/certs.d", "/etc/docker/certs.d" };

struct loader {
	const char *option;        /* --cert-dir, or NULL */
	const char *host;          /* "host[:port]", the directory's name under the roots */
	const char *domain;        /* for messages */
	struct cert_dir_tls *out;
};

static void set_error(struct loader *r, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* The reason a load failed, as this thread's message (error.h). */
static void set_error(struct loader *r, const char *fmt, ...)
{
	va_list ap;

	(void)r;
	va_start(ap, fmt);
	(void)error_setv(0, fmt, ap);
	va_end(ap);
}

/* Reads the regular file @path (symlinks followed: certs.d entries often are links), at most
 * @max bytes; -EFBIG beyond, -EBADF if it is no regular file.  NUL-terminated. */
static int read_cert_file(const char *path, size_t max, char **ret, size_t *ret_len)
{
	_cleanup_close_ int fd = -EBADF;
	struct stat st;

	/* O_NONBLOCK: a FIFO planted in the directory must not hang the mount. */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode))
		return -EBADF;
	if ((uint64_t)st.st_size > max)
		return -EFBIG;
	return read_full_fd(fd, max, ret, ret_len);
}

static char *path_join(const char *dir, const char *name, size_t name_len)
{
	char *p;

	if (asprintf(&p, "%s/%.*s", dir, (int)name_len, name) < 0)
		return NULL;
	return p;
}

static bool has_suffix(const char *s, const char *suffix, size_t *ret_stem)
{
	size_t n = strlen(s), k = strlen(suffix);

	if (n <= k || !streq(s + n - k, suffix))
		return false;
	*ret_stem = n - k;
	return true;
}

/* Appends @n bytes and a newline (PEM files need not end with one) to the CA bundle. */
static int bundle_append(char **bundle, size_t *len, const char *data, size_t n)
{
	char *nb;

	if (*len + n + 2 > CA_BUNDLE_MAX)
		return -EFBIG;
	nb = realloc(*bundle, *len + n + 2);
	if (!nb)
		return -ENOMEM;
	memcpy(nb + *len, data, n);
	nb[*len + n] = '\n';
	nb[*len + n + 1] = 0;
	*bundle = nb;
	*len += n + 1;
	return 0;
}

/* Reads @path and appends it to the bundle; the system bundle goes first. */
static int bundle_add_file(struct loader *r, const char *path, char **bundle, size_t *len)
{
	_cleanup_free_ char *data = NULL;
	size_t n;
	int e;

	if (!*bundle) {
		_cleanup_free_ char *sys = NULL;

		/* CURLOPT_CAINFO_BLOB replaces the default CA file: add it back. */
		e = read_cert_file(SYSTEM_CA_BUNDLE, CA_BUNDLE_MAX, &sys, &n);
		if (e < 0 && e != -ENOENT) {
			set_error(r, "cannot read '%s': %s", SYSTEM_CA_BUNDLE, strerror(-e));
			return e;
		}
		e = bundle_append(bundle, len, e < 0 ? "" : sys, e < 0 ? 0 : n);
		if (e < 0)
			goto fail;
	}

	e = read_cert_file(path, CERT_FILE_MAX, &data, &n);
	if (e < 0) {
		set_error(r, "cannot read CA certificate '%s': %s", path, strerror(-e));
		return e;
	}
	e = bundle_append(bundle, len, data, n);
	if (e >= 0)
		return 0;
fail:
	if (e == -EFBIG)
		set_error(r, "CA certificates for %s exceed %u MiB", r->domain,
			  CA_BUNDLE_MAX / (1024 * 1024));
	return e;
}

static void free_namelist(struct dirent **names, int n)
{
	for (int i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

/* The registry's certificate directory: the option (which must exist), else the first
 * existing per-host one; *ret is NULL when there is none. */
static int cert_dir_find(struct loader *r, char **ret)
{
	struct stat st;

	if (r->option) {
		int e = stat(r->option, &st) < 0 ? -errno : S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;

		if (e < 0) {
			set_error(r, "cannot use certificate directory '%s' for %s: %s", r->option,
				  r->domain, strerror(-e));
			return e;
		}
		*ret = strdup(r->option);
		return *ret ? 0 : -ENOMEM;
	}

	for (size_t i = 0; i < ELEMENTSOF(cert_dir_roots); i++) {
		_cleanup_free_ char *path = path_join(cert_dir_roots[i], r->host, strlen(r->host));

		if (!path)
			return -ENOMEM;
		if (stat(path, &st) < 0) {
			if (errno == ENOENT || errno == ENOTDIR)
				continue;
			set_error(r, "cannot use certificate directory '%s' for %s: %m", path,
				  r->domain);
			return -errno;
		}
		if (S_ISDIR(st.st_mode)) {
			*ret = TAKE_PTR(path);
			return 0;
		}
	}
	*ret = NULL;
	return 0;
}

/* One *.cert + *.key pair (same stem); both must exist, as containers/image requires. */
static int client_cert_load(struct loader *r, const char *dir, const char *name, size_t stem,
			    bool is_cert)
{
	_cleanup_free_ char *path = path_join(dir, name, strlen(name));
	_cleanup_free_ char *partner_name = NULL, *partner = NULL, *cert = NULL;
	char *key = NULL;
	size_t cert_len, key_len;
	int e;

	if (!path || asprintf(&partner_name, "%.*s%s", (int)stem, name,
			      is_cert ? ".key" : ".cert") < 0)
		return -ENOMEM;
	partner = path_join(dir, partner_name, strlen(partner_name));
	if (!partner)
		return -ENOMEM;
	if (access(partner, F_OK) < 0) {
		e = -errno;
		set_error(r, "%s '%s' has no matching '%s' (CA certificates must be named *.crt): %s",
			  is_cert ? "client certificate" : "client key", path, partner_name,
			  strerror(-e));
		return e;
	}
	if (!is_cert)
		return 0;  /* read with its certificate */
	if (r->out->cert_pem) {
		log_debug("using the first client certificate only, ignoring '%s'", path);
		return 0;
	}

	e = read_cert_file(path, CERT_FILE_MAX, &cert, &cert_len);
	if (e >= 0)
		e = read_cert_file(partner, CERT_FILE_MAX, &key, &key_len);
	if (e < 0) {
		set_error(r, "cannot read client certificate '%s' or its key: %s", path,
			  strerror(-e));
		return e;
	}
	r->out->cert_pem = TAKE_PTR(cert);
	r->out->cert_pem_len = cert_len;
	r->out->key_pem = key;
	r->out->key_pem_len = key_len;
	return 0;
}

/* Reads the certificate directory: *.crt become extra trusted CAs (the system bundle is
 * kept), the first *.cert + *.key pair becomes the client certificate. */
static int load(struct loader *r)
{
	_cleanup_free_ char *dir = NULL, *bundle = NULL;
	struct dirent **names = NULL;
	size_t bundle_len = 0;
	int n, e = 0;

	e = cert_dir_find(r, &dir);
	if (e < 0 || !dir)
		return e;

	n = scandir(dir, &names, NULL, alphasort);
	if (n < 0) {
		e = -errno;
		set_error(r, "cannot read certificate directory '%s': %s", dir, strerror(-e));
		return e;
	}
	if (n > CERT_DIR_ENTRIES_MAX) {
		set_error(r, "certificate directory '%s' has more than %d entries", dir,
			  CERT_DIR_ENTRIES_MAX);
		e = -EFBIG;
	}

	for (int i = 0; i < n && e >= 0; i++) {
		const char *name = names[i]->d_name;
		size_t stem;

		if (has_suffix(name, ".crt", &stem)) {
			_cleanup_free_ char *path = path_join(dir, name, strlen(name));

			e = path ? bundle_add_file(r, path, &bundle, &bundle_len) : -ENOMEM;
		} else if (has_suffix(name, ".cert", &stem)) {
			e = client_cert_load(r, dir, name, stem, true);
		} else if (has_suffix(name, ".key", &stem)) {
			e = client_cert_load(r, dir, name, stem, false);
		}
	}
	free_namelist(names, n);
	if (e < 0)
		return e;

	log_debug("certificate directory '%s': %s CA certificates, %s client certificate", dir,
		  bundle ? "extra" : "no", r->out->cert_pem ? "a" : "no");
	r->out->ca_pem = TAKE_PTR(bundle);
	r->out->ca_pem_len = bundle_len;
	return 0;
}

int cert_dir_load(const char *option, const char *host, const char *domain,
		  struct cert_dir_tls *ret)
{
	struct cert_dir_tls out = {};
	struct loader r = { .option = option, .host = host, .domain = domain, .out = &out };
	int e;

	e = load(&r);
	if (e < 0) {
		cert_dir_tls_done(&out);
		return e;
	}
	*ret = out;
	return 0;
}

void cert_dir_tls_done(struct cert_dir_tls *t)
{
	free(t->ca_pem);
	free(t->cert_pem);
	if (t->key_pem) {
		explicit_bzero(t->key_pem, t->key_pem_len);
		free(t->key_pem);
	}
	*t = (struct cert_dir_tls) {};
}
