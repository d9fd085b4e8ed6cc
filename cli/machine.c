/*
 * cli/machine.c: machines (see machine.h).  Adding one mounts the image with its overlay under
 * the machine's state directory and, once the image is pulled and before the mount goes live,
 * writes what systemd needs: the .nspawn settings from the image config, the drop-in that
 * makes systemd-nspawn@NAME.service start lazyroot-machine@NAME.service first, and the stored
 * REF that unit mounts at boot.  A failed add leaves nothing behind; a failed remount leaves
 * the machine as it was.  Files are replaced by rename(), so a crash leaves old or new.
 */
#include "cli/machine.h"

#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "cache/base/error.h"
#include "cache/base/log.h"
#include "cache/base/util.h"
#include "cache/store/mount_records.h"
#include "cli/cli.h"
#include "cli/mountinfo.h"
#include "cli/machine_settings.h"
#include "cli/mount_daemon.h"

#define MACHINE_NAME_MAX 64
#define IMAGE_FILE_MAX 4096

static bool machine_name_valid(const char *name)
{
	size_t n = strlen(name);

	if (n == 0 || n > MACHINE_NAME_MAX || name[0] == '.' || name[0] == '-')
		return false;
	for (const char *p = name; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		      (*p >= '0' && *p <= '9') || strchr("-_.", *p)))
			return false;
	return true;
}

/* $@var if set and absolute, else @def. */
static const char *env_dir(const char *var, const char *def)
{
	const char *v = getenv(var);

	return v && v[0] == '/' ? v : def;
}

int machine_paths_new(const char *name, struct machine_paths *ret)
{
	struct machine_paths p = {};
	const char *machines = env_dir("LAZYROOT_MACHINES_DIR", "/var/lib/machines");
	const char *state = env_dir("LAZYROOT_MACHINE_STATE_DIR", "/var/lib/lazyroot/machines");
	const char *nspawn = env_dir("LAZYROOT_NSPAWN_DIR", "/etc/systemd/nspawn");
	const char *units = env_dir("LAZYROOT_SYSTEMD_DIR", "/etc/systemd/system");

	if (!machine_name_valid(name))
		return -EINVAL;
	if (!(p.name = strdup(name)) ||
	    asprintf(&p.directory, "%s/%s", machines, name) < 0 ||
	    asprintf(&p.state, "%s/%s", state, name) < 0 ||
	    asprintf(&p.image_file, "%s/%s/image", state, name) < 0 ||
	    asprintf(&p.settings, "%s/%s.nspawn", nspawn, name) < 0 ||
	    asprintf(&p.dropin_dir, "%s/systemd-nspawn@%s.service.d", units, name) < 0 ||
	    asprintf(&p.dropin, "%s/systemd-nspawn@%s.service.d/lazyroot.conf", units, name) < 0) {
		machine_paths_done(&p);
		return -ENOMEM;
	}
	*ret = p;
	return 0;
}

void machine_paths_done(struct machine_paths *p)
{
	free(p->name);
	free(p->directory);
	free(p->state);
	free(p->image_file);
	free(p->settings);
	free(p->dropin_dir);
	free(p->dropin);
	*p = (struct machine_paths) {};
}

/* The machine's paths, or one error line for a bad name. */
static int machine_paths_get(const char *name, struct machine_paths *ret)
{
	int r = machine_paths_new(name, ret);

	if (r == -EINVAL)
		return log_error_errno(-ERR_USAGE, "invalid machine name '%s': use letters, digits, "
				       "'-', '_' and '.', at most %d characters", name,
				       MACHINE_NAME_MAX);
	if (r < 0)
		return log_error_errno(r, "out of memory");
	return 0;
}

/* Writes @text to @path through a temporary file and rename(), creating the directory. */
static int write_file_replace(const char *path, const char *text, mode_t mode)
{
	_cleanup_free_ char *dir = strdup(path), *tmp = NULL;
	_cleanup_close_ int fd = -EBADF;
	int r;

	if (!dir || asprintf(&tmp, "%s.tmp", path) < 0)
		return -ENOMEM;
	*strrchr(dir, '/') = 0;
	r = mkdir_p(dir, 0755);
	if (r < 0)
		return r;
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
	if (fd < 0)
		return -errno;
	r = write_all(fd, text, strlen(text));
	if (r >= 0 && fsync(fd) < 0)
		r = -errno;
	if (r >= 0 && rename(tmp, path) < 0)
		r = -errno;
	if (r < 0)
		(void)unlink(tmp);
	return r;
}

