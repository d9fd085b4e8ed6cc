/* cli/overlay.h: the kernel overlayfs that takes a mount's writes, and the tmpfs behind
 * --volatile. */
#pragma once

/* Paths in overlayfs options cannot hold ',' ':' or '\\' portably: -EINVAL for those. */
int overlay_check_path(const char *path);
/* Creates @dir/upper and @dir/work (0755) if missing. */
int overlay_prepare_dir(const char *dir);
/* Mounts overlayfs at @target: @lower read-only below, @dir/upper and @dir/work. */
int overlay_mount(const char *lower, const char *dir, const char *target);
/* Mounts a tmpfs at @dir (which must exist) for a volatile upper. */
int overlay_mount_tmpfs(const char *dir);
