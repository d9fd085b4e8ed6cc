/* tests/unit/test-elf_deps.c: the parser names the interpreter, libraries and runpath of the
 * host's own binaries in at most four reads, and of synthetic images in both classes and byte
 * orders; it refuses what is not ELF or points outside the file, leaves out names it cannot read
 * whole, and passes the read callback's errors on. */
#include "cache/format/elf_deps.h"

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cache/base/util.h"
#include "tap.h"

#define IMG_MAX (128 * 1024)
#define BASE 0x10000U   /* where the synthetic images' one PT_LOAD maps offset 0 */

/* A read callback over a buffer or a file, that counts its calls and can fail one. */
struct source {
	const uint8_t *data;
	size_t len;
	int fd;
	unsigned reads, fail_at;
	size_t max_n;
	int extra;      /* returned beyond what was read: a callback that misbehaves */
};

static int source_read(void *userdata, uint64_t off, void *buf, size_t n)
{
	struct source *s = userdata;
	ssize_t got;

	s->reads++;
	s->max_n = n > s->max_n ? n : s->max_n;
	if (s->reads == s->fail_at)
		return -EIO;
	if (s->fd >= 0) {
		got = pread(s->fd, buf, n, (off_t)off);
		return got < 0 ? -errno : (int)got;
	}
	if (off >= s->len)
		return 0;
	n = n < s->len - off ? n : s->len - off;
	memcpy(buf, s->data + off, n);
	return (int)n + s->extra;
}

/* The synthetic image: ELF header, program headers (PT_LOAD of the whole file at BASE, then
 * PT_INTERP and PT_DYNAMIC if asked for), interpreter, string table, dynamic section.  "far"
 * puts all but the headers past the first 4 KiB, so that each needs a read of its own. */
struct spec {
	bool is_64, msb, far, static_exe;
	const char *interp;
	const char *const *needed;      /* NULL-terminated, or NULL */
	const char *runpath;
};

struct img {
	uint8_t buf[IMG_MAX];
	size_t size;
	bool is_64, msb;
	size_t ph_load, ph_interp, ph_dyn, dyn, interp, str;
};

static struct img img;

static void put(size_t off, size_t n, uint64_t v)
{
	for (size_t i = 0; i < n; i++)
		img.buf[off + (img.msb ? n - 1 - i : i)] = (uint8_t)(v >> (8 * i));
}

