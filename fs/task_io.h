/* fs/task_io.h: what the kernel counts of a thread's I/O (/proc/TID/task/TID/io), to tell
 * whether a FUSE request comes from the read(2) that an earlier reply answered or from a new
 * one. */
#pragma once

#include <stdint.h>
#include <sys/types.h>

/* In *ret, how many read system calls (read, pread, readv, ...) thread @tid has finished:
 * the kernel counts one when the call returns, so a request the kernel sends again inside
 * the same call (its retry of a failed read-ahead) sees the same number.  -ENOENT when the
 * thread is gone or the kernel keeps no such count (no CONFIG_TASK_IO_ACCOUNTING), -EACCES
 * when it is not ours to inspect, -ENODATA when the file has no such line. */
int task_io_read_syscalls(pid_t tid, uint64_t *ret);
