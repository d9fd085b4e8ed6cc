/* fs/exec_ahead.h: fetches ahead what a program about to run will read.  When the first page of
 * an executable file is read (execve() reads it first, and so does the dynamic loader with its
 * libraries), a worker reads the file's ELF headers; if the file names a program interpreter or
 * shared libraries, the worker resolves them in the image as the loader would (RUNPATH, then
 * the standard and multiarch directories) and fetches them, and the file itself, whole, in
 * parallel, each library's own libraries too.  Without it every library is a miss the loader
 * waits for, one after the other.  A guess costs only bytes: the bytes fetched are the
 * image's, verified as any chunk is, and served only through the read path. */
#pragma once

#include <stdint.h>
#include <sys/types.h>

#include "fs/tree.h"

struct blob_store;
struct fetcher;
struct exec_ahead;

/* Borrows @tree (frozen), @bs and @f, which must outlive it.  Starts no thread before the first
 * exec_ahead_note_read() that has work: safe to create before fork(). */
int exec_ahead_new(const struct fs_tree *tree, struct blob_store *bs, struct fetcher *f,
		   struct exec_ahead **ret);
/* Stops the workers and waits for them: their fetch calls return at once (the fetcher finishes
 * or drops what they started).  Call it before the fetcher is freed.  NULL-safe, idempotent;
 * later reads queue nothing. */
void exec_ahead_stop(struct exec_ahead *ea);
/* NULL-safe; stops the workers first. */
struct exec_ahead *exec_ahead_free(struct exec_ahead *ea);

/* A read at @off of @ino, of mode @mode, by thread @tid (0: unknown): at offset 0 of an
 * executable regular file seen for the first time, queues it, unless @tid has read the start of
 * more programs than a loader does (a walk of the tree: tar reads every program, and
 * speculating on each would break up its sequential fetches).  Cheap (a lock and a few
 * compares, only at offset 0 of executables); never fails. */
void exec_ahead_note_read(struct exec_ahead *ea, fs_ino_t ino, off_t off, mode_t mode, pid_t tid);

struct exec_ahead_stats {
	uint64_t parsed;      /* ELF files whose dependencies were read */
	uint64_t fetched;     /* files fetched whole ahead of their reads */
};
void exec_ahead_get_stats(struct exec_ahead *ea, struct exec_ahead_stats *ret);
