/*
 * fs/ops.c: the FUSE low-level filesystem over one frozen fs_tree.  The tree's inode numbers
 * are the FUSE node ids (root = 1 = FUSE_ROOT_ID) and nodes are never freed, so lookup counts
 * need no bookkeeping: forget only replies.  Everything is read-only and immutable, so entries,
 * attributes, misses, directory listings and page cache contents are cached for a year.
 * Opens carry no state: open and opendir reply ENOSYS, so the kernel opens files itself,
 * keeping their pages and listings, and sends neither open nor release.  A read asks
 * fs/read_path.h once (which serves stored chunks from their open blobs and fetches missing
 * ones) and replies with the bytes, or with (blob fd, offset), which libfuse splices when it
 * can.  A read waiting for a fetch blocks its thread, so the loop runs up to 64 threads by
 * default: reads of stored files keep being served meanwhile.  A signal to the reading process
 * (the kernel sends INTERRUPT) ends the wait with EINTR; the fetch goes on for other readers.
 * Handlers hold no locks across replies; the loop runs them on many threads.
 */
#include "fs/fs.h"

#include <fcntl.h>
#include <inttypes.h>
#include <fuse_lowlevel.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include "cache/base/log.h"
#include "cache/base/trace.h"
#include "cache/base/util.h"
#include "fs/read_path.h"

_Static_assert(sizeof(fuse_ino_t) >= sizeof(fs_ino_t), "tree inode numbers are FUSE node ids");
_Static_assert(FS_ROOT_INO == FUSE_ROOT_ID, "the tree's root is the FUSE root");

/* The image never changes while mounted. */
#define FS_TIMEOUT (86400.0 * 365)
/* Open blob fds kept for reads: at most this many, and at most a quarter of RLIMIT_NOFILE
 * (the loop's threads, the fetcher's connections and the kernel's fds need the rest). */
#define FS_BLOB_FDS_MAX 4096
#define FS_BLOB_FDS_MIN 16
/* Read-ahead of the mount, in KiB: see set_read_ahead(). */
#define FS_READ_AHEAD_KB 1024
/* fs_config.max_threads 0: enough threads that reads blocked on fetches leave others free. */
#define FS_DEFAULT_MAX_THREADS 64

struct fs {
	struct fs_tree *tree;
	struct read_path *rp;       /* what reads do: blobs, fetches, read-ahead */
	struct fuse_session *se;
	unsigned max_threads;
	uint64_t total_bytes;       /* of regular files, for statfs */
	bool mounted;               /* atomic: fs_unmount() may race fs_serve()'s caller */
	bool signals;
	/* atomic, set once by init before any open: the kernel does opens itself when open
	 * and opendir reply ENOSYS */
	bool no_open;
};

/* ---- the trace (cache/base/trace.h) ---- */

/* Handlers call these only when trace_enabled(): @t0 is 0 otherwise, and nothing is done. */
struct op_trace {
	const char *op;
	int64_t t0;
	uint64_t id;               /* trace_op_begin()'s number, for the fetch calls it made */
};

static struct op_trace op_trace_begin(const char *op)
{
	if (!trace_enabled())
		return (struct op_trace) { .op = op };
	return (struct op_trace) { .op = op, .t0 = trace_now_us(), .id = trace_op_begin() };
}

/* One line per request: the node, what of it (a name, or an offset and size), the result. */
static void op_trace_end(const struct op_trace *t, fuse_ino_t ino, const char *name,
			 uint64_t off, uint64_t size, fuse_ino_t child, int r)
{
	char esc[512];

	if (t->t0 == 0)
		return;
	trace_op_end();
	trace_emit("fuse", "\"op\":\"%s\",\"id\":%" PRIu64 ",\"ino\":%" PRIu64 ",\"name\":\"%s\","
		   "\"off\":%" PRIu64 ",\"size\":%" PRIu64 ",\"child\":%" PRIu64 ",\"r\":%d,"
		   "\"t0\":%" PRId64 ",\"t1\":%" PRId64, t->op, t->id, (uint64_t)ino,
		   trace_json_str(name, esc, sizeof(esc)), off, size, (uint64_t)child, r, t->t0,
		   trace_now_us());
}

/* ---- lookup and attributes ---- */

