/* cli/progress.h: a one-line progress bar on stderr while layers download, only when stderr is
 * a terminal; silent otherwise (cron mails only errors). */
#pragma once

#include <stdbool.h>
#include <stdint.h>

struct progress;

/* NULL (and no output) when stderr is not a terminal. */
struct progress *progress_new(const char *what);
struct progress *progress_free(struct progress *p);  /* clears the line; NULL-safe */
/* A pull_options.progress callback; thread-safe. */
void progress_update(void *userdata, unsigned layer, unsigned n_layers, uint64_t done,
		     uint64_t total);
/* Draws one bar over a whole job instead: "what [#####     ] 1.2/3.4 MiB  5.1 MiB/s  ETA 0:12",
 * with @done and @total the job's bytes so far (@total may grow); thread-safe. */
void progress_bytes(struct progress *p, uint64_t done, uint64_t total);
