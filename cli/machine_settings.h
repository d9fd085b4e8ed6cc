/* cli/machine_settings.h: what a machine asks of the image options: its private users (the
 * range its writes are owned by) and its nspawn settings, from the image config. */
#pragma once

#include <stdint.h>

#include "cache/format/manifest.h"

struct mount_request;
struct machine_paths;

/* Sets @req's private users for machine @p unless the command line chose (--private-users):
 * the range the machine's upper dir is already owned by (a remount; root: none), else one
 * picked from its name, as systemd-nspawn@.service's -U would.  @buf holds the base's text for @req. */
void machine_private_users(struct mount_request *req, const struct machine_paths *p,
			   char buf[static 16]);

/* The text of the machine's NAME.nspawn (image @ref): @cfg's command (through lazyroot-exec),
 * environment, working directory and user (a name resolved in @root_dir, the mounted tree; NULL:
 * numeric ids only), and PrivateUsers= @base (0: none).  0 or -errno with the message in
 * error.h's channel. */
int machine_settings_text(const struct image_config *cfg, uint32_t base, const char *root_dir,
			  const char *ref, char **ret);
