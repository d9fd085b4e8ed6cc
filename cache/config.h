/* cache/config.h: the configuration file, /etc/lazyroot/lazyroot.conf or $LAZYROOT_CONFIG:
 * `key = value` lines, `#` starts a comment line, blank lines are ignored.  Known keys:
 * max-size (the cache size `lazyroot gc` and the automatic gc keep to, see parse_size());
 * layer-max-expanded and layer-max-ratio (what one tar layer may expand to, layer_tar.h);
 * artifact-repository, artifact-ttl and artifact-miss-ttl (where artifacts that refer to an
 * image are published and looked up, and how long answers are kept: artifact_cache.h).
 * seek-index-on-pull (yes/no: every pull that reads a tar+gzip layer whole keeps its seek
 * index, cache/seek.h; default yes).  seek-index-publish (yes/no: prewarm publishes the seek
 * indexes of the images it fetches, cache/share/seek_publish.h, as --publish-index; default no).
 * seek-index-fetch (yes/no: pulls look up and keep seek indexes other hosts published,
 * cache/share/seek_remote.h; default yes).
 * Unknown keys are ignored, so that newer files work with older lazyroot. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "cache/format/layer_tar.h"
#include "cache/registry/artifact_cache.h"

struct config {
	uint64_t max_size;              /* 0 when unset */
	struct layer_limits layer;      /* the defaults where unset; .source is the file's path */
	struct artifact_config artifacts;  /* the defaults where unset */
	bool seek_index_on_pull;
	bool seek_index_publish;
	bool seek_index_fetch;
};

/* The file to read: $LAZYROOT_CONFIG when set and non-empty, else the default. */
const char *config_path(void);

/* Reads the whole file; a missing file gives the defaults.  -EINVAL (with the line number in
 * *ret_line when non-NULL) for a malformed line or value. */
int config_read(struct config *ret, unsigned *ret_line);

/* Sets *ret_max_size to the file's max-size, 0 when the file or the key is absent.
 * -EINVAL (with the line number in *ret_line when non-NULL) for a malformed line or value. */
int config_max_size(uint64_t *ret_max_size, unsigned *ret_line);

/* "10G", "500M", "1024K", "123" (bytes); K, M, G, T are powers of 1024, optionally followed by
 * "B" or "iB".  -EINVAL if malformed, -ERANGE if it overflows. */
int parse_size(const char *s, uint64_t *ret);

/* "90" or "90s" (seconds), "10m", "2h", "1d".  -EINVAL if malformed, -ERANGE if too long. */
int parse_duration(const char *s, int64_t *ret_seconds);
