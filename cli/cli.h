/* cli/cli.h: what the verbs share: their entry points (each returns 0 or -errno, see
 * exit_status.h), the options of image verbs, and mounting/unmounting as functions so that
 * `run` can do what `mount` and `umount` do. */
#pragma once

#include <stdbool.h>

#include "cache/image.h"
#include "cli/exit_status.h"
#include "cli/image_request.h"

/* Mounts as `lazyroot mount` does; 0 or -errno, errors logged.  With @ret_config, the image's
 * config is returned too (for `run`). */
int mount_image(const struct mount_request *req, struct image_config **ret_config,
		char **ret_short_name);
/* Unmounts as `lazyroot umount` does; 0 or -errno, errors logged. */
int umount_path(const char *path, bool lazy);

int verb_mount(int argc, char **argv);
int verb_umount(int argc, char **argv);
int verb_run(int argc, char **argv);   /* or the container's exit status */
int verb_stats(int argc, char **argv);
int verb_images(int argc, char **argv);
int verb_inspect(int argc, char **argv);
int verb_rm(int argc, char **argv);
int verb_gc(int argc, char **argv);
int verb_fsck(int argc, char **argv);
int verb_prewarm(int argc, char **argv);
int verb_index(int argc, char **argv);
int verb_profile(int argc, char **argv);
int verb_login(int argc, char **argv);
int verb_logout(int argc, char **argv);
