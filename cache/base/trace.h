/* cache/base/trace.h: a trace of what one mount does, for the bench tool tests/bench/trace.py.
 * When $LAZYROOT_TRACE names a file (trace_init() at start-up), every FUSE request, fetch call
 * and HTTP exchange appends one JSON line to it, stamped with CLOCK_MONOTONIC microseconds and
 * the process id (the CLI and its forked mount daemon write the same file).  Off, a trace call
 * costs one load of a global and a branch: callers test trace_enabled() before building
 * anything. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

extern int trace_fd_;   /* internal: the trace file, -1 when tracing is off */

static inline bool trace_enabled(void)
{
	return __builtin_expect(trace_fd_ >= 0, 0);
}

/* Opens $LAZYROOT_TRACE for appending if it is set (and not empty).  Returns 0, or -errno if
 * the file cannot be opened (tracing stays off). */
int trace_init(void);

int64_t trace_now_us(void);

/* Appends one line: `{"ev":"@ev","pid":P,"tid":T,` then @fmt's fields then `}`.  @fmt must
 * produce JSON members ("\"k\":v,..."); strings go through trace_json_str().  One write(2)
 * per line (O_APPEND), so lines of concurrent threads and processes never mix. */
void trace_emit(const char *ev, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A "mark" line named @what with the process's CPU time so far (user and system, all its
 * threads): the mount daemon writes one as it exits. */
void trace_mark_cpu(const char *what);

/* A "step" line: one stage of the mount's work on the way to ready (@what: "toc" a layer's
 * TOC fetched and parsed, "commit" its entries written to the index, "tree" the merged tree
 * built), from @t0 (trace_now_us()) to now; @object (may be NULL) names what it worked on, @n
 * how many entries. */
void trace_step(const char *what, const char *object, int64_t t0, uint64_t n);

/* @s as a JSON string body (no quotes) in @buf, cut to fit; returns @buf. */
const char *trace_json_str(const char *s, char *buf, size_t size);

/* The FUSE request this thread serves, for the fetch calls it makes: trace_op_begin() numbers
 * a request and makes it the thread's current one (when tracing, else returns 0),
 * trace_op_end() clears it. */
uint64_t trace_op_begin(void);
void trace_op_end(void);
uint64_t trace_op_current(void);

/* The fetch call (fetch.c's owner id) this thread's HTTP exchanges serve, 0 for none. */
void trace_call_set(uint64_t call);
uint64_t trace_call_current(void);
