/*
 * fs/task_io.c: a thread's count of read system calls, from /proc (task_io.h).
 */

#include "task_io.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>

#include "cache/base/util.h"

int task_io_read_syscalls(pid_t tid, uint64_t *ret)
{
	_cleanup_fclose_ FILE *f = NULL;
	char path[64], line[128];

	if (tid <= 0)
		return -EINVAL;
	/* /proc/TID/io sums the whole thread group: the thread's own is under task/. */
	(void)snprintf(path, sizeof(path), "/proc/%d/task/%d/io", (int)tid, (int)tid);
	f = fopen(path, "re");
	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "syscr: %" SCNu64, ret) == 1)
			return 0;
	return ferror(f) ? -EIO : -ENODATA;
}
