/*
 * cache/format/layer_tar.c: indexes a tar layer (plain, gzip or zstd: libarchive detects the
 * compression from the bytes) in one streaming pass: every header becomes a struct entry for the
 * layer writer, every regular file's content becomes a blob.
 *
 * Names are raw bytes.  libarchive converts header strings from their declared charset (UTF-8
 * for pax records) to the calling thread's locale; in the "C" locale that conversion copies the
 * bytes unchanged (and reports ARCHIVE_WARN for non-ASCII ones), so the whole pass runs under
 * uselocale("C") whatever the process locale is, and such warnings are not errors.
 *
 * Expected load: layers of a few thousand to 100,000+ entries and up to a few GiB of content;
 * memory use is bounded by libarchive's buffers plus the layer writer's copy of the headers.
 *
 * A layer comes from whoever could push to the registry, so what it may cost is bounded
 * (-EFBIG beyond, see struct budget): the bytes it expands to (tar stream plus the holes of
 * sparse files), in all and against the compressed bytes read so far (struct layer_limits),
 * and the number and size of the headers the layer writer keeps in memory until the digest is
 * checked.  Zeros cost no disk: the blob store keeps their blocks as holes, so a sparse entry's
 * holes and a bomb's zeros cost time (inflate and hash, ~3 s a GiB on a 2-core VM) but not
 * space.
 */
#include "layer_tar.h"

#include <errno.h>
#include <inttypes.h>
#include <locale.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <archive.h>
#include <archive_entry.h>

#include "cache/format/layer_unpack.h"
#include "cache/store/entry.h"
#include "cache/format/seek_index.h"
#include "cache/base/error.h"
#include "cache/base/log.h"
#include "cache/base/util.h"

#define MAX_XATTRS 1024
#define XATTR_VALUE_MAX (64 * 1024)      /* Linux's XATTR_SIZE_MAX: no bigger one can be set */

/* Expansion (struct layer_limits): deflate cannot exceed ~1032:1, so gzip layers never reach
 * the default ratio; zstd, xz and bzip2 can encode runs far more densely, and a sparse entry's
 * holes cost no input at all.  The absolute limit bounds the time a layer takes to inflate and
 * hash even where its zeros cost no disk (the blob store keeps them as holes). */
/* What the layer writer buffers until commit: a million-entry layer is about 100 MiB. */
#define ENTRIES_MAX 4000000
#define HEADER_BYTES_MAX (1ULL << 30)

struct budget {
	const struct layer_unpack *u;
	const struct layer_limits *limits;
	uint64_t zeros;         /* hole bytes of sparse entries */
	uint64_t header_bytes;  /* names, link targets and xattrs kept for the writer */
	uint64_t n_entries;
	struct seek_builder *seek;  /* the pass also builds a seek index; may be NULL */
};

/* "64 GiB", "256 MiB", "1000 bytes": a limit as a user would write it. */
static void format_limit(uint64_t v, char buf[32])
{
	static const char *const units[] = { "bytes", "KiB", "MiB", "GiB", "TiB", "PiB" };
	unsigned u = 0;

	while (u + 1 < sizeof(units) / sizeof(units[0]) && v >= 1024 && v % 1024 == 0) {
		v /= 1024;
		u++;
	}
	snprintf(buf, 32, "%" PRIu64 " %s", v, units[u]);
}

/* -EFBIG with the limit and the config key that sets it. */
static int budget_refuse(const struct budget *b, const char *what, const char *key)
{
	const char *source = b->limits->source;

	return error_set(-EFBIG, "it expands to more than %s (%s%s%s)", what, key,
			 source ? " in " : "", source ?: "");
}

/* -EFBIG once the layer has expanded more than a real one would (see struct layer_limits). */
static int budget_check(const struct budget *b)
{
	const struct layer_limits *l = b->limits;
	uint64_t in, out, total;
	char what[96], size[32];

	layer_unpack_counts(b->u, &in, &out);
	total = out + b->zeros;
	if (l->max_expanded && total > l->max_expanded) {
		format_limit(l->max_expanded, size);
		return budget_refuse(b, size, "layer-max-expanded");
	}
	if (!l->max_ratio || total <= LAYER_EXPAND_FREE || total / l->max_ratio <= in)
		return 0;
	log_debug("layer expands to %" PRIu64 " bytes from %" PRIu64 " compressed, refusing",
		  total, in);
	format_limit(LAYER_EXPAND_FREE, size);
	snprintf(what, sizeof(what), "%" PRIu64 " times its compressed size beyond %s",
		 l->max_ratio, size);
	return budget_refuse(b, what, "layer-max-ratio");
}

