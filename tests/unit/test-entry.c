/* tests/unit/test-entry.c: path normalisation of tar/TOC names. */
#include "cache/store/entry.h"

#include <errno.h>
#include <string.h>

#include "tap.h"

static int norm(const char *in, char *out, size_t size)
{
	snprintf(out, size, "%s", in);
	return entry_path_normalize(out);
}

static void check_norm(const char *in, const char *want)
{
	char buf[512];
	int r;

	r = norm(in, buf, sizeof(buf));
	check(r == 0 && strcmp(buf, want) == 0, "'%s' normalises to '%s' (got '%s', r=%d)", in,
	      want, buf, r);
}

int main(void)
{
	char buf[1024];

	check_norm("", "");
	check_norm("/", "");
	check_norm(".", "");
	check_norm("./", "");
	check_norm("//././/", "");
	check_norm("etc/passwd", "etc/passwd");
	check_norm("/etc/passwd", "etc/passwd");
	check_norm("./etc/passwd", "etc/passwd");
	check_norm("././etc//passwd", "etc/passwd");
	check_norm("etc/", "etc");
	check_norm("usr/./share//doc/", "usr/share/doc");
	check_norm("a/.hidden", "a/.hidden");
	check_norm("a/...", "a/...");
	check_norm("a/..b/c..", "a/..b/c..");
	check_norm("etc/.wh..wh..opq", "etc/.wh..wh..opq");
	check_norm("./names//ünïcødé-日本語.txt", "names/ünïcødé-日本語.txt");
	check_norm("names/emoji-😀.txt/", "names/emoji-😀.txt");
	check_norm("raw/\xff\xfe", "raw/\xff\xfe");
	check_norm("with space/ x ", "with space/ x ");

	check(norm("..", buf, sizeof(buf)) == -EINVAL, "'..' is rejected");
	check(norm("../etc", buf, sizeof(buf)) == -EINVAL, "leading '..' is rejected");
	check(norm("a/../../etc", buf, sizeof(buf)) == -EINVAL, "'..' in the middle is rejected, not clamped");
	check(norm("a/b/..", buf, sizeof(buf)) == -EINVAL, "trailing '..' is rejected");
	check(norm("/./../x", buf, sizeof(buf)) == -EINVAL, "'..' after '/./' is rejected");

	memset(buf, 'a', 600);
	buf[200] = '/';
	buf[300] = '/';
	buf[301] = '/';
	buf[450] = '/';
	buf[600] = '\0';
	check(entry_path_normalize(buf) == 0 && strlen(buf) == 599 && buf[300] == '/' && buf[301] == 'a',
	      "long paths collapse '//' in place");

	/* Hostile names (docs/security.md): refused, never clamped or cut. */
	check(norm("dir/.wh..", buf, sizeof(buf)) == -EINVAL, "the whiteout of '.' is rejected");
	check(norm(".wh...", buf, sizeof(buf)) == -EINVAL, "the whiteout of '..' is rejected");
	check(norm("d/.wh..wh..opq", buf, sizeof(buf)) == 0 && strcmp(buf, "d/.wh..wh..opq") == 0,
	      "the opaque marker is a name like any other");
	check(norm("d/.wh....", buf, sizeof(buf)) == 0, "the whiteout of '...' is a name");
	{
		char big[8192];

		memset(big, 'n', 256);
		big[256] = '\0';
		check(entry_path_normalize(big) == -ENAMETOOLONG, "a 256-byte component is rejected");
		big[255] = '\0';
		check(entry_path_normalize(big) == 0, "a 255-byte component is accepted");
		for (size_t i = 0; i < 4096; i++)
			big[i] = i % 100 == 99 ? '/' : 'p';
		big[4096] = '\0';
		check(entry_path_normalize(big) == -ENAMETOOLONG, "a 4096-byte path is rejected");
		big[4095] = '\0';
		check(entry_path_normalize(big) == 0, "a 4095-byte path is accepted");
	}

	/* Whiteout names that mean nothing are refused; real ones pass. */
	check(entry_check_whiteout("d/.wh.f", ENTRY_REG) == 0, "a whiteout file is accepted");
	check(entry_check_whiteout("d/.wh.f", ENTRY_HARDLINK) == 0, "a hard-linked whiteout is accepted");
	check(entry_check_whiteout("d/.wh..wh..opq", ENTRY_REG) == 0, "an opaque marker is accepted");
	check(entry_check_whiteout(".wh..wh.plnk/1.2", ENTRY_REG) == 0 &&
	      entry_check_whiteout(".wh..wh.aufs", ENTRY_REG) == 0 &&
	      entry_check_whiteout(".wh..wh.orph", ENTRY_DIR) == 0, "aufs's own names are left to fs/");
	check(entry_check_whiteout("a/.wh.", ENTRY_REG) == -EINVAL, "'.wh.' alone is refused");
	check(entry_check_whiteout(".wh.", ENTRY_REG) == -EINVAL, "'.wh.' alone in the root is refused");
	check(entry_check_whiteout("a/.wh.b/c", ENTRY_REG) == -EINVAL,
	      "an entry below a whiteout name is refused");
	check(entry_check_whiteout("a/.wh..wh..opq/c", ENTRY_REG) == -EINVAL,
	      "an entry below an opaque marker is refused");
	check(entry_check_whiteout("a/.wh..wh..opq", ENTRY_DIR) == -EINVAL &&
	      entry_check_whiteout("a/.wh..wh..opq", ENTRY_SYMLINK) == -EINVAL,
	      "an opaque marker that is not a file is refused");
	check(entry_check_whiteout("a/.wh.b", ENTRY_DIR) == -EINVAL &&
	      entry_check_whiteout("a/.wh.b", ENTRY_CHR) == -EINVAL &&
	      entry_check_whiteout("a/.wh.b", ENTRY_FIFO) == -EINVAL,
	      "a whiteout that is not a file is refused");
	check(entry_check_whiteout("a/b.wh.c/d", ENTRY_DIR) == 0, "'.wh.' inside a name is a name");

	return tap_done();
}
