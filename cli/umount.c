/*
 * cli/umount.c: `lazyroot umount DIR`.  Undoes a mount from the top down: the overlay at DIR,
 * then the FUSE tree under it, then waits for the daemon to exit and removes the runtime
 * state.  Works from the state file, and from /proc/self/mountinfo when the state is gone, so
 * that a mount whose daemon was SIGKILLed ("Transport endpoint is not connected") still
 * comes off cleanly.
 */
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "cache/base/log.h"
#include "cache/base/util.h"
#include "cli/cli.h"
#include "cli/machine.h"
#include "cache/store/mount_records.h"
#include "cli/mountinfo.h"
#include "cli/verb_args.h"

static const char umount_usage[] =
	"Usage: lazyroot umount [--lazy] DIR...\n"
	"       lazyroot umount [--lazy] --machine NAME\n\n"
	"Unmount lazyroot mounts (overlay and FUSE tree) and stop their daemons.\n\n"
	"  -l, --lazy     detach even if the mount is busy\n"
	"  -M, --machine=NAME  unmount machine NAME (its writes and settings stay)\n";

#define DAEMON_EXIT_TIMEOUT_MS 10000

/* Other users may not umount2(): the setuid fusermount3 unmounts the FUSE mounts they made.
 * 0, or -EPERM when it refused or could not run (it says why on stderr). */
static int fusermount_unmount(const char *path, bool lazy)
{
	char *argv[] = { "fusermount3", "-u", lazy ? "-z" : "-u", "--", (char *)path, NULL };
	pid_t pid;
	int status;

	if (!lazy)
		argv[2] = "-q";
	if (posix_spawnp(&pid, "fusermount3", NULL, NULL, argv, environ) != 0)
		return -EPERM;
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -EPERM;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -EPERM;
}

/* Unmounts @path if something is mounted there; 1 if it was, 0 if nothing was. */
static int unmount_one(const char *path, bool lazy)
{
	int r;

	r = mountinfo_find(path, NULL);
	if (r <= 0)
		return r;
	if (umount2(path, lazy ? MNT_DETACH : 0) < 0) {
		if (errno == EPERM && geteuid() != 0)
			return fusermount_unmount(path, lazy) < 0 ? -EPERM : 1;
		if (errno != EBUSY || lazy)
			return -errno;
		return -EBUSY;
	}
	return 1;
}

static int wait_for_exit(pid_t pid)
{
	_cleanup_close_ int fd = -EBADF;
	struct pollfd p;
	char comm[64] = "";
	_cleanup_free_ char *path = NULL, *buf = NULL;

	if (pid <= 0)
		return 0;
	/* The pid may have been reused after a crash: only wait for a lazyroot process. */
	if (asprintf(&path, "/proc/%d/comm", (int)pid) < 0)
		return -ENOMEM;
	if (read_full_file(path, 256, &buf, NULL) < 0)
		return 0;
	snprintf(comm, sizeof(comm), "%s", buf);
	comm[strcspn(comm, "\n")] = 0;
	if (!streq(comm, "lazyroot"))
		return 0;

	fd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (fd < 0)
		return errno == ESRCH ? 0 : -errno;
	p = (struct pollfd) { .fd = fd, .events = POLLIN };
	if (poll(&p, 1, DAEMON_EXIT_TIMEOUT_MS) > 0)
		return 0;
	log_warning("daemon %d did not exit after its filesystem was unmounted, terminating it",
		    (int)pid);
	(void)kill(pid, SIGTERM);
	if (poll(&p, 1, 2000) > 0)
		return 0;
	(void)kill(pid, SIGKILL);
	(void)poll(&p, 1, 2000);
	return 0;
}

int umount_path(const char *path, bool lazy)
{
	_cleanup_free_ char *target = NULL, *fstype = NULL;
	struct mount_record st = {};
	bool have_state;
	int r;

	r = path_make_absolute(path, &target);
	if (r < 0) {
		log_error_errno(r, "cannot resolve '%s': %m", path);
		return -ERR_USAGE;
	}

	r = mount_record_read(target, &st);
	have_state = r >= 0;
	if (!have_state) {
		/* No state: only a FUSE mount of ours may be taken down from mountinfo alone. */
		r = mountinfo_find(target, &fstype);
		if (r <= 0 || !streq(fstype, "fuse.lazyroot")) {
			log_error("'%s' is not a lazyroot mount", target);
			return -ERR_MOUNT;
		}
	}

	/* The overlay (or the FUSE tree itself when there is no overlay) at the target. */
	r = unmount_one(target, lazy);
	if (r == -EBUSY) {
		log_error("cannot unmount '%s': target is busy (use --lazy to detach it anyway)",
			  target);
		mount_record_done(&st);
		return -ERR_MOUNT;
	}
	if (r < 0) {
		log_error_errno(r, "cannot unmount '%s': %m", target);
		mount_record_done(&st);
		return -ERR_MOUNT;
	}

	if (have_state) {
		_cleanup_free_ char *volatile_dir = NULL;

		if (!streq(st.fuse_mountpoint, target)) {
			/* Nothing but our own overlay used it: detach even if the kernel is slow. */
			r = unmount_one(st.fuse_mountpoint, true);
			if (r < 0)
				log_warning_errno(r, "cannot unmount '%s': %m", st.fuse_mountpoint);
		}
		/* A detached mount may still have users: its daemon serves them and exits by
		 * itself when the last one lets go. */
		if (!lazy)
			(void)wait_for_exit(st.pid);
		if (asprintf(&volatile_dir, "%s/volatile", st.dir) >= 0)
			(void)unmount_one(volatile_dir, true);
		r = mount_record_remove(st.dir);
		if (r < 0)
			log_warning_errno(r, "cannot remove '%s': %m", st.dir);
	}
	mount_record_done(&st);
	return 0;
}

int verb_umount(int argc, char **argv)
{
	static const struct option options[] = {
		{ "lazy", no_argument, NULL, 'l' },
		{ "machine", required_argument, NULL, 'M' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	bool lazy = false;
	const char *machine = NULL;
	int status;
	const struct verb_arg args[] = { VERB_SWITCH('l', &lazy), VERB_VALUE('M', &machine), {} };

	status = verb_args_parse(argc, argv, &(struct verb_args) { .name = "umount",
		.usage = umount_usage, .max_operands = -1, .optstring = "lM:vh", .options = options,
		.args = args });
	if (status != 0)
		return status > 0 ? 0 : status;
	if (machine && optind < argc)
		return log_error_errno(-ERR_USAGE, "umount --machine takes no mountpoint");
	if (machine)
		return machine_umount(machine, lazy);
	if (optind >= argc)
		return log_error_errno(-ERR_USAGE, "umount needs a mountpoint (see 'lazyroot umount "
				       "--help')");
	for (int i = optind; i < argc; i++) {
		int r = umount_path(argv[i], lazy);

		if (r != 0 && status == 0)
			status = r;
	}
	return status;
}
