/* cli/verb_args.h: the frame of every verb's command line, written once: the getopt loop,
 * --help, --verbose, the options image verbs share, plain switches and values, and the count
 * of operands with its message.  What a verb parses its own way goes through a callback. */
#pragma once

#include <getopt.h>
#include <stdbool.h>

struct mount_request;

/* Option @c sets *flag to true and/or *value to its argument. */
struct verb_arg {
	int c;
	bool *flag;
	const char **value;
};
#define VERB_SWITCH(c, p) { (c), (p), NULL }
#define VERB_VALUE(c, p) { (c), NULL, (p) }

struct verb_args {
	const char *name;                   /* "mount": for the operand count's message */
	const char *usage;                  /* what --help prints */
	const char *optstring;
	const struct option *options;
	const struct verb_arg *args;        /* ends with { 0 } */
	struct mount_request *image;        /* image_option_apply() into it, if set */
	/* What the rest is: 0 taken, > 0 not this verb's, < 0 an error (logged). */
	int (*opt)(int c, char *arg, void *userdata);
	void *userdata;
	int min_operands, max_operands;     /* max < 0: any number */
	const char *operands;               /* "needs a mountpoint"; NULL: the verb checks */
};

/* Parses @argv as @v says; 0, 1 after --help (exit 0), or -ERR_USAGE (logged). */
int verb_args_parse(int argc, char **argv, const struct verb_args *v);
