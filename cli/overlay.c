/* cli/overlay.c: mounts kernel overlayfs over the FUSE tree, so that writes land in an upper
 * directory and never in the cache. */
#include "overlay.h"

#include <sys/mount.h>
#include <sys/stat.h>

#include "cache/base/util.h"

int overlay_check_path(const char *path)
{
	return strpbrk(path, ",:\\") ? -EINVAL : 0;
}

int overlay_prepare_dir(const char *dir)
{
	_cleanup_free_ char *upper = NULL, *work = NULL;
	int r;

	r = overlay_check_path(dir);
	if (r < 0)
		return r;
	if (asprintf(&upper, "%s/upper", dir) < 0 || asprintf(&work, "%s/work", dir) < 0)
		return -ENOMEM;
	r = mkdir_p(upper, 0755);
	if (r < 0)
		return r;
	return mkdir_p(work, 0755);
}

int overlay_mount(const char *lower, const char *dir, const char *target)
{
	_cleanup_free_ char *opts = NULL;

	if (overlay_check_path(lower) < 0 || overlay_check_path(dir) < 0)
		return -EINVAL;
	if (asprintf(&opts, "lowerdir=%s,upperdir=%s/upper,workdir=%s/work", lower, dir, dir) < 0)
		return -ENOMEM;
	if (mount("overlay", target, "overlay", 0, opts) < 0)
		return -errno;
	return 0;
}

int overlay_mount_tmpfs(const char *dir)
{
	if (mount("tmpfs", dir, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755") < 0)
		return -errno;
	return overlay_prepare_dir(dir);
}
