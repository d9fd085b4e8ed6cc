/*
 * fs/exec_ahead.c: see exec_ahead.h.  Measured on python3 starting from a seek-indexed gzip
 * image over 100 Mbit/s and 20 ms round trips: the loader read python3.11, ld.so, libm, libz,
 * libexpat and libc one miss after the other (0.65 s of reads waiting before the first Python
 * module was opened), although the program's headers name them all at its first read.
 *
 * A job is one file: read its ELF headers (cache/format/elf_deps.h: a few bounded reads, each
 * a fetch of the chunks it touches), queue its interpreter and libraries as jobs of their own,
 * then fetch the file whole.  Workers run jobs in parallel, so the libraries' headers and
 * contents are requested while the program's own bytes still stream.  Each inode is queued at
 * most once per mount (a bit per inode, set atomically).  State under ea->lock: the queue and
 * whether workers run; the bitmap and counters are atomic.
 */
#include "exec_ahead.h"

#include <elf.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/param.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cache/base/digest.h"
#include "cache/base/log.h"
#include "cache/base/trace.h"
#include "cache/base/util.h"
#include "cache/fetch.h"
#include "cache/format/elf_deps.h"
#include "cache/store/blob_store.h"
#include "fs/read_path.h"
#include "fs/tree_path.h"

/* Jobs run at once: a program and its first libraries, each on a connection of its own. */
#define EA_WORKERS 4
#define EA_QUEUE 64
/* A program, its interpreter, its libraries, theirs: deeper than any loader chain needs. */
#define EA_DEPTH_MAX 4
/* Files fetched whole up to this size; a bigger one (a static Go binary, a JIT's blob) has only
 * the chunks its headers need fetched, and the loader's own reads decide the rest. */
#define EA_WHOLE_MAX (64ull << 20)
/* Chunks asked of the fetcher per call: a whole file in a few calls, each a few requests. */
#define EA_BATCH 64
/* A thread that reads the start of more programs than this is walking the tree (tar, cp, a
 * virus scanner), not starting them: its reads queue nothing more.  A loader reads its
 * program, its interpreter and, where libraries are executable (Fedora), a dozen more. */
#define EA_READER_PROGRAMS_MAX 24
/* RUNPATH entries looked in: real ones have one to three; a hostile one could have two thousand,
 * each a path walk for every one of 256 libraries. */
#define EA_RUNPATH_DIRS_MAX 16
/* Threads remembered, the least recently added replaced. */
#define EA_READERS 32

struct reader {
	pid_t tid;
	unsigned programs;
};

struct job {
	fs_ino_t ino;
	unsigned depth;          /* 0: a file read at offset 0; n: a dependency n steps away */
	uint16_t machine;        /* what the program that needs it runs on; 0 at depth 0 */
	bool is_64;
};

struct worker {
	struct exec_ahead *ea;
	pthread_t thread;
	struct fetch_interrupt intr;          /* set by exec_ahead_stop(): its fetches return */
};

struct exec_ahead {
	const struct fs_tree *tree;
	struct blob_store *bs;
	struct fetcher *f;
	uint8_t *seen;           /* atomic bits, one per inode number */
	size_t n_inodes;

	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct job queue[EA_QUEUE];           /* guarded by lock: a ring */
	size_t q_first, q_len;                /* guarded by lock */
	struct worker workers[EA_WORKERS];    /* [0, n_workers) run */
	unsigned n_workers, n_idle;           /* guarded by lock */
	bool stop;                            /* guarded by lock */

	struct reader readers[EA_READERS];    /* guarded by lock */
	size_t next_reader;                   /* guarded by lock */

	uint64_t parsed, fetched;             /* atomic */
};

int exec_ahead_new(const struct fs_tree *tree, struct blob_store *bs, struct fetcher *f,
		   struct exec_ahead **ret)
{
	struct exec_ahead *ea = calloc(1, sizeof(*ea));

	if (!ea)
		return -ENOMEM;
	ea->n_inodes = fs_tree_count(tree);
	ea->seen = calloc(ea->n_inodes / 8 + 1, 1);
	if (!ea->seen) {
		free(ea);
		return -ENOMEM;
	}
	ea->tree = tree;
	ea->bs = bs;
	ea->f = f;
	(void)pthread_mutex_init(&ea->lock, NULL);
	(void)pthread_cond_init(&ea->cond, NULL);
	*ret = ea;
	return 0;
}

void exec_ahead_stop(struct exec_ahead *ea)
{
	unsigned n;

	if (!ea)
		return;
	pthread_mutex_lock(&ea->lock);
	ea->stop = true;
	n = ea->n_workers;
	ea->n_workers = 0;
	pthread_cond_broadcast(&ea->cond);
	pthread_mutex_unlock(&ea->lock);
	for (unsigned i = 0; i < n; i++) {
		fetcher_interrupt(ea->f, &ea->workers[i].intr);
		(void)pthread_join(ea->workers[i].thread, NULL);
	}
}