/* -EFBIG for a layer whose headers alone would take more memory than a real one's. */
static int budget_headers_check(const struct budget *b)
{
	if (b->n_entries > ENTRIES_MAX)
		return error_set(-EFBIG, "it has more than %d entries", ENTRIES_MAX);
	if (b->header_bytes > HEADER_BYTES_MAX)
		return error_set(-EFBIG, "it has more than 1 GiB of names, link targets and xattrs");
	return 0;
}

static void archive_read_freep(struct archive **a)
{
	if (*a)
		(void)archive_read_free(*a);
}

/* libarchive reports bad bytes with its private ARCHIVE_ERRNO_* values (EFTYPE, which is
 * EILSEQ on Linux; -1; EINVAL) and I/O failures with the errno of the failed read(). */
static int archive_to_errno(struct archive *a)
{
	int e = archive_errno(a);

	if (e == ENOMEM)
		return -ENOMEM;
	if (e <= 0 || e == EILSEQ || e == EINVAL || e == ERANGE)
		return -EBADMSG;
	return -EIO;
}

static int copy_path(const char *raw, char **ret)
{
	_cleanup_free_ char *p = NULL;

	if (!raw)
		return -EBADMSG;
	p = strdup(raw);
	if (!p)
		return -ENOMEM;
	if (entry_path_normalize(p) < 0)
		return -EBADMSG;
	*ret = TAKE_PTR(p);
	return 0;
}

/* Writes zeros from *pos up to @end, each piece counted against the budget. */
static int write_zeros(struct blob_txn *t, struct budget *b, uint64_t *pos, uint64_t end)
{
	static const char zeros[65536];
	int r;

	while (*pos < end) {
		size_t z = end - *pos < sizeof(zeros) ? (size_t)(end - *pos) : sizeof(zeros);

		r = blob_txn_write(t, zeros, z);
		if (r < 0)
			return r;
		*pos += z;
		b->zeros += z;
		r = budget_check(b);
		if (r < 0)
			return r;
	}
	return 0;
}

/* Streams the current entry's data into a new blob.  Sparse entries (GNU 'S' headers, PAX
 * 0.0, 0.1 and 1.0) come as blocks with offsets: the holes are written as zeros, so the blob is
 * the file as a reader sees it, and the blob store turns them back into holes. */
/* The content's digest without storing it (a pass that only builds a seek index). */
static int hash_content(struct archive *a, struct budget *b, uint64_t size,
			char ret_digest[DIGEST_STRING_MAX])
{
	_cleanup_(digest_ctx_freep) struct digest_ctx *h = NULL;
	uint64_t pos = 0;
	int r;

	r = digest_ctx_new(&h);
	for (;;) {
		const void *buf;
		size_t n;
		la_int64_t off;
		int ar;

		if (r < 0)
			return r;
		ar = archive_read_data_block(a, &buf, &n, &off);
		if (ar == ARCHIVE_EOF)
			break;
		if (ar < ARCHIVE_WARN)
			return archive_to_errno(a);
		/* Sparse entries are refused before (seek indexes cannot describe them). */
		if (off < 0 || (uint64_t)off != pos || n > size - pos)
			return -EBADMSG;
		digest_ctx_update(h, buf, n);
		pos += n;
		r = budget_check(b);
		if (r >= 0 && b->seek)
			r = seek_builder_data(b->seek, buf, n);
	}
	if (pos != size)
		return -EBADMSG;
	digest_ctx_final(h, ret_digest);
	return 0;
}