/* The REF stored for the machine: 0, -ENOENT if it has none, or -errno. */
static int machine_image_read(const struct machine_paths *p, char **ret)
{
	_cleanup_free_ char *buf = NULL;
	char *line, *save = NULL;
	int r;

	r = read_full_file(p->image_file, IMAGE_FILE_MAX, &buf, NULL);
	if (r < 0)
		return r;
	for (line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
		if (startswith(line, "IMAGE=") && line[6]) {
			*ret = strdup(line + 6);
			return *ret ? 0 : -ENOMEM;
		}
	return -ENOENT;
}

/* The image file, also an EnvironmentFile= for lazyroot-machine-fill@.service: IMAGE is what
 * the machine mounts, as given. */
static int machine_image_write(const struct machine_paths *p, const char *ref)
{
	_cleanup_free_ char *text = NULL;

	if (asprintf(&text, "# lazyroot machine %s: the image it mounts (lazyroot mount --machine)\n"
		     "IMAGE=%s\n", p->name, ref) < 0)
		return -ENOMEM;
	return write_file_replace(p->image_file, text, 0644);
}

static int machine_dropin_write(const struct machine_paths *p)
{
	static const char text[] =
		"# Written by lazyroot mount --machine: the container's root is a lazyroot mount,\n"
		"# which lazyroot-machine@.service mounts first (and at boot); when it goes, so\n"
		"# does the container.\n"
		"[Unit]\n"
		"BindsTo=lazyroot-machine@%i.service\n"
		"After=lazyroot-machine@%i.service\n";

	return write_file_replace(p->dropin, text, 0644);
}

struct machine_add {
	struct machine_paths *paths;
	const char *ref;
	bool created;         /* no REF was stored: a failure removes what the add wrote */
	bool state_created;   /* nor writes kept (rm --keep-writes): a failure removes them too */
	bool dir_created;
	bool foreground;
	uint32_t base;        /* the private users range it mounts with */
};

/* NAME.nspawn from @cfg; @root_dir, the mounted tree, resolves the image's user by name.
 * Returns -errno with the reason in error.h's channel. */
static int machine_settings_write(const struct machine_add *a, const struct image_config *cfg,
				  const char *root_dir)
{
	_cleanup_free_ char *text = NULL;
	int r;

	r = machine_settings_text(cfg, a->base, root_dir, a->ref, &text);
	if (r < 0)
		return r;
	r = write_file_replace(a->paths->settings, text, 0644);
	if (r < 0)
		return error_set(r, "cannot write '%s'", a->paths->settings);
	return 0;
}

/* mount_request.pulled: the image is pulled, the mount not yet live.  Writes the stored REF
 * and the drop-in (and the settings of the boot unit's mount); a failure fails the mount. */
static int machine_pulled(void *userdata, const struct reference *ref, const struct image *img,
			  uint32_t private_users)
{
	struct machine_add *a = userdata;
	struct machine_paths *p = a->paths;
	int r;

	(void)ref;
	a->base = private_users;
	r = machine_image_write(p, a->ref);
	if (r < 0)
		return log_error_errno(-ERR_MOUNT, "cannot write '%s': %s", p->image_file,
				       strerror(-r));
	/* In the foreground (the boot unit) the mount is live only when this process ends:
	 * the settings written when the machine was added stay, or numeric ids only. */
	if (a->foreground && access(p->settings, F_OK) < 0) {
		r = machine_settings_write(a, img->config, NULL);
		if (r < 0)
			return log_error_errno(-ERR_MOUNT, "cannot write the settings of machine "
					       "'%s': %s", p->name, error_take(r));
	}
	r = machine_dropin_write(p);
	if (r < 0)
		return log_error_errno(-ERR_MOUNT, "cannot write '%s': %s", p->dropin,
				       strerror(-r));
	return 0;
}

static int rm_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	if ((type == FTW_DP ? rmdir(path) : unlink(path)) < 0 && errno != ENOENT)
		return -errno;
	return 0;
}

/* Removes @path and everything below it, never crossing into another mount. */
static int rm_tree(const char *path)
{
	int r = nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);

	if (r < 0 && errno == ENOENT)
		return 0;
	return r < 0 ? -errno : r;
}

