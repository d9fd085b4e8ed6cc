/*
 * cli/index_publish.c: publishing an image's seek indexes from a verb (index_publish.h).  The
 * cache does the work (seek_publish()); this turns its result into the CLI's classes: a bad
 * configuration is the user's, anything a registry did is the registry's.
 */
#include "index_publish.h"

#include "cache/base/error.h"
#include "cache/config.h"
#include "cache/share/seek_publish.h"
#include "cli/exit_status.h"

int index_publish(struct cache *c, const struct reference *ref,
		  const struct registry_options *ro, const struct image *img, int *ret_class)
{
	struct config cfg;
	unsigned line = 0;
	int r;

	*ret_class = -ERR_USAGE;
	r = config_read(&cfg, &line);
	if (r < 0)
		return error_set(r, "bad line %u in '%s'", line, config_path());
	if (ref->transport != REFERENCE_DOCKER)
		return error_set(-EOPNOTSUPP, "only the indexes of registry images are published");
	r = seek_publish(c, ref, ro, &cfg.artifacts, img);
	if (r == -EINVAL)
		return error_wrap(r, "'%s'", config_path());
	*ret_class = r == -ENOMEM ? -ENOMEM : -ERR_REGISTRY;
	return r;
}
