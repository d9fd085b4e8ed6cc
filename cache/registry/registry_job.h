/* cache/registry/registry_job.h: one call on a registry made in a thread of its own, on a
 * second client of the same repository (registry_dup(): the scheme and token already learnt,
 * its own connection), so that requests that do not wait for each other are in flight at
 * once (the referrers API and the referrers tag, the index blobs of several layers) instead
 * of one round trip after another. */
#pragma once

#include "cache/registry/registry.h"

struct registry_job;

/* Starts @call(copy of @r, @userdata) in a thread.  When no thread or client can be made, the
 * call is made here, on @r itself, before this returns: the caller sees no difference but the
 * time.  @userdata must stay valid until registry_job_join(). */
int registry_job_start(struct registry *r, int (*call)(struct registry *r, void *userdata),
		       void *userdata, struct registry_job **ret);

/* Waits for the call, makes its message (error.h) this thread's, frees @j and returns the
 * call's result.  NULL: 0. */
int registry_job_join(struct registry_job *j);
