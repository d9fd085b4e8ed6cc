/*
 * cache/registry/registries_conf.c: see registries_conf.h.  A small recursive-descent reader over the
 * file's bytes, for the TOML subset registries.conf uses; what it keeps is a list of
 * [[registry]] entries.  Files are a few KiB, read once per registry client: no index, the
 * longest-prefix match is a linear scan.
 */
#include "registries_conf.h"

#include <dirent.h>
#include <stdarg.h>
#include <sys/stat.h>

#include "cache/base/error.h"

#define CONF_FILE_MAX (1u << 20)
#define CONF_DEFAULT "/etc/containers/registries.conf"
#define CONF_DROPIN_DIR "/etc/containers/registries.conf.d"

struct mirror {
	char *location;
	bool insecure;
	enum pull_from_mirror pull;
	bool pull_set;
	unsigned line;
};

struct registry_entry {
	char *prefix;            /* never NULL after validation */
	char *location;          /* NULL or "" for a wildcard prefix */
	bool insecure, blocked, mirror_by_digest_only;
	struct mirror *mirrors;
	size_t n_mirrors, mirrors_allocated;
	char *file;              /* where it was read, for messages */
	unsigned line;           /* of its [[registry]] */
};

struct registries_conf {
	struct registry_entry *entries;
	size_t n, n_allocated;
};

static void entry_done(struct registry_entry *e)
{
	free(e->prefix);
	free(e->location);
	for (size_t i = 0; i < e->n_mirrors; i++)
		free(e->mirrors[i].location);
	free(e->mirrors);
	free(e->file);
	*e = (struct registry_entry) {};
}

static void entries_free(struct registry_entry *e, size_t n)
{
	for (size_t i = 0; i < n; i++)
		entry_done(&e[i]);
	free(e);
}

struct registries_conf *registries_conf_new(void)
{
	return calloc(1, sizeof(struct registries_conf));
}

static void registries_conf_done(struct registries_conf *c)
{
	entries_free(c->entries, c->n);
}
DEFINE_FREE_FUNC(struct registries_conf, registries_conf_free, registries_conf_done);

/* ---- the TOML subset ------------------------------------------------------------------- */

enum table {
	TABLE_ROOT,
	TABLE_REGISTRY,     /* [[registry]] */
	TABLE_MIRROR,       /* [[registry.mirror]] */
	TABLE_V1_INSECURE,  /* [registries.insecure] */
	TABLE_V1_BLOCK,     /* [registries.block] */
	TABLE_OTHER,        /* anything else: parsed, ignored */
};

enum value_type { VALUE_STRING, VALUE_BOOL, VALUE_ARRAY, VALUE_OTHER };

struct value {
	enum value_type type;
	char *string;
	bool boolean;
	char **strings;      /* VALUE_ARRAY of strings only */
	bool array_mixed;    /* VALUE_ARRAY with an element that is not a string */
};

struct parser {
	const char *p, *end;
	const char *file;
	unsigned line;
	enum table table;
	bool v1, v2;
	struct registry_entry *entries;  /* this file's, in order */
	size_t n, n_allocated;
	unsigned v1_line;
	char **v1_insecure, **v1_block;
};

static void value_done(struct value *v)
{
	free(v->string);
	strv_free(v->strings);
	*v = (struct value) {};
}

