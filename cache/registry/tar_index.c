/*
 * cache/registry/tar_index.c: see tar_index.h.  Reads one 512-byte header per member and skips the
 * data, so scanning a multi-gigabyte image archive costs a few reads per member.  Archives
 * come from the user's disk and are not trusted: every field is range-checked, and names and
 * PAX records have ceilings.
 */
#include "tar_index.h"

#include <limits.h>

#define BLOCK 512
#define LONG_NAME_MAX 4096
#define PAX_MAX (64u * 1024)
#define LINK_HOPS_MAX 8

struct pending {
	char *name, *link;     /* from a GNU 'L'/'K' member or PAX records, for the next header */
	bool has_size;
	uint64_t size;
};

static void pending_done(struct pending *p)
{
	free(p->name);
	free(p->link);
	*p = (struct pending) {};
}

static void tar_index_done(struct tar_index *t)
{
	for (size_t i = 0; i < t->n_members; i++) {
		free(t->members[i].name);
		free(t->members[i].link);
	}
	free(t->members);
}
DEFINE_FREE_FUNC(struct tar_index, tar_index_free, tar_index_done);

int tar_pread(int fd, void *buf, size_t len, uint64_t offset)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = pread(fd, (char *)buf + done, len - done, (off_t)(offset + done));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -ENODATA;
		done += n;
	}
	return 0;
}

/* An octal field (NUL- or space-terminated, leading spaces allowed) or GNU base-256. */
static int parse_number(const unsigned char *f, size_t n, uint64_t *ret)
{
	uint64_t v = 0;
	size_t i = 0;

	if (f[0] & 0x80) {
		if (f[0] != 0x80)
			return -EPROTO;  /* negative, or more than 64 bits */
		for (i = 1; i < n; i++) {
			if (v >> 56)
				return -EPROTO;
			v = v << 8 | f[i];
		}
		*ret = v;
		return 0;
	}
	while (i < n && f[i] == ' ')
		i++;
	for (; i < n && f[i] >= '0' && f[i] <= '7'; i++) {
		if (v >> 61)
			return -EPROTO;
		v = v * 8 + (f[i] - '0');
	}
	if (i < n && f[i] != 0 && f[i] != ' ')
		return -EPROTO;
	*ret = v;
	return 0;
}

static bool header_checksum_ok(const unsigned char *h)
{
	uint64_t want;
	long sum_unsigned = 0, sum_signed = 0;

	if (parse_number(h + 148, 8, &want) < 0)
		return false;
	for (size_t i = 0; i < BLOCK; i++) {
		unsigned char c = (i >= 148 && i < 156) ? ' ' : h[i];

		sum_unsigned += c;
		sum_signed += (signed char)c;
	}
	/* Some old tars summed signed chars. */
	return (uint64_t)sum_unsigned == want || (uint64_t)sum_signed == want;
}

static bool block_is_zero(const unsigned char *h)
{
	for (size_t i = 0; i < BLOCK; i++)
		if (h[i])
			return false;
	return true;
}

/* Strips "./", leading '/' and trailing '/', and collapses "//" and "/./". */
static char *name_normalise(const char *s)
{
	char *out = malloc(strlen(s) + 1), *o = out;

	if (!out)
		return NULL;
	while (*s) {
		const char *end = strchrnul(s, '/');
		size_t n = end - s;

		if (n > 0 && !(n == 1 && s[0] == '.')) {
			if (o != out)
				*o++ = '/';
			memcpy(o, s, n);
			o += n;
		}
		s = *end ? end + 1 : end;
	}
	*o = 0;
	return out;
}

static char *field_string(const unsigned char *f, size_t n)
{
	return strndup((const char *)f, n);
}

/* PAX records "LEN key=value\n": path, linkpath and size apply to the next member. */
static int pax_parse(const char *buf, size_t len, struct pending *p)
{
	size_t i = 0;

	while (i < len) {
		size_t rec_len = 0, j = i;
		const char *key, *eq, *end;

		while (j < len && buf[j] >= '0' && buf[j] <= '9' && rec_len < PAX_MAX)
			rec_len = rec_len * 10 + (buf[j++] - '0');
		if (j >= len || buf[j] != ' ' || rec_len == 0 || rec_len > len - i)
			return -EPROTO;
		key = buf + j + 1;
		end = buf + i + rec_len - 1;  /* the '\n' */
		if (*end != '\n' || key >= end)
			return -EPROTO;
		eq = memchr(key, '=', end - key);
		if (!eq)
			return -EPROTO;
		if ((size_t)(eq - key) == 4 && strncmp(key, "path", 4) == 0) {
			free(p->name);
			p->name = strndup(eq + 1, end - eq - 1);
			if (!p->name)
				return -ENOMEM;
		} else if ((size_t)(eq - key) == 8 && strncmp(key, "linkpath", 8) == 0) {
			free(p->link);
			p->link = strndup(eq + 1, end - eq - 1);
			if (!p->link)
				return -ENOMEM;
		} else if ((size_t)(eq - key) == 4 && strncmp(key, "size", 4) == 0) {
			uint64_t v = 0;

			for (const char *c = eq + 1; c < end; c++) {
				if (*c < '0' || *c > '9' || v > (UINT64_MAX - 9) / 10)
					return -EPROTO;
				v = v * 10 + (*c - '0');
			}
			p->has_size = true;
			p->size = v;
		}
		i += rec_len;
	}
	return 0;
}

/* The data of a GNU 'L'/'K' or PAX member, NUL-terminated. */
static int read_meta(int fd, uint64_t offset, uint64_t size, size_t max, char **ret)
{
	_cleanup_free_ char *buf = NULL;
	int r;

	if (size > max)
		return -EPROTO;
	buf = malloc(size + 1);
	if (!buf)
		return -ENOMEM;
	r = tar_pread(fd, buf, size, offset);
	if (r < 0)
		return r;
	buf[size] = 0;
	*ret = TAKE_PTR(buf);
	return 0;
}

