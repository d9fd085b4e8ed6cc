/* cli/nspawn.h: the systemd-nspawn command line for `lazyroot run`. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "cache/format/manifest.h"

/* True when systemd is PID 1 (sd_booted()'s test).  Without it nspawn cannot register the
 * machine or make a scope, and needs --register=no --keep-unit. */
bool host_runs_systemd(void);

struct nspawn_request {
	const char *directory;
	const char *machine;          /* used unless @user_args name one */
	char **user_args;             /* nspawn options given on our command line */
	char **command;               /* after "--"; NULL: the image's Entrypoint + Cmd */
	const struct image_config *config;
	bool quiet;
	uint32_t private_users;       /* the tree's id range (base); 0: none */
};

/* Builds the argv (strv) to exec.  -ENOEXEC when neither the command line nor the image
 * gives a command. */
int nspawn_build_argv(const struct nspawn_request *r, char ***ret);
/* True if @args contain option @long_name ("--machine") or @short_name ('M', 0 for none). */
bool nspawn_args_have(char **args, const char *long_name, char short_name);
