/* cache/registry/source_local.h: an image on local disk as a source: an OCI image layout directory
 * (oci:), a tar of one (oci-archive:) or the output of `docker save` (docker-archive:).
 * Everything is read in place by pread(): nothing is copied or extracted.  The calls, their
 * errors and their threading rules are those of registry.h; requests are always 0 and bytes
 * count what was read.  -ENOENT names a missing path, tag or blob, -EPROTO something that is
 * not a layout or archive, -ENODATA a truncated archive, -EBADMSG bytes that do not match
 * their digest. */
#pragma once

#include <stdint.h>

#include "cache/format/reference.h"
#include "cache/base/util.h"

struct source_local;

/* Opens nothing yet: the first call reads the layout, so that its failure has a message. */
int source_local_new(const struct reference *ref, struct source_local **ret);
struct source_local *source_local_free(struct source_local *s);  /* NULL-safe */
DEFINE_CLEANUP_FUNC(struct source_local *, source_local_free);

void source_local_get_counters(struct source_local *s, uint64_t *ret_requests,
			       uint64_t *ret_bytes);

/* Reads the layout's index (the archive's headers; for docker-archive also hashes the layers,
 * once per process and archive). */
int source_local_ping(struct source_local *s);
/* Anything but a digest selects the manifest the reference names (its tag, RepoTag or index;
 * without one the only manifest); that may be an image index.  A digest reads that blob.
 * Either way the bytes are checked against the digest. */
int source_local_get_manifest(struct source_local *s, const char *tag_or_digest, char **ret_buf,
			      size_t *ret_len, char **ret_content_type, char ret_digest[72]);
int source_local_get_blob(struct source_local *s, const char *digest, size_t max,
			  char **ret_buf, size_t *ret_len);
/* Bytes [offset, offset+len) of a blob (@len REGISTRY_TO_END: to its end) to @sink, in pieces;
 * -EPROTO for a range past the blob's end. */
int source_local_stream_blob(struct source_local *s, const char *digest, uint64_t offset,
			     uint64_t len, int (*sink)(void *userdata, const void *buf, size_t n),
			     void *userdata);
/* The descriptor the reference selects, without reading the manifest: its digest, size and
 * media type (NULL if the layout names none). */
int source_local_head_manifest(struct source_local *s, char ret_digest[72], uint64_t *ret_size,
			       char **ret_media_type);
