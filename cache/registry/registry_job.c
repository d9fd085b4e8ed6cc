/*
 * cache/registry/registry_job.c: a registry call in a thread of its own (registry_job.h).  The
 * thread's message (error.h is per thread) travels back to the joining thread in an
 * error_carry.
 */
#include "registry_job.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#include "cache/base/error.h"
#include "cache/base/log.h"

struct registry_job {
	struct registry *copy;  /* the thread's client; NULL when the call was made inline */
	int (*call)(struct registry *r, void *userdata);
	void *userdata;
	pthread_t thread;
	bool started;
	int result;
	struct error_carry error;
};

static void *job_thread(void *arg)
{
	struct registry_job *j = arg;

	j->result = j->call(j->copy, j->userdata);
	error_save(&j->error);
	return NULL;
}

int registry_job_start(struct registry *r, int (*call)(struct registry *r, void *userdata),
		       void *userdata, struct registry_job **ret)
{
	struct registry_job *j = calloc(1, sizeof(*j));
	int e;

	if (!j)
		return -ENOMEM;
	*j = (struct registry_job) { .call = call, .userdata = userdata };
	e = registry_dup(r, &j->copy);
	if (e >= 0) {
		e = -pthread_create(&j->thread, NULL, job_thread, j);
		j->started = e >= 0;
	}
	if (!j->started) {
		log_debug_errno(e, "no second connection to %s/%s, asking one after the other: %m",
				registry_domain(r), registry_repository(r));
		j->copy = registry_free(j->copy);
		j->result = call(r, userdata);
		error_save(&j->error);
	}
	*ret = j;
	return 0;
}

int registry_job_join(struct registry_job *j)
{
	int result;

	if (!j)
		return 0;
	if (j->started)
		(void)pthread_join(j->thread, NULL);
	result = error_restore(j->result, &j->error);
	registry_free(j->copy);
	free(j);
	return result;
}
