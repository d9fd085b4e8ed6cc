/*
 * cli/mount.c: `lazyroot mount REF DIR`.  Checks everything it can before touching the
 * network, pulls the image (every layer indexed, pinned to one manifest digest), builds the
 * merged tree in memory, then forks the daemon that serves FUSE.  The daemon mounts the
 * overlay (if any) itself, because overlayfs looks up the lower tree while mounting and only a
 * serving FUSE daemon can answer; it reports "ready" or one error line through a pipe, and
 * the command returns only then.  With --foreground there is no fork and readiness goes to
 * systemd through $NOTIFY_SOCKET.
 */
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <dirent.h>
#include <limits.h>
#include <malloc.h>

#include "cache/gc.h"
#include "cache/format/layer_lazy.h"
#include "cache/base/log.h"
#include "cache/base/sanitizer.h"
#include "cache/base/util.h"
#include "fs/fs.h"
#include "cli/cli.h"
#include "cli/mount_state.h"
#include "cli/overlay.h"
#include "cli/progress.h"
#include "cli/stats.h"

/* A lazy read that cannot get its bytes fails after this long (--timeout): long enough for a
 * slow registry to answer a few MiB and retry, short enough that a program sees EIO before a
 * user gives up on it. */
#define FETCH_TIMEOUT_MS_DEFAULT 30000L
#define FETCH_TIMEOUT_S_MAX 86400

struct daemon {
	const struct mount_request *req;
	struct fs *fs;
	struct mount_state state;
	char *overlay_dir;         /* absolute; the upper/work parent, or the tmpfs */
	int report_fd;             /* write end of the readiness pipe; -1 in the foreground */
	bool overlay_mounted;
	bool tmpfs_mounted;
	int status;                /* what the setup thread concluded */
	struct fetcher *fetcher;   /* NULL without lazy layers */
	struct fetch_chunk *prefetch;
	size_t n_prefetch;
	struct stats_server *stats;
	bool state_created;        /* by this process: remove it if the mount fails */
	struct registry_options ro;  /* the fetcher's registry clients use it */
	uint64_t pull_requests, pull_bytes;
};

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
			return EXIT_USAGE;
		}
		free((char *)req->credentials.authfile);
		req->credentials.authfile = strdup(resolved);
		if (!req->credentials.authfile) {
			log_error("out of memory");
			return EXIT_USAGE;  /* 1 would read as "applied" */
		}
		return 1;
	}

	if (req->username) {
		log_error("--creds and --creds-file may be given once, and not both");
		if (c == OPT_CREDS)
			cli_hide_argument(arg);
		return EXIT_USAGE;
	}
	if (c == OPT_CREDS) {
		r = credentials_parse_pair(arg, "--creds", &creds);
		cli_hide_argument(arg);
		if (r == -EINVAL) {
			log_error("invalid --creds: use USER:PASSWORD");
			return EXIT_USAGE;
		}
	} else {
		r = credentials_read_pair_file(arg, &creds);
		if (r == -EINVAL) {
			log_error("--creds-file '%s' does not start with a USER:PASSWORD line", arg);
			return EXIT_USAGE;
		}
		if (r < 0 && r != -ENOMEM) {
			log_error_errno(r, "cannot read --creds-file '%s': %m", arg);
			return EXIT_USAGE;
		}
	}
	if (r < 0) {
		log_error("out of memory");
		return EXIT_USAGE;
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
		return EXIT_USAGE;
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
			return EXIT_USAGE;
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
			return EXIT_USAGE;
		}
		return 1;
	case OPT_TIMEOUT:
		return timeout_option_apply(arg, req);
	case 'F':
		if (streq(arg, "landmark"))
			req->prefetch = PREFETCH_LANDMARK;
		else if (streq(arg, "all"))
			req->prefetch = PREFETCH_ALL;
		else if (streq(arg, "none"))
			req->prefetch = PREFETCH_NONE;
		else {
			log_error("invalid --prefetch '%s': use landmark, all or none", arg);
			return EXIT_USAGE;
		}
		return 1;
	default:
		return 0;
	}
}

