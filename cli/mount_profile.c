/*
 * cli/mount_profile.c: a mount's start profile (mount_profile.h).  The profile is looked up
 * and matched against the tree before the daemon forks, where the index is open, so the daemon
 * starts fetching the moment it serves; a recording is kept by the daemon, which opens the
 * cache anew (SQLite connections do not cross fork()).
 */
#include "mount_profile.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "cache/base/error.h"
#include "cache/base/log.h"
#include "cache/base/util.h"
#include "cache/config.h"
#include "cache/registry/profile_cache.h"
#include "cache/registry/source.h"
#include "fs/profile.h"
#include "cli/cli.h"
#include "cli/image_request.h"

int mount_profile_options(bool record, const char *seconds, const char *profile,
			  struct mount_request *req)
{
	char *end = NULL;
	double s;

	if (profile && !streq(profile, "no") && !streq(profile, "yes"))
		return log_error_errno(-ERR_USAGE, "invalid --profile '%s': use yes or no", profile);
	req->no_profile = profile && streq(profile, "no");
	if (!record)
		return 0;
	if (!seconds) {
		req->record_profile_ms = MOUNT_PROFILE_WINDOW_DEFAULT_MS;
		return 0;
	}
	errno = 0;
	s = strtod(seconds, &end);
	if (errno != 0 || end == seconds || *end || !(s > 0 && s <= MOUNT_PROFILE_WINDOW_MAX_S))
		return log_error_errno(-ERR_USAGE, "invalid --record-profile '%s': use seconds "
				       "above 0, at most %d", seconds, MOUNT_PROFILE_WINDOW_MAX_S);
	req->record_profile_ms = (uint64_t)(s * 1000) ?: 1;
	return 0;
}

/* The scheme the pull spoke to @ref's own registry -- its origin, the location registries.conf
 * rewrites it to if it does -- ("http" or "https"); NULL when the pull sent nothing or got the
 * image from a mirror (img->registry_scheme is "SCHEME NAME", NAME the endpoint's
 * "host/repository"). */
static const char *origin_scheme(const struct reference *ref, const struct image *img)
{
	const char *s = img->registry_scheme, *name = s ? strchr(s, ' ') : NULL;
	_cleanup_free_ char *origin = NULL;

	if (!name || source_origin_name(ref, &origin) < 0 || !streq(name + 1, origin))
		return NULL;
	return startswith(s, "https ") ? "https" : startswith(s, "http ") ? "http" : NULL;
}

/* The profile to use: kept here, else published.  -ENOENT: none (no warning).  The registry
 * is asked only when the pull asked the image's own registry too: a mount of a cached image
 * stays one that works offline and sends nothing, as its tag resolution does (--pull=always
 * asks again), and one served by a mirror does not reach for the origin. */
static int profile_find(const struct mount_request *req, const struct reference *ref,
			struct cache *cache, const struct image *img, struct start_profile *ret)
{
	struct registry_options ro = mount_request_registry_options(req);
	struct config cfg = {};
	int r;

	r = profile_load(cache, img->manifest_digest, NULL, NULL, ret);
	if (r != -ENOENT || ref->transport != REFERENCE_DOCKER)
		return r;
	/* The pull looked beside the TOCs: what it found is kept now (the image is recorded), its
	 * failure is reported as the mount's own would be, and nothing is asked twice. */
	if (img->profile_lookup.looked && img->profile_lookup.r < 0)
		return error_restore(img->profile_lookup.r, &img->profile_lookup.error);
	if (img->profile_lookup.looked)
		return profile_keep_fetched(cache, img->manifest_digest,
					    &img->profile_lookup.fetched, ret);
	ro.scheme = origin_scheme(ref, img);
	if (!ro.scheme)
		return -ENOENT;
	r = config_read(&cfg, NULL);
	if (r < 0)
		return error_set(r, "cannot read the configuration file '%s'", config_path());
	return profile_fetch(cache, ref, NULL, &ro, &cfg.artifacts, img->manifest_digest, ret);
}