static int store_content(struct archive *a, struct blob_store *bs, struct budget *b,
			 uint64_t size, char ret_digest[DIGEST_STRING_MAX], char ***created)
{
	_cleanup_(blob_txn_abortp) struct blob_txn *t = NULL;
	uint64_t pos = 0;
	bool new_blob;
	int r;

	if (!bs)
		return hash_content(a, b, size, ret_digest);
	r = blob_txn_begin_flags(bs, BLOB_TXN_NO_SYNC, &t);
	if (r < 0)
		return r;

	for (;;) {
		const void *buf;
		size_t n;
		la_int64_t off;
		int ar;

		ar = archive_read_data_block(a, &buf, &n, &off);
		if (ar == ARCHIVE_EOF)
			break;
		if (ar < ARCHIVE_WARN) {
			log_debug("failed to read tar entry data: %s", archive_error_string(a));
			return archive_to_errno(a);
		}
		if (off < 0 || (uint64_t)off < pos || (uint64_t)off > size || n > size - (uint64_t)off)
			return -EBADMSG;
		r = write_zeros(t, b, &pos, (uint64_t)off);
		if (r < 0)
			return r;
		r = budget_check(b);
		if (r < 0)
			return r;
		r = blob_txn_write(t, buf, n);
		if (r >= 0 && b->seek)
			r = seek_builder_data(b->seek, buf, n);
		if (r < 0)
			return r;
		pos += n;
	}
	r = write_zeros(t, b, &pos, size);
	if (r < 0)
		return r;

	r = blob_txn_commit(TAKE_PTR(t), NULL, ret_digest, &new_blob);
	if (r < 0)
		return r;
	if (new_blob)
		return strv_push(created, ret_digest);
	return 0;
}

static int collect_xattrs(struct archive_entry *ae, struct budget *b, struct xattr **ret,
			  size_t *ret_n)
{
	_cleanup_free_ struct xattr *x = NULL;
	int n;

	n = archive_entry_xattr_reset(ae);
	if (n <= 0) {
		*ret = NULL;
		*ret_n = 0;
		return 0;
	}
	if (n > MAX_XATTRS)
		return -EBADMSG;
	x = calloc(n, sizeof(*x));
	if (!x)
		return -ENOMEM;
	for (int i = 0; i < n; i++) {
		const char *name;
		const void *value;
		size_t size;

		if (archive_entry_xattr_next(ae, &name, &value, &size) != ARCHIVE_OK)
			return -EBADMSG;
		if (!name || !*name || strlen(name) > 255)
			return -EBADMSG;
		if (value && size > XATTR_VALUE_MAX)
			return error_set(-EFBIG, "xattr '%s' is larger than 64 KiB", name);
		b->header_bytes += strlen(name) + (value ? size : 0);
		x[i] = (struct xattr) { .name = name, .value = value ?: "", .size = value ? size : 0 };
	}
	*ret = TAKE_PTR(x);
	*ret_n = n;
	return 0;
}

static int check_whiteout(const struct entry *e)
{
	if (entry_check_whiteout(e->path, e->type) < 0)
		return error_set(-EBADMSG, "entry '%s' is not a valid whiteout", e->path);
	return 0;
}

/* To the writer (none when the pass only builds a seek index) and the seek index. */
static int entry_add(struct budget *b, struct layer_writer *w, const struct entry *e)
{
	int r = w ? layer_writer_add(w, e) : 0;

	if (r >= 0 && b->seek)
		r = seek_builder_entry(b->seek, e);
	return r;
}

/* Where the file's data starts in the uncompressed stream: what the tar reader consumed of
 * it, its headers included (libarchive's position of the filter it reads). */
static int seek_file_begin(struct archive *a, struct archive_entry *ae, struct budget *b)
{
	if (!b->seek)
		return 0;
	if (archive_entry_sparse_count(ae) > 0)
		seek_builder_refuse(b->seek, "the layer has sparse files");
	return seek_builder_file_begin(b->seek, (uint64_t)archive_filter_bytes(a, 0));
}

static int index_one(struct archive *a, struct archive_entry *ae, struct blob_store *bs,
		     struct budget *b, struct layer_writer *w, char ***created)
{
	_cleanup_free_ char *path = NULL, *link = NULL;
	_cleanup_free_ struct xattr *xattrs = NULL;
	char digest[DIGEST_STRING_MAX];
	const char *hardlink;
	la_int64_t uid, gid, size;
	struct entry e = {};
	int r;