int exit_status_for(enum pull_failure kind)
{
	switch (kind) {
	case PULL_FAILURE_USAGE:
		return EXIT_USAGE;
	case PULL_FAILURE_REGISTRY:
		return EXIT_REGISTRY;
	default:
		return EXIT_CACHE;
	}
}

/* Sends "READY=1" (or another state) to systemd when it started us with Type=notify. */
static void sd_notify_state(const char *state)
{
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	_cleanup_close_ int fd = -EBADF;
	size_t n;

	if (!path || (path[0] != '/' && path[0] != '@') || strlen(path) >= sizeof(sa.sun_path))
		return;
	n = strlen(path);
	memcpy(sa.sun_path, path, n);
	if (sa.sun_path[0] == '@')
		sa.sun_path[0] = 0;  /* abstract namespace */
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return;
	(void)sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&sa,
		     offsetof(struct sockaddr_un, sun_path) + n);
}

/* Tells the waiting `lazyroot mount` how it went: "<status>\n<message>". */
static void daemon_report(struct daemon *d, int status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void daemon_report(struct daemon *d, int status, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	d->status = status;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);

	if (d->report_fd >= 0) {
		_cleanup_free_ char *buf = NULL;
		int n = asprintf(&buf, "%d\n%s", status, msg);

		if (n > 0)
			(void)write_all(d->report_fd, buf, (size_t)n);
		(void)close(TAKE_FD(d->report_fd));
	} else if (status != 0) {
		log_error("%s", msg);
	} else {
		sd_notify_state("READY=1");
	}
}

static int daemon_start_stats(struct daemon *d)
{
	_cleanup_free_ char *path = NULL;
	struct stats_identity id = {
		.target = d->state.target, .image = d->state.image, .digest = d->state.digest,
		.pull_requests = d->pull_requests, .pull_bytes = d->pull_bytes,
	};

	if (asprintf(&path, "%s/control", d->state.dir) < 0)
		return -ENOMEM;
	return stats_server_start(path, &id, d->fetcher, &d->stats);
}

static void *daemon_setup_thread(void *userdata)
{
	struct daemon *d = userdata;
	const struct mount_request *req = d->req;
	int r;

	if (req->volatile_upper) {
		r = overlay_mount_tmpfs(d->overlay_dir);
		if (r < 0) {
			errno = -r;
			daemon_report(d, EXIT_MOUNT, "cannot mount tmpfs at '%s': %m", d->overlay_dir);
			goto fail;
		}
		d->tmpfs_mounted = true;
	}
	if (d->overlay_dir) {
		r = overlay_mount(d->state.fuse_mountpoint, d->overlay_dir, d->state.target);
		if (r < 0) {
			errno = -r;
			daemon_report(d, EXIT_MOUNT, "cannot mount overlay at '%s': %m",
				      d->state.target);
			goto fail;
		}
		d->overlay_mounted = true;
	}

	d->state.pid = getpid();
	r = mount_state_write(&d->state);
	if (r < 0) {
		errno = -r;
		daemon_report(d, EXIT_MOUNT, "cannot write mount state in '%s': %m", d->state.dir);
		goto fail;
	}

	r = daemon_start_stats(d);
	if (r < 0) {
		errno = -r;
		daemon_report(d, EXIT_MOUNT, "cannot start the statistics socket in '%s': %m",
			      d->state.dir);
		goto fail;
	}
	/* Prefetch starts only now: reads of the container's start always go first. */
	if (d->fetcher && d->n_prefetch > 0) {
		r = fetcher_prefetch(d->fetcher, d->prefetch, d->n_prefetch);
		if (r < 0)
			log_warning_errno(r, "cannot start prefetching, ignoring: %m");
	}

	daemon_report(d, 0, "ready");
	return NULL;

fail:
	if (d->overlay_mounted) {
		(void)umount2(d->state.target, MNT_DETACH);
		d->overlay_mounted = false;
	}
	/* Ends fs_serve() in the main thread. */
	fs_unmount(d->fs);
	return NULL;
}

