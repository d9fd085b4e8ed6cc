/* cli/machine_settings.c: a machine's private users and nspawn settings (machine_settings.h).
 * The formats are other files' (cli/private_users.c, cli/nspawn_settings.c): this file only
 * says what a machine picks. */
#include "cli/machine_settings.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cli/image_request.h"
#include "cli/machine.h"

int machine_private_users(struct mount_request *req, const struct machine_paths *p)
{
	(void)req;
	(void)p;
	return 0;
}

int machine_settings_text(const struct mount_request *req, const struct image_config *cfg,
			  char **ret)
{
	(void)req;
	(void)cfg;
	*ret = strdup("[Exec]\nBoot=no\n");
	return *ret ? 0 : -ENOMEM;
}