static int fill_entry(struct fs *fs, fs_ino_t ino, struct fuse_entry_param *ret)
{
	struct fuse_entry_param e = {
		.ino = ino,
		.attr_timeout = FS_TIMEOUT,
		.entry_timeout = FS_TIMEOUT,
	};
	int r;

	r = fs_tree_stat(fs->tree, ino, &e.attr);
	if (r < 0)
		return r;
	*ret = e;
	return 0;
}

static int do_lookup(struct fs *fs, fuse_ino_t parent, const char *name,
		     struct fuse_entry_param *ret)
{
	fs_ino_t ino;
	int r;

	r = fs_tree_lookup(fs->tree, parent, name, &ino);
	if (r < 0)
		return r;
	return fill_entry(fs, ino, ret);
}

static void fs_op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *fs = fuse_req_userdata(req);
	struct op_trace t = op_trace_begin("lookup");
	struct fuse_entry_param e;
	int r;

	r = do_lookup(fs, parent, name, &e);
	op_trace_end(&t, parent, name, 0, 0, r < 0 ? 0 : e.ino, r);
	if (r == -ENOENT) {
		/* The image never changes: cache the miss as long as a hit. */
		e = (struct fuse_entry_param) { .entry_timeout = FS_TIMEOUT };
		fuse_reply_entry(req, &e);
	} else if (r < 0) {
		fuse_reply_err(req, -r);
	} else {
		fuse_reply_entry(req, &e);
	}
}

/* Nodes live as long as the tree: lookup counts need no bookkeeping. */
static void fs_op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	(void)ino;
	(void)nlookup;
	fuse_reply_none(req);
}

static void fs_op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	(void)count;
	(void)forgets;
	fuse_reply_none(req);
}

static void fs_op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = fuse_req_userdata(req);
	struct op_trace t = op_trace_begin("getattr");
	struct stat st;
	int r;

	(void)fi;
	r = fs_tree_stat(fs->tree, ino, &st);
	op_trace_end(&t, ino, NULL, 0, 0, 0, r);
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_attr(req, &st, FS_TIMEOUT);
}

static void fs_op_readlink(fuse_req_t req, fuse_ino_t ino)
{
	struct fs *fs = fuse_req_userdata(req);
	struct op_trace t = op_trace_begin("readlink");
	const char *target;
	int r;

	r = fs_tree_readlink(fs->tree, ino, &target);
	op_trace_end(&t, ino, NULL, 0, 0, 0, r);
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_readlink(req, target);
}

/* ---- opens ---- */

/* Zero-message opens (see fs_op_init()): replies ENOSYS and returns true when the kernel opens
 * files and directories itself. */
static bool reply_no_open(fuse_req_t req, struct fs *fs)
{
	if (!__atomic_load_n(&fs->no_open, __ATOMIC_RELAXED))
		return false;
	fuse_reply_err(req, ENOSYS);
	return true;
}

/* Replies the error @r, or the open of a file or directory whose pages and listings the kernel
 * may keep across opens: nothing in the tree ever changes. */
static void reply_open(fuse_req_t req, struct fuse_file_info *fi, int r)
{
	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	fi->keep_cache = 1;
	fuse_reply_open(req, fi);
}

/* ---- directories ---- */

static void fs_op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = fuse_req_userdata(req);
	struct stat st;
	int r;

	/* ENOSYS: the kernel opens directories itself from now on, keeping listings cached
	 * (FOPEN_CACHE_DIR | FOPEN_KEEP_CACHE is what it assumes then): no opendir and
	 * releasedir round trips.  readdir needs no state of an open directory. */
	if (reply_no_open(req, fs))
		return;
	r = fs_tree_stat(fs->tree, ino, &st);
	if (r == 0 && !S_ISDIR(st.st_mode))
		r = -ENOTDIR;
	fi->cache_readdir = 1;
	reply_open(req, fi, r);
}

/* Offsets: 0 is ".", 1 is "..", 2 + k is the tree's position k; each entry carries the offset
 * of the one after it.  Fills @buf with as many entries from @off as fit. */
