/*
 * cli/mount_daemon.c: the mount daemon (see mount_daemon.h).  The overlay is mounted by the
 * daemon, on a thread of its own, because overlayfs looks up the lower tree while mounting and
 * only a serving FUSE daemon can answer.
 */
#include "mount_daemon.h"

#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "cache/base/log.h"
#include "cache/base/trace.h"
#include "cache/base/sanitizer.h"
#include "cache/base/util.h"
#include "fs/fs.h"
#include "cli/cli.h"
#include "cli/mountinfo.h"
#include "cli/overlay.h"
#include "cli/stats.h"

void sd_notify_state(const char *state)
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

/* Tells the waiting `lazyroot mount` how it went: "<0 or -errno>\n<message>". */
static void daemon_report(struct mount_daemon *d, int status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void daemon_report(struct mount_daemon *d, int status, const char *fmt, ...)
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

static int daemon_start_stats(struct mount_daemon *d)
{
	_cleanup_free_ char *path = NULL;
	struct stats_identity id = {
		.target = d->state.target, .image = d->state.image, .digest = d->state.digest,
		.pull_requests = d->pull_requests, .pull_bytes = d->pull_bytes,
		.layer_digests = d->layer_digests, .layer_served = d->layer_served,
		.layer_index = d->layer_index,
		.profile = d->profile.profile,
		.fs = d->fs,
	};

	if (asprintf(&path, "%s/control", d->state.dir) < 0)
		return -ENOMEM;
	return stats_server_start(path, &id, d->fetcher, &d->stats);
}

static void *daemon_setup_thread(void *userdata)
{
	struct mount_daemon *d = userdata;
	const struct mount_request *req = d->req;
	int r;

	if (req->volatile_upper) {
		r = overlay_mount_tmpfs(d->overlay_dir, d->state.private_users, d->upper_mode);
		if (r < 0) {
			errno = -r;
			daemon_report(d, -ERR_MOUNT, "cannot mount tmpfs at '%s': %m", d->overlay_dir);
			goto fail;
		}
		d->tmpfs_mounted = true;
	}
	if (d->overlay_dir) {
		r = overlay_mount(d->state.fuse_mountpoint, d->overlay_dir, d->state.target);
		if (r < 0) {
			errno = -r;
			daemon_report(d, -ERR_MOUNT, "cannot mount overlay at '%s': %m",
				      d->state.target);
			goto fail;
		}
		d->overlay_mounted = true;
	}

	d->state.pid = getpid();
	r = mount_record_write(&d->state);
	if (r < 0) {
		errno = -r;
		daemon_report(d, -ERR_MOUNT, "cannot write mount state in '%s': %m", d->state.dir);
		goto fail;
	}

	r = daemon_start_stats(d);
	if (r < 0) {
		errno = -r;
		daemon_report(d, -ERR_MOUNT, "cannot start the statistics socket in '%s': %m",
			      d->state.dir);
		goto fail;
	}
	/* The start profile's chunks are what the first reads will ask for: fetched first. */
	mount_profile_start(&d->profile, d->fetcher);
	/* Prefetch starts only now: reads of the container's start always go first. */
	if (d->fetcher && d->n_prefetch > 0) {
		r = fetcher_prefetch(d->fetcher, d->prefetch, d->n_prefetch);
		if (r < 0)
			log_warning_errno(r, "cannot start prefetching, ignoring: %m");
	}

	if (trace_enabled())
		trace_emit("mark", "\"what\":\"ready\",\"t\":%lld", (long long)trace_now_us());
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
static void daemon_teardown(struct mount_daemon *d)
{
	_cleanup_free_ char *fstype = NULL;
	struct mount_record now = {};

	if (d->overlay_mounted && mountinfo_find(d->state.target, &fstype) > 0 &&
	    streq(fstype, "overlay"))
		(void)umount2(d->state.target, MNT_DETACH);
	fs_unmount(d->fs);
	d->stats = stats_server_stop(d->stats);
	mount_profile_stop(&d->profile);
	fs_stop_fetching(d->fs);
	/* Stops prefetch; no FUSE thread uses the fetcher any more. */
	d->fetcher = fetcher_free(d->fetcher);
	if (d->tmpfs_mounted)
		(void)umount2(d->overlay_dir, MNT_DETACH);

	/* The state is ours to remove only if it still names us. */
	if (mount_record_read(d->state.target, &now) >= 0) {
		if (now.pid == getpid())
			(void)mount_record_remove(now.dir);
		mount_record_done(&now);
	} else if (d->status != 0) {
		(void)mount_record_remove(d->state.dir);
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

static int daemon_serve(struct mount_daemon *d, bool detached)
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
		daemon_report(d, -ERR_MOUNT, "cannot mount FUSE filesystem at '%s': %m",
			      d->state.fuse_mountpoint);
		daemon_teardown(d);
		return -ERR_MOUNT;
	}
	(void)fs_install_signal_handlers(d->fs);

	r = -pthread_create(&setup, NULL, daemon_setup_thread, d);
	if (r < 0) {
		errno = -r;
		daemon_report(d, -ERR_MOUNT, "cannot start the mount daemon: %m");
		daemon_teardown(d);
		return -ERR_MOUNT;
	}

	r = fs_serve(d->fs);
	(void)pthread_join(setup, NULL);
	if (detached && d->status == 0)
		log_debug("'%s' unmounted, daemon exiting", d->state.target);
	daemon_teardown(d);
	return d->status;
}

/* Waits for the daemon's report: 0 or the -errno it reported. */
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
		return -ERR_MOUNT;
	}
	*nl = 0;
	if (atoi(buf) != 0)
		log_error("%s", nl + 1);
	return atoi(buf);
}

