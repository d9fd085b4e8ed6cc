/* cache/source.c: see source.h.  A thin dispatch over one registry client for now. */
#include "source.h"

struct source {
	struct registry *registry;
};

int source_new(const struct reference *ref, const struct registry_options *o,
	       struct source **ret)
{
	_cleanup_free_ struct source *s = NULL;
	int r;

	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	r = registry_new(ref, o, &s->registry);
	if (r < 0)
		return r;
	*ret = TAKE_PTR(s);
	return 0;
}

struct source *source_free(struct source *s)
{
	if (!s)
		return NULL;
	registry_free(s->registry);
	free(s);
	return NULL;
}

const char *source_last_error(struct source *s)
{
	return registry_last_error(s->registry);
}

void source_get_counters(struct source *s, uint64_t *ret_requests, uint64_t *ret_bytes)
{
	registry_get_counters(s->registry, ret_requests, ret_bytes);
}

const char *source_scheme(struct source *s)
{
	return registry_scheme(s->registry);
}

int source_ping(struct source *s)
{
	return registry_ping(s->registry);
}

int source_get_manifest(struct source *s, const char *tag_or_digest, char **ret_buf,
			size_t *ret_len, char **ret_content_type, char ret_digest[72])
{
	return registry_get_manifest(s->registry, tag_or_digest, ret_buf, ret_len,
				     ret_content_type, ret_digest);
}

int source_get_blob(struct source *s, const char *digest, size_t max, char **ret_buf,
		    size_t *ret_len)
{
	return registry_get_blob(s->registry, digest, max, ret_buf, ret_len);
}

int source_stream_blob(struct source *s, const char *digest,
		       int (*sink)(void *userdata, const void *buf, size_t n), void *userdata)
{
	return registry_stream_blob(s->registry, digest, sink, userdata);
}

int source_get_blob_range(struct source *s, const char *digest, uint64_t offset, size_t len,
			  void *buf)
{
	return registry_get_blob_range(s->registry, digest, offset, len, buf);
}

int source_head_manifest(struct source *s, const char *tag_or_digest, char ret_digest[72],
			 char **ret_content_type)
{
	return registry_head_manifest(s->registry, tag_or_digest, ret_digest, ret_content_type);
}

void source_expect_blob_size(struct source *s, const char *digest, uint64_t size)
{
	registry_expect_blob_size(s->registry, digest, size);
}