/* After fs_serve() returned: undo what is still mounted, unless `umount` already did. */
static void daemon_teardown(struct daemon *d)
{
	_cleanup_free_ char *fstype = NULL;
	struct mount_state now = {};

	if (d->overlay_mounted && mountinfo_find(d->state.target, &fstype) > 0 &&
	    streq(fstype, "overlay"))
		(void)umount2(d->state.target, MNT_DETACH);
	fs_unmount(d->fs);
	d->stats = stats_server_stop(d->stats);
	/* Stops prefetch; no FUSE thread uses the fetcher any more. */
	d->fetcher = fetcher_free(d->fetcher);
	if (d->tmpfs_mounted)
		(void)umount2(d->overlay_dir, MNT_DETACH);

	/* The state is ours to remove only if it still names us. */
	if (mount_state_read(d->state.target, &now) >= 0) {
		if (now.pid == getpid())
			(void)mount_state_remove(now.dir);
		mount_state_done(&now);
	} else if (d->status != 0) {
		(void)mount_state_remove(d->state.dir);
	}
}

/* Whether /etc/fuse.conf lets users other than root ask for allow_other. */
static bool fuse_conf_user_allow_other(void)
{
	_cleanup_fclose_ FILE *f = fopen("/etc/fuse.conf", "re");
	char line[256];

	while (f && fgets(line, sizeof(line), f)) {
		const char *p = line + strspn(line, " \t");

		if (strncmp(p, "user_allow_other", 16) == 0 && strchr(" \t\r\n", p[16]))
			return true;
	}
	return false;
}

static int daemon_run(struct daemon *d, bool detached)
{
	const struct mount_request *req = d->req;
	bool root = geteuid() == 0;
	struct fs_config cfg = {
		.mountpoint = d->state.fuse_mountpoint,
		.fsname = d->state.image,
		.subtype = "lazyroot",
		/* Others than root may ask only when /etc/fuse.conf says user_allow_other. */
		.allow_other = root || fuse_conf_user_allow_other(),
		/* The tree is a container's root: setuid binaries, file capabilities and device
		 * nodes must work as they would in an extracted rootfs.  Never for other users:
		 * an image must not hand them a setuid root binary or a device node (the kernel
		 * and fusermount3 refuse it too). */
		.suid = root,
		.dev = root,
		.debug = req->debug_fuse,
	};
	pthread_t setup;
	int r;

	r = fs_mount(d->fs, &cfg);
	if (r < 0) {
		errno = -r;
		daemon_report(d, EXIT_MOUNT, "cannot mount FUSE filesystem at '%s': %m",
			      d->state.fuse_mountpoint);
		daemon_teardown(d);
		return EXIT_MOUNT;
	}
	(void)fs_install_signal_handlers(d->fs);

	r = -pthread_create(&setup, NULL, daemon_setup_thread, d);
	if (r < 0) {
		errno = -r;
		daemon_report(d, EXIT_MOUNT, "cannot start the mount daemon: %m");
		daemon_teardown(d);
		return EXIT_MOUNT;
	}

	r = fs_serve(d->fs);
	(void)pthread_join(setup, NULL);
	if (detached && d->status == 0)
		log_debug("'%s' unmounted, daemon exiting", d->state.target);
	daemon_teardown(d);
	return d->status;
}

