/* cli/image_request.h: what every image verb (mount, run, prewarm) is asked: the options they
 * share, parsed into one struct mount_request, and what is made from it the same way for each
 * (registry options, the fetcher of lazy layers). */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "cache/fetch.h"
#include "cache/image.h"
#include "cache/registry/credentials.h"

struct rate_limit;

enum prefetch_mode {
	PREFETCH_LANDMARK,  /* eStargz entries before .prefetch.landmark (the default) */
	PREFETCH_ALL,       /* every chunk of every lazy layer */
	PREFETCH_NONE,
};

struct mount_request {
	const char *ref;
	const char *mountpoint;
	const char *overlay_dir;   /* upper and work under it; NULL for none */
	bool volatile_upper;       /* tmpfs upper */
	const char *private_users; /* --private-users: "pick", a base, "no"; NULL: off */
	const char *private_users_name;  /* pick's name (a machine's); NULL: the mountpoint */
	const char *cache_dir;     /* NULL: default */
	const char *platform;      /* NULL: host */
	const char *cert_dir;      /* NULL: /etc/containers/certs.d/HOST, /etc/docker/certs.d/HOST */
	enum pull_policy policy;
	enum prefetch_mode prefetch;
	bool insecure;
	bool foreground;
	bool debug_fuse;
	long fetch_timeout_ms;     /* --timeout: one lazy read's fetch, retries included; 0: 30 s */
	uint64_t record_profile_ms;  /* mount --record-profile: its window; 0: do not record */
	bool no_profile;           /* mount --profile=no: no start profile is used */
	/* --creds or --creds-file: used when the registry asks, before any auth file.  Copies
	 * (argv's --creds is overwritten); the password is wiped by mount_request_done(). */
	char *username;
	char *password;
	struct credentials_options credentials;  /* authfile: --authfile made absolute, owned */
	/* Called once the image is pulled, before the mount goes live (a machine writes its
	 * settings here), with the private users base it mounts with (0: none): < 0 (logged)
	 * fails the mount. */
	int (*pulled)(void *userdata, const struct reference *ref, const struct image *img,
		      uint32_t private_users);
	void *pulled_userdata;
};

/* Frees what image_option_apply() allocated in @req, wiping the password. */
void mount_request_done(struct mount_request *req);

/* Overwrites @s in place (it is in argv, which `ps` shows). */
void cli_hide_argument(char *s);

/* Registry credentials, in IMAGE_OPTIONS and prewarm's table (values above any verb's own). */
enum { OPT_CREDS = 0x200, OPT_CREDS_FILE, OPT_AUTHFILE };
enum { OPT_TIMEOUT = 0x280, OPT_PRIVATE_USERS };   /* in IMAGE_OPTIONS */
#define CREDENTIAL_OPTIONS                                               \
	{ "creds", required_argument, NULL, OPT_CREDS },                 \
	{ "creds-file", required_argument, NULL, OPT_CREDS_FILE },       \
	{ "authfile", required_argument, NULL, OPT_AUTHFILE }
#define CREDENTIAL_OPTIONS_HELP                                                          \
	"      --creds=USER:PASS  log in to the registry with these (visible to ps until\n" \
	"                         parsed: prefer --creds-file or an auth file)\n"         \
	"      --creds-file=FILE  USER:PASS from the first line of FILE\n"                 \
	"      --authfile=FILE    auth.json to read before the default ones\n"

/* The options `mount` and `run` share, for their getopt_long() tables and --help. */
#define IMAGE_OPTIONS                                              \
	{ "cache-dir", required_argument, NULL, 'C' },             \
	{ "platform", required_argument, NULL, 'P' },              \
	{ "pull", required_argument, NULL, 'p' },                  \
	{ "cert-dir", required_argument, NULL, 'c' },              \
	{ "prefetch", required_argument, NULL, 'F' },              \
	{ "timeout", required_argument, NULL, OPT_TIMEOUT },       \
	{ "private-users", required_argument, NULL, OPT_PRIVATE_USERS }, \
	CREDENTIAL_OPTIONS,                                        \
	TLS_OPTIONS
/* Also in prewarm's table. */
#define TLS_OPTIONS                                                \
	{ "tls-verify", optional_argument, NULL, 'T' },            \
	{ "insecure-registry", no_argument, NULL, 'I' }
#define TLS_OPTIONS_HELP                                                                 \
	"      --tls-verify=BOOL  false: the registry is insecure (unverified TLS, then\n"    \
	"                         plain HTTP); default true\n"                                \
	"      --insecure-registry  the same as --tls-verify=false\n"
#define IMAGE_OPTIONS_HELP                                                               \
	"      --cache-dir=DIR    cache directory (default /var/cache/lazyroot)\n"          \
	"      --platform=OS/ARCH[/VARIANT]  pick this platform from an image index\n"     \
	"      --pull=POLICY      missing (default), always or never\n"                    \
	"      --cert-dir=DIR     CA and client certificates for the registry\n"          \
	"      --prefetch=WHAT    fetch in the background after mounting: landmark\n"      \
	"                         (default: what the image marks), all or none\n"          \
	"      --timeout=SECONDS  a read of a file not yet fetched fails (EIO) after\n"       \
	"                         this long without the registry (default 30)\n"            \
	CREDENTIAL_OPTIONS_HELP \
	TLS_OPTIONS_HELP

/* The registry client options @req asks for (TLS, insecure, credentials); the strings stay
 * @req's.  Every path that talks to a registry for a request builds them here. */
struct registry_options mount_request_registry_options(const struct mount_request *req);

/* Applies option @c of IMAGE_OPTIONS (or CREDENTIAL_OPTIONS) to @req: 1 if it was one of them, 0 if not, or
 * -ERR_USAGE (logged) for a bad value. */
int image_option_apply(int c, char *arg, struct mount_request *req);

/* The fetcher of @img's lazy layers (@img pulled for @ref), with @req's registry options and
 * @rl charged (NULL: no limit), through fetcher_new_for_image(): the one way mount and prewarm
 * make it.  @o gives what differs between the verbs (timeouts, request sizes, syncs). */
int mount_request_fetcher_new(const struct mount_request *req, const struct reference *ref,
			      const struct image *img, struct rate_limit *rl,
			      const struct fetcher_options *o, struct blob_store *bs,
			      struct fetcher **ret);
