/* cli/exit_status.c: verb results to exit statuses (see exit_status.h and lazyroot(1)). */
#include "exit_status.h"

#include <errno.h>

int exit_status(int r, int failure)
{
	if (r >= 0)
		return r;
	if (failure != 0)
		return failure;
	switch (-r) {
	case ERR_USAGE:
		return EXIT_USAGE;
	case ERR_REGISTRY:
		return EXIT_REGISTRY;
	case ERR_CACHE:
		return EXIT_CACHE;
	case ERR_MOUNT:
		return EXIT_MOUNT;
	default:
		return EXIT_FAILURE_OTHER;
	}
}

int pull_failure_errno(enum pull_failure kind)
{
	switch (kind) {
	case PULL_FAILURE_USAGE:
		return -ERR_USAGE;
	case PULL_FAILURE_REGISTRY:
		return -ERR_REGISTRY;
	default:
		return -ERR_CACHE;
	}
}