static int do_readdir(fuse_req_t req, struct fs *fs, fuse_ino_t dir, char *buf, size_t size,
		      off_t off, bool plus, size_t *ret_len)
{
	fs_ino_t parent;
	size_t len = 0;
	int r;

	if (off < 0)
		return -EINVAL;
	parent = fs_tree_parent(fs->tree, dir);
	if (parent == 0)
		return -ENOTDIR;  /* a bad number or not a directory */

	for (size_t pos = (size_t)off;; pos++) {
		struct fuse_entry_param e = {
			.attr_timeout = FS_TIMEOUT,
			.entry_timeout = FS_TIMEOUT,
		};
		const char *name;
		fs_ino_t ino;
		size_t n;

		if (pos == 0) {
			name = ".";
			ino = dir;
		} else if (pos == 1) {
			name = "..";
			ino = parent;
		} else {
			r = fs_tree_readdir(fs->tree, dir, pos - 2, &name, &ino);
			if (r == -ENOENT)
				break;
			if (r < 0)
				return r;
		}

		r = fs_tree_stat(fs->tree, ino, &e.attr);
		if (r < 0)
			return r;

		if (plus) {
			/* "." and ".." carry no entry (ino 0): the kernel takes no reference on
			 * them; every other name counts as a lookup, which needs no tracking here. */
			e.ino = pos < 2 ? 0 : ino;
			n = fuse_add_direntry_plus(req, buf + len, size - len, name, &e, (off_t)pos + 1);
		} else {
			n = fuse_add_direntry(req, buf + len, size - len, name, &e.attr, (off_t)pos + 1);
		}
		if (n > size - len)
			break;
		len += n;
	}

	*ret_len = len;
	return 0;
}

static void readdir_reply(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, bool plus)
{
	struct fs *fs = fuse_req_userdata(req);
	struct op_trace t = op_trace_begin(plus ? "readdirplus" : "readdir");
	_cleanup_free_ char *buf = NULL;
	size_t len = 0;
	int r;

	buf = malloc(size ? size : 1);
	if (!buf)
		r = -ENOMEM;
	else
		r = do_readdir(req, fs, ino, buf, size, off, plus, &len);
	op_trace_end(&t, ino, NULL, (uint64_t)off, len, 0, r);
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_buf(req, buf, len);
}

static void fs_op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			  struct fuse_file_info *fi)
{
	(void)fi;
	readdir_reply(req, ino, size, off, false);
}

static void fs_op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			      struct fuse_file_info *fi)
{
	(void)fi;
	readdir_reply(req, ino, size, off, true);
}

static void fs_op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	(void)fi;
	fuse_reply_err(req, 0);
}

/* ---- files ---- */

/* Only checks: reads find their blobs through fs->rp, an open file has no state. */
static int do_open(struct fs *fs, fuse_ino_t ino, int flags)
{
	struct stat st;
	int r;

	if ((flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC))
		return -EROFS;
	r = fs_tree_stat(fs->tree, ino, &st);
	if (r < 0)
		return r;
	if (S_ISDIR(st.st_mode))
		return -EISDIR;
	if (!S_ISREG(st.st_mode))
		return -EINVAL;
	return 0;
}

static void fs_op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = fuse_req_userdata(req);

	/* ENOSYS: the kernel does every later open itself, with FOPEN_KEEP_CACHE, and sends
	 * neither open nor release: reading a file whose pages are cached costs no round trip.
	 * What do_open() checks the kernel checks too: the mount is read-only (EROFS for
	 * writes and O_TRUNC), and only regular files are opened through here. */
	if (reply_no_open(req, fs))
		return;
	fi->noflush = 1;
	reply_open(req, fi, do_open(fs, ino, fi->flags));
}

/* Lets the kernel's INTERRUPT of a read (its process got a signal) end the read's wait for a
 * fetch: see struct read_waiter. */
struct read_interrupt {
	fuse_req_t req;
	struct fetcher *fetcher;
	struct fetch_interrupt *intr;
};

/* libfuse calls this when the kernel interrupts the read, or at once on registration if that
 * happened already. */
static void read_interrupted(fuse_req_t req, void *userdata)
{
	struct read_interrupt *ri = userdata;

	(void)req;
	fetcher_interrupt(ri->fetcher, ri->intr);
}

static void read_wait_begin(void *userdata, struct fetcher *f, struct fetch_interrupt *intr)
{
	struct read_interrupt *ri = userdata;

	ri->fetcher = f;
	ri->intr = intr;
	fuse_req_interrupt_func(ri->req, read_interrupted, ri);
}

static void read_wait_end(void *userdata)
{
	struct read_interrupt *ri = userdata;

	/* Waits for a callback in progress: ri must outlive it. */
	fuse_req_interrupt_func(ri->req, NULL, NULL);
}

