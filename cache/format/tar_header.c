/*
 * cache/format/tar_header.c: one tar entry's records parsed from memory (tar_header.h), as
 * layer_tar.c indexes them through libarchive: ustar and GNU headers, pax 'x' records (path,
 * linkpath, size, uid, gid, mtime, SCHILY.devmajor/devminor), GNU long names ('L', 'K'), pax
 * global records skipped.  Anything else (sparse files, volume headers, a bad checksum) is
 * refused: the caller then distrusts whatever pointed at these bytes.
 *
 * Load: the headers between two files of a layer, a few KiB, once per file.
 */
#include "tar_header.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cache/base/error.h"
#include "cache/base/util.h"

#define BLOCK 512
#define EXTENSIONS_MAX 16       /* pax and long-name records before one header */
#define PAX_VALUE_MAX (64U * 1024)

/* What the records before the header override. */
struct overrides {
	char *path, *link;
	bool has_size, has_uid, has_gid, has_mtime, has_major, has_minor;
	uint64_t size, uid, gid, major, minor;
	int64_t mtime_sec;
	uint32_t mtime_nsec;
};

static void overrides_done(struct overrides *o)
{
	free(o->path);
	free(o->link);
}

void tar_header_done(struct tar_header *h)
{
	free(h->path);
	free(h->link);
	*h = (struct tar_header) {};
}

static int bad(const char *what)
{
	return error_set(-EBADMSG, "tar header: %s", what);
}

static uint64_t round_block(uint64_t n)
{
	return (n + BLOCK - 1) / BLOCK * BLOCK;
}

/* An octal field (leading spaces, digits up to a space or NUL), or base-256 (GNU, the first
 * byte's high bit set; negative values refused). */
static int number(const uint8_t *p, size_t n, uint64_t *ret)
{
	uint64_t v = 0;
	size_t i = 0;

	if (p[0] & 0x80) {
		if (p[0] != 0x80)
			return bad("a negative or oversized base-256 number");
		for (i = 1; i < n; i++) {
			if (v >> 56)
				return bad("a base-256 number overflows");
			v = v << 8 | p[i];
		}
		*ret = v;
		return 0;
	}
	while (i < n && p[i] == ' ')
		i++;
	for (; i < n && p[i] >= '0' && p[i] <= '7'; i++) {
		if (v >> 61)
			return bad("an octal number overflows");
		v = v << 3 | (uint64_t)(p[i] - '0');
	}
	if (i < n && p[i] != ' ' && p[i] != '\0')
		return bad("a number field holds something else");
	*ret = v;
	return 0;
}

/* The checksum is the sum of the header's bytes with its own field read as spaces; old tars
 * summed signed bytes, which libarchive accepts too. */
static bool checksum_ok(const uint8_t *h)
{
	uint64_t want;
	long u = 0, s = 0;

	if (number(h + 148, 8, &want) < 0)
		return false;
	for (size_t i = 0; i < BLOCK; i++) {
		uint8_t b = i >= 148 && i < 156 ? ' ' : h[i];

		u += b;
		s += (signed char)b;
	}
	return (uint64_t)u == want || (s >= 0 && (uint64_t)s == want);
}

static int decimal(const char *s, size_t n, uint64_t *ret)
{
	uint64_t v = 0;

	if (n == 0 || n > 19)
		return bad("a pax number is empty or too long");
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return bad("a pax number holds something else");
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	*ret = v;
	return 0;
}

/* "SECONDS[.FRACTION]", as libarchive reads it (the fraction cut to nanoseconds). */
static int pax_time(const char *s, size_t n, struct overrides *o)
{
	const char *dot = memchr(s, '.', n);
	size_t whole = dot ? (size_t)(dot - s) : n;
	uint64_t sec;
	uint32_t nsec = 0, scale = 100000000;
	int r;

	r = decimal(s, whole, &sec);
	if (r < 0 || sec > INT64_MAX)
		return r < 0 ? r : bad("a pax mtime overflows");
	for (size_t i = whole + 1; dot && i < n; i++, scale /= 10) {
		if (s[i] < '0' || s[i] > '9')
			return bad("a pax mtime holds something else");
		nsec += (uint32_t)(s[i] - '0') * scale;
	}
	o->mtime_sec = (int64_t)sec;
	o->mtime_nsec = nsec;
	o->has_mtime = true;
	return 0;
}

static int pax_string(const char *v, size_t n, char **ret)
{
	free(*ret);
	*ret = strndup(v, n);
	return *ret ? 0 : -ENOMEM;
}

