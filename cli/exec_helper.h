/* cli/exec_helper.h: the host's side of lazyroot-exec (cli/lazyroot_exec.c), the static program
 * that runs first in a container to set the image user's ids and exec the command: where it is
 * on the host, where it is bound in the container, and its command line. */
#pragma once

#include <stdbool.h>

#include "cli/image_user.h"

/* Where the helper is bound (read-only) in the container: nspawn's /run is a tmpfs of the
 * container's own, mounted before the binds, so nothing lands in the image's tree. */
#define EXEC_HELPER_CONTAINER_PATH "/run/lazyroot/exec"
/* Where `run` binds the file the helper marks when it starts. */
#define EXEC_HELPER_STARTED_PATH "/run/lazyroot/started"

/* The helper on the host: $LAZYROOT_EXEC_HELPER, else lazyroot-exec next to the running lazyroot
 * (a build directory), else the installed one (LIBEXECDIR/lazyroot/lazyroot-exec).  -ENOENT with
 * a message when none is executable. */
int exec_helper_path(char **ret);

struct exec_helper_args {
	const struct image_user *user;   /* NULL: keep nspawn's ids (root) */
	const char *home;                /* HOME to set, or NULL to keep the environment's */
	const char *started;             /* the file to mark in the container, or NULL */
	bool escape;                     /* C-escape the command (for settings files) */
};

/* The helper's command line followed by @command (strv, not empty): EXEC_HELPER_CONTAINER_PATH,
 * its options, "--", then the command, escaped when asked. */
int exec_helper_argv(const struct exec_helper_args *a, char **command, char ***ret);

/* True when @s has a byte a settings file line cannot carry (a control character). */
bool exec_helper_needs_escape(const char *s);