static void fs_op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	struct fs *fs = fuse_req_userdata(req);
	struct read_interrupt ri = { .req = req };
	const struct read_waiter w = {
		read_wait_begin, read_wait_end, &ri, fuse_req_ctx(req)->pid,
	};
	struct fuse_bufvec bv = FUSE_BUFVEC_INIT(0);
	_cleanup_(read_reply_done) struct read_reply rr = READ_REPLY_NONE;
	struct op_trace t = op_trace_begin("read");
	int r;

	(void)fi;
	r = read_path_read(fs->rp, ino, off, size, &w, &rr);
	op_trace_end(&t, ino, NULL, (uint64_t)off, r < 0 ? size : rr.len, 0, r);
	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	if (rr.buf || rr.len == 0) {
		fuse_reply_buf(req, rr.buf, rr.len);
		return;
	}
	bv.buf[0].size = rr.len;
	bv.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
	bv.buf[0].fd = rr.fd.fd;
	bv.buf[0].pos = rr.pos;
	/* fuse_reply_data() replies with the error itself if reading the fd fails.  The fd
	 * stays in use until it returns: the cache closes no fd a reader holds. */
	(void)fuse_reply_data(req, &bv, FUSE_BUF_SPLICE_MOVE);
}

static void fs_op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	(void)fi;
	fuse_reply_err(req, 0);
}

/* ---- filesystem and xattrs ---- */

static void fs_op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct fs *fs = fuse_req_userdata(req);
	struct statvfs sv = {
		.f_bsize = 4096,
		.f_frsize = 4096,
		.f_blocks = (fs->total_bytes + 4095) / 4096,
		.f_files = fs_tree_count(fs->tree),
		.f_namemax = 255,
		.f_flag = ST_RDONLY,
	};

	(void)ino;
	fuse_reply_statfs(req, &sv);
}

/* Replies the error @r, or the @len bytes of @value; only their size when the caller offered no
 * room (@size 0), to ask again with enough. */
static void reply_xattr(fuse_req_t req, int r, size_t size, const void *value, size_t len)
{
	if (r < 0)
		fuse_reply_err(req, -r);
	else if (size == 0)
		fuse_reply_xattr(req, len);
	else
		fuse_reply_buf(req, value, len);
}

static void fs_op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	struct fs *fs = fuse_req_userdata(req);
	struct op_trace t = op_trace_begin("getxattr");
	const void *value = NULL;
	size_t len = 0;
	int r;

	r = fs_tree_getxattr(fs->tree, ino, name, &value, &len);
	op_trace_end(&t, ino, name, 0, size, 0, r);
	if (r == 0 && size > 0 && size < len)
		r = -ERANGE;
	reply_xattr(req, r, size, value, len);
}

/* The names, each NUL-terminated, into @buf (NULL: only measure). */
static size_t xattr_list(struct fs *fs, fuse_ino_t ino, char *buf)
{
	size_t n = fs_tree_xattr_count(fs->tree, ino), len = 0;

	for (size_t i = 0; i < n; i++) {
		const char *name = fs_tree_xattr_name(fs->tree, ino, i);
		size_t l = strlen(name) + 1;

		if (buf)
			memcpy(buf + len, name, l);
		len += l;
	}
	return len;
}

static int do_listxattr(struct fs *fs, fuse_ino_t ino, size_t size, char **ret_buf,
			size_t *ret_len)
{
	struct stat st;
	size_t len;
	char *buf = NULL;
	int r;

	r = fs_tree_stat(fs->tree, ino, &st);
	if (r < 0)
		return r;
	len = xattr_list(fs, ino, NULL);
	if (size > 0 && len > 0) {
		if (size < len)
			return -ERANGE;
		buf = malloc(len);
		if (!buf)
			return -ENOMEM;
		(void)xattr_list(fs, ino, buf);
	}
	*ret_buf = buf;
	*ret_len = len;
	return 0;
}

static void fs_op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	struct fs *fs = fuse_req_userdata(req);
	_cleanup_free_ char *buf = NULL;
	size_t len = 0;
	int r;

	r = do_listxattr(fs, ino, size, &buf, &len);
	reply_xattr(req, r, size, buf, len);
}

/* ---- everything that writes: the image is read-only ---- */