/* Undoes a failed add or remount: what it created, nothing that was there before. */
static void machine_add_undo(const struct machine_add *a)
{
	const struct machine_paths *p = a->paths;

	if (a->created) {
		(void)unlink(p->settings);
		(void)unlink(p->dropin);
		(void)rmdir(p->dropin_dir);
		(void)unlink(p->image_file);
	}
	if (a->state_created)
		(void)rm_tree(p->state);
	if (a->dir_created)
		(void)rmdir(p->directory);
}

/* With @ref: a new machine, or the one stored if it names the same image. */
static int machine_check_ref(const struct machine_paths *p, const char *ref, char **ret_ref,
			     bool *ret_created)
{
	_cleanup_free_ char *stored = NULL;
	int r;

	r = machine_image_read(p, &stored);
	if (r < 0 && r != -ENOENT)
		return log_error_errno(-ERR_MOUNT, "cannot read '%s': %s", p->image_file,
				       strerror(-r));
	*ret_created = r == -ENOENT;
	if (!ref && r == -ENOENT)
		return log_error_errno(-ERR_USAGE, "machine '%s' does not exist (add it with "
				       "'lazyroot mount --machine %s REF')", p->name, p->name);
	if (ref && stored && !streq(ref, stored))
		return log_error_errno(-ERR_USAGE, "machine '%s' already mounts '%s' (remove it "
				       "first: 'lazyroot rm --machine %s')", p->name, stored,
				       p->name);
	*ret_ref = ref ? strdup(ref) : TAKE_PTR(stored);
	return *ret_ref ? 0 : log_error_errno(-ENOMEM, "out of memory");
}

/* The foreground mount (lazyroot-machine@NAME.service) of a machine `lazyroot mount --machine`
 * already mounted: the unit stands for that mount instead of failing, so that `machinectl
 * start` works after an add.  Ready at once; ends when the mount's daemon exits (the mount
 * went, and BindsTo= stops the container), or on SIGTERM/SIGINT by unmounting it. */
static int machine_adopt(const struct machine_paths *p, pid_t pid)
{
	_cleanup_close_ int pidfd = -EBADF, sigfd = -EBADF;
	struct pollfd fds[2];
	sigset_t mask;

	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0 ||
	    (sigfd = signalfd(-1, &mask, SFD_CLOEXEC)) < 0 ||
	    (pidfd = (int)syscall(SYS_pidfd_open, pid, 0)) < 0)
		return log_error_errno(-ERR_MOUNT, "cannot watch the daemon of machine '%s': %m",
				       p->name);
	log_info("machine '%s' is already mounted (daemon %d): standing for that mount", p->name,
		 (int)pid);
	sd_notify_state("READY=1");
	fds[0] = (struct pollfd) { .fd = pidfd, .events = POLLIN };
	fds[1] = (struct pollfd) { .fd = sigfd, .events = POLLIN };
	while (poll(fds, 2, -1) < 0)
		if (errno != EINTR)
			return log_error_errno(-ERR_MOUNT, "cannot wait: %m");
	if (fds[0].revents)
		return 0;
	return umount_path(p->directory, false);
}

/* The live daemon of the machine's mount, or 0. */
static pid_t machine_daemon(const struct machine_paths *p)
{
	struct mount_record rec = {};
	pid_t pid = 0;

	if (mount_record_read(p->directory, &rec) >= 0) {
		if (rec.pid > 0 && kill(rec.pid, 0) == 0)
			pid = rec.pid;
		mount_record_done(&rec);
	}
	return pid;
}

/* The settings of a live mount.  A remount whose settings cannot be made (the image's
 * /etc/passwd not cached and the registry down) keeps the ones it has; an add fails and
 * unmounts. */
static int machine_settings_live(const struct machine_add *a, const struct image_config *cfg)
{
	const struct machine_paths *p = a->paths;
	int r;

	r = machine_settings_write(a, cfg, p->directory);
	if (r >= 0)
		return 0;
	if (!a->created && access(p->settings, F_OK) == 0) {
		log_warning("cannot update the settings of machine '%s', keeping '%s': %s",
			    p->name, p->settings, error_take(r));
		return 0;
	}
	log_error("cannot write the settings of machine '%s': %s", p->name, error_take(r));
	(void)umount_path(p->directory, false);
	return -ERR_MOUNT;
}