static int pax_record(const char *key, size_t kn, const char *v, size_t vn, struct overrides *o)
{
#define KEY(s) (kn == sizeof(s) - 1 && memcmp(key, s, kn) == 0)
	if (KEY("path"))
		return pax_string(v, vn, &o->path);
	if (KEY("linkpath"))
		return pax_string(v, vn, &o->link);
	if (KEY("size"))
		return o->has_size = true, decimal(v, vn, &o->size);
	if (KEY("uid"))
		return o->has_uid = true, decimal(v, vn, &o->uid);
	if (KEY("gid"))
		return o->has_gid = true, decimal(v, vn, &o->gid);
	if (KEY("mtime"))
		return pax_time(v, vn, o);
	if (KEY("SCHILY.devmajor"))
		return o->has_major = true, decimal(v, vn, &o->major);
	if (KEY("SCHILY.devminor"))
		return o->has_minor = true, decimal(v, vn, &o->minor);
	if (kn >= 11 && memcmp(key, "GNU.sparse.", 11) == 0)
		return bad("a sparse file");
	return 0;  /* atime, ctime, names, xattrs: not compared */
#undef KEY
}

/* "LENGTH KEY=VALUE\n" records filling @n bytes. */
static int pax_parse(const char *p, size_t n, struct overrides *o)
{
	while (n > 0 && *p != '\0') {
		const char *sp = memchr(p, ' ', n < 21 ? n : 21), *eq;
		uint64_t len;
		int r;

		if (!sp)
			return bad("a pax record has no length");
		r = decimal(p, (size_t)(sp - p), &len);
		if (r < 0)
			return r;
		if (len > n || len < (uint64_t)(sp - p) + 3 || p[len - 1] != '\n')
			return bad("a pax record is cut short");
		eq = memchr(sp + 1, '=', (size_t)(p + len - 1 - (sp + 1)));
		if (!eq || eq == sp + 1 || (size_t)(p + len - 1 - (eq + 1)) > PAX_VALUE_MAX)
			return bad("a pax record has no key");
		r = pax_record(sp + 1, (size_t)(eq - sp - 1), eq + 1, (size_t)(p + len - 1 - eq - 1),
			       o);
		if (r < 0)
			return r;
		p += len;
		n -= len;
	}
	return 0;
}

/* A GNU long name record's data: the name, NUL-terminated or not. */
static int long_name(const uint8_t *p, size_t n, char **ret)
{
	free(*ret);
	*ret = strndup((const char *)p, n);
	return *ret ? 0 : -ENOMEM;
}

static int header_type(uint8_t flag, const char *raw_path, enum entry_type *ret)
{
	size_t n = strlen(raw_path);

	switch (flag) {
	case '0': case '\0':
		/* Old tars mark a directory by a trailing slash only. */
		*ret = n > 0 && raw_path[n - 1] == '/' ? ENTRY_DIR : ENTRY_REG;
		return 0;
	case '7': *ret = ENTRY_REG; return 0;
	case '1': *ret = ENTRY_HARDLINK; return 0;
	case '2': *ret = ENTRY_SYMLINK; return 0;
	case '3': *ret = ENTRY_CHR; return 0;
	case '4': *ret = ENTRY_BLK; return 0;
	case '5': *ret = ENTRY_DIR; return 0;
	case '6': *ret = ENTRY_FIFO; return 0;
	default: return bad("an entry of an unsupported type");
	}
}

/* The name fields of the ustar header @h: a POSIX ustar prefix joined to the name. */
static int header_path(const uint8_t *h, char **ret)
{
	size_t nl = strnlen((const char *)h, 100), pl = 0;
	char *p;

	if (memcmp(h + 257, "ustar\0", 6) == 0)
		pl = strnlen((const char *)h + 345, 155);
	p = malloc(pl + 1 + nl + 1);
	if (!p)
		return -ENOMEM;
	if (pl > 0) {
		memcpy(p, h + 345, pl);
		p[pl++] = '/';
	}
	memcpy(p + pl, h, nl);
	p[pl + nl] = '\0';
	*ret = p;
	return 0;
}

static int normalized(char **path)
{
	if (entry_path_normalize(*path) < 0)
		return bad("a path escapes the root");
	return 0;
}