static int fail(struct parser *ps, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int fail(struct parser *ps, const char *fmt, ...)
{
	_cleanup_free_ char *reason = NULL;
	va_list ap;
	int k;

	va_start(ap, fmt);
	k = vasprintf(&reason, fmt, ap);
	va_end(ap);
	if (k < 0)
		return -ENOMEM;
	return error_set(-EINVAL, "%s:%u: %s", ps->file, ps->line, reason);
}

static bool at_end(const struct parser *ps)
{
	return ps->p >= ps->end;
}

static void skip_blanks(struct parser *ps)
{
	while (!at_end(ps) && (*ps->p == ' ' || *ps->p == '\t'))
		ps->p++;
}

static void skip_comment(struct parser *ps)
{
	if (!at_end(ps) && *ps->p == '#')
		while (!at_end(ps) && *ps->p != '\n')
			ps->p++;
}

/* Blanks, comments and newlines, as allowed between array elements. */
static void skip_space(struct parser *ps)
{
	for (;;) {
		skip_blanks(ps);
		skip_comment(ps);
		if (at_end(ps))
			return;
		if (*ps->p == '\n') {
			ps->line++;
			ps->p++;
		} else if (*ps->p == '\r' && ps->p + 1 < ps->end && ps->p[1] == '\n') {
			ps->p++;
		} else {
			return;
		}
	}
}

/* After a statement: only blanks and a comment may follow on its line. */
static int end_of_line(struct parser *ps)
{
	skip_blanks(ps);
	skip_comment(ps);
	if (!at_end(ps) && *ps->p == '\r')
		ps->p++;
	if (at_end(ps))
		return 0;
	if (*ps->p != '\n')
		return fail(ps, "unexpected '%c' after the value", *ps->p);
	return 0;
}

static void put_utf8(char *out, size_t *n, uint32_t c)
{
	if (c < 0x80) {
		out[(*n)++] = (char)c;
	} else if (c < 0x800) {
		out[(*n)++] = (char)(0xc0 | (c >> 6));
		out[(*n)++] = (char)(0x80 | (c & 0x3f));
	} else if (c < 0x10000) {
		out[(*n)++] = (char)(0xe0 | (c >> 12));
		out[(*n)++] = (char)(0x80 | ((c >> 6) & 0x3f));
		out[(*n)++] = (char)(0x80 | (c & 0x3f));
	} else {
		out[(*n)++] = (char)(0xf0 | (c >> 18));
		out[(*n)++] = (char)(0x80 | ((c >> 12) & 0x3f));
		out[(*n)++] = (char)(0x80 | ((c >> 6) & 0x3f));
		out[(*n)++] = (char)(0x80 | (c & 0x3f));
	}
}

/* A "basic" (escapes) or 'literal' one-line string, at its opening quote. */
static int parse_string(struct parser *ps, char **ret)
{
	char quote = *ps->p;
	_cleanup_free_ char *out = NULL;
	size_t n = 0;

	if (ps->end - ps->p >= 3 && ps->p[1] == quote && ps->p[2] == quote)
		return fail(ps, "multi-line strings are not supported");
	ps->p++;
	/* Escapes only shrink, except \u to at most 4 bytes for 6: the input length is enough. */
	out = malloc((size_t)(ps->end - ps->p) + 1);
	if (!out)
		return -ENOMEM;
	for (;;) {
		unsigned char ch;

		if (at_end(ps) || *ps->p == '\n')
			return fail(ps, "unterminated string");
		ch = (unsigned char)*ps->p++;
		if (ch == (unsigned char)quote)
			break;
		if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
			return fail(ps, "control character in a string");
		if (ch != '\\' || quote == '\'') {
			out[n++] = (char)ch;
			continue;
		}
		if (at_end(ps))
			return fail(ps, "unterminated string");
		ch = (unsigned char)*ps->p++;
		switch (ch) {
		case 'b': out[n++] = '\b'; break;
		case 't': out[n++] = '\t'; break;
		case 'n': out[n++] = '\n'; break;
		case 'f': out[n++] = '\f'; break;
		case 'r': out[n++] = '\r'; break;
		case '"': out[n++] = '"'; break;
		case '\\': out[n++] = '\\'; break;
		case 'u':
		case 'U': {
			unsigned digits = ch == 'u' ? 4 : 8;
			uint32_t c = 0;

			for (unsigned i = 0; i < digits; i++) {
				char h = at_end(ps) ? 0 : *ps->p++;

				if (h >= '0' && h <= '9')
					c = c * 16 + (uint32_t)(h - '0');
				else if (h >= 'a' && h <= 'f')
					c = c * 16 + (uint32_t)(h - 'a' + 10);
				else if (h >= 'A' && h <= 'F')
					c = c * 16 + (uint32_t)(h - 'A' + 10);
				else
					return fail(ps, "bad \\%c escape", ch);
			}
			if (c == 0 || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
				return fail(ps, "bad \\%c escape", ch);
			put_utf8(out, &n, c);
			break;
		}
		default:
			return fail(ps, "unknown escape '\\%c' in a string", ch);
		}
	}
	out[n] = 0;
	*ret = TAKE_PTR(out);
	return 0;
}

static bool bare_key_char(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '_' || c == '-';
}

/* A key, dotted keys joined with '.' ("registry.mirror"). */
static int parse_key(struct parser *ps, char **ret)
{
	_cleanup_free_ char *key = NULL;
	size_t len = 0;
	int r;

	for (;;) {
		_cleanup_free_ char *part = NULL;
		char *k;
		size_t n;

		skip_blanks(ps);
		if (!at_end(ps) && (*ps->p == '"' || *ps->p == '\'')) {
			r = parse_string(ps, &part);
			if (r < 0)
				return r;
		} else {
			const char *start = ps->p;

			while (!at_end(ps) && bare_key_char(*ps->p))
				ps->p++;
			if (ps->p == start)
				return at_end(ps) || *ps->p == '\n' ? fail(ps, "a key is missing")
								    : fail(ps, "unexpected '%c' in a key", *ps->p);
			part = strndup(start, (size_t)(ps->p - start));
			if (!part)
				return -ENOMEM;
		}
		n = strlen(part);
		k = realloc(key, len + n + 2);
		if (!k)
			return -ENOMEM;
		key = k;
		if (len > 0)
			key[len++] = '.';
		memcpy(key + len, part, n + 1);
		len += n;
		skip_blanks(ps);
		if (at_end(ps) || *ps->p != '.')
			break;
		ps->p++;
	}
	*ret = TAKE_PTR(key);
	return 0;
}

/* "key =" with blanks around '=': the key in *ret, the parser at the value. */
static int parse_key_eq(struct parser *ps, char **ret)
{
	int r;

	r = parse_key(ps, ret);
	if (r < 0)
		return r;
	skip_blanks(ps);
	if (at_end(ps) || *ps->p != '=')
		return fail(ps, "expected '=' after '%s'", *ret);
	ps->p++;
	skip_blanks(ps);
	return 0;
}

static int parse_value(struct parser *ps, struct value *v, unsigned depth);

static int parse_array(struct parser *ps, struct value *v, unsigned depth)
{
	int r;

	ps->p++;  /* '[' */
	v->type = VALUE_ARRAY;
	for (;;) {
		struct value e = {};

		skip_space(ps);
		if (at_end(ps))
			return fail(ps, "unterminated array");
		if (*ps->p == ']') {
			ps->p++;
			return 0;
		}
		r = parse_value(ps, &e, depth + 1);
		if (r < 0) {
			value_done(&e);
			return r;
		}
		if (e.type == VALUE_STRING) {
			r = strv_consume(&v->strings, TAKE_PTR(e.string));
			if (r < 0) {
				value_done(&e);
				return r;
			}
		} else {
			v->array_mixed = true;
		}
		value_done(&e);
		skip_space(ps);
		if (at_end(ps))
			return fail(ps, "unterminated array");
		if (*ps->p == ',')
			ps->p++;
		else if (*ps->p != ']')
			return fail(ps, "expected ',' or ']' in an array, not '%c'", *ps->p);
	}
}

/* { key = value, … } on one line: read to check it, nothing of it kept. */
static int parse_inline_table(struct parser *ps, struct value *v, unsigned depth)
{
	int r;

	ps->p++;  /* '{' */
	v->type = VALUE_OTHER;
	skip_blanks(ps);
	if (!at_end(ps) && *ps->p == '}') {
		ps->p++;
		return 0;
	}
	for (;;) {
		_cleanup_free_ char *key = NULL;
		struct value e = {};

		r = parse_key_eq(ps, &key);
		if (r < 0)
			return r;
		r = parse_value(ps, &e, depth + 1);
		value_done(&e);
		if (r < 0)
			return r;
		skip_blanks(ps);
		if (!at_end(ps) && *ps->p == ',') {
			ps->p++;
			continue;
		}
		if (!at_end(ps) && *ps->p == '}') {
			ps->p++;
			return 0;
		}
		return fail(ps, "expected ',' or '}' in an inline table");
	}
}

static int parse_value(struct parser *ps, struct value *v, unsigned depth)
{
	const char *start = ps->p;

	if (depth > 16)
		return fail(ps, "values nested too deeply");
	if (at_end(ps) || *ps->p == '\n' || *ps->p == '#')
		return fail(ps, "a value is missing");
	switch (*ps->p) {
	case '"':
	case '\'':
		v->type = VALUE_STRING;
		return parse_string(ps, &v->string);
	case '[':
		return parse_array(ps, v, depth);
	case '{':
		return parse_inline_table(ps, v, depth);
	default:
		break;
	}
	/* true, false, or a number or date: a run of token characters. */
	while (!at_end(ps) && (bare_key_char(*ps->p) || strchr("+.:", *ps->p)))
		ps->p++;
	if ((size_t)(ps->p - start) == 4 && strncmp(start, "true", 4) == 0) {
		v->type = VALUE_BOOL;
		v->boolean = true;
	} else if ((size_t)(ps->p - start) == 5 && strncmp(start, "false", 5) == 0) {
		v->type = VALUE_BOOL;
		v->boolean = false;
	} else if (ps->p > start && ((*start >= '0' && *start <= '9') || *start == '+' ||
				     *start == '-' || strncmp(start, "inf", 3) == 0 ||
				     strncmp(start, "nan", 3) == 0)) {
		v->type = VALUE_OTHER;
	} else {
		ps->p = start;
		return fail(ps, "invalid value (strings need quotes)");
	}
	return 0;
}

/* ---- what the keys mean ---------------------------------------------------------------- */

static int want_string(struct parser *ps, const char *key, struct value *v, char **field)
{
	if (v->type != VALUE_STRING)
		return fail(ps, "'%s' must be a string", key);
	free(*field);
	*field = TAKE_PTR(v->string);
	return 0;
}

static int want_bool(struct parser *ps, const char *key, const struct value *v, bool *field)
{
	if (v->type != VALUE_BOOL)
		return fail(ps, "'%s' must be true or false", key);
	*field = v->boolean;
	return 0;
}

static int want_strings(struct parser *ps, const char *key, struct value *v, char ***field)
{
	if (v->type != VALUE_ARRAY || v->array_mixed)
		return fail(ps, "'%s' must be an array of strings", key);
	strv_free(*field);
	*field = TAKE_PTR(v->strings);
	return 0;
}

static int apply_key(struct parser *ps, const char *key, struct value *v)
{
	struct registry_entry *e = ps->n > 0 ? &ps->entries[ps->n - 1] : NULL;
	struct mirror *m = e && e->n_mirrors > 0 ? &e->mirrors[e->n_mirrors - 1] : NULL;

	switch (ps->table) {
	case TABLE_REGISTRY:
		if (streq(key, "prefix"))
			return want_string(ps, key, v, &e->prefix);
		if (streq(key, "location"))
			return want_string(ps, key, v, &e->location);
		if (streq(key, "insecure"))
			return want_bool(ps, key, v, &e->insecure);
		if (streq(key, "blocked"))
			return want_bool(ps, key, v, &e->blocked);
		if (streq(key, "mirror-by-digest-only"))
			return want_bool(ps, key, v, &e->mirror_by_digest_only);
		if (streq(key, "mirror"))
			return fail(ps, "inline mirror tables are not supported: use [[registry.mirror]]");
		return 0;
	case TABLE_MIRROR:
		if (streq(key, "location"))
			return want_string(ps, key, v, &m->location);
		if (streq(key, "insecure"))
			return want_bool(ps, key, v, &m->insecure);
		if (streq(key, "pull-from-mirror")) {
			if (v->type != VALUE_STRING)
				return fail(ps, "'%s' must be a string", key);
			if (streq(v->string, "all"))
				m->pull = PULL_FROM_MIRROR_ALL;
			else if (streq(v->string, "digest-only"))
				m->pull = PULL_FROM_MIRROR_DIGEST_ONLY;
			else if (streq(v->string, "tag-only"))
				m->pull = PULL_FROM_MIRROR_TAG_ONLY;
			else
				return fail(ps, "invalid pull-from-mirror '%s': use all, digest-only "
					    "or tag-only", v->string);
			m->pull_set = true;
		}
		return 0;
	case TABLE_V1_INSECURE:
		return streq(key, "registries") ? want_strings(ps, key, v, &ps->v1_insecure) : 0;
	case TABLE_V1_BLOCK:
		return streq(key, "registries") ? want_strings(ps, key, v, &ps->v1_block) : 0;
	default:
		return 0;
	}
}

static int begin_table(struct parser *ps, const char *name, bool array)
{
	if (array && streq(name, "registry")) {
		if (GREEDY_REALLOC(ps->entries, ps->n_allocated, ps->n + 1) < 0)
			return -ENOMEM;
		ps->entries[ps->n++] = (struct registry_entry) { .line = ps->line };
		ps->table = TABLE_REGISTRY;
		ps->v2 = true;
	} else if (array && streq(name, "registry.mirror")) {
		struct registry_entry *e;

		if (ps->n == 0)
			return fail(ps, "[[registry.mirror]] before any [[registry]]");
		e = &ps->entries[ps->n - 1];
		if (GREEDY_REALLOC(e->mirrors, e->mirrors_allocated, e->n_mirrors + 1) < 0)
			return -ENOMEM;
		e->mirrors[e->n_mirrors++] = (struct mirror) { .line = ps->line };
		ps->table = TABLE_MIRROR;
	} else if (!array && startswith(name, "registries.")) {
		ps->table = streq(name, "registries.insecure") ? TABLE_V1_INSECURE
			  : streq(name, "registries.block") ? TABLE_V1_BLOCK : TABLE_OTHER;
		if (!ps->v1)
			ps->v1_line = ps->line;
		ps->v1 = true;
	} else if (!array && (streq(name, "registry") || streq(name, "registry.mirror"))) {
		return fail(ps, "'%s' must be an array of tables: write [[%s]]", name, name);
	} else {
		ps->table = TABLE_OTHER;
	}
	return 0;
}

static int parse_table_header(struct parser *ps)
{
	_cleanup_free_ char *name = NULL;
	bool array;
	int r;

	ps->p++;
	array = !at_end(ps) && *ps->p == '[';
	if (array)
		ps->p++;
	r = parse_key(ps, &name);
	if (r < 0)
		return r;
	skip_blanks(ps);
	if (at_end(ps) || *ps->p != ']' || (array && (ps->p + 1 >= ps->end || ps->p[1] != ']')))
		return fail(ps, "table header '%s' is not closed with '%s'", name, array ? "]]" : "]");
	ps->p += array ? 2 : 1;
	r = begin_table(ps, name, array);
	if (r < 0)
		return r;
	return end_of_line(ps);
}

static int parse_key_value(struct parser *ps)
{
	_cleanup_free_ char *key = NULL;
	struct value v = {};
	int r;

	r = parse_key_eq(ps, &key);
	if (r < 0)
		return r;
	/* Errors name the line where the value starts, not where a long array ends. */
	{
		unsigned line = ps->line;

		r = parse_value(ps, &v, 0);
		if (r >= 0) {
			unsigned end_line = ps->line;

			ps->line = line;
			r = apply_key(ps, key, &v);
			ps->line = end_line;
		}
	}
	value_done(&v);
	if (r < 0)
		return r;
	return end_of_line(ps);
}

static int parse_document(struct parser *ps)
{
	int r;

	for (;;) {
		skip_space(ps);
		if (at_end(ps))
			return 0;
		if (*ps->p == '[')
			r = parse_table_header(ps);
		else
			r = parse_key_value(ps);
		if (r < 0)
			return r;
	}
}

/* ---- checking and merging -------------------------------------------------------------- */

static bool has_scheme(const char *s)
{
	return s && strstr(s, "://");
}

/* The host part of "host[:port]/path" is everything before the first '/'. */
static size_t domain_len(const char *name)
{
	const char *slash = strchr(name, '/');

	return slash ? (size_t)(slash - name) : strlen(name);
}

static bool prefix_is_wildcard(const char *prefix)
{
	return startswith(prefix, "*.");
}

static int check_entry(struct parser *ps, struct registry_entry *e)
{
	const char *path;

	ps->line = e->line;
	if ((!e->prefix || !*e->prefix) && (!e->location || !*e->location))
		return fail(ps, "[[registry]] needs a prefix or a location");
	if (!e->prefix || !*e->prefix) {
		free(e->prefix);
		e->prefix = strdup(e->location);
		if (!e->prefix)
			return -ENOMEM;
	}
	if (has_scheme(e->prefix) || has_scheme(e->location))
		return fail(ps, "'%s': prefix and location take no scheme (http:// or https://)",
			    has_scheme(e->prefix) ? e->prefix : e->location);
	if (prefix_is_wildcard(e->prefix)) {
		if (strchr(e->prefix, '/') || strchr(e->prefix + 1, '*'))
			return fail(ps, "wildcard prefix '%s' must be '*.domain', without a path",
				    e->prefix);
		if (e->location && *e->location)
			return fail(ps, "wildcard prefix '%s' cannot have a location", e->prefix);
	} else if (strchr(e->prefix, '*')) {
		return fail(ps, "'*' in prefix '%s' is allowed only as '*.domain'", e->prefix);
	}
	/* Names are matched without tag or digest; a prefix naming one would never match. */
	path = e->prefix + domain_len(e->prefix);
	if (strchr(path, ':') || strchr(path, '@'))
		return fail(ps, "prefix '%s' with a tag or digest is not supported", e->prefix);
	if (e->prefix[strlen(e->prefix) - 1] == '/')
		return fail(ps, "prefix '%s' ends with '/'", e->prefix);
	for (size_t i = 0; i < e->n_mirrors; i++) {
		struct mirror *m = &e->mirrors[i];

		ps->line = m->line;
		if (!m->location || !*m->location)
			return fail(ps, "[[registry.mirror]] needs a location");
		if (has_scheme(m->location))
			return fail(ps, "mirror location '%s' takes no scheme", m->location);
		if (e->mirror_by_digest_only && m->pull_set && m->pull != PULL_FROM_MIRROR_DIGEST_ONLY)
			return fail(ps, "pull-from-mirror of '%s' contradicts mirror-by-digest-only",
				    m->location);
	}
	e->file = strdup(ps->file);
	return e->file ? 0 : -ENOMEM;
}

static int v1_entries(struct parser *ps)
{
	char **lists[] = { ps->v1_insecure, ps->v1_block };

	for (size_t l = 0; l < ELEMENTSOF(lists); l++)
		for (char **s = lists[l]; s && *s; s++) {
			struct registry_entry *e = NULL;

			for (size_t i = 0; i < ps->n; i++)
				if (streq(ps->entries[i].prefix, *s))
					e = &ps->entries[i];
			if (!e) {
				if (GREEDY_REALLOC(ps->entries, ps->n_allocated, ps->n + 1) < 0)
					return -ENOMEM;
				e = &ps->entries[ps->n++];
				*e = (struct registry_entry) { .line = ps->v1_line };
				e->prefix = strdup(*s);
				e->location = strdup(*s);
				if (!e->prefix || !e->location)
					return -ENOMEM;
			}
			if (l == 0)
				e->insecure = true;
			else
				e->blocked = true;
		}
	return 0;
}

/* Later files replace earlier entries of the same prefix, as containers-registries.conf.d(5). */
static int merge(struct registries_conf *c, struct parser *ps)
{
	for (size_t i = 0; i < ps->n; i++) {
		struct registry_entry *e = &ps->entries[i];
		size_t j;

		for (j = 0; j < c->n; j++)
			if (streq(c->entries[j].prefix, e->prefix))
				break;
		if (j < c->n) {
			entry_done(&c->entries[j]);
			c->entries[j] = *e;
		} else {
			if (GREEDY_REALLOC(c->entries, c->n_allocated, c->n + 1) < 0)
				return -ENOMEM;
			c->entries[c->n++] = *e;
		}
		*e = (struct registry_entry) {};
	}
	return 0;
}

int registries_conf_add_text(struct registries_conf *c, const char *text, size_t len,
			     const char *filename)
{
	struct parser ps = {
		.p = text, .end = text + len, .file = filename, .line = 1,
	};
	int r;

	if (memchr(text, 0, len)) {
		r = fail(&ps, "NUL byte in the file");
		goto finish;
	}
	r = parse_document(&ps);
	if (r >= 0 && ps.v1 && ps.v2) {
		ps.line = ps.v1_line;
		r = fail(&ps, "mixes version 1 [registries.*] tables with version 2 [[registry]]");
	}
	if (r >= 0)
		r = v1_entries(&ps);
	for (size_t i = 0; r >= 0 && i < ps.n; i++)
		r = check_entry(&ps, &ps.entries[i]);
	if (r >= 0)
		r = merge(c, &ps);
finish:
	entries_free(ps.entries, ps.n);
	strv_free(ps.v1_insecure);
	strv_free(ps.v1_block);
	return r;
}

int registries_conf_add_file(struct registries_conf *c, const char *path)
{
	_cleanup_free_ char *text = NULL;
	size_t len;
	int r;

	r = read_full_file(path, CONF_FILE_MAX, &text, &len);
	if (r == -ENOENT)
		return 0;
	if (r < 0) {
		return error_set(r, "cannot read '%s'", path);
	}
	return registries_conf_add_text(c, text, len, path);
}

static int conf_dropin_filter(const struct dirent *d)
{
	size_t n = strlen(d->d_name);

	return d->d_name[0] != '.' && n > 5 && streq(d->d_name + n - 5, ".conf");
}

int registries_conf_load(struct registries_conf **ret)
{
	_cleanup_(registries_conf_freep) struct registries_conf *c = NULL;
	const char *env = getenv("CONTAINERS_REGISTRIES_CONF");
	struct dirent **list = NULL;
	int n, r;

	c = registries_conf_new();
	if (!c)
		return -ENOMEM;
	/* A file named explicitly stands alone: no drop-ins, as in containers/image. */
	if (env && *env) {
		r = registries_conf_add_file(c, env);
		if (r < 0)
			return r;
		*ret = TAKE_PTR(c);
		return 0;
	}
	r = registries_conf_add_file(c, CONF_DEFAULT);
	if (r < 0)
		return r;
	n = scandir(CONF_DROPIN_DIR, &list, conf_dropin_filter, alphasort);
	if (n < 0)
		n = 0;  /* no drop-in directory: nothing to add */
	r = 0;
	for (int i = 0; i < n; i++) {
		_cleanup_free_ char *path = NULL;

		if (r >= 0) {
			if (asprintf(&path, "%s/%s", CONF_DROPIN_DIR, list[i]->d_name) < 0)
				r = -ENOMEM;
			else
				r = registries_conf_add_file(c, path);
		}
		free(list[i]);
	}
	free(list);
	if (r < 0)
		return r;
	*ret = TAKE_PTR(c);
	return 0;
}

/* ---- matching and rewriting ------------------------------------------------------------ */

/* How well @prefix matches @name: 0 not at all, else a rank where exact prefixes beat
 * wildcards and longer beats shorter. */
static size_t match_rank(const char *prefix, const char *name)
{
	size_t n = strlen(prefix);

	if (prefix_is_wildcard(prefix)) {
		/* "*.example.com" matches the host "a.example.com" and "a.b.example.com[:port]". */
		size_t dl = domain_len(name), hl, sl = n - 1;
		const char *colon = memchr(name, ':', dl);

		hl = colon ? (size_t)(colon - name) : dl;
		if (hl > sl && memcmp(name + hl - sl, prefix + 1, sl) == 0)
			return n;
		return 0;
	}
	if (strncmp(name, prefix, n) != 0 || (name[n] != 0 && name[n] != '/'))
		return 0;
	return (size_t)1 << 20 | n;
}

static const struct registry_entry *find_entry(const struct registries_conf *c, const char *name,
					       size_t *ret_matched)
{
	const struct registry_entry *best = NULL;
	size_t best_rank = 0;

	for (size_t i = 0; c && i < c->n; i++) {
		size_t rank = match_rank(c->entries[i].prefix, name);

		if (rank > best_rank) {
			best = &c->entries[i];
			best_rank = rank;
		}
	}
	if (best)
		*ret_matched = prefix_is_wildcard(best->prefix) ? domain_len(name)
								 : strlen(best->prefix);
	return best;
}

void registries_endpoints_free(struct registries_endpoint *e, size_t n)
{
	for (size_t i = 0; e && i < n; i++)
		free(e[i].name);
	free(e);
}

static int add_endpoint(struct registries_endpoint *list, size_t *n, const char *location,
			const char *rest, const struct registries_endpoint *tmpl, const char *file)
{
	char *name;
	size_t dl;

	if (asprintf(&name, "%s%s", location, rest) < 0)
		return -ENOMEM;
	dl = domain_len(name);
	if (dl == 0 || !name[dl] || !name[dl + 1]) {
		(void)error_set(-EINVAL, "location '%s' in '%s' leaves no repository for '%s'",
				location, file, name);
		free(name);
		return -EINVAL;
	}
	list[*n] = *tmpl;
	list[(*n)++].name = name;
	return 0;
}

int registries_conf_endpoints(const struct registries_conf *c, const char *name,
			      bool pull_by_digest, struct registries_endpoint **ret, size_t *ret_n)
{
	struct registries_endpoint *list;
	const struct registry_entry *e;
	size_t matched = 0, n = 0;
	const char *rest;
	int r = 0;

	e = find_entry(c, name, &matched);
	if (e && e->blocked) {
		return error_set(-EPERM, "registry '%s' is blocked in %s", e->prefix, e->file);
	}
	list = calloc((e ? e->n_mirrors : 0) + 1, sizeof(*list));
	if (!list)
		return -ENOMEM;
	rest = name + matched;
	for (size_t i = 0; e && r >= 0 && i < e->n_mirrors; i++) {
		const struct mirror *m = &e->mirrors[i];
		struct registries_endpoint t = { .insecure = m->insecure, .mirror = true };
		enum pull_from_mirror pull = e->mirror_by_digest_only ? PULL_FROM_MIRROR_DIGEST_ONLY
								       : m->pull;

		/* Tag-only mirrors serve whole pulls by tag, blobs included, as in podman;
		 * digest-only ones serve every request by digest, blobs of pulls by tag too. */
		t.by_tag = pull == PULL_FROM_MIRROR_ALL || pull == PULL_FROM_MIRROR_TAG_ONLY;
		t.by_digest = pull != PULL_FROM_MIRROR_TAG_ONLY || !pull_by_digest;
		if (pull == PULL_FROM_MIRROR_TAG_ONLY && pull_by_digest)
			continue;
		r = add_endpoint(list, &n, m->location, rest, &t, e->file);
	}
	if (r >= 0) {
		struct registries_endpoint t = {
			.insecure = e && e->insecure, .by_tag = true, .by_digest = true,
		};
		bool rewrite = e && e->location && *e->location;

		r = add_endpoint(list, &n, rewrite ? e->location : "", rewrite ? rest : name, &t,
				 e ? e->file : "");
	}
	if (r < 0) {
		registries_endpoints_free(list, n);
		return r;
	}
	*ret = list;
	*ret_n = n;
	return 0;
}