struct exec_ahead *exec_ahead_free(struct exec_ahead *ea)
{
	if (!ea)
		return NULL;
	exec_ahead_stop(ea);
	pthread_cond_destroy(&ea->cond);
	pthread_mutex_destroy(&ea->lock);
	free(ea->seen);
	free(ea);
	return NULL;
}

/* Marks @ino seen; true if it was not before (the caller queues it). */
static bool first_sight(struct exec_ahead *ea, fs_ino_t ino)
{
	uint8_t bit = (uint8_t)(1u << (ino % 8));

	if (ino < 1 || ino > ea->n_inodes)
		return false;
	return !(__atomic_fetch_or(&ea->seen[ino / 8], bit, __ATOMIC_RELAXED) & bit);
}

static void *worker_run(void *userdata);

/* Called with ea->lock held: one more worker, up to EA_WORKERS, while jobs wait. */
static void workers_grow(struct exec_ahead *ea)
{
	struct worker *w = &ea->workers[ea->n_workers];

	if (ea->n_workers >= EA_WORKERS || ea->n_idle >= ea->q_len)
		return;
	*w = (struct worker) { .ea = ea };
	if (pthread_create(&w->thread, NULL, worker_run, w) == 0)
		ea->n_workers++;
}

static void enqueue(struct exec_ahead *ea, const struct job *j)
{
	pthread_mutex_lock(&ea->lock);
	/* A full queue drops the job: it is only a guess, and the reads still come. */
	if (!ea->stop && ea->q_len < EA_QUEUE) {
		ea->queue[(ea->q_first + ea->q_len++) % EA_QUEUE] = *j;
		workers_grow(ea);
		pthread_cond_signal(&ea->cond);
	}
	pthread_mutex_unlock(&ea->lock);
}

/* Counts a program start read by thread @tid; true once it read more than a loader would. */
static bool reader_walks(struct exec_ahead *ea, pid_t tid)
{
	struct reader *r = NULL;
	bool walks;

	if (tid <= 0)
		return false;
	pthread_mutex_lock(&ea->lock);
	for (size_t i = 0; i < EA_READERS && !r; i++)
		if (ea->readers[i].tid == tid)
			r = &ea->readers[i];
	if (!r) {
		r = &ea->readers[ea->next_reader++ % EA_READERS];
		*r = (struct reader) { .tid = tid };
	}
	walks = ++r->programs > EA_READER_PROGRAMS_MAX;
	pthread_mutex_unlock(&ea->lock);
	return walks;
}

void exec_ahead_note_read(struct exec_ahead *ea, fs_ino_t ino, off_t off, mode_t mode, pid_t tid)
{
	if (!ea || off != 0 || !S_ISREG(mode) || !(mode & 0111) || reader_walks(ea, tid) ||
	    !first_sight(ea, ino))
		return;
	enqueue(ea, &(struct job) { .ino = ino });
}

void exec_ahead_get_stats(struct exec_ahead *ea, struct exec_ahead_stats *ret)
{
	*ret = (struct exec_ahead_stats) {};
	if (!ea)
		return;
	ret->parsed = __atomic_load_n(&ea->parsed, __ATOMIC_RELAXED);
	ret->fetched = __atomic_load_n(&ea->fetched, __ATOMIC_RELAXED);
}

/* ---- a file's bytes, fetched as needed ---- */

struct file {
	struct exec_ahead *ea;
	struct fetch_interrupt *intr;
	const struct fs_chunk_ref *c;
	size_t n;
	uint64_t size;
};

static bool chunk_missing(struct exec_ahead *ea, const struct fs_chunk_ref *c)
{
	char digest[DIGEST_STRING_MAX];

	if (c->zeros || c->blob_length == 0)
		return false;
	digest_format_sha256(c->digest, digest);
	return blob_store_has_size(ea->bs, digest, c->size) <= 0;
}

/* Fetches the missing ones of @c[0..n), EA_BATCH at a time.  With @ahead, as read-around's
 * chunks are: stored without an fsync each, and not waited for (the fetcher's task threads
 * go on with them while the worker takes its next job). */
