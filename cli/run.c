/*
 * cli/run.c: `lazyroot run REF [NSPAWN-OPTIONS…] [-- COMMAND…]`: mount + overlay + nspawn +
 * clean-up in one command, with the container's exit status as ours.  The image's config
 * supplies the command, environment, working directory and user when the command line does
 * not, as docker and podman do.
 */
#include <getopt.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "cache/base/log.h"
#include "cache/base/util.h"
#include "cli/cli.h"
#include "cache/store/mount_records.h"
#include "cli/mountinfo.h"
#include "cli/nspawn.h"
#include "cli/run_exec.h"
#include "cli/verb_args.h"

/* Written once before the handlers are installed and read only by them: the one process
 * that SIGTERM/SIGHUP are passed on to. */
static volatile sig_atomic_t run_child_pid;

static void forward_signal(int sig)
{
	if (run_child_pid > 0)
		(void)kill((pid_t)run_child_pid, sig);
}

/* Machine names are host names: keep [A-Za-z0-9-], at most 64 characters. */
static char *machine_name_from(const char *name)
{
	char *m = strndup(name && *name ? name : "lazyroot", 64);

	if (!m)
		return NULL;
	for (char *p = m; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		      (*p >= '0' && *p <= '9') || *p == '-'))
			*p = '-';
	return m;
}

static int run_nspawn(char **argv)
{
	struct sigaction fwd = { .sa_handler = forward_signal }, ign = { .sa_handler = SIG_IGN };
	struct sigaction old_int, old_term, old_hup;
	int wstatus;
	pid_t pid;

	fflush(NULL);
	pid = fork();
	if (pid < 0)
		return log_error_errno(errno, "cannot fork: %m");
	if (pid == 0) {
		execvp(argv[0], argv);
		log_error_errno(errno, "cannot run '%s': %m", argv[0]);
		_exit(EXIT_RUN_FAILED);
	}
	run_child_pid = pid;
	/* A terminal's ^C reaches nspawn directly (same process group); we stay to clean up. */
	sigaction(SIGINT, &ign, &old_int);
	sigaction(SIGTERM, &fwd, &old_term);
	sigaction(SIGHUP, &fwd, &old_hup);
	while (waitpid(pid, &wstatus, 0) < 0)
		if (errno != EINTR)
			return log_error_errno(errno, "cannot wait for systemd-nspawn: %m");
	sigaction(SIGINT, &old_int, NULL);
	sigaction(SIGTERM, &old_term, NULL);
	sigaction(SIGHUP, &old_hup, NULL);
	run_child_pid = 0;

	if (WIFEXITED(wstatus))
		return WEXITSTATUS(wstatus);
	if (WIFSIGNALED(wstatus))
		return 128 + WTERMSIG(wstatus);
	return -ECHILD;
}

static const char run_usage[] =
	"Usage: lazyroot run [OPTIONS] REF [NSPAWN-OPTIONS...] [-- COMMAND [ARG...]]\n\n"
	"Mount REF with a writable overlay, run COMMAND (default: the image's\n"
	"Entrypoint and Cmd) in systemd-nspawn, unmount, and exit with its status.\n"
	"Options between REF and -- go to systemd-nspawn (--bind, --setenv, --machine...),\n"
	"but --user/-u, which lazyroot resolves from the image's /etc/passwd as docker does.\n"
	"Exit status: the command's; 125 lazyroot or nspawn failed first, 126 not executable,\n"
	"127 not found.\n\n"
	"      --overlay=DIR      keep the container's writes in DIR/upper\n"
	"                         (default: in memory, dropped at exit)\n"
	"      --private-users=BASE|pick  run in this id range, the tree shown owned by it\n"
	"                         (pick: chosen from REF)\n"
	IMAGE_OPTIONS_HELP
	"  -v, --verbose          more messages, and nspawn's own\n"
	"  -h, --help             this help\n";

struct run_opts {
	struct mount_request *req;
	bool *verbose;
};

/* --overlay keeps the writes, so the upper is not volatile; -v is also nspawn's. */
static int run_opt(int c, char *arg, void *userdata)
{
	struct run_opts *o = userdata;

	if (c == 'o') {
		o->req->overlay_dir = arg;
		o->req->volatile_upper = false;
		return 0;
	}
	if (c == 'v')
		*o->verbose = true;
	return 1;
}

