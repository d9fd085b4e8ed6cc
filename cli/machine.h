/* cli/machine.h: machines, images mounted where systemd-nspawn -M NAME, machinectl and
 * systemd-nspawn@NAME.service find them.  A machine NAME is four things, each at a path the
 * environment may move (for tests; see lazyroot(1), ENVIRONMENT):
 *   /var/lib/machines/NAME                       the mount (overlay over the FUSE tree)
 *   /var/lib/lazyroot/machines/NAME/             image (the REF), upper/ and work/ (the writes)
 *   /etc/systemd/nspawn/NAME.nspawn              the image's config as nspawn settings
 *   /etc/systemd/system/systemd-nspawn@NAME.service.d/lazyroot.conf
 *                                                binds the container to lazyroot-machine@NAME
 * The writes and the stored REF survive unmounts and reboots; `rm --machine` removes all four. */
#pragma once

#include <stdbool.h>

struct mount_request;

struct machine_paths {
	char *name;
	char *directory;    /* where it is mounted */
	char *state;        /* the overlay dir: upper/ and work/, and the image file */
	char *image_file;   /* state/image: the REF, one line */
	char *settings;     /* NAME.nspawn */
	char *dropin_dir;   /* systemd-nspawn@NAME.service.d */
	char *dropin;       /* dropin_dir/lazyroot.conf */
};

/* -EINVAL if @name is not a machine name (a host name label: [A-Za-z0-9_-.], 1 to 64
 * characters, not starting with '.' or '-'); -ENOMEM. */
int machine_paths_new(const char *name, struct machine_paths *ret);
void machine_paths_done(struct machine_paths *p);

/* `lazyroot mount --machine NAME [REF]`: with REF adds (or remounts) the machine, without it
 * mounts the one stored.  @req holds the image options; its ref and mountpoint are set here.
 * 0 or -errno (logged). */
int machine_mount(struct mount_request *req, const char *name, const char *ref);
/* `lazyroot umount --machine NAME`: unmounts, keeps everything else.  0 or -errno (logged). */
int machine_umount(const char *name, bool lazy);
/* `lazyroot rm --machine NAME`: unmounts and removes the settings, the drop-in, the stored
 * REF and, unless @keep_writes, the writes.  0 or -errno (logged). */
int machine_remove(const char *name, bool keep_writes);
