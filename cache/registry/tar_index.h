/* cache/registry/tar_index.h: where each member's data lies inside a tar file, found by reading only
 * the headers (ustar, GNU long names, PAX path/size records), so that an image archive can be
 * served by pread() at those offsets without extracting anything. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "cache/base/util.h"

struct tar_member {
	char *name;        /* normalised: no leading "./" or "/", no trailing "/" */
	char *link;        /* target of a symbolic ('2') or hard ('1') link, else NULL */
	char type;         /* the typeflag; '0' for regular files (also written as NUL) */
	uint64_t offset;   /* of the data in the file */
	uint64_t size;
};

struct tar_index {
	struct tar_member *members;  /* in archive order */
	size_t n_members, members_allocated;
};

/* Scans the headers of the tar in @fd (@file_size bytes).  -EPROTO if it is not a tar (bad
 * header checksum, malformed fields), -ENODATA if it ends inside a header or a member's data. */
int tar_index_scan(int fd, uint64_t file_size, struct tar_index **ret);
struct tar_index *tar_index_free(struct tar_index *t);  /* NULL-safe */
DEFINE_CLEANUP_FUNC(struct tar_index *, tar_index_free);

/* The regular file @name names (normalised as above), following symbolic and hard links within
 * the archive; the last of several members of one name wins, as when extracting.  NULL if
 * there is none. */
const struct tar_member *tar_index_find(const struct tar_index *t, const char *name);

/* Reads exactly @len bytes at @offset (a member's data, or any file); -ENODATA if the file
 * ends first. */
int tar_pread(int fd, void *buf, size_t len, uint64_t offset);