#define SET(at, type, field, v)                                                             \
	put((at) + (img.is_64 ? offsetof(Elf64_##type, field) : offsetof(Elf32_##type, field)), \
	    img.is_64 ? sizeof(((Elf64_##type *)NULL)->field)                                   \
		      : sizeof(((Elf32_##type *)NULL)->field), v)
#define SIZE(type) (img.is_64 ? sizeof(Elf64_##type) : sizeof(Elf32_##type))

static void set_phdr(size_t at, uint32_t type, uint64_t off, uint64_t size)
{
	SET(at, Phdr, p_type, type);
	SET(at, Phdr, p_offset, off);
	SET(at, Phdr, p_vaddr, BASE + off);
	SET(at, Phdr, p_filesz, size);
	SET(at, Phdr, p_memsz, size);
}

static void set_dyn(size_t *at, uint64_t tag, uint64_t val)
{
	SET(*at, Dyn, d_tag, tag);
	SET(*at, Dyn, d_un, val);
	*at += SIZE(Dyn);
}

static void build_header(const struct spec *s, unsigned phnum)
{
	memcpy(img.buf, ELFMAG, SELFMAG);
	img.buf[EI_CLASS] = s->is_64 ? ELFCLASS64 : ELFCLASS32;
	img.buf[EI_DATA] = s->msb ? ELFDATA2MSB : ELFDATA2LSB;
	img.buf[EI_VERSION] = EV_CURRENT;
	SET(0, Ehdr, e_type, ET_DYN);
	SET(0, Ehdr, e_machine, s->msb ? EM_PPC : EM_386);
	SET(0, Ehdr, e_version, EV_CURRENT);
	SET(0, Ehdr, e_phoff, SIZE(Ehdr));
	SET(0, Ehdr, e_ehsize, SIZE(Ehdr));
	SET(0, Ehdr, e_phentsize, SIZE(Phdr));
	SET(0, Ehdr, e_phnum, phnum);
}

static size_t add_string(const char *str)
{
	size_t at = img.str;

	while (img.buf[at] != 0 || img.buf[at + 1] != 0)
		at++;
	at++;
	strcpy((char *)img.buf + at, str);
	return at - img.str;
}

static void build_dynamic(const struct spec *s)
{
	size_t at = img.dyn;

	for (size_t i = 0; s->needed && s->needed[i]; i++)
		set_dyn(&at, DT_NEEDED, add_string(s->needed[i]));
	if (s->runpath)
		set_dyn(&at, DT_RUNPATH, add_string(s->runpath));
	set_dyn(&at, DT_STRTAB, BASE + img.str);
	set_dyn(&at, DT_STRSZ, img.dyn - img.str);
	set_dyn(&at, DT_NULL, 0);
	set_phdr(img.ph_dyn, PT_DYNAMIC, img.dyn, at - img.dyn);
}

static void build(const struct spec *s)
{
	unsigned phnum = 1 + !!s->interp + !s->static_exe;

	memset(&img, 0, sizeof(img));
	img.is_64 = s->is_64;
	img.msb = s->msb;
	img.interp = s->far ? 0x1100 : 0x100;
	img.str = s->far ? 0x1200 : 0x200;
	img.dyn = s->far ? 0x4000 : 0x400;
	img.size = s->far ? 0x6000 : 0x600;
	build_header(s, phnum);
	img.ph_load = SIZE(Ehdr);
	img.ph_interp = img.ph_load + SIZE(Phdr);
	img.ph_dyn = img.ph_interp + (s->interp ? SIZE(Phdr) : 0);
	set_phdr(img.ph_load, PT_LOAD, 0, img.size);
	if (s->interp) {
		strcpy((char *)img.buf + img.interp, s->interp);
		set_phdr(img.ph_interp, PT_INTERP, img.interp, strlen(s->interp) + 1);
	}
	if (!s->static_exe)
		build_dynamic(s);
}

static struct source src;

/* Parses the current image (or its first @len bytes), failing the @fail_at'th read. */
static int parse_len(size_t len, unsigned fail_at, struct elf_deps *d)
{
	src = (struct source){ .data = img.buf, .len = len, .fd = -1, .fail_at = fail_at };
	return elf_deps_read(source_read, &src, len, d);
}

static int parse(struct elf_deps *d)
{
	return parse_len(img.size, 0, d);
}

static bool needed_is(const struct elf_deps *d, const char *const *want)
{
	size_t n = strv_length(d->needed);

	if (!d->needed || n != strv_length((char *const *)want))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!streq(d->needed[i], want[i]))
			return false;
	return true;
}

static const char *const two[] = { "libfoo.so.1", "libbar.so.2", NULL };

static void test_classes_and_orders(void)
{
	for (int k = 0; k < 4; k++) {
		struct spec s = { .is_64 = k & 1, .msb = k & 2, .interp = "/lib/ld.so.1",
				  .needed = two, .runpath = "$ORIGIN/../lib:/opt/x" };
		struct elf_deps d = {};
		int r;

		build(&s);
		r = parse(&d);
		check(r == 0 && streq(d.interp, "/lib/ld.so.1") && needed_is(&d, two) &&
		      streq(d.runpath, "$ORIGIN/../lib:/opt/x") && d.is_64 == s.is_64 &&
		      d.machine == (s.msb ? EM_PPC : EM_386) && src.reads == 1,
		      "ELFCLASS%d %s: interp, 2 needed in order, runpath, machine, in one read",
		      s.is_64 ? 64 : 32, s.msb ? "big-endian" : "little-endian");
		elf_deps_done(&d);
	}
}

static void test_far_and_rpath(void)
{
	struct spec s = { .is_64 = true, .far = true, .interp = "/lib64/ld.so", .needed = two };
	struct elf_deps d = {};
	size_t at;

	build(&s);
	/* DT_RPATH where DT_RUNPATH would be: used when there is no DT_RUNPATH */
	at = img.dyn + 2 * SIZE(Dyn);
	set_dyn(&at, DT_RPATH, add_string("/rp"));
	set_dyn(&at, DT_STRTAB, BASE + img.str);
	set_dyn(&at, DT_STRSZ, img.dyn - img.str);
	set_dyn(&at, DT_NULL, 0);
	SET(img.ph_dyn, Phdr, p_filesz, at - img.dyn);
	check(parse(&d) == 0 && needed_is(&d, two) && streq(d.runpath, "/rp") && src.reads == 4,
	      "parts past the first 4 KiB: one read each (%u reads), DT_RPATH taken", src.reads);
	elf_deps_done(&d);
	/* program headers past the first 4 KiB too: read on their own */
	memcpy(img.buf + 0x1000, img.buf + img.ph_load, 3 * SIZE(Phdr));
	SET(0, Ehdr, e_phoff, 0x1000);
	check(parse(&d) == 0 && needed_is(&d, two) && streq(d.interp, "/lib64/ld.so") &&
	      src.reads == 5, "program headers past the first 4 KiB: one more read (%u reads)",
	      src.reads);
	elf_deps_done(&d);
	SET(0, Ehdr, e_phoff, img.ph_load);
	for (unsigned k = 1; k <= 4; k++)
		check(parse_len(img.size, k, &d) == -EIO && !d.needed,
		      "read %u of 4 fails with -EIO: -EIO, nothing returned", k);
	src = (struct source){ .data = img.buf, .len = img.size, .fd = -1, .extra = 1 };
	check(elf_deps_read(source_read, &src, img.size, &d) == -EIO,
	      "a callback that claims more than it was asked for: -EIO");
}

static void test_static(void)
{
	struct spec s = { .is_64 = true, .static_exe = true };
	struct elf_deps d = {};

	build(&s);
	check(parse(&d) == 0 && !d.interp && d.needed && !d.needed[0] && !d.runpath,
	      "a static executable: success, no interp, empty needed");
	elf_deps_done(&d);
	SET(0, Ehdr, e_phnum, 0);
	SET(0, Ehdr, e_phoff, 0xdeadbeef);
	check(parse(&d) == 0 && d.needed && !d.needed[0],
	      "no program headers at all: success, empty needed");
	elf_deps_done(&d);
	check(d.needed == NULL && d.interp == NULL, "elf_deps_done() zeroes, and may run twice");
}

static void test_truncated(void)
{
	struct spec s = { .is_64 = true, .interp = "/ld", .needed = two };
	struct elf_deps d = {};
	bool all = true;

	build(&s);
	for (size_t len = 0; len < img.size; len++)
		all &= parse_len(len, 0, &d) == -ENOEXEC;
	check(all, "every truncation of an image (0 to %zu bytes): -ENOEXEC", img.size - 1);
	src = (struct source){ .data = img.buf, .len = img.size - 1, .fd = -1 };
	check(elf_deps_read(source_read, &src, img.size, &d) == -ENOEXEC,
	      "a file shorter than its announced size: -ENOEXEC");
}

static void test_out_of_bounds(void)
{
	struct spec s = { .is_64 = true, .interp = "/ld", .needed = two };
	struct elf_deps d = {};

	build(&s);
	SET(img.ph_dyn, Phdr, p_offset, img.size);
	check(parse(&d) == -ENOEXEC, "PT_DYNAMIC past the end of the file: -ENOEXEC");
	SET(img.ph_dyn, Phdr, p_offset, UINT64_MAX - 8);
	check(parse(&d) == -ENOEXEC, "PT_DYNAMIC whose offset + size wraps around: -ENOEXEC");
	build(&s);
	SET(img.ph_load, Phdr, p_filesz, img.size + 1);
	check(parse(&d) == -ENOEXEC, "the PT_LOAD holding the string table ends past the file: "
	      "-ENOEXEC");
	build(&s);
	SET(0, Ehdr, e_phoff, img.size - 8);
	check(parse(&d) == -ENOEXEC, "program headers past the end: -ENOEXEC");
	build(&s);
	SET(img.ph_interp, Phdr, p_offset, UINT32_MAX + (uint64_t)img.size);
	check(parse(&d) == -ENOEXEC, "PT_INTERP past the end: -ENOEXEC");
}

static void test_bad_headers(void)
{
	struct spec s = { .interp = "/ld", .needed = two };
	struct elf_deps d = {};
	static const struct { size_t off; uint8_t byte; const char *what; } bad[] = {
		{ 0, 0x7e, "bad magic" }, { EI_CLASS, 3, "unknown class" },
		{ EI_DATA, 0, "unknown byte order" }, { EI_VERSION, 2, "unknown version" },
	};

	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		build(&s);
		img.buf[bad[i].off] = bad[i].byte;
		check(parse(&d) == -ENOEXEC, "%s: -ENOEXEC", bad[i].what);
	}
	build(&s);
	SET(0, Ehdr, e_type, ET_REL);
	check(parse(&d) == -ENOEXEC, "an object file (ET_REL): -ENOEXEC");
	SET(0, Ehdr, e_type, ET_EXEC);
	SET(0, Ehdr, e_phnum, PN_XNUM);
	check(parse(&d) == -ENOEXEC, "e_phnum PN_XNUM: -ENOEXEC");
	SET(0, Ehdr, e_phnum, 4097);
	check(parse(&d) == -ENOEXEC, "4097 program headers: -ENOEXEC");
	SET(0, Ehdr, e_phnum, 3);
	SET(0, Ehdr, e_phentsize, SIZE(Phdr) + 4);
	check(parse(&d) == -ENOEXEC, "program headers of the wrong size: -ENOEXEC");
}

static void test_interp(void)
{
	struct spec s = { .interp = "lib/ld.so", .needed = two };
	struct elf_deps d = {};

	build(&s);
	check(parse(&d) == -ENOEXEC, "a relative interpreter: -ENOEXEC");
	s.interp = "/lib/ld.so";
	build(&s);
	SET(img.ph_interp, Phdr, p_filesz, strlen(s.interp));
	check(parse(&d) == -ENOEXEC, "an interpreter not NUL-terminated within PT_INTERP: -ENOEXEC");
	SET(img.ph_interp, Phdr, p_filesz, 4097);
	check(parse(&d) == -ENOEXEC, "PT_INTERP over 4096 bytes: -ENOEXEC");
	SET(img.ph_interp, Phdr, p_filesz, 0);
	check(parse(&d) == -ENOEXEC, "an empty PT_INTERP: -ENOEXEC");
}

static void test_strtab_unmapped(void)
{
	struct spec s = { .is_64 = true, .interp = "/ld", .needed = two, .runpath = "/r" };
	struct elf_deps d = {};

	build(&s);
	SET(img.ph_load, Phdr, p_vaddr, 0x900000);
	check(parse(&d) == 0 && streq(d.interp, "/ld") && d.needed && !d.needed[0] && !d.runpath,
	      "DT_STRTAB in no PT_LOAD: success, no names rather than guessed ones");
	elf_deps_done(&d);
}

/* Where @name is in the image's string table. */
static size_t str_off(const char *name)
{
	size_t at = 1;

	while (!streq((const char *)img.buf + img.str + at, name))
		at += strlen((const char *)img.buf + img.str + at) + 1;
	return at;
}

/* Names the parser cannot read whole are left out, the others kept: a wrong or missing name
 * costs one useless prefetch, refusing the file would cost all of them. */
static void test_bad_names(void)
{
	char n255[256], n256[257];
	const char *names[] = { "liba.so", n255, n256, "libz.so", NULL };
	const char *kept[] = { "liba.so", n255, NULL };
	struct spec s = { .far = true, .needed = names };
	struct elf_deps d = {};

	memset(n255, 'x', 255);
	n255[255] = 0;
	memset(n256, 'y', 256);
	n256[256] = 0;
	build(&s);
	/* DT_STRSZ (after 4 DT_NEEDED and DT_STRTAB) ends the table right before libz.so's NUL */
	SET(img.dyn + 5 * SIZE(Dyn), Dyn, d_un, str_off("libz.so") + strlen("libz.so"));
	check(parse(&d) == 0 && needed_is(&d, kept),
	      "names over 255 bytes or not NUL-terminated inside DT_STRSZ are left out, the others "
	      "kept in order");
	elf_deps_done(&d);
	s = (struct spec){ .needed = two };
	build(&s);
	SET(img.dyn, Dyn, d_un, 0);
	SET(img.dyn + SIZE(Dyn), Dyn, d_un, img.dyn - img.str);
	check(parse(&d) == 0 && d.needed && !d.needed[0],
	      "an empty name and one just past the table are left out");
	elf_deps_done(&d);
}

static void test_many_needed(void)
{
	static char names[300][16];
	const char *list[301];
	struct spec s = { .is_64 = true, .far = true, .needed = list };
	struct elf_deps d = {};

	for (int i = 0; i < 300; i++) {
		snprintf(names[i], sizeof(names[i]), "lib%d.so", i);
		list[i] = names[i];
	}
	list[300] = NULL;
	build(&s);
	check(parse(&d) == 0 && strv_length(d.needed) == 256 && streq(d.needed[255], "lib255.so"),
	      "300 DT_NEEDED: the first 256 are kept");
	elf_deps_done(&d);
	/* a PT_DYNAMIC of 100 KiB (zeros after the entries: DT_NULL) */
	img.size = IMG_MAX;
	SET(img.ph_dyn, Phdr, p_filesz, IMG_MAX - img.dyn);
	SET(img.ph_load, Phdr, p_filesz, IMG_MAX);
	check(parse(&d) == 0 && strv_length(d.needed) == 256 && src.max_n <= 64 * 1024,
	      "a PT_DYNAMIC over 64 KiB: only 64 KiB of it read (largest read %zu)", src.max_n);
	elf_deps_done(&d);
}

static void test_host(const char *path, const char *interp, const char *need, unsigned max_reads)
{
	struct elf_deps d = {};
	struct stat st;
	int r;

	src = (struct source){ .fd = open(path, O_RDONLY | O_CLOEXEC) };
	if (src.fd < 0 || fstat(src.fd, &st) < 0) {
		printf("ok %d - # SKIP %s not here\n", ++tap_n, path);
		return;
	}
	r = elf_deps_read(source_read, &src, (uint64_t)st.st_size, &d);
	check(r == 0 && (interp ? d.interp && streq(d.interp, interp) : !d.interp) &&
	      strv_contains(d.needed, need) && d.is_64 && d.machine == EM_X86_64 &&
	      src.reads <= max_reads,
	      "%s: interp %s, needs %s (%zu needed), in %u reads (largest %zu bytes)", path,
	      interp ?: "none", need, strv_length(d.needed), src.reads, src.max_n);
	elf_deps_done(&d);
	close(src.fd);
}

int main(void)
{
	test_classes_and_orders();
	test_far_and_rpath();
	test_static();
	test_truncated();
	test_out_of_bounds();
	test_bad_headers();
	test_interp();
	test_strtab_unmapped();
	test_bad_names();
	test_many_needed();
#if defined(__x86_64__)
#define LD "/lib64/ld-linux-x86-64.so.2"
	test_host("/usr/bin/python3.11", LD, "libc.so.6", 4);
	test_host("/bin/bash", LD, "libc.so.6", 4);
	test_host("/lib/x86_64-linux-gnu/libc.so.6", LD, "ld-linux-x86-64.so.2", 4);
	/* a 3 MiB string table, read from the first name on: 9 of its 11 names are in the first
	 * 1 MiB of that (libedit.so.2, libz3.so.4 and the runpath are 3 MiB in, left out) */
	test_host("/usr/lib/x86_64-linux-gnu/libLLVM-14.so.1", NULL, "libstdc++.so.6", 4);
#endif
	return tap_done();
}