/* Waits for the daemon's report; returns the exit status for `lazyroot mount`. */
static int wait_for_daemon(int fd)
{
	char buf[2048];
	size_t len = 0;
	char *nl;

	for (;;) {
		ssize_t n = read(fd, buf + len, sizeof(buf) - 1 - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
		if (len == sizeof(buf) - 1)
			break;
	}
	buf[len] = 0;
	nl = strchr(buf, '\n');
	if (!nl) {
		log_error("the mount daemon exited before the filesystem was ready");
		return EXIT_MOUNT;
	}
	*nl = 0;
	if (atoi(buf) != 0)
		log_error("%s", nl + 1);
	return atoi(buf);
}

static int check_dir_empty(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *de;
	int r = 1;

	if (!d)
		return -errno;
	while ((de = readdir(d)))
		if (!streq(de->d_name, ".") && !streq(de->d_name, "..")) {
			r = 0;
			break;
		}
	closedir(d);
	return r;
}

static int check_mountpoint(const char *target)
{
	struct mount_state old = {};
	struct stat st;
	int r;

	if (stat(target, &st) < 0) {
		if (errno == ENOENT)
			log_error("mountpoint '%s' does not exist", target);
		else
			log_error_errno(errno, "cannot access mountpoint '%s': %m", target);
		return EXIT_MOUNT;
	}
	if (!S_ISDIR(st.st_mode)) {
		log_error("mountpoint '%s' is not a directory", target);
		return EXIT_MOUNT;
	}
	if (mount_state_read(target, &old) >= 0) {
		bool alive = old.pid > 0 && kill(old.pid, 0) == 0;

		if (alive || mountinfo_find(target, NULL) > 0) {
			log_error("'%s' is already a lazyroot mount (of '%s')", target,
				  old.image ? old.image : "?");
			mount_state_done(&old);
			return EXIT_MOUNT;
		}
		/* Left by a daemon that died with nothing mounted: forget it. */
		(void)mount_state_remove(old.dir);
		mount_state_done(&old);
	}
	r = check_dir_empty(target);
	if (r < 0) {
		log_error_errno(r, "cannot read mountpoint '%s': %m", target);
		return EXIT_MOUNT;
	}
	if (r == 0) {
		log_error("mountpoint '%s' is not empty", target);
		return EXIT_MOUNT;
	}
	return 0;
}

static int check_dev_fuse(void)
{
	_cleanup_close_ int fd = -EBADF;

	/* Other users mount through the setuid fusermount3, which opens /dev/fuse itself. */
	if (geteuid() != 0)
		return 0;
	fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);

	if (fd < 0) {
		log_error_errno(errno, "cannot open /dev/fuse: %m (is the fuse module loaded?)");
		return EXIT_MOUNT;
	}
	return 0;
}

struct tree_builder {
	struct fs_tree *tree;
	const char *layer;
	int r;
	char path[256];
};

static int tree_add_entry(void *userdata, const struct entry *e)
{
	struct tree_builder *b = userdata;
	int r;

	r = fs_tree_add(b->tree, e);
	if (r < 0)
		snprintf(b->path, sizeof(b->path), "%s", e->path);
	return r;
}

static int build_tree(struct cache *c, const struct image *img, struct fs_tree **ret)
{
	_cleanup_(fs_tree_freep) struct fs_tree *tree = NULL;
	int r;

	r = fs_tree_new(&tree);
	if (r < 0)
		return log_error_errno(r, "cannot build the tree: %m");
	for (size_t i = 0; i < img->manifest->n_layers; i++) {
		const char *digest = img->manifest->layers[i].digest;
		struct tree_builder b = { .tree = tree, .layer = digest };

		r = fs_tree_begin_layer(tree);
		if (r >= 0)
			r = index_db_layer_foreach(c->db, digest, tree_add_entry, &b);
		if (r < 0)
			return log_error_errno(r, "cannot apply layer '%s'%s%s%s: %m", digest,
					       b.path[0] ? " (entry '" : "", b.path,
					       b.path[0] ? "')" : "");
	}
	r = fs_tree_finish(tree);
	if (r < 0)
		return log_error_errno(r, "cannot build the tree: %m");
	*ret = TAKE_PTR(tree);
	return 0;
}

static int prefetch_add(void *userdata, const struct fs_chunk_ref *c)
{
	struct daemon *d = userdata;
	struct fetch_chunk *fc;

	if (d->n_prefetch % 1024 == 0) {
		struct fetch_chunk *n = reallocarray(d->prefetch, d->n_prefetch + 1024, sizeof(*n));

		if (!n)
			return -ENOMEM;
		d->prefetch = n;
	}
	fc = &d->prefetch[d->n_prefetch++];
	*fc = (struct fetch_chunk) {
		.layer = c->layer, .blob_offset = c->blob_offset, .blob_length = c->blob_length,
		.size = c->size,
	};
	digest_format_sha256(c->digest, fc->digest);
	return 0;
}

