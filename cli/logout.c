/*
 * cli/logout.c: `lazyroot logout REGISTRY` (or --all): removes a registry's entry from the
 * auth.json that `lazyroot login` writes, keeping every other key and entry of the file.
 */
#include <getopt.h>
#include <jansson.h>

#include "cache/base/log.h"
#include "cache/base/util.h"
#include "cli/auth_file.h"
#include "cli/cli.h"
#include "cli/verb_args.h"

/* Removes @key's entries (all of them with @all) from @path; 0 or -ERR_OTHER (logged). */
static int logout_remove(const char *path, const char *key, bool all)
{
	json_t *root = NULL, *auths = NULL;
	size_t removed;
	int status;

	if (access(path, F_OK) < 0 && errno == ENOENT) {
		if (all)
			return 0;
		log_error("not logged in to %s ('%s' does not exist)", key, path);
		return -ERR_OTHER;
	}
	if (auth_file_load(path, &root) < 0 || auth_file_auths(root, path, false, &auths) < 0) {
		status = -ERR_OTHER;
		goto finish;
	}
	if (all) {
		removed = auths ? json_object_size(auths) : 0;
		if (auths)
			(void)json_object_clear(auths);
	} else {
		removed = auths ? auths_remove(auths, key) : 0;
	}
	if (removed == 0 && !all) {
		log_error("not logged in to %s (no entry in '%s')", key, path);
		status = -ERR_OTHER;
		goto finish;
	}
	status = removed == 0 || auth_file_save(path, root) >= 0 ? 0 : -ERR_OTHER;
	if (status == 0 && !all)
		printf("Removed login credentials for %s\n", key);

finish:
	json_decref(root);
	return status;
}

int verb_logout(int argc, char **argv)
{
	enum { OPT_LOGOUT_AUTHFILE = 0x100 };
	static const struct option options[] = {
		{ "authfile", required_argument, NULL, OPT_LOGOUT_AUTHFILE },
		{ "all", no_argument, NULL, 'a' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	_cleanup_free_ char *key = NULL, *path = NULL;
	const char *authfile = NULL;
	bool all = false;
	int r;

	r = verb_args_parse(argc, argv, &(struct verb_args) {
		.name = "logout",
		.usage = "Usage: lazyroot logout [OPTIONS] REGISTRY\n"
			 "       lazyroot logout [OPTIONS] --all\n\n"
			 "Remove REGISTRY's credentials from the auth file that 'lazyroot login'"
			 " writes.\n\n"
			 "      --authfile=FILE    the auth file (default: as for login)\n"
			 "  -a, --all              remove every registry's credentials\n"
			 "  -h, --help             this help\n",
		.optstring = "avh", .options = options,
		.args = (const struct verb_arg[]) {
			VERB_VALUE(OPT_LOGOUT_AUTHFILE, &authfile), VERB_SWITCH('a', &all), {}
		},
	});
	if (r != 0)
		return r > 0 ? 0 : r;
	if (argc - optind != (all ? 0 : 1))
		return log_error_errno(-ERR_USAGE, "logout needs one registry, or --all (see "
				       "'lazyroot logout --help')");
	if (!all) {
		r = auth_registry_key(argv[optind], &key);
		if (r < 0)
			return r;
	}
	r = auth_file_choose(authfile, "", &path);
	if (r < 0)
		return r;
	return logout_remove(path, key, all);
}
