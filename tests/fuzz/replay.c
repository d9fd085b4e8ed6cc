/* tests/fuzz/replay.c: runs a fuzz target's LLVMFuzzerTestOneInput() on files, without
 * libFuzzer, so that a normal build replays the seed corpus and every crash the fuzzer once
 * found (tests/fuzz/regressions/NAME/) as a unit test.  Arguments are files or directories
 * (their files, dot-files skipped; a missing directory is an empty one).  TAP: one point per
 * input -- a crash takes the process down and meson reports the test failed, with the file
 * named in the last line printed. */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cache/base/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

static int n_points;

static int replay_file(const char *path)
{
	_cleanup_fclose_ FILE *f = NULL;
	_cleanup_free_ uint8_t *buf = NULL;
	size_t len = 0, allocated = 0, n;

	f = fopen(path, "re");
	if (!f) {
		printf("not ok %d - %s: %s\n", ++n_points, path, strerror(errno));
		return -errno;
	}
	for (;;) {
		if (len == allocated) {
			uint8_t *nb;

			allocated = allocated ? allocated * 2 : 4096;
			nb = realloc(buf, allocated);
			if (!nb)
				return -ENOMEM;
			buf = nb;
		}
		n = fread(buf + len, 1, allocated - len, f);
		len += n;
		if (n == 0)
			break;
	}
	if (ferror(f)) {
		printf("not ok %d - %s: read error\n", ++n_points, path);
		return -EIO;
	}
	/* printed first, so that a crash's output follows the name of the input */
	printf("# %s (%zu bytes)\n", path, len);
	fflush(stdout);
	LLVMFuzzerTestOneInput(buf, len);
	printf("ok %d - %s\n", ++n_points, path);
	return 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int replay_dir(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *de;
	char **names = NULL;
	size_t n = 0;
	int r = 0;

	if (!d)
		return errno == ENOENT ? 0 : -errno;
	while ((de = readdir(d))) {
		char **nn;

		if (de->d_name[0] == '.')
			continue;
		nn = realloc(names, (n + 1) * sizeof(*names));
		if (!nn)
			abort();
		names = nn;
		if (asprintf(&names[n], "%s/%s", path, de->d_name) < 0)
			abort();
		n++;
	}
	closedir(d);
	qsort(names, n, sizeof(*names), cmp_str);
	for (size_t i = 0; i < n; i++) {
		int q = replay_file(names[i]);

		if (q < 0 && r == 0)
			r = q;
		free(names[i]);
	}
	free(names);
	return r;
}

int main(int argc, char **argv)
{
	int r = 0;

	if (LLVMFuzzerInitialize)
		LLVMFuzzerInitialize(&argc, &argv);
	for (int i = 1; i < argc; i++) {
		struct stat st;
		int q;

		if (stat(argv[i], &st) < 0 && errno == ENOENT)
			continue;  /* git keeps no empty regressions/NAME/ */
		if (S_ISDIR(st.st_mode))
			q = replay_dir(argv[i]);
		else
			q = replay_file(argv[i]);
		if (q < 0 && r == 0)
			r = q;
	}
	printf("1..%d\n", n_points);
	return r < 0 ? 1 : 0;
}