/* Images with eStargz or zstd:chunked layers get a fetcher for the chunks not yet stored, and
 * the list of chunks to prefetch. */
static int setup_lazy(struct daemon *d, const struct reference *ref, struct blob_store *bs,
		      const struct image *img, const struct fs_tree *tree)
{
	const struct manifest *m = img->manifest;
	bool lazy = false;
	int r;

	for (size_t i = 0; i < m->n_layers; i++)
		if (layer_format_detect(&m->layers[i]) != LAYER_FORMAT_TAR)
			lazy = true;
	if (!lazy)
		return 0;

	d->ro = mount_request_registry_options(d->req);
	d->ro.scheme = img->registry_scheme;
	r = fetcher_new_for_image(ref, m, &d->ro, &(struct fetcher_options) {
					  .timeout_ms = d->req->fetch_timeout_ms > 0 ?
							d->req->fetch_timeout_ms : FETCH_TIMEOUT_MS_DEFAULT,
				  }, bs, &d->fetcher);
	if (r < 0)
		return r;
	if (d->req->prefetch == PREFETCH_NONE)
		return 0;
	return fs_tree_foreach_prefetch(tree, d->req->prefetch == PREFETCH_ALL, prefetch_add, d);
}

/* Creates the mount's runtime state and writes it with our pid: from here on, gc and rm
 * treat the image as mounted.  The daemon writes it again with its own pid once it serves. */
static int prepare_state(struct daemon *d, const struct mount_request *req, struct image *img)
{
	int r;

	r = mount_state_dir_for(d->state.target, &d->state.dir);
	if (r >= 0)
		r = mkdir_p(d->state.dir, 0700);
	if (r < 0) {
		log_error_errno(r, "cannot create runtime state for '%s': %m", d->state.target);
		return EXIT_MOUNT;
	}
	d->state_created = true;
	d->state.image = TAKE_PTR(img->ref);
	d->state.digest = strdup(img->manifest_digest);
	if (req->volatile_upper) {
		free(d->overlay_dir);
		if (asprintf(&d->overlay_dir, "%s/volatile", d->state.dir) < 0)
			d->overlay_dir = NULL;
		else
			(void)mkdir(d->overlay_dir, 0700);
	}
	if (d->overlay_dir) {
		d->state.upper = strdup(req->volatile_upper ? "volatile" : "overlay");
		if (asprintf(&d->state.fuse_mountpoint, "%s/lower", d->state.dir) >= 0)
			(void)mkdir(d->state.fuse_mountpoint, 0755);
	} else {
		d->state.upper = strdup("none");
		d->state.fuse_mountpoint = strdup(d->state.target);
	}
	if (!d->state.image || !d->state.digest || !d->state.upper || !d->state.fuse_mountpoint ||
	    (req->volatile_upper && !d->overlay_dir)) {
		log_error("out of memory");
		return EXIT_FAILURE_OTHER;
	}
	d->state.pid = getpid();
	r = mount_state_write(&d->state);
	if (r < 0) {
		log_error_errno(r, "cannot write mount state in '%s': %m", d->state.dir);
		return EXIT_MOUNT;
	}
	return 0;
}