	/* The locale-encoded forms are the raw bytes here (see the top of the file). */
	r = copy_path(archive_entry_pathname(ae), &path);
	if (r < 0)
		return r;
	e.path = path;
	b->n_entries++;
	b->header_bytes += strlen(path) + 1;
	r = budget_headers_check(b);
	if (r < 0)
		return r;

	uid = archive_entry_uid(ae);
	gid = archive_entry_gid(ae);
	if (uid < 0 || uid > UINT32_MAX || gid < 0 || gid > UINT32_MAX)
		return -EBADMSG;
	e.uid = uid;
	e.gid = gid;
	e.mode = archive_entry_perm(ae) & 07777;
	if (archive_entry_mtime_is_set(ae)) {
		e.mtime_sec = archive_entry_mtime(ae);
		e.mtime_nsec = archive_entry_mtime_nsec(ae);
	}

	r = collect_xattrs(ae, b, &xattrs, &e.n_xattrs);
	if (r < 0)
		return r;
	e.xattrs = xattrs;

	hardlink = archive_entry_hardlink(ae);
	if (hardlink) {
		/* Any data a pax writer stored with the link is skipped by the next header read. */
		r = copy_path(hardlink, &link);
		if (r < 0)
			return r;
		if (!*link || streq(link, path))
			return -EBADMSG;
		b->header_bytes += strlen(link) + 1;
		r = budget_headers_check(b);
		if (r < 0)
			return r;
		e.type = ENTRY_HARDLINK;
		e.link_target = link;
		r = check_whiteout(&e);
		return r < 0 ? r : entry_add(b, w, &e);
	}

	switch (archive_entry_filetype(ae)) {
	case AE_IFREG:
		size = archive_entry_size(ae);
		if (size < 0)
			return -EBADMSG;
		e.type = ENTRY_REG;
		e.size = size;
		r = seek_file_begin(a, ae, b);
		if (r >= 0 && !bs && archive_entry_sparse_count(ae) > 0)
			return error_set(-EOPNOTSUPP, "the layer has sparse files");
		if (r >= 0)
			r = store_content(a, bs, b, e.size, digest, created);
		if (r < 0)
			return r;
		e.digest = digest;
		break;
	case AE_IFDIR:
		e.type = ENTRY_DIR;
		break;
	case AE_IFLNK:
		e.type = ENTRY_SYMLINK;
		e.link_target = archive_entry_symlink(ae);
		if (!e.link_target)
			return -EBADMSG;
		if (strlen(e.link_target) > 4095)
			return -EBADMSG;  /* over Linux's PATH_MAX: readlink could not return it */
		b->header_bytes += strlen(e.link_target) + 1;
		break;
	case AE_IFCHR:
	case AE_IFBLK:
		e.type = archive_entry_filetype(ae) == AE_IFCHR ? ENTRY_CHR : ENTRY_BLK;
		e.dev_major = archive_entry_rdevmajor(ae);
		e.dev_minor = archive_entry_rdevminor(ae);
		break;
	case AE_IFIFO:
		e.type = ENTRY_FIFO;
		break;
	default:
		return -EBADMSG;
	}

	/* Only the root may have the empty path, and only as a directory. */
	if (!*e.path && e.type != ENTRY_DIR)
		return -EBADMSG;
	r = check_whiteout(&e);
	if (r < 0)
		return r;
	r = budget_headers_check(b);
	if (r < 0)
		return r;

	return entry_add(b, w, &e);
}

/* The end-of-archive blocks need not be the end of the stream (padding, a trailing gzip
 * member): the diff_id covers every uncompressed byte, and whoever hashes the blob on the
 * other side of the fd must see every compressed one. */
static int unpack_to_end(struct layer_unpack *u, const struct budget *b)
{
	for (;;) {
		const void *buf;
		size_t n;
		int r;

		r = layer_unpack_read(u, &buf, &n);
		if (r < 0 || n == 0)
			return r;
		r = budget_check(b);
		if (r < 0)
			return r;
	}
}

/* libarchive's read callback: the uncompressed stream (libarchive's own filters are not
 * used, see layer_unpack.c). */