static int use_profile(struct mount_profile *mp, const struct mount_request *req,
		       const struct reference *ref, struct cache *cache, const struct image *img,
		       const struct fs_tree *tree)
{
	_cleanup_(start_profile_done) struct start_profile sp = {};
	int r;

	r = profile_find(req, ref, cache, img, &sp);
	if (r == -ENOENT)
		return 0;
	/* A bad profile is worth a line; a registry that did not answer the lookup (the pull
	 * itself got through) is not: the mount goes on as it would have without profiles. */
	if (r == -EBADMSG || r == -EFBIG || r == -EPROTO) {
		log_warning("start profile of '%s' not used: %s", req->ref, error_take(r));
		return 0;
	}
	if (r < 0) {
		log_debug("start profile of '%s' not looked up: %s", req->ref, error_take(r));
		return 0;
	}
	r = fs_profile_use(mp->profile, tree, mp->image, mp->layers, &sp);
	if (r == -ENOMEM)
		return r;
	if (r < 0 || (r == 0 && sp.n_chunks > 0))
		log_warning("start profile of '%s' not used: none of its %zu chunks is one of the "
			    "image's", req->ref, sp.n_chunks);
	else if ((size_t)r < sp.n_chunks)
		log_debug("start profile of '%s': %zu of its %zu chunks are not the image's, "
			  "skipped", req->ref, sp.n_chunks - (size_t)r, sp.n_chunks);
	return 0;
}

int mount_profile_setup(struct mount_profile *mp, const struct mount_request *req,
			const struct reference *ref, struct cache *cache, const struct image *img,
			const struct fs_tree *tree)
{
	int r;

	if (!req->record_profile_ms && req->no_profile)
		return 0;
	mp->bs = cache->bs;
	mp->recording = req->record_profile_ms > 0;
	mp->cache_dir = strdup(cache->dir);
	mp->image = strdup(img->manifest_digest);
	if (!mp->cache_dir || !mp->image)
		return -ENOMEM;
	for (size_t i = 0; i < img->manifest->n_layers; i++)
		if (strv_push(&mp->layers, img->manifest->layers[i].digest) < 0)
			return -ENOMEM;
	r = fs_profile_new(&mp->profile);
	if (r < 0)
		return r;
	if (mp->recording)
		return fs_profile_record(mp->profile, req->record_profile_ms);
	return use_profile(mp, req, ref, cache, img, tree);
}

/* Keeps what was recorded as the image's profile. */
static void profile_save(struct mount_profile *mp)
{
	_cleanup_(start_profile_done) struct start_profile sp = {};
	_cleanup_(cache_freep) struct cache *c = NULL;
	char digest[DIGEST_STRING_MAX];
	int r;

	r = fs_profile_record_take(mp->profile, mp->image, mp->layers, &sp);
	if (r == -EALREADY)
		return;
	if (r == -ENODATA) {
		log_info("start profile of %s: nothing was read, none kept", mp->image);
		return;
	}
	if (r >= 0)
		r = cache_open(mp->cache_dir, &c);
	if (r >= 0)
		r = profile_store(c, &sp, PROFILE_ORIGIN_RECORDED, digest);
	if (r < 0)
		log_warning("cannot keep the start profile of %s: %s", mp->image, error_take(r));
	else
		log_info("start profile of %s kept: %zu chunks, %s", mp->image, sp.n_chunks, digest);
}

static void *saver_thread(void *userdata)
{
	struct mount_profile *mp = userdata;

	while (!__atomic_load_n(&mp->stop, __ATOMIC_ACQUIRE)) {
		if (fs_profile_record_done(mp->profile)) {
			profile_save(mp);
			break;
		}
		sleep_ms(100);
	}
	return NULL;
}

void mount_profile_start(struct mount_profile *mp, struct fetcher *f)
{
	int r = 0;

	if (!mp->profile)
		return;
	if (mp->recording) {
		r = -pthread_create(&mp->saver, NULL, saver_thread, mp);
		mp->saver_running = r >= 0;
	} else if (f) {
		r = fs_profile_fetch_start(mp->profile, f, mp->bs);
	}
	if (r < 0)
		log_warning_errno(r, "cannot start the start profile's %s, ignoring: %m",
				  mp->recording ? "recording" : "fetch");
}

void mount_profile_stop(struct mount_profile *mp)
{
	if (!mp->profile)
		return;
	__atomic_store_n(&mp->stop, true, __ATOMIC_RELEASE);
	if (mp->saver_running)
		(void)pthread_join(mp->saver, NULL);
	mp->saver_running = false;
	if (mp->recording)
		profile_save(mp);
	fs_profile_fetch_stop(mp->profile);
}

void mount_profile_done(struct mount_profile *mp)
{
	mp->profile = fs_profile_free(mp->profile);
	free(mp->cache_dir);
	free(mp->image);
	mp->layers = strv_free(mp->layers);
	*mp = (struct mount_profile) {};
}