int machine_mount(struct mount_request *req, const char *name, const char *ref)
{
	_cleanup_(machine_paths_done) struct machine_paths p = {};
	_cleanup_(image_config_freep) struct image_config *config = NULL;
	_cleanup_free_ char *image = NULL, *short_name = NULL;
	struct machine_add a = { .paths = &p };
	char base[16];
	pid_t pid;
	int r;

	r = machine_paths_get(name, &p);
	if (r < 0)
		return r;
	r = machine_check_ref(&p, ref, &image, &a.created);
	if (r < 0)
		return r;
	if (req->foreground && !ref && (pid = machine_daemon(&p)) > 0)
		return machine_adopt(&p, pid);
	a.state_created = access(p.state, F_OK) < 0;
	a.dir_created = access(p.directory, F_OK) < 0;
	r = mkdir_p(p.directory, 0755);
	if (r < 0)
		return log_error_errno(-ERR_MOUNT, "cannot create '%s': %s", p.directory,
				       strerror(-r));
	machine_private_users(req, &p, base);
	a.ref = image;
	req->ref = image;
	req->mountpoint = p.directory;
	req->overlay_dir = p.state;
	req->pulled = machine_pulled;
	req->pulled_userdata = &a;
	a.foreground = req->foreground;
	r = mount_image(req, req->foreground ? NULL : &config, req->foreground ? NULL : &short_name);
	/* Live now: the image's user resolves against its own /etc/passwd. */
	if (r >= 0 && config)
		r = machine_settings_live(&a, config);
	if (r < 0)
		machine_add_undo(&a);
	return r;
}

static bool machine_is_mounted(const struct machine_paths *p)
{
	struct mount_record rec = {};

	if (mount_record_read(p->directory, &rec) >= 0) {
		mount_record_done(&rec);
		return true;
	}
	return mountinfo_find(p->directory, NULL) > 0;
}

/* The paths of machine @name, which must exist (have a stored REF): -ERR_USAGE, logged, if not. */
static int machine_existing(const char *name, struct machine_paths *p)
{
	_cleanup_free_ char *stored = NULL;
	int r;

	r = machine_paths_get(name, p);
	if (r < 0)
		return r;
	if (machine_image_read(p, &stored) < 0)
		return log_error_errno(-ERR_USAGE, "machine '%s' does not exist", name);
	return 0;
}

int machine_umount(const char *name, bool lazy)
{
	_cleanup_(machine_paths_done) struct machine_paths p = {};
	int r;

	r = machine_existing(name, &p);
	if (r < 0)
		return r;
	if (!machine_is_mounted(&p))
		return log_error_errno(-ERR_MOUNT, "machine '%s' is not mounted", name);
	return umount_path(p.directory, lazy);
}

/* Removes @path if present; a failure is logged and returned as -ERR_MOUNT. */
static int remove_one(const char *path, bool dir)
{
	int r = dir ? rm_tree(path) : (unlink(path) < 0 && errno != ENOENT ? -errno : 0);

	if (r < 0)
		return log_error_errno(-ERR_MOUNT, "cannot remove '%s': %s", path, strerror(-r));
	return 0;
}

int machine_remove(const char *name, bool keep_writes)
{
	_cleanup_(machine_paths_done) struct machine_paths p = {};
	_cleanup_free_ char *path = NULL;
	int r;

	r = machine_existing(name, &p);
	if (r < 0)
		return r;
	/* Mounted: unmount first; a running container keeps it busy, and then nothing goes. */
	if (machine_is_mounted(&p)) {
		r = umount_path(p.directory, false);
		if (r < 0)
			return r;
	}
	r = remove_one(p.settings, false);
	if (r >= 0)
		r = remove_one(p.dropin, false);
	if (r >= 0 && rmdir(p.dropin_dir) < 0 && errno != ENOENT && errno != ENOTEMPTY)
		r = log_error_errno(-ERR_MOUNT, "cannot remove '%s': %m", p.dropin_dir);
	if (r >= 0)
		r = remove_one(p.image_file, false);
	if (r >= 0 && !keep_writes)
		r = remove_one(p.state, true);
	if (r >= 0 && rmdir(p.directory) < 0 && errno != ENOENT)
		r = log_error_errno(-ERR_MOUNT, "cannot remove '%s': %m", p.directory);
	if (r >= 0)
		printf("removed machine %s%s\n", name, keep_writes ? " (writes kept)" : "");
	return r;
}