static int add_member(struct tar_index *t, const unsigned char *h, struct pending *p,
		      uint64_t offset, uint64_t size)
{
	_cleanup_free_ char *raw = NULL;
	struct tar_member *m;

	if (p->name) {
		raw = TAKE_PTR(p->name);
	} else if (memcmp(h + 257, "ustar", 5) == 0 && h[345]) {
		_cleanup_free_ char *prefix = field_string(h + 345, 155), *name = field_string(h, 100);

		if (!prefix || !name || asprintf(&raw, "%s/%s", prefix, name) < 0)
			return -ENOMEM;
	} else {
		raw = field_string(h, 100);
	}
	if (!raw)
		return -ENOMEM;

	if (GREEDY_REALLOC(t->members, t->members_allocated, t->n_members + 1) < 0)
		return -ENOMEM;
	m = &t->members[t->n_members];
	*m = (struct tar_member) {
		.type = h[156] ? (char)h[156] : '0', .offset = offset, .size = size,
	};
	m->name = name_normalise(raw);
	if (!m->name)
		return -ENOMEM;
	if (m->type == '1' || m->type == '2') {
		m->link = p->link ? TAKE_PTR(p->link) : field_string(h + 157, 100);
		if (!m->link) {
			free(m->name);
			return -ENOMEM;
		}
	}
	t->n_members++;
	return 0;
}

int tar_index_scan(int fd, uint64_t file_size, struct tar_index **ret)
{
	_cleanup_(tar_index_freep) struct tar_index *t = NULL;
	struct pending p = {};
	uint64_t pos = 0;
	int r = 0;

	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;

	while (pos < file_size) {
		unsigned char h[BLOCK];
		uint64_t size, data;
		char type;

		if (file_size - pos < BLOCK) {
			r = -ENODATA;
			break;
		}
		r = tar_pread(fd, h, BLOCK, pos);
		if (r < 0)
			break;
		if (block_is_zero(h))
			break;  /* end of archive (a second zero block or padding follows) */
		if (!header_checksum_ok(h) || parse_number(h + 124, 12, &size) < 0) {
			r = -EPROTO;
			break;
		}
		if (p.has_size)
			size = p.size;
		data = pos + BLOCK;
		if (size > file_size - data) {
			r = -ENODATA;
			break;
		}
		type = (char)h[156];
		if (type == 'L' || type == 'K') {
			char **dst = type == 'L' ? &p.name : &p.link;

			free(*dst);
			*dst = NULL;
			r = read_meta(fd, data, size, LONG_NAME_MAX, dst);
		} else if (type == 'x') {
			_cleanup_free_ char *pax = NULL;

			r = read_meta(fd, data, size, PAX_MAX, &pax);
			if (r >= 0)
				r = pax_parse(pax, size, &p);
		} else if (type == 'g') {
			r = 0;  /* global PAX records name no member */
		} else {
			r = add_member(t, h, &p, data, size);
			pending_done(&p);
		}
		if (r < 0)
			break;
		/* Round up to the next block, without overflowing near UINT64_MAX. */
		pos = data + size;
		if (pos % BLOCK)
			pos += BLOCK - pos % BLOCK;
	}
	pending_done(&p);
	if (r < 0)
		return r;
	if (t->n_members == 0 && pos == 0)
		return -EPROTO;  /* empty or all zeros: nothing that says "tar" */
	*ret = TAKE_PTR(t);
	return 0;
}

static const struct tar_member *find_exact(const struct tar_index *t, const char *name)
{
	for (size_t i = t->n_members; i > 0; i--)
		if (streq(t->members[i - 1].name, name))
			return &t->members[i - 1];
	return NULL;
}

/* A symbolic link's target, relative to the link's directory, as an archive name. */
static char *symlink_resolve(const char *link_name, const char *target)
{
	_cleanup_free_ char *joined = NULL;
	const char *slash = strrchr(link_name, '/');
	char *out, *o;
	const char *s;

	if (target[0] == '/' || !slash)
		joined = strdup(target);
	else if (asprintf(&joined, "%.*s/%s", (int)(slash - link_name), link_name, target) < 0)
		joined = NULL;
	if (!joined)
		return NULL;

	/* Lexically resolve "." and ".."; ".." above the top stays at the top. */
	out = malloc(strlen(joined) + 1);
	if (!out)
		return NULL;
	o = out;
	*o = 0;
	for (s = joined; *s;) {
		const char *end = strchrnul(s, '/');
		size_t n = end - s;

		if (n == 2 && s[0] == '.' && s[1] == '.') {
			char *up = strrchr(out, '/');

			o = up ? up : out;
			*o = 0;
		} else if (n > 0 && !(n == 1 && s[0] == '.')) {
			if (o != out)
				*o++ = '/';
			memcpy(o, s, n);
			o += n;
			*o = 0;
		}
		s = *end ? end + 1 : end;
	}
	return out;
}

const struct tar_member *tar_index_find(const struct tar_index *t, const char *name)
{
	_cleanup_free_ char *cur = name_normalise(name);

	for (unsigned hop = 0; cur && hop <= LINK_HOPS_MAX; hop++) {
		const struct tar_member *m = find_exact(t, cur);
		char *next;

		if (!m)
			return NULL;
		if (m->type == '0' || m->type == '7')
			return m;
		if (m->type == '1')
			next = name_normalise(m->link);
		else if (m->type == '2')
			next = symlink_resolve(m->name, m->link);
		else
			return NULL;
		free(cur);
		cur = next;
	}
	return NULL;
}
