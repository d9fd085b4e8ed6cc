/* cli/machine_settings.h: what a machine asks of the image options: its private users (the
 * range its writes are owned by) and its nspawn settings, from the image config. */
#pragma once

#include "cache/format/manifest.h"

struct mount_request;
struct machine_paths;

/* Sets @req's private users for machine @p unless the command line chose: the range the
 * machine's upper dir is already owned by (a remount), else one picked from its name, as
 * systemd-nspawn@.service's -U would.  0 or -errno (logged). */
int machine_private_users(struct mount_request *req, const struct machine_paths *p);

/* The text of the machine's NAME.nspawn: @cfg's command, environment, working directory and
 * user, Boot=no, and PrivateUsers= the range @req mounts with.  0 or -errno. */
int machine_settings_text(const struct mount_request *req, const struct image_config *cfg,
			  char **ret);