int mount_image(const struct mount_request *req, struct image_config **ret_config,
		char **ret_short_name)
{
	_cleanup_(reference_freep) struct reference *ref = NULL;
	_cleanup_(cache_freep) struct cache *cache = NULL;
	_cleanup_(image_freep) struct image *img = NULL;
	_cleanup_(fs_tree_freep) struct fs_tree *tree = NULL;
	_cleanup_free_ char *what = NULL;
	struct daemon d = { .req = req, .report_fd = -1 };
	struct pull_options po = {
		.platform = req->platform, .policy = req->policy,
		.registry = mount_request_registry_options(req),
	};
	struct pull_error err;
	const char *why = NULL;
	_cleanup_close_ int pin_fd = -EBADF;
	int pipe_fds[2], status, r;
	pid_t pid;

	r = reference_parse(req->ref, &ref, &why);
	if (r < 0) {
		log_error("invalid image reference '%s': %s", req->ref, why ? why : "malformed");
		return EXIT_USAGE;
	}

	r = path_make_absolute(req->mountpoint, &d.state.target);
	if (r < 0) {
		log_error_errno(r, "mountpoint '%s' does not exist", req->mountpoint);
		return EXIT_MOUNT;
	}
	status = check_mountpoint(d.state.target);
	if (status == 0)
		status = check_dev_fuse();
	if (status != 0)
		goto finish;
	if ((req->overlay_dir || req->volatile_upper) && geteuid() != 0) {
		log_error("--overlay and --volatile need root (kernel overlayfs); mount without them");
		status = EXIT_MOUNT;
		goto finish;
	}

	if (req->overlay_dir) {
		char resolved[PATH_MAX];

		r = overlay_prepare_dir(req->overlay_dir);
		if (r == -EINVAL) {
			log_error("overlay directory '%s' may not contain ',' ':' or '\\'",
				  req->overlay_dir);
			status = EXIT_USAGE;
			goto finish;
		}
		if (r < 0 || !realpath(req->overlay_dir, resolved)) {
			log_error_errno(r < 0 ? r : errno, "cannot prepare overlay directory '%s': %m",
					req->overlay_dir);
			status = EXIT_MOUNT;
			goto finish;
		}
		d.overlay_dir = strdup(resolved);
	}

	status = cli_cache_open(req->cache_dir, &cache);
	if (status != 0)
		goto finish;

	/* Held shared from the pull until the mount state names the image: an explicit gc or
	 * rm (which lock it exclusively) either runs before the pull or sees the image as
	 * mounted, never in between. */
	r = cache_lock(cache, LOCK_SH, &pin_fd);
	if (r < 0) {
		log_error_errno(r, "cannot lock cache '%s': %m", cache->dir);
		status = EXIT_CACHE;
		goto finish;
	}
	what = reference_to_string(ref);
	po.progress_userdata = progress_new(what ? what : req->ref);
	po.progress = progress_update;
	r = image_pull(cache, ref, &po, &img, &err);
	progress_free(po.progress_userdata);
	if (r < 0) {
		log_error("cannot pull '%s': %s", req->ref, err.message);
		status = exit_status_for(err.kind);
		goto finish;
	}
	status = prepare_state(&d, req, img);
	if (status != 0)
		goto finish;
	closep(&pin_fd);
	pin_fd = -EBADF;

	if (build_tree(cache, img, &tree) < 0) {
		status = EXIT_REGISTRY;
		goto finish;
	}
	d.pull_requests = img->pull_requests;
	d.pull_bytes = img->pull_bytes;
	r = setup_lazy(&d, ref, cache->bs, img, tree);
	if (r < 0) {
		log_error_errno(r, "cannot set up fetching of lazy layers: %m");
		status = EXIT_FAILURE_OTHER;
		goto finish;
	}
	if (cache_gc_auto(cache) < 0)
		log_warning("automatic gc of cache '%s' failed, ignoring", cache->dir);
	/* SQLite connections must not cross fork(); the daemon needs only the blob store. */
	cache_close_db(cache);

	r = fs_new(tree, cache->bs, d.fetcher, &d.fs);
	if (r >= 0)
		tree = NULL;  /* the fs owns it now */
	if (r < 0) {
		log_error_errno(r, "cannot set up the filesystem: %m");
		status = EXIT_MOUNT;
		goto finish;
	}

	if (ret_config) {
		*ret_config = TAKE_PTR(img->config);
		*ret_short_name = reference_short_name(ref);
	}

	if (req->foreground) {
		status = daemon_run(&d, false);
		goto finish;
	}

	if (pipe2(pipe_fds, O_CLOEXEC) < 0) {
		log_error_errno(errno, "cannot create a pipe: %m");
		status = EXIT_FAILURE_OTHER;
		goto finish;
	}
	fflush(NULL);
	/* The daemon inherits every resident page of this process: hand the import's freed heap
	 * (libarchive buffers, SQLite's page cache, the entries read for the tree) back to the
	 * kernel first, or a large layer's import peak becomes the daemon's resident size. */
	(void)malloc_trim(0);
	pid = fork();
	if (pid < 0) {
		log_error_errno(errno, "cannot fork the mount daemon: %m");
		status = EXIT_FAILURE_OTHER;
		goto finish;
	}
	if (pid == 0) {
		int devnull;

		(void)close(pipe_fds[0]);
		d.report_fd = pipe_fds[1];
		(void)setsid();
		/* The daemon outlives the command: it logs to the journal, never to the terminal. */
		devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
		if (devnull >= 0) {
			(void)dup2(devnull, STDIN_FILENO);
			(void)dup2(devnull, STDOUT_FILENO);
			(void)dup2(devnull, STDERR_FILENO);
			(void)close(devnull);
		}
		log_use_syslog("lazyroot");
		if (chdir("/") < 0)
			_exit(EXIT_MOUNT);
		r = daemon_run(&d, true);
		sanitizer_leak_check();
		_exit(r);
	}
	(void)close(pipe_fds[1]);
	status = wait_for_daemon(pipe_fds[0]);
	(void)close(pipe_fds[0]);
	if (status != 0 && ret_config) {
		*ret_config = image_config_free(*ret_config);
		free(*ret_short_name);
		*ret_short_name = NULL;
	}
	/* d.fs was never mounted in this process (the daemon mounted its own copy): freeing it
	 * only releases the tree's memory here. */

finish:
	/* A failed mount leaves no state behind (a daemon that started removed its own). */
	if (status != 0 && d.state_created)
		(void)mount_state_remove(d.state.dir);
	fs_free(d.fs);
	fetcher_free(d.fetcher);
	free(d.prefetch);
	mount_state_done(&d.state);
	free(d.overlay_dir);
	return status;
}

