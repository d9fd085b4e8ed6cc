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
