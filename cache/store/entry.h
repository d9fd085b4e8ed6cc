/* cache/entry.h: one entry of a layer, as a tar header or a TOC describes it.  This is the
 * record that cache/ indexes and that fs/ merges into a tree; it carries only plain C types. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum entry_type {
	ENTRY_REG,
	ENTRY_DIR,
	ENTRY_SYMLINK,
	ENTRY_HARDLINK, /* link_target names an earlier regular file (same or lower layer) */
	ENTRY_CHR,
	ENTRY_BLK,
	ENTRY_FIFO,
};

struct xattr {
	const char *name;   /* e.g. "security.capability", NUL-terminated */
	const void *value;
	size_t size;
};

/* A piece of a regular file's content.  Lazy layers (eStargz, zstd:chunked) describe files as
 * chunks that can be fetched and verified one by one; files of other layers have none and are
 * one local blob named by entry.digest. */
struct chunk {
	uint64_t file_offset;   /* where the chunk's bytes start in the file */
	uint64_t size;          /* uncompressed length */
	uint64_t blob_offset;   /* compressed bytes in the layer blob: [blob_offset, +blob_length) */
	uint64_t blob_length;   /* decompressing them yields at least @size bytes; the first @size
				 * are the chunk (eStargz frames carry tar padding after it) */
	const char *digest;     /* "sha256:…" of the @size uncompressed bytes; NULL for a run of
				 * zeros (zstd:chunked "zeros" chunks), which is never fetched */
};

struct entry {
	/* Normalised: no leading "/" or "./", no trailing "/", no "." or ".." components,
	 * no empty components; the root directory is "".  Whiteouts (".wh.NAME",
	 * ".wh..wh..opq") are entries like any other: fs/ interprets them. */
	const char *path;
	enum entry_type type;
	uint32_t mode;          /* permission bits, 07777 (incl. setuid/setgid/sticky) */
	uint32_t uid, gid;
	uint64_t size;          /* ENTRY_REG: content length; otherwise 0 */
	int64_t mtime_sec;
	uint32_t mtime_nsec;
	uint32_t dev_major, dev_minor;  /* ENTRY_CHR / ENTRY_BLK */
	const char *link_target;        /* ENTRY_SYMLINK: target as stored; ENTRY_HARDLINK:
					 * normalised path of the target; otherwise NULL */
	const char *digest;             /* ENTRY_REG: "sha256:<hex>" of the content; else NULL */
	const struct xattr *xattrs;
	size_t n_xattrs;
	/* ENTRY_REG in lazy layers: the chunks covering [0, size) in order, no gaps; n_chunks 0
	 * for files of whole-blob layers and for empty files. */
	const struct chunk *chunks;
	size_t n_chunks;
	/* Lazy layers: the entry comes before the eStargz .prefetch.landmark, so the image's
	 * author expects it to be read at start-up. */
	bool prefetch;
};

/* Normalises a tar path in place per the rules above.  Returns -EINVAL for paths that escape
 * the root ("..") and for the whiteouts of "." and ".." (".wh..", ".wh..."): those entries
 * must be rejected, not clamped.  -ENAMETOOLONG for a component over 255 bytes or a
 * normalised path over 4095 bytes (Linux's limits). */
int entry_path_normalize(char *path);

/* Whiteout names that mean nothing, on a normalised @path: ".wh." alone, a ".wh.NAME" or
 * ".wh..wh..opq" component with entries below it, or one that is not a regular file or a
 * hard link (the empty files docker, containerd and umoci write).  aufs's own ".wh..wh.*"
 * names (".wh..wh.plnk/...") are not whiteouts: fs/ skips them.  -EINVAL for those, else 0. */
int entry_check_whiteout(const char *path, enum entry_type type);