static void fs_op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
			  struct fuse_file_info *fi)
{
	(void)ino, (void)attr, (void)to_set, (void)fi;
	fuse_reply_err(req, EROFS);
}

static void fs_op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
			dev_t rdev)
{
	(void)parent, (void)name, (void)mode, (void)rdev;
	fuse_reply_err(req, EROFS);
}

static void fs_op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	(void)parent, (void)name, (void)mode;
	fuse_reply_err(req, EROFS);
}

static void fs_op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	(void)parent, (void)name;
	fuse_reply_err(req, EROFS);
}

static void fs_op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
	(void)link, (void)parent, (void)name;
	fuse_reply_err(req, EROFS);
}

static void fs_op_rename(fuse_req_t req, fuse_ino_t parent, const char *name,
			 fuse_ino_t newparent, const char *newname, unsigned int flags)
{
	(void)parent, (void)name, (void)newparent, (void)newname, (void)flags;
	fuse_reply_err(req, EROFS);
}

static void fs_op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
	(void)ino, (void)newparent, (void)newname;
	fuse_reply_err(req, EROFS);
}

static void fs_op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
			struct fuse_file_info *fi)
{
	(void)ino, (void)buf, (void)size, (void)off, (void)fi;
	fuse_reply_err(req, EROFS);
}

static void fs_op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
			   size_t size, int flags)
{
	(void)ino, (void)name, (void)value, (void)size, (void)flags;
	fuse_reply_err(req, EROFS);
}

static void fs_op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	(void)ino, (void)name;
	fuse_reply_err(req, EROFS);
}

static void fs_op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
			 struct fuse_file_info *fi)
{
	(void)parent, (void)name, (void)mode, (void)fi;
	fuse_reply_err(req, EROFS);
}

static void fs_op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
			    struct fuse_file_info *fi)
{
	(void)ino, (void)mode, (void)offset, (void)length, (void)fi;
	fuse_reply_err(req, EROFS);
}

/* ---- session ---- */

static void fs_op_init(void *userdata, struct fuse_conn_info *conn)
{
	/* Splice file pages straight into the reply; readdirplus when the kernel finds it
	 * useful (a first listing, ls -l), plain readdir otherwise; symlinks in the page cache. */
	const unsigned wanted = FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE |
				FUSE_CAP_READDIRPLUS |
				FUSE_CAP_CACHE_SYMLINKS | FUSE_CAP_PARALLEL_DIROPS |
				FUSE_CAP_ASYNC_READ;
	/* Nothing changes behind the kernel's back and nothing is written. */
	const unsigned unwanted = FUSE_CAP_READDIRPLUS_AUTO | FUSE_CAP_AUTO_INVAL_DATA | FUSE_CAP_WRITEBACK_CACHE |
				  FUSE_CAP_HANDLE_KILLPRIV | FUSE_CAP_ATOMIC_O_TRUNC;

	struct fs *fs = userdata;

	conn->want |= conn->capable & wanted;
	/* The kernel takes ENOSYS from open/opendir as "open files yourself" (zero-message
	 * opens): see fs_op_open(). */
	if (conn->capable & FUSE_CAP_NO_OPEN_SUPPORT)
		__atomic_store_n(&fs->no_open, true, __ATOMIC_RELAXED);
	conn->want &= ~unwanted;
	/* Reads ahead are what keeps sequential reads fast, of a cold blob and of stored ones:
	 * the kernel takes the smaller of this and the bdi's read_ahead_kb, which
	 * set_read_ahead() raised before this INIT reply (else it stays at 128 KiB). */
	conn->max_readahead = FS_READ_AHEAD_KB * 1024;
	/* Readahead and async reads are background requests; with the kernel's default of 12,
	 * a few readers stuck on slow fetches would hold up readahead of cached files too. */
	conn->max_background = 64;
	conn->congestion_threshold = 48;
}