static la_ssize_t unpack_read_cb(struct archive *a, void *userdata, const void **ret_buf)
{
	size_t n;
	int r;

	r = layer_unpack_read(userdata, ret_buf, &n);
	if (r < 0) {
		archive_set_error(a, -r, "cannot read the layer's stream");
		return -1;
	}
	return (la_ssize_t)n;
}

static int index_archive(struct layer_unpack *u, struct blob_store *bs,
			 const struct layer_limits *limits, struct layer_writer *w, char ***created,
			 struct seek_builder *seek)
{
	_cleanup_(archive_read_freep) struct archive *a = NULL;
	struct archive_entry *ae;
	struct budget b = { .u = u, .limits = limits, .seek = seek };
	int ar, r;

	a = archive_read_new();
	if (!a)
		return -ENOMEM;
	if (archive_read_support_format_tar(a) != ARCHIVE_OK)
		return -ENOMEM;
	if (archive_read_open(a, u, NULL, unpack_read_cb, NULL) != ARCHIVE_OK) {
		log_debug("failed to open tar stream: %s", archive_error_string(a));
		return archive_to_errno(a);
	}

	for (;;) {
		ar = archive_read_next_header(a, &ae);
		if (ar == ARCHIVE_EOF)
			break;
		if (ar == ARCHIVE_WARN && archive_errno(a) != EILSEQ) {
			/* Anything but a charset conversion (see the top of the file): libarchive
			 * skipped something it could not parse ("malformed pax extended
			 * attribute", "damaged tar archive") and goes on with what is left.
			 * Another reader would see other names, as Go's archive/tar refuses such
			 * headers, so this layer means different things to different tools. */
			log_debug("tar header warning: %s", archive_error_string(a));
			return -EBADMSG;
		} else if (ar == ARCHIVE_WARN) {
			log_debug("tar header warning, ignoring: %s", archive_error_string(a));
		} else if (ar != ARCHIVE_OK) {
			log_debug("failed to read tar header: %s", archive_error_string(a));
			return archive_to_errno(a);
		}

		r = budget_check(&b);
		if (r < 0)
			return r;
		r = index_one(a, ae, bs, &b, w, created);
		if (r < 0)
			return log_debug_errno(r, "failed to index tar entry '%s': %m",
					       archive_entry_pathname(ae) ?: "");
	}

	if (archive_read_close(a) != ARCHIVE_OK)
		return archive_to_errno(a);
	return unpack_to_end(u, &b);
}

int layer_tar_index(int fd, struct blob_store *bs, const struct layer_limits *limits,
		    struct layer_writer *w, char ***created, char ret_diff_id[DIGEST_STRING_MAX])
{
	return layer_tar_index_seek(fd, bs, limits, w, created, NULL, ret_diff_id, NULL);
}

int layer_tar_index_seek(int fd, struct blob_store *bs, const struct layer_limits *limits,
			 struct layer_writer *w, char ***created, struct seek_builder *seek,
			 char ret_diff_id[DIGEST_STRING_MAX], uint64_t *ret_tar_size)
{
	uint64_t in, out;
	const struct layer_limits defaults = LAYER_LIMITS_DEFAULT;
	_cleanup_(layer_unpack_freep) struct layer_unpack *u = NULL;
	locale_t c, old;
	int r, ru;

	r = layer_unpack_new(fd, &u);
	if (r < 0)
		return r;
	if (seek)
		layer_unpack_set_seek_builder(u, seek);
	c = newlocale(LC_ALL_MASK, "C", (locale_t)0);
	if (c == (locale_t)0)
		return -ENOMEM;
	old = uselocale(c);
	r = index_archive(u, bs, limits ?: &defaults, w, created, seek);
	(void)uselocale(old);
	freelocale(c);
	/* A stream that does not decompress is what failed, whatever libarchive made of it. */
	ru = layer_unpack_error(u);
	if (ru < 0)
		return ru;
	if (r < 0)
		return r;
	layer_unpack_counts(u, &in, &out);
	if (ret_tar_size)
		*ret_tar_size = out;
	return layer_unpack_diff_id(u, ret_diff_id);
}
