/* fs/profile.h: a mount's start profile (cache/format/start_profile.h): what the reads of its
 * first seconds record (mount --record-profile), and how a profile it was given is used: its
 * chunks are matched against the image's own chunk list, fetched at mount by a few jobs in
 * parallel before the first read asks (a read that wants a chunk in flight joins its fetch,
 * cache/fetch.h), and counted (fetched, then read) for `lazyroot stats`.
 *
 * The read path calls fs_profile_note() for the chunks each read touches, from many threads;
 * when neither recording nor using a profile it returns after one atomic load. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cache/fetch.h"
#include "cache/format/start_profile.h"
#include "fs/tree.h"

struct fs_profile;

/* How many jobs fetch a profile's chunks at once, and how many chunks one fetcher call takes
 * (adjacent ones become one Range request).  A call fetches its requests one after another,
 * so a chunk claimed at the start of a big batch waits behind the others while a read may be
 * waiting for it (issue 17's trace: python3's first chunk came eighth in a batch of 32, 1 s
 * in); small batches on most of the fetcher's connections (FETCH_SLOTS_MAX is 8: two stay for
 * reads of what the profile did not foresee) bring the first chunks at once. */
#define FS_PROFILE_JOBS 6u
#define FS_PROFILE_BATCH 4u

int fs_profile_new(struct fs_profile **ret);
/* NULL-safe; stops the fetch jobs first (fs_profile_fetch_stop()). */
struct fs_profile *fs_profile_free(struct fs_profile *p);
DEFINE_CLEANUP_FUNC(struct fs_profile *, fs_profile_free);

/* Records, from the first read on, for @window_ms, which fetchable chunks the reads touch, in
 * first-read order, each once, at most START_PROFILE_CHUNKS_MAX. */
int fs_profile_record(struct fs_profile *p, uint64_t window_ms);
/* A read touched @c[0..n). */
void fs_profile_note(struct fs_profile *p, const struct fs_chunk_ref *c, size_t n);
/* Whether the recording is complete (its window passed, or it is full) and not taken yet. */
bool fs_profile_record_done(struct fs_profile *p);
/* Takes what was recorded as the profile of @image, whose layers (tree order) are
 * @layer_digests; the recording ends.  -ENODATA when nothing was read; -EALREADY when taken. */
int fs_profile_record_take(struct fs_profile *p, const char *image, char *const *layer_digests,
			   struct start_profile *ret);

/* Keeps the chunks of @sp the image has: same layer (by digest, @layer_digests in tree
 * order), compressed range, size and digest as a chunk of a file of @tree; in the profile's
 * order, each once.  The others are counted as skipped (a profile is a hint).  Returns how
 * many were kept; -EINVAL if @sp is of another image than @image. */
int fs_profile_use(struct fs_profile *p, const struct fs_tree *tree, const char *image,
		   char *const *layer_digests, const struct start_profile *sp);
/* Starts FS_PROFILE_JOBS threads that bring the kept chunks into @bs through @f, in the
 * profile's order, FS_PROFILE_BATCH a call.  Borrows @f and @bs until fs_profile_fetch_stop(). */
int fs_profile_fetch_start(struct fs_profile *p, struct fetcher *f, struct blob_store *bs);
/* Waits for the jobs (a batch in progress ends within the fetcher's timeout). */
void fs_profile_fetch_stop(struct fs_profile *p);

struct fs_profile_stats {
	uint64_t chunks;     /* the profile's chunks the image has */
	uint64_t skipped;    /* the profile's chunks it has not */
	uint64_t fetched;    /* of @chunks, fetched by the jobs (not already stored) */
	uint64_t used;       /* of @chunks, read since the mount */
	uint64_t recorded;   /* chunks recorded so far (--record-profile) */
	bool fetching;
};
void fs_profile_get_stats(struct fs_profile *p, struct fs_profile_stats *ret);
