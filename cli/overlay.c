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

int overlay_upper_owner(const char *dir, uid_t *ret_uid, gid_t *ret_gid)
{
	_cleanup_free_ char *upper = NULL;
	struct stat st;

	if (asprintf(&upper, "%s/upper", dir) < 0)
		return -ENOMEM;
	if (stat(upper, &st) < 0)
		return -errno;
	*ret_uid = st.st_uid;
	*ret_gid = st.st_gid;
	return 0;
}

int overlay_check_upper(const char *dir, uint32_t base, uid_t *ret_uid, gid_t *ret_gid)
{
	uid_t uid;
	gid_t gid;
	int r;

	r = overlay_upper_owner(dir, &uid, &gid);
	if (r < 0)
		return r == -ENOENT ? 0 : r;
	if ((uid & ~(uid_t)0xFFFF) == base && (gid & ~(gid_t)0xFFFF) == base)
		return 0;
	*ret_uid = uid;
	*ret_gid = gid;
	return -EXDEV;
}

/* 1 if it made @path, 0 if it was there. */
static int make_owned_dir(const char *path, uint32_t base, mode_t mode)
{
	if (mkdir(path, 0700) < 0)
		return errno == EEXIST ? 0 : -errno;
	/* chown() first: it would drop a setgid bit chmod() set; chmod() because of the umask. */
	if (base != 0 && chown(path, base, base) < 0)
		return -errno;
	if (chmod(path, mode) < 0)
		return -errno;
	return 1;
}

int overlay_prepare_dir(const char *dir, uint32_t base, mode_t root_mode)
{
	_cleanup_free_ char *upper = NULL, *work = NULL;
	int r;

	r = overlay_check_path(dir);
	if (r < 0)
		return r;
	if (asprintf(&upper, "%s/upper", dir) < 0 || asprintf(&work, "%s/work", dir) < 0)
		return -ENOMEM;
	r = mkdir_p(dir, 0755);
	if (r >= 0)
		r = make_owned_dir(upper, base, root_mode & 07777);
	if (r >= 0)
		r = make_owned_dir(work, base, 0755);
	return r < 0 ? r : 0;
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

int overlay_mount_tmpfs(const char *dir, uint32_t base, mode_t root_mode)
{
	if (mount("tmpfs", dir, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755") < 0)
		return -errno;
	return overlay_prepare_dir(dir, base, root_mode);
}
