/* cache/format/tar_header.h: the tar records of one entry (ustar header, with the pax 'x' and
 * GNU 'L'/'K' records before it), parsed from bytes in memory as libarchive reads them, and
 * compared with an entry of the index.  A seek index that came from elsewhere says where each
 * file's data is and what its header says; before the data is served, the headers are read
 * from the layer and must say the same (docs/security.md, "Seek indexes"). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cache/store/entry.h"

struct tar_header {
	char *path;             /* normalised, as layer_tar.c indexes it */
	char *link;             /* symlink target as stored, or a hard link's normalised target */
	enum entry_type type;
	uint32_t mode, uid, gid, dev_major, dev_minor, mtime_nsec;
	int64_t mtime_sec;
	uint64_t size;          /* of the data after the header (0 for symlinks) */
	uint64_t data_off;      /* where that data starts, from the start of the buffer */
};

void tar_header_done(struct tar_header *h);

/* Parses the records of the next entry at *@pos of @buf (@len bytes), and moves *@pos past
 * them and, for entries other than regular files, past their data.  -EBADMSG (error.h's
 * message says what) for bytes that are not the records of one entry, or that run past
 * @len; *@ret is then empty. */
int tar_header_next(const uint8_t *buf, size_t len, size_t *pos, struct tar_header *ret);

/* Whether @h says what @e says: path, type, mode, owner, size, mtime, link target, device. */
bool tar_header_matches(const struct tar_header *h, const struct entry *e);
