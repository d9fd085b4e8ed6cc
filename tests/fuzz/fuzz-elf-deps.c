/* tests/fuzz/fuzz-elf-deps.c: the ELF dependency parser (cache/format/elf_deps.c), on files
 * from images anyone may have built.
 *
 * The input is the file; the read callback serves it.  Each input is parsed three times: whole,
 * as a file that announces one byte more than it has (a short read), and with the second read
 * failing (every exit path frees what it took).  What parses must keep the header's promises:
 * at most 256 names of 1 to 255 bytes, an absolute interpreter. */
#include "cache/format/elf_deps.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cache/base/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct input {
	const uint8_t *data;
	size_t size;
	unsigned reads, fail_at;
};

static int input_read(void *userdata, uint64_t off, void *buf, size_t n)
{
	struct input *in = userdata;

	if (++in->reads == in->fail_at)
		return -EIO;
	if (n > 2 * 1024 * 1024)
		abort();        /* an unbounded read got through */
	if (off >= in->size)
		return 0;
	n = n < in->size - off ? n : in->size - off;
	memcpy(buf, in->data + off, n);
	return (int)n;
}

static void check_deps(const struct elf_deps *d)
{
	size_t n = strv_length(d->needed);

	if (!d->needed || n > 256 || (d->interp && d->interp[0] != '/'))
		abort();
	for (size_t i = 0; i < n; i++)
		if (d->needed[i][0] == '\0' || strlen(d->needed[i]) > 255)
			abort();
}

static void parse(const uint8_t *data, size_t size, uint64_t file_size, unsigned fail_at)
{
	struct input in = { .data = data, .size = size, .fail_at = fail_at };
	struct elf_deps d = {};

	if (elf_deps_read(input_read, &in, file_size, &d) < 0) {
		if (d.needed || d.interp || d.runpath)
			abort();    /* @ret is set only on success */
		return;
	}
	check_deps(&d);
	elf_deps_done(&d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	parse(data, size, size, 0);
	parse(data, size, (uint64_t)size + 1, 0);
	parse(data, size, size, 2);
	return 0;
}
