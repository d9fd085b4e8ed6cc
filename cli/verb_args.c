/* cli/verb_args.c: the frame of every verb's command line (see verb_args.h). */
#include "cli/verb_args.h"

#include <stdio.h>

#include "cache/base/log.h"
#include "cli/exit_status.h"
#include "cli/image_request.h"

/* Every entry for @c applies (one option may set two switches). */
static bool verb_arg_apply(const struct verb_arg *a, int c, const char *arg)
{
	bool found = false;

	for (; a && a->c; a++)
		if (a->c == c) {
			if (a->flag)
				*a->flag = true;
			if (a->value)
				*a->value = arg;
			found = true;
		}
	return found;
}

/* 0 taken, 1 --help, -ERR_USAGE (logged). */
static int verb_option(const struct verb_args *v, int c, char *arg)
{
	int r;

	if (c == '?')
		return -ERR_USAGE;
	if (v->image) {
		r = image_option_apply(c, arg, v->image);
		if (r != 0)
			return r < 0 ? r : 0;
	}
	if (verb_arg_apply(v->args, c, arg))
		return 0;
	if (c == 'h') {
		printf("%s", v->usage);
		return 1;
	}
	r = v->opt ? v->opt(c, arg, v->userdata) : 1;
	if (r <= 0)
		return r;
	if (c == 'v') {
		log_set_level(LOG_LEVEL_DEBUG);
		return 0;
	}
	return -ERR_USAGE;
}

int verb_args_parse(int argc, char **argv, const struct verb_args *v)
{
	int c, n, r;

	optind = 1;
	while ((c = getopt_long(argc, argv, v->optstring, v->options, NULL)) >= 0) {
		r = verb_option(v, c, optarg);
		if (r != 0)
			return r;
	}
	n = argc - optind;
	if (v->operands && (n < v->min_operands || (v->max_operands >= 0 && n > v->max_operands)))
		return log_error_errno(-ERR_USAGE, "%s %s (see 'lazyroot %s --help')", v->name,
				       v->operands, v->name);
	return 0;
}