static const struct fuse_lowlevel_ops fs_ops = {
	.init = fs_op_init,
	.lookup = fs_op_lookup,
	.forget = fs_op_forget,
	.forget_multi = fs_op_forget_multi,
	.getattr = fs_op_getattr,
	.readlink = fs_op_readlink,
	.opendir = fs_op_opendir,
	.readdir = fs_op_readdir,
	.readdirplus = fs_op_readdirplus,
	.releasedir = fs_op_releasedir,
	.open = fs_op_open,
	.read = fs_op_read,
	.release = fs_op_release,
	.statfs = fs_op_statfs,
	.getxattr = fs_op_getxattr,
	.listxattr = fs_op_listxattr,
	.setattr = fs_op_setattr,
	.mknod = fs_op_mknod,
	.mkdir = fs_op_mkdir,
	.unlink = fs_op_unlink,
	.rmdir = fs_op_unlink,
	.symlink = fs_op_symlink,
	.rename = fs_op_rename,
	.link = fs_op_link,
	.write = fs_op_write,
	.setxattr = fs_op_setxattr,
	.removexattr = fs_op_removexattr,
	.create = fs_op_create,
	.fallocate = fs_op_fallocate,
};

static unsigned blob_fds_slots(void)
{
	struct rlimit rl;
	rlim_t n = FS_BLOB_FDS_MAX;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
	    rl.rlim_cur / 4 < n)
		n = rl.rlim_cur / 4;
	return n < FS_BLOB_FDS_MIN ? FS_BLOB_FDS_MIN : (unsigned)n;
}

int fs_new(struct fs_tree *tree, struct blob_store *bs, struct fetcher *fetcher, struct fs **ret)
{
	struct fs *fs;
	size_t n;
	int r;

	n = fs_tree_count(tree);
	if (n == 0)
		return -EINVAL;  /* not frozen */

	fs = calloc(1, sizeof(*fs));
	if (!fs)
		return -ENOMEM;
	fs->tree = tree;
	r = read_path_new(tree, bs, fetcher, blob_fds_slots(), &fs->rp);
	if (r < 0) {
		free(fs);
		return r;
	}
	for (fs_ino_t ino = FS_ROOT_INO; ino <= n; ino++) {
		struct stat st;

		if (fs_tree_stat(tree, ino, &st) == 0 && S_ISREG(st.st_mode))
			fs->total_bytes += (uint64_t)st.st_size;
	}
	*ret = fs;
	return 0;
}

void fs_set_profile(struct fs *fs, struct fs_profile *profile)
{
	read_path_set_profile(fs->rp, profile);
}

void fs_stop_fetching(struct fs *fs)
{
	if (fs)
		read_path_stop_fetching(fs->rp);
}

void fs_get_exec_ahead_stats(struct fs *fs, struct exec_ahead_stats *ret)
{
	read_path_get_exec_ahead_stats(fs ? fs->rp : NULL, ret);
}

static void fs_done(struct fs *fs)
{
	if (fs->se) {
		if (fs->signals)
			fuse_remove_signal_handlers(fs->se);
		fs_unmount(fs);
		fuse_session_destroy(fs->se);
	}
	/* After the session: no read uses it any more.  Before the tree: the read-ahead
	 * workers and the read-around index use it. */
	read_path_free(fs->rp);
	fs_tree_free(fs->tree);
}
DEFINE_FREE_FUNC(struct fs, fs_free, fs_done);

/* Appends @s to the option string, with the separators fuse_opt treats specially escaped. */
static int opt_append_escaped(char *buf, size_t size, const char *key, const char *s)
{
	size_t len = strlen(buf);
	int n;

	n = snprintf(buf + len, size - len, ",%s=", key);
	if (n < 0 || (size_t)n >= size - len)
		return -E2BIG;
	len += (size_t)n;
	for (; *s; s++) {
		if (len + 3 > size)
			return -E2BIG;
		if (*s == ',' || *s == '\\')
			buf[len++] = '\\';
		buf[len++] = *s;
	}
	buf[len] = 0;
	return 0;
}

/* Raises the mount's read-ahead from the kernel's 128 KiB to FS_READ_AHEAD_KB, so that a
 * sequential read of a big file is a few 1 MiB requests (the most a request carries, with
 * libfuse's 256 pages) instead of many 128 KiB ones.  The kernel only lets the init reply lower
 * it; the bdi's sysfs knob raises it, when we may write there (root), else nothing changes.
 * Runs before the loop serves requests, so it must send none: AT_STATX_DONT_SYNC has FUSE
 * answer from what it has, and st_dev is the superblock's anyway. */
