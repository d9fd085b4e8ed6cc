/* cli/nspawn_settings.h: the text of a systemd.nspawn(5) settings file (NAME.nspawn) that runs
 * an image's command as `lazyroot run` would: the image's Entrypoint and Cmd through the exec
 * helper (cli/exec_helper.h) with the image's user, its Env and WorkingDir; Boot=yes instead
 * when the command is an init nspawn boots itself. */
#pragma once

#include <stdint.h>

#include "cache/format/manifest.h"
#include "cli/image_user.h"

struct nspawn_settings_spec {
	const struct image_config *config;  /* Entrypoint, Cmd, Env, WorkingDir, User */
	/* The ids to run the command as.  NULL: config->user is resolved against root_dir's
	 * /etc/passwd and /etc/group (root when the image names no user, or root_dir is NULL). */
	const struct image_user *user;
	const char *root_dir;               /* the container's tree, mounted; may be NULL */
	const char *exec_helper;            /* host path of lazyroot-exec; NULL: exec_helper_path() */
	uint32_t private_users;             /* PrivateUsers= this base; 0: no PrivateUsers= line */
	const char *comment;                /* one line for the file's head ("image REF"); may be NULL */
};

/* Writes the settings text into *ret_text (malloc'd, ends with a newline).
 * -ENOEXEC: the image has neither Entrypoint nor Cmd; -ESRCH: the user does not resolve;
 * -EINVAL: a value a settings file cannot hold (a newline in an Env entry or WorkingDir, a
 * relative WorkingDir); the message is in error_message(). */
int nspawn_settings_format(const struct nspawn_settings_spec *spec, char **ret_text);
