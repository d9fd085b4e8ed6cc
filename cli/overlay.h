/* cli/overlay.h: the kernel overlayfs that takes a mount's writes, and the tmpfs behind
 * --volatile.  With private users (base B), the upper and work directories are owned by B:B:
 * overlayfs takes its root directory's owner and mode from the upper directory, and nspawn -U
 * takes the container's range from that owner. */
#pragma once

#include <stdint.h>
#include <sys/types.h>

/* Paths in overlayfs options cannot hold ',' ':' or '\\' portably: -EINVAL for those. */
int overlay_check_path(const char *path);
/* The owner of @dir/upper; -ENOENT if there is none. */
int overlay_upper_owner(const char *dir, uid_t *ret_uid, gid_t *ret_gid);
/* An existing @dir/upper must be owned within the range that starts at @base (0: ids below
 * 65536), or the container would see its root and the files it wrote owned by ids outside its
 * range: -EXDEV then, with the owner in *ret_uid, *ret_gid.  0 when it fits or is missing. */
int overlay_check_upper(const char *dir, uint32_t base, uid_t *ret_uid, gid_t *ret_gid);
/* Creates @dir/upper (mode @root_mode, the image root's) and @dir/work if missing, owned by
 * @base:@base when @base is not 0. */
int overlay_prepare_dir(const char *dir, uint32_t base, mode_t root_mode);
/* Mounts overlayfs at @target: @lower read-only below, @dir/upper and @dir/work. */
int overlay_mount(const char *lower, const char *dir, const char *target);
/* Mounts a tmpfs at @dir (which must exist) for a volatile upper and prepares it as
 * overlay_prepare_dir() does. */
int overlay_mount_tmpfs(const char *dir, uint32_t base, mode_t root_mode);
