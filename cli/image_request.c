/*
 * cli/image_request.c: the options every image verb shares (see image_request.h), and what is
 * built from them.  Secrets given on the command line are copied and wiped from argv at once.
 */
#include "image_request.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "cache/base/log.h"
#include "cache/base/util.h"
#include "cache/registry/registry.h"
#include "cli/exit_status.h"

#define FETCH_TIMEOUT_S_MAX 86400

struct registry_options mount_request_registry_options(const struct mount_request *req)
{
	return (struct registry_options) {
		.insecure = req->insecure,
		.cert_dir = req->cert_dir,
		.username = req->username,
		.password = req->password,
		.credentials = &req->credentials,
	};
}

void mount_request_done(struct mount_request *req)
{
	free(req->username);
	if (req->password)
		explicit_bzero(req->password, strlen(req->password));
	free(req->password);
	free((char *)req->credentials.authfile);
	req->username = req->password = NULL;
	req->credentials.authfile = NULL;
}

void cli_hide_argument(char *s)
{
	/* /proc/PID/cmdline reads argv's memory: overwriting it is what `ps` shows from now. */
	memset(s, '*', strlen(s));
}

static int credential_option_apply(int c, char *arg, struct mount_request *req)
{
	_cleanup_(credentials_freep) struct credentials *creds = NULL;
	char resolved[PATH_MAX];
	int r;

	if (c == OPT_AUTHFILE) {
		if (!realpath(arg, resolved)) {
			log_error_errno(errno, "cannot use --authfile '%s': %m", arg);
			return -ERR_USAGE;
		}
		free((char *)req->credentials.authfile);
		req->credentials.authfile = strdup(resolved);
		if (!req->credentials.authfile) {
			log_error("out of memory");
			return -ENOMEM;
		}
		return 1;
	}

	if (req->username) {
		log_error("--creds and --creds-file may be given once, and not both");
		if (c == OPT_CREDS)
			cli_hide_argument(arg);
		return -ERR_USAGE;
	}
	if (c == OPT_CREDS) {
		r = credentials_parse_pair(arg, "--creds", &creds);
		cli_hide_argument(arg);
		if (r == -EINVAL) {
			log_error("invalid --creds: use USER:PASSWORD");
			return -ERR_USAGE;
		}
	} else {
		r = credentials_read_pair_file(arg, &creds);
		if (r == -EINVAL) {
			log_error("--creds-file '%s' does not start with a USER:PASSWORD line", arg);
			return -ERR_USAGE;
		}
		if (r < 0 && r != -ENOMEM) {
			log_error_errno(r, "cannot read --creds-file '%s': %m", arg);
			return -ERR_USAGE;
		}
	}
	if (r < 0) {
		log_error("out of memory");
		return -ERR_USAGE;
	}
	req->username = TAKE_PTR(creds->username);
	req->password = TAKE_PTR(creds->password);
	return 1;
}

/* --timeout=SECONDS: whole seconds, 1 to a day. */
static int timeout_option_apply(const char *arg, struct mount_request *req)
{
	char *end = NULL;
	long s;

	errno = 0;
	s = strtol(arg, &end, 10);
	if (errno != 0 || end == arg || *end != '\0' || s < 1 || s > FETCH_TIMEOUT_S_MAX) {
		log_error("invalid --timeout '%s': use whole seconds from 1 to %d", arg,
			  FETCH_TIMEOUT_S_MAX);
		return -ERR_USAGE;
	}
	req->fetch_timeout_ms = s * 1000;
	return 1;
}

int image_option_apply(int c, char *arg, struct mount_request *req)
{
	switch (c) {
	case OPT_CREDS:
	case OPT_CREDS_FILE:
	case OPT_AUTHFILE:
		return credential_option_apply(c, arg, req);
	case 'C':
		req->cache_dir = arg;
		return 1;
	case 'P':
		req->platform = arg;
		return 1;
	case 'c':
		req->cert_dir = arg;
		return 1;
	case 'T':
		/* skopeo's and podman's spelling: a bare --tls-verify means true. */
		if (!arg || streq(arg, "true"))
			req->insecure = false;
		else if (streq(arg, "false"))
			req->insecure = true;
		else {
			log_error("invalid --tls-verify '%s': use true or false", arg);
			return -ERR_USAGE;
		}
		return 1;
	case 'I':
		req->insecure = true;
		return 1;
	case 'p':
		if (streq(arg, "missing"))
			req->policy = PULL_MISSING;
		else if (streq(arg, "always"))
			req->policy = PULL_ALWAYS;
		else if (streq(arg, "never"))
			req->policy = PULL_NEVER;
		else {
			log_error("invalid --pull policy '%s': use missing, always or never", arg);
			return -ERR_USAGE;
		}
		return 1;
	case OPT_TIMEOUT:
		return timeout_option_apply(arg, req);
	case OPT_PRIVATE_USERS:
		req->private_users = arg;   /* picked or checked once the mountpoint is known */
		return 1;
	case 'F':
		if (streq(arg, "landmark"))
			req->prefetch = PREFETCH_LANDMARK;
		else if (streq(arg, "all"))
			req->prefetch = PREFETCH_ALL;
		else if (streq(arg, "none"))
			req->prefetch = PREFETCH_NONE;
		else {
			log_error("invalid --prefetch '%s': use landmark, all or none", arg);
			return -ERR_USAGE;
		}
		return 1;
	default:
		return 0;
	}
}

int mount_request_fetcher_new(const struct mount_request *req, const struct reference *ref,
			      const struct image *img, struct rate_limit *rl,
			      const struct fetcher_options *o, struct blob_store *bs,
			      struct fetcher **ret)
{
	struct registry_options ro = mount_request_registry_options(req);

	ro.scheme = img->registry_scheme;
	ro.rate_limit = rl;
	return fetcher_new_for_image(ref, img->manifest, &ro, o, bs, ret);
}