static void mount_help(void)
{
	printf("Usage: lazyroot mount [OPTIONS] REF DIR\n\n"
	       "Mount image REF read-only at DIR; file contents come from the cache.\n\n"
	       "  -o, --overlay=DIR      mount overlayfs at DIR, writes go to DIR/upper\n"
	       "      --volatile         like --overlay, with writes in memory (tmpfs)\n"
	       IMAGE_OPTIONS_HELP
	       "  -f, --foreground       serve in the foreground (for systemd units)\n"
	       "  -d, --debug            log every FUSE request (implies --foreground)\n"
	       "  -v, --verbose          more messages\n"
	       "  -h, --help             this help\n");
}

int verb_mount(int argc, char **argv)
{
	static const struct option options[] = {
		{ "overlay", required_argument, NULL, 'o' },
		{ "volatile", no_argument, NULL, 'V' },
		IMAGE_OPTIONS,
		{ "foreground", no_argument, NULL, 'f' },
		{ "debug", no_argument, NULL, 'd' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	_cleanup_(mount_request_done) struct mount_request req = {};
	int c;

	optind = 1;
	while ((c = getopt_long(argc, argv, "o:fdvh", options, NULL)) >= 0) {
		int k = image_option_apply(c, optarg, &req);

		if (k == EXIT_USAGE)
			return k;
		if (k > 0)
			continue;
		switch (c) {
		case 'o':
			req.overlay_dir = optarg;
			break;
		case 'V':
			req.volatile_upper = true;
			break;
		case 'f':
			req.foreground = true;
			break;
		case 'd':
			req.debug_fuse = req.foreground = true;
			break;
		case 'v':
			log_set_level(LOG_LEVEL_DEBUG);
			break;
		case 'h':
			mount_help();
			return 0;
		default:
			return EXIT_USAGE;
		}
	}
	if (argc - optind != 2) {
		log_error("mount needs an image reference and a mountpoint (see 'lazyroot mount --help')");
		return EXIT_USAGE;
	}
	if (req.overlay_dir && req.volatile_upper) {
		log_error("--overlay and --volatile exclude each other");
		return EXIT_USAGE;
	}
	req.ref = argv[optind];
	req.mountpoint = argv[optind + 1];
	return mount_image(&req, NULL, NULL);
}