int mount_daemon_run(struct mount_daemon *d)
{
	int r = daemon_serve(d, false);

	trace_mark_cpu("exit");
	return r;
}

/* In the forked child: detach from the terminal and serve; never returns. */
static _Noreturn void daemon_child(struct mount_daemon *d, int report_fd)
{
	int devnull, r;

	d->report_fd = report_fd;
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
		_exit(exit_status(-ERR_MOUNT, 0));
	r = daemon_serve(d, true);
	trace_mark_cpu("exit");
	sanitizer_leak_check();
	_exit(exit_status(r, 0));
}

int mount_daemon_start(struct mount_daemon *d)
{
	int pipe_fds[2], r;
	pid_t pid;

	if (pipe2(pipe_fds, O_CLOEXEC) < 0)
		return log_error_errno(-errno, "cannot create a pipe: %m");
	fflush(NULL);
	/* The daemon inherits every resident page of this process: hand the import's freed heap
	 * (libarchive buffers, SQLite's page cache, the entries read for the tree) back to the
	 * kernel first, or a large layer's import peak becomes the daemon's resident size. */
	(void)malloc_trim(0);
	pid = fork();
	if (pid < 0) {
		r = log_error_errno(-errno, "cannot fork the mount daemon: %m");
		(void)close(pipe_fds[0]);
		(void)close(pipe_fds[1]);
		return r;
	}
	if (pid == 0) {
		(void)close(pipe_fds[0]);
		daemon_child(d, pipe_fds[1]);
	}
	(void)close(pipe_fds[1]);
	r = wait_for_daemon(pipe_fds[0]);
	(void)close(pipe_fds[0]);
	return r;
}

void mount_daemon_done(struct mount_daemon *d)
{
	/* d->fs was never mounted in this process when a forked daemon served it: freeing it
	 * only releases the tree's memory here. */
	fs_free(d->fs);
	fetcher_free(d->fetcher);
	free(d->prefetch);
	mount_record_done(&d->state);
	free(d->overlay_dir);
	strv_free(d->layer_digests);
	strv_free(d->layer_served);
	strv_free(d->layer_index);
	mount_profile_done(&d->profile);
	*d = (struct mount_daemon) { .report_fd = -1 };
}