static void set_read_ahead(const char *mountpoint)
{
	char path[64], val[16];
	struct statx stx;
	_cleanup_close_ int fd = -EBADF;
	int n;

	if (statx(AT_FDCWD, mountpoint, AT_STATX_DONT_SYNC | AT_NO_AUTOMOUNT, 0, &stx) < 0) {
		log_debug_errno(-errno, "failed to stat mount '%s', read-ahead unchanged: %m",
				mountpoint);
		return;
	}
	snprintf(path, sizeof(path), "/sys/class/bdi/%u:%u/read_ahead_kb", stx.stx_dev_major,
		 stx.stx_dev_minor);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	n = snprintf(val, sizeof(val), "%u", FS_READ_AHEAD_KB);
	if (fd < 0 || write(fd, val, (size_t)n) != n)
		log_debug_errno(-errno, "failed to set '%s', read-ahead unchanged: %m", path);
}

int fs_mount(struct fs *fs, const struct fs_config *c)
{
	char opts[1024] = "ro,default_permissions";
	const char *argv[6];
	struct fuse_args args;
	struct stat st;
	int argc = 0, r;

	if (fs->se)
		return -EBUSY;
	if (!c->mountpoint)
		return -EINVAL;
	/* Other users mount through the setuid fusermount3, which opens /dev/fuse itself. */
	if (geteuid() == 0 && access("/dev/fuse", R_OK | W_OK) < 0)
		return -ENODEV;
	if (stat(c->mountpoint, &st) < 0)
		return -errno;
	if (!S_ISDIR(st.st_mode))
		return -ENOTDIR;

	if (c->allow_other)
		strcat(opts, ",allow_other");
	if (c->suid)
		strcat(opts, ",suid");
	if (c->dev)
		strcat(opts, ",dev");
	r = opt_append_escaped(opts, sizeof(opts), "fsname", c->fsname ? c->fsname : "lazyroot");
	if (r < 0)
		return r;
	r = opt_append_escaped(opts, sizeof(opts), "subtype", c->subtype ? c->subtype : "lazyroot");
	if (r < 0)
		return r;

	argv[argc++] = "lazyroot";
	argv[argc++] = "-o";
	argv[argc++] = opts;
	if (c->debug)
		argv[argc++] = "-d";
	argv[argc] = NULL;
	args = (struct fuse_args) FUSE_ARGS_INIT(argc, (char **)argv);

	fs->se = fuse_session_new(&args, &fs_ops, sizeof(fs_ops), fs);
	fuse_opt_free_args(&args);
	if (!fs->se)
		return log_debug_errno(-EINVAL, "failed to create the fuse session with '%s'", opts);

	errno = 0;
	if (fuse_session_mount(fs->se, c->mountpoint) != 0) {
		r = errno > 0 ? -errno : -EIO;
		fuse_session_destroy(fs->se);
		fs->se = NULL;
		return r;
	}
	fs->mounted = true;
	fs->max_threads = c->max_threads > 0 ? c->max_threads : FS_DEFAULT_MAX_THREADS;
	set_read_ahead(c->mountpoint);
	return 0;
}

int fs_install_signal_handlers(struct fs *fs)
{
	if (!fs->se)
		return -EINVAL;
	if (fs->signals)
		return 0;
	if (fuse_set_signal_handlers(fs->se) != 0)
		return -EIO;
	fs->signals = true;
	return 0;
}

int fs_serve(struct fs *fs)
{
	struct fuse_loop_config *cfg;
	int r;

	if (!fs->se || !__atomic_load_n(&fs->mounted, __ATOMIC_ACQUIRE))
		return -EINVAL;
	cfg = fuse_loop_cfg_create();
	if (!cfg)
		return -ENOMEM;
	fuse_loop_cfg_set_max_threads(cfg, fs->max_threads);
	/* A /dev/fuse fd per thread: no thundering herd on one queue. */
	fuse_loop_cfg_set_clone_fd(cfg, 1);

	r = fuse_session_loop_mt(fs->se, cfg);
	fuse_loop_cfg_destroy(cfg);
	/* A signal ends the loop with its (positive) number: an orderly stop. */
	return r < 0 ? r : 0;
}

/* Callable from any thread while fs_serve() runs: the detached mount's connection ends once
 * its last user is gone, and the loop returns then. */
void fs_unmount(struct fs *fs)
{
	if (!fs || !fs->se)
		return;
	if (!__atomic_exchange_n(&fs->mounted, false, __ATOMIC_ACQ_REL))
		return;
	fuse_session_unmount(fs->se);
}
