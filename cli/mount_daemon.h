/* cli/mount_daemon.h: the process that serves a mount.  `lazyroot mount` forks it once the tree
 * is built; it mounts FUSE, then (on a thread, while FUSE already answers) the overlay, writes
 * the mount record with its pid, starts the statistics socket and prefetch, and reports
 * "ready" or one error through a pipe.  With --foreground it runs in the command's own process
 * and readiness goes to systemd ($NOTIFY_SOCKET).  When the tree is unmounted it undoes what is
 * still mounted and removes the record if it still names it. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "cache/store/mount_records.h"
#include "cli/mount_profile.h"

struct mount_request;
struct fs;
struct fetcher;
struct fetch_chunk;
struct stats_server;

struct mount_daemon {
	const struct mount_request *req;
	struct fs *fs;
	struct mount_record state;
	char *overlay_dir;         /* absolute; the upper/work parent, or the tmpfs */
	mode_t upper_mode;         /* the image root's mode: a new upper directory's */
	int report_fd;             /* write end of the readiness pipe; -1 in the foreground */
	bool overlay_mounted;
	bool tmpfs_mounted;
	int status;                /* what the setup thread concluded: 0 or -errno */
	struct fetcher *fetcher;   /* NULL without lazy layers */
	struct fetch_chunk *prefetch;
	size_t n_prefetch, n_prefetch_allocated;
	struct stats_server *stats;
	bool state_created;        /* by this process: remove it if the mount fails */
	uint64_t pull_requests, pull_bytes;
	char **layer_digests, **layer_served;  /* strv, manifest order: for stats */
	char **layer_index;        /* where each layer's seek index came from, "" for none */
	struct mount_profile profile;          /* recorded or used (cli/mount_profile.h) */
};

/* Sends "READY=1" (or another state) to systemd when it started us with Type=notify. */
void sd_notify_state(const char *state);
/* Serves in this process until the tree is unmounted (--foreground); 0 or -errno (logged). */
int mount_daemon_run(struct mount_daemon *d);
/* Forks the daemon and waits for its report: 0 once it serves, or the -errno it reported
 * (logged).  The daemon gets its own copy of @d; this process keeps its own to free. */
int mount_daemon_start(struct mount_daemon *d);
/* Frees what @d holds here (never unmounts). */
void mount_daemon_done(struct mount_daemon *d);