static int fetch_missing(struct exec_ahead *ea, const struct fs_chunk_ref *c, size_t n,
			 bool ahead, struct fetch_interrupt *intr)
{
	struct fetch_chunk batch[EA_BATCH];
	size_t k = 0;
	int r = 0;

	for (size_t i = 0; i < n && r >= 0; i++) {
		if (!chunk_missing(ea, &c[i]))
			continue;
		fetch_chunk_from_ref(&c[i], ahead, &batch[k]);
		if (++k == EA_BATCH) {
			r = fetcher_ensure_interruptible(ea->f, batch, k, intr);
			k = 0;
		}
	}
	if (k > 0 && r >= 0)
		r = fetcher_ensure_interruptible(ea->f, batch, k, intr);
	return r;
}

/* Copies what chunk @c holds of [@off, @off + @n) into @buf (at the same relative place). */
static int chunk_copy(struct exec_ahead *ea, const struct fs_chunk_ref *c, uint64_t off,
		      size_t n, uint8_t *buf)
{
	uint64_t from = MAX(off, c->file_offset), to = MIN(off + n, c->file_offset + c->size);
	char digest[DIGEST_STRING_MAX];
	_cleanup_close_ int fd = -1;
	ssize_t got;
	int r;

	if (c->zeros) {
		memset(buf + (from - off), 0, to - from);
		return 0;
	}
	digest_format_sha256(c->digest, digest);
	r = blob_store_open_blob_sized(ea->bs, digest, c->size, &fd);
	if (r < 0)
		return r;
	got = pread(fd, buf + (from - off), to - from, (off_t)(from - c->file_offset));
	if (got < 0)
		return -errno;
	return (uint64_t)got == to - from ? 0 : -EIO;
}

/* elf_read_fn over a file of the tree: the chunks the range touches are fetched, then read. */
static int file_read(void *userdata, uint64_t off, void *buf, size_t n)
{
	struct file *fl = userdata;
	size_t first = 0, last;
	int r;

	if (off >= fl->size)
		return 0;
	n = (size_t)MIN((uint64_t)n, fl->size - off);
	while (first < fl->n && fl->c[first].file_offset + fl->c[first].size <= off)
		first++;
	for (last = first; last < fl->n && fl->c[last].file_offset < off + n; last++)
		;
	r = fetch_missing(fl->ea, fl->c + first, last - first, false, fl->intr);
	for (size_t i = first; r >= 0 && i < last; i++)
		r = chunk_copy(fl->ea, &fl->c[i], off, n, buf);
	return r < 0 ? r : (int)n;
}

/* ---- dependencies, found as the loader finds them ---- */

/* The Debian multiarch directory name of an ELF machine, NULL if we know none. */
static const char *multiarch(uint16_t machine, bool is_64)
{
	switch (machine) {
	case EM_X86_64: return "x86_64-linux-gnu";
	case EM_AARCH64: return "aarch64-linux-gnu";
	case EM_386: return "i386-linux-gnu";
	case EM_ARM: return "arm-linux-gnueabihf";
	case EM_PPC64: return "powerpc64le-linux-gnu";
	case EM_S390: return is_64 ? "s390x-linux-gnu" : NULL;
	case EM_RISCV: return is_64 ? "riscv64-linux-gnu" : NULL;
	default: return NULL;
	}
}

/* @dir/@name, if that is a regular file of the tree. */
static bool lib_at(struct exec_ahead *ea, const char *dir, size_t dir_len, const char *name,
		   fs_ino_t *ret)
{
	char path[PATH_MAX];
	struct stat st;

	if (dir_len == 0 || dir[0] != '/' ||
	    snprintf(path, sizeof(path), "%.*s/%s", (int)dir_len, dir, name) >= (int)sizeof(path))
		return false;
	return fs_tree_resolve(ea->tree, path, ret) >= 0 && fs_tree_stat(ea->tree, *ret, &st) >= 0 &&
	       S_ISREG(st.st_mode);
}

/* Where ld.so would find library @name for the program @d: its RUNPATH (absolute entries;
 * $ORIGIN and the like are left out), then the multiarch and standard directories.  No
 * ld.so.cache: the directories find what Debian, Fedora and Alpine images install. */
static bool lib_find(struct exec_ahead *ea, const struct elf_deps *d, const char *name,
		     fs_ino_t *ret)
{
	static const char *const std_dirs[] = {
		"/lib64", "/usr/lib64", "/lib", "/usr/lib", "/usr/local/lib",
	};
	const char *arch = multiarch(d->machine, d->is_64);
	unsigned dirs = 0;
	char dir[64];

	if (strchr(name, '/'))
		return lib_at(ea, "/", 1, name, ret);
	for (const char *p = d->runpath; p && *p && dirs++ < EA_RUNPATH_DIRS_MAX;
	     p += strcspn(p, ":"), p += *p == ':') {
		size_t n = strcspn(p, ":");

		if (!memchr(p, '$', n) && lib_at(ea, p, n, name, ret))
			return true;
	}
	for (unsigned i = 0; arch && i < 2; i++) {
		snprintf(dir, sizeof(dir), "%s/%s", i == 0 ? "/lib" : "/usr/lib", arch);
		if (lib_at(ea, dir, strlen(dir), name, ret))
			return true;
	}
	for (size_t i = 0; i < ELEMENTSOF(std_dirs); i++)
		if (lib_at(ea, std_dirs[i], strlen(std_dirs[i]), name, ret))
			return true;
	return false;
}

