/* cli/stats.h: `lazyroot stats MOUNTPOINT`: the mount daemon answers on a unix socket in its
 * runtime state directory (RUNTIME/mounts/<id>/control) with one JSON object. */
#pragma once

#include "cache/fetch.h"

struct stats_server;

struct fs;
struct fs_profile;

struct stats_identity {
	const char *target;      /* the mountpoint */
	const char *image;       /* canonical reference */
	const char *digest;      /* manifest digest */
	uint64_t pull_requests;  /* what `lazyroot mount` itself fetched before the daemon ran: */
	uint64_t pull_bytes;     /* manifests, config, TOCs, whole layers */
	char *const *layer_digests;  /* strv, and how each layer is served (seek_layer_served()); */
	char *const *layer_served;   /* may be NULL */
	char *const *layer_index;    /* where its seek index came from, "" for none; may be NULL */
	struct fs_profile *profile;  /* the start profile recorded or used; NULL: none */
	struct fs *fs;               /* the mount's file system, for its exec-ahead counters */
};

/* Listens at @socket_path and answers every connection with the current statistics of
 * @fetcher (NULL: an image without lazy layers, all counters zero). */
int stats_server_start(const char *socket_path, const struct stats_identity *id,
		       struct fetcher *fetcher, struct stats_server **ret);
struct stats_server *stats_server_stop(struct stats_server *s);  /* NULL-safe */

int verb_stats(int argc, char **argv);
