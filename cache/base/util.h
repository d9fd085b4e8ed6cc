/* cache/base/util.h: cleanup helpers shared by every part of lazyroot (the bottom of the call graph). */
#pragma once

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define _cleanup_(f) __attribute__((cleanup(f)))
#define TAKE_PTR(p) ({ __typeof__(p) _p = (p); (p) = NULL; _p; })
#define TAKE_FD(fd) ({ int _fd = (fd); (fd) = -EBADF; _fd; })
#define DEFINE_CLEANUP_FUNC(type, func) \
	static inline void func##p(type *p) { if (*p) *p = func(*p); }
#define ELEMENTSOF(a) (sizeof(a) / sizeof((a)[0]))
static inline void free_array(void **p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(p[i]);
}
/* Frees each of its pointer arguments: a struct's owned strings in one statement. */
#define free_many(...) \
	free_array((void *[]){ __VA_ARGS__ }, ELEMENTSOF(((void *[]){ __VA_ARGS__ })))
/* Defines the destructor `type *name(type *p)` of STYLE.md once: NULL-safe, @done releases what
 * the object owns, then the object is freed; returns NULL, for `x = name(x)`. */
#define DEFINE_FREE_FUNC(type, name, done) \
	type *name(type *p)                 \
	{                                   \
		if (p) {                    \
			done(p);            \
			free(p);            \
		}                           \
		return NULL;                \
	}

static inline void freep(void *p)
{
	free(*(void **)p);
}

static inline void closep(int *fd)
{
	/* Never retry close(): on Linux the fd is gone even on EINTR. */
	if (*fd >= 0)
		(void)close(*fd);
}

static inline void fclosep(FILE **f)
{
	if (*f)
		(void)fclose(*f);
}

#define _cleanup_free_ _cleanup_(freep)
#define _cleanup_close_ _cleanup_(closep)
#define _cleanup_fclose_ _cleanup_(fclosep)

static inline bool streq(const char *a, const char *b)
{
	return strcmp(a, b) == 0;
}

static inline bool startswith(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* NULL-terminated string vectors. */
char **strv_free(char **l);
DEFINE_CLEANUP_FUNC(char **, strv_free);
#define _cleanup_strv_free_ _cleanup_(strv_freep)
size_t strv_length(char *const *l);
/* Appends a copy of @s; -ENOMEM on failure (the vector is unchanged then). */
int strv_push(char ***l, const char *s);
/* Appends @s itself, taking ownership on success. */
int strv_consume(char ***l, char *s);
bool strv_contains(char *const *l, const char *s);

/* Reads a whole file, at most @max bytes (-EFBIG beyond). Result is NUL-terminated. */
/* Wipes the NUL-terminated secret @s (a password, a token, an Authorization header) and frees
 * it; NULL-safe. */
void free_secret(char *s);
static inline void free_secretp(char **s)
{
	free_secret(*s);
}

int read_full_file(const char *path, size_t max, char **ret, size_t *ret_len);
/* The same from an open fd, read to its end. */
int read_full_fd(int fd, size_t max, char **ret, size_t *ret_len);
/* Reads until @len bytes or end of file, retrying on EINTR and short reads: the bytes read
 * (fewer than @len only at end of file), or -errno. */
ssize_t read_full(int fd, void *buf, size_t len);
/* Writes @len bytes fully, retrying on EINTR and short writes. */
int write_all(int fd, const void *buf, size_t len);
/* mkdir -p with @mode for each created component. */
int mkdir_p(const char *path, mode_t mode);

/* Makes room for @need elements in the array *@p of *@allocated elements of @size bytes, at
 * least doubling it when it grows, so that n appends cost O(n) copying.  -ENOMEM (nothing
 * changed) when out of memory or when the size would overflow. */
int greedy_realloc(void **p, size_t *allocated, size_t need, size_t size);
#define GREEDY_REALLOC(array, allocated, need) \
	greedy_realloc((void **)&(array), &(allocated), (need), sizeof((array)[0]))

/* CLOCK_MONOTONIC in milliseconds, for deadlines and backoff. */
int64_t now_ms(void);
/* Sleeps @ms milliseconds, resuming after signals. */
void sleep_ms(long ms);
