/* cli/machine_settings.c: a machine's private users and nspawn settings (machine_settings.h).
 * The formats are other files' (cli/private_users.c, cli/nspawn_settings.c): this file only
 * says what a machine picks. */
#include "cli/machine_settings.h"

#include <stdio.h>
#include <sys/stat.h>

#include "cache/base/util.h"
#include "cli/image_request.h"
#include "cli/machine.h"
#include "cli/nspawn_settings.h"
#include "cli/private_users.h"

void machine_private_users(struct mount_request *req, const struct machine_paths *p,
			   char buf[static 16])
{
	_cleanup_free_ char *upper = NULL;
	struct stat st;

	if (req->private_users)
		return;
	req->private_users_name = p->name;
	req->private_users = "pick";
	/* A remount keeps the range its writes are owned by: a new pick could differ when the
	 * first choice got taken meanwhile, and the overlay refuses an upper of another range. */
	if (asprintf(&upper, "%s/upper", p->state) < 0 || stat(upper, &st) < 0)
		return;
	/* Owned by root: added with --private-users=no, which the writes keep. */
	if (st.st_uid % PRIVATE_USERS_RANGE == 0) {
		snprintf(buf, 16, "%u", (unsigned)st.st_uid);
		req->private_users = buf;
	}
}

int machine_settings_text(const struct image_config *cfg, uint32_t base, const char *root_dir,
			  const char *ref, char **ret)
{
	_cleanup_free_ char *comment = NULL;

	if (asprintf(&comment, "machine image %s (lazyroot mount --machine)", ref) < 0)
		return -ENOMEM;
	return nspawn_settings_format(&(struct nspawn_settings_spec) {
			.config = cfg, .root_dir = root_dir, .private_users = base,
			.comment = comment,
		}, ret);
}
