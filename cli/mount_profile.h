/* cli/mount_profile.h: what a mount does with start profiles (fs/profile.h, cache/profile.h).
 * Asked to record (--record-profile), it records the chunks its first seconds read and keeps
 * them in the cache as the image's profile, once the window is over or at unmount.  Otherwise,
 * unless --profile=no, it uses the image's profile: the one kept in the cache, else the one
 * published in the registry (one cached artifact lookup, like a tag; fetched, checked and
 * kept), whose chunks the image has are fetched by a few jobs as soon as the mount serves.  A
 * profile that cannot be had or is bad is one warning line: the mount goes on without it. */
#pragma once

#include <stdbool.h>
#include <pthread.h>
#include <stdint.h>

#include "cache/image.h"
#include "cache/store/cache.h"
#include "fs/tree.h"

struct mount_request;
struct fs_profile;
struct fetcher;

/* mount's options: --record-profile[=SECONDS] and --profile=yes|no. */
enum { OPT_RECORD_PROFILE = 0x3a0, OPT_PROFILE };
#define MOUNT_PROFILE_WINDOW_DEFAULT_MS 10000
#define MOUNT_PROFILE_WINDOW_MAX_S 3600
/* Applies them to @req (@record: --record-profile was given, @seconds its value or NULL);
 * -ERR_USAGE (logged) for a bad value. */
int mount_profile_options(bool record, const char *seconds, const char *profile,
			  struct mount_request *req);

struct mount_profile {
	struct fs_profile *profile;  /* NULL: none recorded or used */
	struct blob_store *bs;       /* borrowed: the mount's store */
	char *cache_dir, *image;
	char **layers;               /* strv: the image's layer digests, manifest order */
	bool recording;
	pthread_t saver;             /* recording: keeps the profile when the window ends */
	bool saver_running, stop;    /* stop: atomic */
};

/* Before fork (the index is open): sets up recording or the use of a profile for the image
 * @img pulled for @ref, shown as @tree.  Only fails for lack of memory. */
int mount_profile_setup(struct mount_profile *mp, const struct mount_request *req,
			const struct reference *ref, struct cache *cache, const struct image *img,
			const struct fs_tree *tree);
/* In the daemon, once it serves: starts the fetch jobs, or the saver of a recording. */
void mount_profile_start(struct mount_profile *mp, struct fetcher *f);
/* In the daemon, after FUSE stopped and before the fetcher goes: stops the jobs, keeps a
 * recording not kept yet. */
void mount_profile_stop(struct mount_profile *mp);
void mount_profile_done(struct mount_profile *mp);
