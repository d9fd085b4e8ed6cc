/* cli/mountinfo.h: mount table queries for mount, umount and stats. */
#pragma once

/* The absolute, normalised form of @path without resolving its last component (which may be
 * a dead FUSE mount that cannot be stat'ed). */
int path_make_absolute(const char *path, char **ret);
/* 1 if @path is a mountpoint listed in /proc/self/mountinfo, with its fstype; 0 if not. */
int mountinfo_find(const char *path, char **ret_fstype);