/* The entry's fields from its ustar header @h and the records before it. */
static int header_fields(const uint8_t *h, struct overrides *o, struct tar_header *t)
{
	uint64_t mode, uid, gid, size, mtime, major, minor;
	int r;

	if (number(h + 100, 8, &mode) < 0 || number(h + 108, 8, &uid) < 0 ||
	    number(h + 116, 8, &gid) < 0 || number(h + 124, 12, &size) < 0 ||
	    number(h + 136, 12, &mtime) < 0 || number(h + 329, 8, &major) < 0 ||
	    number(h + 337, 8, &minor) < 0)
		return -EBADMSG;
	if (o->path) {
		t->path = TAKE_PTR(o->path);
	} else {
		r = header_path(h, &t->path);
		if (r < 0)
			return r;
	}
	r = header_type(h[156], t->path, &t->type);
	if (r >= 0)
		r = normalized(&t->path);
	if (r < 0)
		return r;
	uid = o->has_uid ? o->uid : uid;
	gid = o->has_gid ? o->gid : gid;
	if (uid > UINT32_MAX || gid > UINT32_MAX)
		return bad("an owner is out of range");
	*t = (struct tar_header) { .path = t->path, .type = t->type, .mode = (uint32_t)mode & 07777,
				   .uid = (uint32_t)uid, .gid = (uint32_t)gid,
				   .size = o->has_size ? o->size : size,
				   .mtime_sec = o->has_mtime ? o->mtime_sec : (int64_t)mtime,
				   .mtime_nsec = o->has_mtime ? o->mtime_nsec : 0,
				   .dev_major = (uint32_t)(o->has_major ? o->major : major),
				   .dev_minor = (uint32_t)(o->has_minor ? o->minor : minor) };
	if (t->type == ENTRY_SYMLINK || t->type == ENTRY_HARDLINK) {
		t->link = o->link ? TAKE_PTR(o->link) : strndup((const char *)h + 157, 100);
		if (!t->link)
			return -ENOMEM;
		if (t->type == ENTRY_HARDLINK)
			return normalized(&t->link);
	}
	return 0;
}

/* One extension record (pax or long name) at @h, its data after it; 1 if @h is the entry's
 * own header instead. */
static int extension(const uint8_t *h, const uint8_t *data, uint64_t size, size_t avail,
		     struct overrides *o)
{
	bool ext = h[156] == 'x' || h[156] == 'g' || h[156] == 'L' || h[156] == 'K';

	if (ext && (size > PAX_VALUE_MAX * 16 || round_block(size) > avail))
		return bad("an extension record runs past what was read");
	switch (h[156]) {
	case 'x':
		return pax_parse((const char *)data, size, o);
	case 'g':
		return 0;
	case 'L':
		return long_name(data, size, &o->path);
	case 'K':
		return long_name(data, size, &o->link);
	default:
		return 1;
	}
}

static int next_entry(const uint8_t *buf, size_t len, size_t *pos, struct overrides *o,
		      struct tar_header *t)
{
	for (unsigned i = 0; i <= EXTENSIONS_MAX; i++) {
		const uint8_t *h = buf + *pos;
		uint64_t size;
		int r;

		if (len - *pos < BLOCK)
			return bad("the records run past what was read");
		if (!checksum_ok(h))
			return bad("a header's checksum does not match (not a header)");
		r = number(h + 124, 12, &size);
		if (r < 0)
			return r;
		r = extension(h, h + BLOCK, size, len - *pos - BLOCK, o);
		if (r < 0)
			return r;
		if (r == 0) {
			*pos += BLOCK + round_block(size);
			continue;
		}
		r = header_fields(h, o, t);
		if (r < 0)
			return r;
		*pos += BLOCK;
		t->data_off = *pos;
		if (t->type == ENTRY_SYMLINK)
			t->size = 0;
		else if (t->type != ENTRY_REG)
			*pos += round_block(t->size) <= len - *pos ? round_block(t->size) : len - *pos;
		return 0;
	}
	return bad("too many extension records before one header");
}

int tar_header_next(const uint8_t *buf, size_t len, size_t *pos, struct tar_header *ret)
{
	struct overrides o = {};
	struct tar_header t = {};
	int r;

	if (*pos > len)
		return bad("the records run past what was read");
	r = next_entry(buf, len, pos, &o, &t);
	overrides_done(&o);
	if (r < 0) {
		tar_header_done(&t);
		return r;
	}
	*ret = t;
	return 0;
}

static bool str_eq(const char *a, const char *b)
{
	return a && b ? streq(a, b) : a == b;
}

bool tar_header_matches(const struct tar_header *h, const struct entry *e)
{
	bool dev = e->type == ENTRY_CHR || e->type == ENTRY_BLK;

	return streq(h->path, e->path) && h->type == e->type && h->mode == e->mode &&
	       h->uid == e->uid && h->gid == e->gid && h->mtime_sec == e->mtime_sec &&
	       h->mtime_nsec == e->mtime_nsec && str_eq(h->link, e->link_target) &&
	       (e->type != ENTRY_REG || h->size == e->size) &&
	       (!dev || (h->dev_major == e->dev_major && h->dev_minor == e->dev_minor));
}
