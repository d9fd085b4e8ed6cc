/* cli/exit_status.h: the one place where what a verb returns becomes lazyroot's exit status.
 *
 * A verb returns 0, -errno, or (only `run`) the container's exit status.  The errno says which
 * class of failure it was, as lazyroot(1) lists them under EXIT STATUS; the message was logged
 * where the failure was found.  A verb that knows the class returns the class's errno below
 * rather than the cause's (which it logged): -EACCES on a cache file is a cache failure, -EACCES
 * from a registry a registry one. */
#pragma once

#include "cache/image.h"

#define ERR_USAGE EINVAL         /* 2: bad arguments, reference or platform */
#define ERR_REGISTRY EREMOTEIO   /* 3: image unknown, registry unreachable or refusing, bad data */
#define ERR_CACHE EIO            /* 4: the local cache could not be read or written */
#define ERR_MOUNT ENODEV         /* 5: mountpoint, /dev/fuse, FUSE or overlay mount failed */
#define ERR_OTHER ECANCELED     /* 1: where the cause's errno could read as a class above */
/* Any other -errno exits with 1 (-ENOMEM, -EBUSY for a mounted image, -ENOSPC for a cache
 * that cannot shrink enough, -EUCLEAN for problems fsck left). */

enum {
	EXIT_FAILURE_OTHER = 1,
	EXIT_USAGE = 2,
	EXIT_REGISTRY = 3,
	EXIT_CACHE = 4,
	EXIT_MOUNT = 5,
	EXIT_RUN_FAILED = 125,    /* `run`: lazyroot or nspawn failed before the command ran, or
	                           * lazyroot after it; 126 and 127 come from lazyroot-exec */
};

/* The exit status for verb result @r; @failure, when not 0, is the status of every failure
 * (`run` exits with 125 whatever failed, its container's status otherwise). */
int exit_status(int r, int failure);

/* The class errno (-ERR_*) for a failed image_pull(). */
int pull_failure_errno(enum pull_failure kind);
