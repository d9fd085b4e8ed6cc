/* tests/fuzz/fuzz-tree.c: the merge of layers into a tree (fs/tree.c): whiteouts, opaque
 * markers, replacements, hard links and paths through symlinks, on entries the fuzzer writes
 * directly, one a line, so that it controls names and link targets byte by byte:
 *
 *	L                 the next layer starts
 *	T PATH            an entry of type T: f(ile), d(ir), c(har), b(lock), p(ipe)
 *	T PATH \t TARGET  s(ymlink) or h(ard link) to TARGET
 *
 * Paths (and hard link targets) go through entry_path_normalize() first, as every producer's
 * do; lines it refuses are skipped.  After fs_tree_finish() the whole tree is walked and its
 * invariants checked: every name is a valid component that lookup finds again, no whiteout
 * name is visible, directory parents and link counts agree with the listing. */
#include "fs/tree.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define D1 "sha256:1111111111111111111111111111111111111111111111111111111111111111"
#define LINE_MAX_LEN 8192

static void add_line(struct fs_tree *t, const char *line)
{
	static const struct { char c; enum entry_type type; } types[] = {
		{ 'f', ENTRY_REG }, { 'd', ENTRY_DIR }, { 's', ENTRY_SYMLINK },
		{ 'h', ENTRY_HARDLINK }, { 'c', ENTRY_CHR }, { 'b', ENTRY_BLK }, { 'p', ENTRY_FIFO },
	};
	char path[LINE_MAX_LEN], target[LINE_MAX_LEN];
	const char *tab;
	struct entry e = { .mode = 0644, .mtime_sec = 1 };
	size_t i;

	if (line[0] == 'L') {
		(void)fs_tree_begin_layer(t);
		return;
	}
	for (i = 0; i < ELEMENTSOF(types) && types[i].c != line[0]; i++)
		;
	if (i == ELEMENTSOF(types) || line[1] != ' ')
		return;
	e.type = types[i].type;
	tab = strchr(line + 2, '\t');
	snprintf(path, sizeof(path), "%.*s", (int)(tab ? tab - (line + 2) : (long)strlen(line + 2)),
		 line + 2);
	snprintf(target, sizeof(target), "%s", tab ? tab + 1 : "");
	if (entry_path_normalize(path) < 0)
		return;
	e.path = path;
	if (e.type == ENTRY_REG) {
		e.digest = D1;
		e.size = 1;
	} else if (e.type == ENTRY_SYMLINK) {
		e.link_target = target;
	} else if (e.type == ENTRY_HARDLINK) {
		if (entry_path_normalize(target) < 0)
			return;
		e.link_target = target;
	}
	(void)fs_tree_add(t, &e);
}

/* Every listed name is valid and found again; every non-directory's link count is the number
 * of names it has. */
static void check_tree(const struct fs_tree *t)
{
	size_t n = fs_tree_count(t);
	uint32_t *links = calloc(n + 1, sizeof(uint32_t));

	if (!links)
		abort();
	for (fs_ino_t dir = 1; dir <= n; dir++) {
		struct stat st;
		const char *name;
		fs_ino_t ino, again;

		if (fs_tree_stat(t, dir, &st) < 0)
			abort();
		if (!S_ISDIR(st.st_mode))
			continue;
		for (size_t pos = 0; fs_tree_readdir(t, dir, pos, &name, &ino) == 0; pos++) {
			size_t len = strlen(name);

			if (len == 0 || len > 255 || strchr(name, '/') || streq(name, ".") ||
			    streq(name, "..") || strncmp(name, ".wh.", 4) == 0)
				abort();
			if (fs_tree_lookup(t, dir, name, &again) < 0 || again != ino || ino > n)
				abort();
			if (fs_tree_stat(t, ino, &st) < 0)
				abort();
			if (S_ISDIR(st.st_mode) && fs_tree_parent(t, ino) != dir)
				abort();
			if (!S_ISDIR(st.st_mode))
				links[ino]++;
		}
	}
	for (fs_ino_t ino = 1; ino <= n; ino++) {
		struct stat st;

		if (fs_tree_stat(t, ino, &st) < 0)
			abort();
		if (!S_ISDIR(st.st_mode) && st.st_nlink != links[ino])
			abort();
	}
	free(links);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	_cleanup_(fs_tree_freep) struct fs_tree *t = NULL;
	char line[LINE_MAX_LEN];
	size_t start = 0;

	if (fs_tree_new(&t) < 0 || fs_tree_begin_layer(t) < 0)
		abort();
	while (start < size) {
		const uint8_t *nl = memchr(data + start, '\n', size - start);
		size_t len = (nl ? (size_t)(nl - data) : size) - start;

		/* NULs end a C string early: the line is what comes before the first one. */
		snprintf(line, sizeof(line), "%.*s", (int)(len < sizeof(line) ? len : sizeof(line) - 1),
			 (const char *)data + start);
		add_line(t, line);
		start += len + 1;
	}
	if (fs_tree_finish(t) < 0)
		abort();
	check_tree(t);
	return 0;
}