static void queue_dep(struct exec_ahead *ea, const struct job *parent, const struct elf_deps *d,
		      fs_ino_t ino)
{
	if (parent->depth + 1 > EA_DEPTH_MAX || !first_sight(ea, ino))
		return;
	enqueue(ea, &(struct job) { .ino = ino, .depth = parent->depth + 1,
				    .machine = d->machine, .is_64 = d->is_64 });
}

static void queue_deps(struct exec_ahead *ea, const struct job *j, const struct elf_deps *d)
{
	fs_ino_t ino;

	if (d->interp && fs_tree_resolve(ea->tree, d->interp, &ino) >= 0)
		queue_dep(ea, j, d, ino);
	for (char **n = d->needed; n && *n; n++)
		if (lib_find(ea, d, *n, &ino))
			queue_dep(ea, j, d, ino);
}

/* ---- the workers ---- */

/* trace.py's "exec" line: what a job found (@r < 0: not ELF, or it could not be read). */
static void trace_job(const struct job *j, int r, const struct elf_deps *d, int64_t t0)
{
	size_t n = 0;

	if (!trace_enabled())
		return;
	for (char **p = r >= 0 ? d->needed : NULL; p && *p; p++)
		n++;
	trace_emit("exec", "\"ino\":%" PRIu64 ",\"depth\":%u,\"r\":%d,\"interp\":%s,"
		   "\"needed\":%zu,\"t0\":%" PRId64 ",\"t1\":%" PRId64, (uint64_t)j->ino,
		   j->depth, r, r >= 0 && d->interp ? "true" : "false", n, t0, trace_now_us());
}

static void job_run(struct worker *w, const struct job *j)
{
	struct exec_ahead *ea = w->ea;
	struct elf_deps d = {};
	struct file fl = { .ea = ea, .intr = &w->intr };
	struct stat st;
	int64_t t0;
	int r;

	if (fs_tree_stat(ea->tree, j->ino, &st) < 0 ||
	    fs_tree_file_chunks(ea->tree, j->ino, &fl.c, &fl.n) < 0)
		return;
	fl.size = (uint64_t)st.st_size;
	t0 = trace_enabled() ? trace_now_us() : 0;
	r = elf_deps_read(file_read, &fl, fl.size, &d);
	trace_job(j, r, &d, t0);
	if (r < 0)
		return;
	__atomic_add_fetch(&ea->parsed, 1, __ATOMIC_RELAXED);
	/* A static program, or a library of another machine than its program's (the loader
	 * would skip it): nothing the loader will map next. */
	if ((j->depth == 0 && !d.interp && !d.needed[0]) ||
	    (j->depth > 0 && (d.machine != j->machine || d.is_64 != j->is_64))) {
		elf_deps_done(&d);
		return;
	}
	queue_deps(ea, j, &d);
	elf_deps_done(&d);
	/* The program itself is being read already, by the kernel and the loader: a whole-file
	 * fetch of it would hold the spans their reads need behind its own bytes (python3's
	 * loader waited 354 ms instead of 40 for a page of its relocations). */
	if (j->depth == 0 || fl.size > EA_WHOLE_MAX)
		return;
	r = fetch_missing(ea, fl.c, fl.n, true, &w->intr);
	if (r < 0)
		log_debug_errno(r, "fetching an executable's chunks ahead failed, ignoring: %m");
	else
		__atomic_add_fetch(&ea->fetched, 1, __ATOMIC_RELAXED);
}

static void *worker_run(void *userdata)
{
	struct worker *w = userdata;
	struct exec_ahead *ea = w->ea;

	pthread_mutex_lock(&ea->lock);
	for (;;) {
		struct job j;

		ea->n_idle++;
		while (!ea->stop && ea->q_len == 0)
			pthread_cond_wait(&ea->cond, &ea->lock);
		ea->n_idle--;
		if (ea->stop)
			break;
		j = ea->queue[ea->q_first];
		ea->q_first = (ea->q_first + 1) % EA_QUEUE;
		ea->q_len--;
		pthread_mutex_unlock(&ea->lock);
		job_run(w, &j);
		pthread_mutex_lock(&ea->lock);
	}
	pthread_mutex_unlock(&ea->lock);
	return NULL;
}
