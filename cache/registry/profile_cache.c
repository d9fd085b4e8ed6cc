/*
 * cache/registry/profile_cache.c: start profiles as the cache keeps and fetches them
 * (profile_cache.h).
 * Nothing in a profile is trusted: a fetched one is bounded and parsed before it is kept, a
 * kept one is verified against its digest and parsed again when it is read, and what its chunks
 * claim is checked against the image by the mount that uses it (fs/profile.c).
 */
#include "profile_cache.h"

#include <errno.h>
#include <string.h>

#include "cache/base/error.h"
#include "cache/base/log.h"
#include "cache/base/util.h"
#include "cache/store/blob_store.h"
#include "cache/store/index_db.h"

static int store_raw(struct cache *c, const char *image, const void *buf, size_t len,
		     const char *origin, char ret_digest[DIGEST_STRING_MAX])
{
	_cleanup_(blob_txn_abortp) struct blob_txn *t = NULL;
	int r;

	r = blob_txn_begin(c->bs, &t);
	if (r >= 0)
		r = blob_txn_write(t, buf, len);
	if (r >= 0)
		r = blob_txn_commit(TAKE_PTR(t), NULL, ret_digest, NULL);
	if (r < 0)
		return r;
	return index_db_profile_put(c->db, image, ret_digest, origin);
}

int profile_store(struct cache *c, const struct start_profile *p, const char *origin,
		  char ret_digest[DIGEST_STRING_MAX])
{
	_cleanup_free_ char *buf = NULL;
	size_t len;
	int r;

	r = start_profile_format(p, &buf, &len);
	if (r < 0)
		return r;
	return store_raw(c, p->image, buf, len, origin, ret_digest);
}

int profile_load(struct cache *c, const char *image, char **ret_buf, size_t *ret_len,
		 struct start_profile *ret)
{
	_cleanup_free_ char *digest = NULL, *buf = NULL;
	_cleanup_close_ int fd = -EBADF;
	size_t len;
	int r;

	r = index_db_profile_get(c->db, image, &digest, NULL);
	if (r < 0)
		return r;
	r = blob_store_open_blob(c->bs, digest, &fd);
	if (r >= 0)
		r = read_full_fd(fd, START_PROFILE_MAX, &buf, &len);
	if (r >= 0)
		r = digest_verify_buffer(buf, len, digest);
	if (r < 0)
		return error_set(r, "start profile %s of image %s is unreadable", digest, image);
	if (ret) {
		r = start_profile_parse(buf, len, image, ret);
		if (r < 0)
			return r;
	}
	if (ret_buf) {
		*ret_buf = TAKE_PTR(buf);
		*ret_len = len;
	}
	return 0;
}

/* Fetches the first profile @f lists and checks that it parses as one of @image. */
static int fetch_found(struct artifact_found *f, const char *image, struct profile_fetched *ret)
{
	_cleanup_(artifact_list_done) struct artifact_list blobs = {};
	_cleanup_(start_profile_done) struct start_profile sp = {};
	const struct artifact_desc *a = &f->list.items[0], *b = NULL;
	_cleanup_free_ char *buf = NULL;
	size_t len;
	int r;

	r = artifact_get(f->registry, a->digest, image, START_PROFILE_ARTIFACT_TYPE, &blobs);
	if (r < 0)
		return error_wrap(r, "start profile %s in '%s'", a->digest, f->place);
	for (size_t i = 0; i < blobs.n && !b; i++)
		if (blobs.items[i].media_type &&
		    streq(blobs.items[i].media_type, START_PROFILE_MEDIA_TYPE))
			b = &blobs.items[i];
	if (!b)
		return error_set(-EBADMSG, "start profile %s in '%s' holds no %s", a->digest,
				 f->place, START_PROFILE_MEDIA_TYPE);
	r = artifact_fetch_blob(f->registry, b, START_PROFILE_MAX, &buf, &len);
	if (r >= 0)
		r = start_profile_parse(buf, len, image, &sp);
	if (r < 0)
		return error_wrap(r, "start profile %s in '%s'", a->digest, f->place);
	if (strlen(a->digest) >= sizeof(ret->origin))
		return error_set(-EBADMSG, "start profile %s in '%s': bad digest", a->digest,
				 f->place);
	strcpy(ret->origin, a->digest);
	ret->buf = TAKE_PTR(buf);
	ret->len = len;
	return 0;
}

void profile_fetched_done(struct profile_fetched *f)
{
	free(f->buf);
	*f = (struct profile_fetched) {};
}

int profile_fetch_bytes(struct cache *c, const struct reference *ref, struct registry *own,
			const struct registry_options *ro, const struct artifact_config *cfg,
			const char *image, struct profile_fetched *ret)
{
	_cleanup_(artifact_found_done) struct artifact_found f = {};
	int r;

	r = artifact_lookup(c->db, ref, own, ro, cfg, image, START_PROFILE_ARTIFACT_TYPE, &f);
	if (r < 0)
		return error_wrap(r, "cannot look up the start profile of %s", image);
	if (f.list.n == 0)
		return -ENOENT;
	return fetch_found(&f, image, ret);
}

int profile_keep_fetched(struct cache *c, const char *image, const struct profile_fetched *f,
			 struct start_profile *ret)
{
	char digest[DIGEST_STRING_MAX];
	int r;

	r = start_profile_parse(f->buf, f->len, image, ret);
	if (r < 0)
		return error_wrap(r, "start profile %s", f->origin);
	r = store_raw(c, image, f->buf, f->len, f->origin, digest);
	if (r < 0)
		log_debug_errno(r, "cannot keep start profile %s of %s, ignoring: %m", f->origin,
				image);
	return 0;
}

int profile_fetch(struct cache *c, const struct reference *ref, struct registry *own,
		  const struct registry_options *ro, const struct artifact_config *cfg,
		  const char *image, struct start_profile *ret)
{
	_cleanup_(profile_fetched_done) struct profile_fetched f = {};
	int r;

	r = profile_fetch_bytes(c, ref, own, ro, cfg, image, &f);
	if (r < 0)
		return r;
	return profile_keep_fetched(c, image, &f, ret);
}
