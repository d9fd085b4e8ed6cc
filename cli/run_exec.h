/* cli/run_exec.h: how `lazyroot run` starts the command, as docker does: through lazyroot-exec
 * (cli/exec_helper.h) with the ids of the image's User (or of the --user/-u given, which
 * nspawn never sees), and how its exit status is told from nspawn's own failures: the helper
 * marks a host file when it starts, so a status without the mark is nspawn's (125). */
#pragma once

#include "cache/format/manifest.h"

struct run_exec {
	char **nspawn_args;          /* the binds, then the user's options without --user */
	char **command;              /* what nspawn runs: the helper and the command */
	struct image_config config;  /* the image's, without User (the helper sets the ids) */
	char *started;               /* the host file the helper marks; NULL under --boot */
};

/* Fills @x for the tree at @root, the image @config (may be NULL), the user's nspawn options
 * and command (NULL: Entrypoint + Cmd).  Logs its failures (a user that does not resolve:
 * "unable to find user NAME: ..."), except -ENOEXEC: there is no command to run.  Under --boot
 * (-b) everything goes to nspawn as it is. */
int run_exec_prepare(struct run_exec *x, const char *root, const struct image_config *config,
		     char **nspawn_args, char **command);
/* The status `run` exits with for nspawn's @status (>= 0): @status once the helper started,
 * else -ECANCELED (125: nspawn failed before the command ran). */
int run_exec_status(const struct run_exec *x, int status);
void run_exec_done(struct run_exec *x);
