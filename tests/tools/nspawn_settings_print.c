/* tests/tools/nspawn_settings_print.c: prints nspawn_settings_format()'s text for an image
 * config blob, so that the integration tests can run real systemd-nspawn with it before a
 * verb writes such files.
 *
 *   nspawn-settings-print CONFIG.json ROOT [PRIVATE_USERS_BASE]
 *
 * The exec helper is $LAZYROOT_EXEC_HELPER.  Exit 0, or 1 with the error on stderr. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "cache/base/error.h"
#include "cache/base/util.h"
#include "cli/nspawn_settings.h"

int main(int argc, char **argv)
{
	_cleanup_(image_config_freep) struct image_config *cfg = NULL;
	_cleanup_free_ char *blob = NULL, *text = NULL;
	size_t len;
	int r;

	if (argc < 3)
		return fprintf(stderr, "usage: %s CONFIG.json ROOT [BASE]\n", argv[0]), 2;
	r = read_full_file(argv[1], 1 << 20, &blob, &len);
	if (r >= 0)
		r = image_config_parse(blob, len, &cfg);
	if (r >= 0)
		r = nspawn_settings_format(&(struct nspawn_settings_spec) {
			.config = cfg, .root_dir = argv[2], .comment = argv[1],
			.private_users = argc > 3 ? (uint32_t)strtoul(argv[3], NULL, 10) : 0,
		}, &text);
	if (r < 0)
		return fprintf(stderr, "%s\n", error_take(r)), 1;
	fputs(text, stdout);
	return 0;
}