/* A private, empty mountpoint: RUNTIME/run/root.XXXXXX. */
static int run_mountpoint_new(char **ret)
{
	_cleanup_free_ char *rt = NULL, *mnt = NULL;
	int r;

	r = mount_records_runtime_dir(&rt);
	if (r >= 0 && asprintf(&mnt, "%s/run", rt) < 0)
		r = -ENOMEM;
	if (r >= 0)
		r = mkdir_p(mnt, 0700);
	if (r >= 0) {
		free(mnt);
		if (asprintf(&mnt, "%s/run/root.XXXXXX", rt) < 0 || !mkdtemp(mnt))
			r = -errno;
	}
	if (r < 0)
		return log_error_errno(r, "cannot create a mountpoint under '%s': %m",
				       rt ? rt : "/run");
	*ret = TAKE_PTR(mnt);
	return 0;
}

/* Returns the container's exit status, or -errno when lazyroot itself failed (exit 125). */
int verb_run(int argc, char **argv)
{
	static const struct option options[] = {
		{ "overlay", required_argument, NULL, 'o' },
		IMAGE_OPTIONS,
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	_cleanup_(image_config_freep) struct image_config *config = NULL;
	_cleanup_free_ char *mnt = NULL, *short_name = NULL, *machine = NULL;
	_cleanup_strv_free_ char **nspawn_args = NULL, **command = NULL, **argv_nspawn = NULL;
	_cleanup_(mount_request_done) struct mount_request req = { .volatile_upper = true };
	_cleanup_(run_exec_done) struct run_exec rx = {};
	_cleanup_(mount_record_done) struct mount_record rec = {};
	bool verbose = false, after_dashes = false;
	int r, status;

	/* '+': stop at REF; what follows belongs to nspawn and the command. */
	r = verb_args_parse(argc, argv, &(struct verb_args) {
		.name = "run", .operands = "needs an image reference",
		.min_operands = 1, .max_operands = -1,
		.usage = run_usage, .optstring = "+vh", .options = options, .image = &req,
		.opt = run_opt, .userdata = &(struct run_opts) { &req, &verbose },
	});
	if (r != 0)
		return r > 0 ? 0 : r;
	req.ref = argv[optind];
	req.private_users_name = req.ref;   /* pick's name: the mountpoint is a temporary one */
	for (int i = optind + 1; i < argc; i++) {
		if (!after_dashes && streq(argv[i], "--")) {
			after_dashes = true;
			continue;
		}
		if (strv_push(after_dashes ? &command : &nspawn_args, argv[i]) < 0)
			return log_error_errno(-ENOMEM, "out of memory");
	}

	r = run_mountpoint_new(&mnt);
	if (r < 0)
		return r;
	req.mountpoint = mnt;

	r = mount_image(&req, &config, &short_name);
	if (r < 0) {
		(void)rmdir(mnt);
		return r;
	}

	machine = machine_name_from(short_name);
	/* The image's user, resolved here, set by lazyroot-exec: nspawn's --user needs getent. */
	r = run_exec_prepare(&rx, mnt, config, nspawn_args, command);
	/* The range the mount chose (pick) is in its record; nspawn must use that one. */
	if (r >= 0 && req.private_users) {
		r = mount_record_read(mnt, &rec);
		if (r < 0)
			log_error_errno(r, "cannot read the record of the mount at '%s': %m", mnt);
	}
	if (r >= 0) {
		r = nspawn_build_argv(&(struct nspawn_request) {
			.directory = mnt,
			.machine = machine ? machine : "lazyroot",
			.user_args = rx.nspawn_args,
			.command = rx.command,
			.config = &rx.config,
			.quiet = !verbose,
			.private_users = rec.private_users,
		}, &argv_nspawn);
		if (r < 0 && r != -ENOEXEC)
			log_error_errno(r, "cannot build the systemd-nspawn command line: %m");
	}
	if (r == -ENOEXEC) {
		log_error("image '%s' has no Entrypoint or Cmd: give a command after '--'", req.ref);
		status = -ENOEXEC;
	} else if (r < 0) {
		status = r;   /* logged */
	} else {
		status = run_exec_status(&rx, run_nspawn(argv_nspawn));
	}

	/* Processes the container left behind may still hold the tree: detach then. */
	if (umount_path(mnt, false) != 0 && umount_path(mnt, true) != 0)
		log_warning("'%s' could not be unmounted", mnt);
	(void)rmdir(mnt);
	return status;
}
