/* cli/main.c: `lazyroot VERB …`: dispatches to one verb per file, and turns what the verb
 * returned into the exit status (cli/exit_status.h). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include "cache/base/log.h"
#include "cache/base/trace.h"
#include "cache/base/util.h"
#include "cli/cli.h"

static void help(void)
{
	printf("Usage: lazyroot VERB [OPTIONS] ...\n\n"
	       "Mount container images lazily from a registry and run them with systemd-nspawn.\n\n"
	       "Verbs:\n"
	       "  mount REF DIR     mount image REF read-only (optionally with an overlay) at DIR\n"
	       "  mount --machine NAME REF  the same as machine NAME, for machinectl and\n"
	       "                    systemd-nspawn@NAME.service (umount, rm --machine NAME)\n"
	       "  umount DIR        unmount it and stop its daemon\n"
	       "  run REF [-- CMD]  mount, run in systemd-nspawn, unmount\n"
	       "  images            list the images in the cache\n"
	       "  inspect REF       show an image's manifest, config and layers from the cache\n"
	       "  rm REF...         forget images and free what nothing else uses\n"
	       "  gc                remove unused blobs; evict images down to --max-size\n"
	       "  fsck              check (and --repair) the cache\n"
	       "  stats DIR         what a mount fetched, served from the cache, prefetched\n"
	       "  prewarm REF...    fetch whole images into the cache ahead of mounting\n"
	       "  index REF         build seek indexes so that gzip layers mount lazily\n"
	       "  profile REF       print (or --push) the start profile mounts record\n"
	       "  login REGISTRY    check and store credentials for a registry\n"
	       "  logout REGISTRY   remove them again\n\n"
	       "'lazyroot VERB --help' describes each verb; see lazyroot(1).\n");
}

int main(int argc, char **argv)
{
	static const struct {
		const char *name;
		int (*fn)(int argc, char **argv);
		int failure;   /* the exit status of every failure; 0: by its class */
	} verbs[] = {
		{ "mount", verb_mount, 0 },
		{ "umount", verb_umount, 0 },
		{ "unmount", verb_umount, 0 },
		{ "run", verb_run, EXIT_RUN_FAILED },
		{ "stats", verb_stats, 0 },
		{ "images", verb_images, 0 },
		{ "inspect", verb_inspect, 0 },
		{ "rm", verb_rm, 0 },
		{ "gc", verb_gc, 0 },
		{ "fsck", verb_fsck, 0 },
		{ "prewarm", verb_prewarm, 0 },
		{ "index", verb_index, 0 },
		{ "profile", verb_profile, 0 },
		{ "login", verb_login, 0 },
		{ "logout", verb_logout, 0 },
	};

	/* A closed pipe is an error to report where it happens, not a reason to die. */
	signal(SIGPIPE, SIG_IGN);

	if (argc < 2) {
		help();
		return EXIT_USAGE;
	}
	if (streq(argv[1], "-h") || streq(argv[1], "--help") || streq(argv[1], "help")) {
		help();
		return 0;
	}
	if (streq(argv[1], "--version") || streq(argv[1], "version")) {
		printf("lazyroot %s\n", LAZYROOT_VERSION);
		return 0;
	}
	/* $LAZYROOT_TRACE: a line per request of this command and its mount daemon (see
	 * cache/base/trace.h); a trace that cannot be written is only a warning. */
	if (trace_init() < 0)
		log_warning("cannot open the trace file '%s', not tracing", getenv("LAZYROOT_TRACE"));
	else if (trace_enabled())
		trace_emit("mark", "\"what\":\"start\",\"verb\":\"%.32s\",\"t\":%lld", argv[1],
			   (long long)trace_now_us());
	for (size_t i = 0; i < ELEMENTSOF(verbs); i++)
		if (streq(argv[1], verbs[i].name)) {
			char prog[64];

			/* getopt names argv[0] in its messages: "lazyroot run: unrecognized …". */
			snprintf(prog, sizeof(prog), "lazyroot %s", verbs[i].name);
			argv[1] = prog;
			int r = verbs[i].fn(argc - 1, argv + 1);

			trace_mark_cpu("exit");   /* the mount command's: pulls, TOC indexing */
			return exit_status(r, verbs[i].failure);
		}

	log_error("unknown verb '%s' (see 'lazyroot --help')", argv[1]);
	return EXIT_USAGE;
}
