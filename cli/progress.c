/* cli/progress.c: draws "what  layer 2/3 [#####     ]  1.2 MiB / 3.4 MiB  5.1 MiB/s" at most
 * ten times a second.  Called from the fetching thread: state guarded by p->lock. */
#include "progress.h"

#include <pthread.h>
#include <time.h>

#include "cache/base/util.h"

struct progress {
	pthread_mutex_t lock;
	char *what;
	uint64_t last_draw_ns;      /* guarded by lock */
	uint64_t layer_start_ns;    /* guarded by lock */
	unsigned layer;             /* guarded by lock */
	bool drawn;                 /* guarded by lock */
	uint64_t bytes_start_ns;    /* guarded by lock: first progress_bytes() call */
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

struct progress *progress_new(const char *what)
{
	struct progress *p;

	if (!isatty(STDERR_FILENO))
		return NULL;
	p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	p->what = strdup(what);
	pthread_mutex_init(&p->lock, NULL);
	return p;
}

struct progress *progress_free(struct progress *p)
{
	if (!p)
		return NULL;
	if (p->drawn)
		fputs("\r\033[K", stderr);
	pthread_mutex_destroy(&p->lock);
	free(p->what);
	free(p);
	return NULL;
}

static double mib(uint64_t n)
{
	return (double)n / (1024.0 * 1024.0);
}

void progress_update(void *userdata, unsigned layer, unsigned n_layers, uint64_t done,
		     uint64_t total)
{
	struct progress *p = userdata;
	char bar[21];
	uint64_t now;
	double secs;
	size_t fill;

	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	now = now_ns();
	if (layer != p->layer) {
		p->layer = layer;
		p->layer_start_ns = now;
	}
	if (done < total && now - p->last_draw_ns < 100000000u) {
		pthread_mutex_unlock(&p->lock);
		return;
	}
	p->last_draw_ns = now;
	fill = total ? (size_t)(done * 20 / total) : 20;
	memset(bar, '#', fill);
	memset(bar + fill, ' ', 20 - fill);
	bar[20] = 0;
	secs = (double)(now - p->layer_start_ns) / 1e9;
	fprintf(stderr, "\r\033[K%s  layer %u/%u [%s] %.1f/%.1f MiB  %.1f MiB/s", p->what ? p->what : "",
		layer, n_layers, bar, mib(done), mib(total), secs > 0 ? mib(done) / secs : 0.0);
	p->drawn = true;
	pthread_mutex_unlock(&p->lock);
}

void progress_bytes(struct progress *p, uint64_t done, uint64_t total)
{
	char bar[21], eta[32] = "";
	uint64_t now;
	double secs, rate;
	size_t fill;

	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	now = now_ns();
	if (p->bytes_start_ns == 0)
		p->bytes_start_ns = now;
	if (done < total && now - p->last_draw_ns < 100000000u) {
		pthread_mutex_unlock(&p->lock);
		return;
	}
	p->last_draw_ns = now;
	if (done > total)
		done = total;
	fill = total ? (size_t)(done * 20 / total) : 20;
	memset(bar, '#', fill);
	memset(bar + fill, ' ', 20 - fill);
	bar[20] = 0;
	secs = (double)(now - p->bytes_start_ns) / 1e9;
	rate = secs > 0.2 ? (double)done / secs : 0.0;
	if (rate > 0 && done < total) {
		uint64_t left = (uint64_t)((double)(total - done) / rate);

		snprintf(eta, sizeof(eta), "  ETA %u:%02u", (unsigned)(left / 60), (unsigned)(left % 60));
	}
	fprintf(stderr, "\r\033[K%s [%s] %.1f/%.1f MiB  %.1f MiB/s%s", p->what ? p->what : "", bar,
		mib(done), mib(total), mib((uint64_t)rate), eta);
	p->drawn = true;
	pthread_mutex_unlock(&p->lock);
}
