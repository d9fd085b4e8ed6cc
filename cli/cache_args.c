/* cli/cache_args.c: what the cache verbs share (see cache_args.h). */
#include "cache_args.h"

#include <stdio.h>

#include "cache/base/digest.h"
#include "cache/base/error.h"
#include "cache/base/log.h"
#include "cache/base/util.h"
#include "cache/format/reference.h"
#include "cli/exit_status.h"

int cli_cache_open(const char *dir, struct cache **ret)
{
	_cleanup_free_ char *d = NULL;
	int r;

	if (dir)
		d = strdup(dir);
	else if (cache_dir_default(&d) < 0)
		d = NULL;
	if (!d) {
		log_error("cannot determine the cache directory; use --cache-dir");
		return -ERR_CACHE;
	}
	r = cache_open(d, ret);
	if (r < 0) {
		log_error("cannot open cache '%s': %s", d, error_take(r));
		return -ERR_CACHE;
	}
	return 0;
}

int cli_cache_open_writable(const char *dir, const char *verb, struct cache **ret)
{
	_cleanup_(cache_freep) struct cache *c = NULL;
	int r;

	r = cli_cache_open(dir, &c);
	if (r < 0)
		return r;
	if (c->read_only) {
		log_error("cannot %s cache '%s': it is read-only", verb, c->dir);
		return -ERR_CACHE;
	}
	*ret = TAKE_PTR(c);
	return 0;
}

void ref_query_done(struct ref_query *q)
{
	strv_free(q->refs);
	strv_free(q->platforms);
	strv_free(q->digests);
}

static int ref_query_match(void *userdata, const struct index_db_ref_row *row)
{
	struct ref_query *q = userdata;
	int r;

	if (!streq(row->ref, q->want) || (q->platform && !streq(row->platform, q->platform)))
		return 0;
	r = strv_push(&q->refs, row->ref);
	if (r >= 0)
		r = strv_push(&q->platforms, row->platform);
	if (r >= 0)
		r = strv_push(&q->digests, row->digest);
	return r;
}

int ref_query_resolve(struct cache *c, const char *arg, const char *platform,
		      struct ref_query *q, char **ret_canonical)
{
	_cleanup_(reference_freep) struct reference *ref = NULL;
	_cleanup_free_ char *canonical = NULL;
	int r;

	*q = (struct ref_query) { .platform = platform };
	if (startswith(arg, "sha256:")) {
		if (digest_validate(arg) < 0)
			return -EINVAL;
		r = index_db_image_get(c->db, arg, NULL, NULL, NULL, NULL, NULL);
		if (r < 0)
			return r;
		canonical = strdup(arg);
		if (!canonical)
			return -ENOMEM;
		r = strv_push(&q->digests, arg);
		if (r < 0)
			return r;
		*ret_canonical = TAKE_PTR(canonical);
		return 0;
	}
	r = reference_parse(arg, &ref);
	if (r < 0)
		return -EINVAL;
	canonical = reference_to_string(ref);
	if (!canonical)
		return -ENOMEM;
	q->want = canonical;
	r = index_db_ref_foreach(c->db, ref_query_match, q);
	q->want = NULL;
	if (r >= 0 && !q->digests)
		r = -ENOENT;
	if (r < 0) {
		ref_query_done(q);
		return r;
	}
	*ret_canonical = TAKE_PTR(canonical);
	return 0;
}
