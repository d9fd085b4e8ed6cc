/* cache/format/elf_deps.c: see elf_deps.h.
 *
 * Fields are read byte by byte in the file's byte order, at the offsets <elf.h>'s structs give
 * them, never by casting a struct over a buffer: its alignment and byte order are the file's,
 * not ours.  Every limit below bounds an allocation or a read that a hostile file could
 * otherwise make as large as it likes; each is far above what linkers produce. */
#include "elf_deps.h"

#include <elf.h>
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "cache/base/util.h"

/* The first read: the ELF header and, in what every linker writes, the program headers. */
#define HEAD_MAX 4096U
/* The kernel execs no file with more than a page of program headers (73 of 56 bytes); ld.so
 * has no limit.  4096 of them is 224 KiB at most. */
#define PHNUM_MAX 4096U
/* python3.11's and libc's PT_DYNAMIC are 512 bytes (32 entries); 64 KiB is 4096 entries.  The
 * linker puts DT_NEEDED first, so what is past the cap is not read and not missed. */
#define DYNAMIC_MAX (64U * 1024)
/* The string table is mostly symbol names (39 KiB in python3.11, 3 MiB in libLLVM-14), and the
 * library names may be anywhere in it (libc's at 32 KiB, at its end): only the span from the
 * first name to the last is read, and at most 1 MiB of it. */
#define STRTAB_MAX (1024U * 1024)
/* python3.11 needs 4 libraries, libLLVM-14 11: 256 bounds the names' memory (64 KiB) and the
 * prefetches one exec can start. */
#define NEEDED_MAX 256U
/* NAME_MAX: a library is found by its file name. */
#define NAME_LEN_MAX 255U
/* PATH_MAX: the kernel refuses a longer PT_INTERP; a runpath is a list of paths, cut there. */
#define PATH_SIZE_MAX 4096U

#define NONE UINT64_MAX

struct elf_file {
	elf_read_fn read;
	void *userdata;
	uint64_t size;
	bool is_64, msb;
	size_t head_len;
	uint8_t head[HEAD_MAX];
};

/* The program headers, copied out of the file. */
struct elf_phdrs {
	uint8_t *buf;
	size_t n;
};

/* What the dynamic section says; offsets into the string table, NONE when absent. */
struct elf_dynamic {
	uint64_t needed[NEEDED_MAX];
	size_t n_needed;
	uint64_t strtab, strsz, runpath, rpath;
};

static void elf_phdrs_done(struct elf_phdrs *ph)
{
	free(ph->buf);
}

static uint64_t min_u64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

static uint64_t max_u64(uint64_t a, uint64_t b)
{
	return a > b ? a : b;
}

static uint64_t get_uint(const struct elf_file *f, const uint8_t *p, size_t n)
{
	uint64_t v = 0;

	for (size_t i = 0; i < n; i++)
		v = v << 8 | p[f->msb ? i : n - 1 - i];
	return v;
}

/* Field @field of <elf.h>'s Elf32_@type or Elf64_@type (as the file's class says) at @p. */
#define FIELD(f, p, type, field)                                                          \
	((f)->is_64 ? get_uint(f, (p) + offsetof(Elf64_##type, field),                     \
			       sizeof(((Elf64_##type *)NULL)->field))                       \
		    : get_uint(f, (p) + offsetof(Elf32_##type, field),                     \
			       sizeof(((Elf32_##type *)NULL)->field)))
#define SIZEOF(f, type) ((f)->is_64 ? sizeof(Elf64_##type) : sizeof(Elf32_##type))

/* One call of the callback for all @n bytes: @file_size promised them, so fewer means the file
 * is not the one described. */
static int elf_read_exact(struct elf_file *f, uint64_t off, void *buf, size_t n)
{
	int r;

	r = f->read(f->userdata, off, buf, n);
	if (r < 0)
		return r;
	if ((size_t)r > n)
		return -EIO;
	return (size_t)r < n ? -ENOEXEC : 0;
}

/* The @n bytes at @off in a new buffer: copied from the first read when they are in it, else
 * read.  -ENOEXEC when they are not all inside the file. */
static int elf_fetch(struct elf_file *f, uint64_t off, size_t n, uint8_t **ret)
{
	_cleanup_free_ uint8_t *buf = NULL;
	int r;

	if (off > f->size || n > f->size - off)
		return -ENOEXEC;
	buf = malloc(n > 0 ? n : 1);
	if (!buf)
		return -ENOMEM;
	if (off <= f->head_len && n <= f->head_len - off) {
		memcpy(buf, f->head + off, n);
	} else {
		r = elf_read_exact(f, off, buf, n);
		if (r < 0)
			return r;
	}
	*ret = TAKE_PTR(buf);
	return 0;
}

/* The string at @off of @tab (@len bytes), if it is 1 to @max bytes long and ends with a NUL
 * inside @tab: 1 and a copy in @ret; 0 when not. */
static int string_at(const uint8_t *tab, size_t len, uint64_t off, size_t max, char **ret)
{
	const uint8_t *s = tab + off, *nul;

	if (off >= len)
		return 0;
	nul = memchr(s, 0, min_u64(len - off, (uint64_t)max + 1));
	if (!nul || nul == s)
		return 0;
	*ret = strndup((const char *)s, (size_t)(nul - s));
	return *ret ? 1 : -ENOMEM;
}

/* Reads the first bytes, checks that they are an ELF header we can read, learns the class and
 * byte order. */
static int elf_read_head(struct elf_file *f)
{
	const uint8_t *id = f->head;
	int r;

	f->head_len = (size_t)min_u64(f->size, HEAD_MAX);
	if (f->head_len < EI_NIDENT)
		return -ENOEXEC;
	r = elf_read_exact(f, 0, f->head, f->head_len);
	if (r < 0)
		return r;
	if (memcmp(id, ELFMAG, SELFMAG) != 0 ||
	    (id[EI_CLASS] != ELFCLASS32 && id[EI_CLASS] != ELFCLASS64) ||
	    (id[EI_DATA] != ELFDATA2LSB && id[EI_DATA] != ELFDATA2MSB) ||
	    id[EI_VERSION] != EV_CURRENT)
		return -ENOEXEC;
	f->is_64 = id[EI_CLASS] == ELFCLASS64;
	f->msb = id[EI_DATA] == ELFDATA2MSB;
	return f->head_len < SIZEOF(f, Ehdr) ? -ENOEXEC : 0;
}

static int elf_read_phdrs(struct elf_file *f, struct elf_phdrs *ret)
{
	uint64_t type, phoff, phnum, entsize;
	int r;

	type = FIELD(f, f->head, Ehdr, e_type);
	phoff = FIELD(f, f->head, Ehdr, e_phoff);
	phnum = FIELD(f, f->head, Ehdr, e_phnum);
	entsize = FIELD(f, f->head, Ehdr, e_phentsize);
	/* PN_XNUM puts the count in section 0, which neither the kernel nor ld.so reads. */
	if ((type != ET_EXEC && type != ET_DYN) || phnum == PN_XNUM || phnum > PHNUM_MAX)
		return -ENOEXEC;
	if (phnum == 0)
		return 0;  /* nothing to load: no interpreter, no libraries */
	if (entsize != SIZEOF(f, Phdr))
		return -ENOEXEC;
	r = elf_fetch(f, phoff, phnum * entsize, &ret->buf);
	if (r < 0)
		return r;
	ret->n = phnum;
	return 0;
}

/* The first program header of @type (as the kernel takes the first PT_INTERP), or NULL. */
static const uint8_t *phdr_find(const struct elf_file *f, const struct elf_phdrs *ph,
				uint32_t type)
{
	for (size_t i = 0; i < ph->n; i++) {
		const uint8_t *p = ph->buf + i * SIZEOF(f, Phdr);

		if (FIELD(f, p, Phdr, p_type) == type)
			return p;
	}
	return NULL;
}

static int elf_read_interp(struct elf_file *f, const struct elf_phdrs *ph, char **ret)
{
	_cleanup_free_ uint8_t *buf = NULL;
	_cleanup_free_ char *path = NULL;
	const uint8_t *p;
	uint64_t size;
	int r;

	p = phdr_find(f, ph, PT_INTERP);
	if (!p)
		return 0;
	size = FIELD(f, p, Phdr, p_filesz);
	if (size > PATH_SIZE_MAX)
		return -ENOEXEC;
	r = elf_fetch(f, FIELD(f, p, Phdr, p_offset), (size_t)size, &buf);
	if (r < 0)
		return r;
	r = string_at(buf, (size_t)size, 0, PATH_SIZE_MAX - 1, &path);
	if (r < 0)
		return r;
	if (r == 0 || path[0] != '/')
		return -ENOEXEC;
	*ret = TAKE_PTR(path);
	return 0;
}

static void dynamic_scan(const struct elf_file *f, const uint8_t *buf, size_t len,
			 struct elf_dynamic *dyn)
{
	size_t entsize = SIZEOF(f, Dyn);

	*dyn = (struct elf_dynamic){ .strtab = NONE, .runpath = NONE, .rpath = NONE };
	for (size_t i = 0; len - i >= entsize; i += entsize) {
		uint64_t tag = FIELD(f, buf + i, Dyn, d_tag), val = FIELD(f, buf + i, Dyn, d_un);

		if (tag == DT_NULL)
			break;
		/* As ld.so, the last of a repeated tag wins. */
		if (tag == DT_NEEDED && dyn->n_needed < NEEDED_MAX)
			dyn->needed[dyn->n_needed++] = val;
		else if (tag == DT_STRTAB)
			dyn->strtab = val;
		else if (tag == DT_STRSZ)
			dyn->strsz = val;
		else if (tag == DT_RUNPATH)
			dyn->runpath = val;
		else if (tag == DT_RPATH)
			dyn->rpath = val;
	}
}

/* Where the bytes at address @vaddr are in the file, through the PT_LOAD that maps them from
 * the file (not its zero-filled tail): 1, the offset and how many bytes the segment has from
 * there; 0 when none maps them. */
static int vaddr_to_offset(const struct elf_file *f, const struct elf_phdrs *ph, uint64_t vaddr,
			   uint64_t *ret_off, uint64_t *ret_avail)
{
	for (size_t i = 0; i < ph->n; i++) {
		const uint8_t *p = ph->buf + i * SIZEOF(f, Phdr);
		uint64_t start = FIELD(f, p, Phdr, p_vaddr), off = FIELD(f, p, Phdr, p_offset),
			 size = FIELD(f, p, Phdr, p_filesz);

		if (FIELD(f, p, Phdr, p_type) != PT_LOAD || vaddr < start || vaddr - start >= size)
			continue;
		if (off > f->size || size > f->size - off)
			return -ENOEXEC;
		*ret_off = off + (vaddr - start);
		*ret_avail = size - (vaddr - start);
		return 1;
	}
	return 0;
}

/* Widens [@lo, @hi) to hold a string of at most @max bytes and its NUL at @off, inside the
 * first @table bytes. */
static void span_add(uint64_t off, size_t max, uint64_t table, uint64_t *lo, uint64_t *hi)
{
	if (off >= table)
		return;
	*lo = min_u64(*lo, off);
	*hi = max_u64(*hi, table - off > max ? off + max + 1 : table);
}

/* The string at table offset @off from the span [@lo, @hi) of the table in @span. */
static int span_string(const uint8_t *span, uint64_t lo, uint64_t hi, uint64_t off, size_t max,
		       char **ret)
{
	if (off < lo || off >= hi)
		return 0;
	return string_at(span, (size_t)(hi - lo), off - lo, max, ret);
}

static int dynamic_names(const uint8_t *span, uint64_t lo, uint64_t hi,
			 const struct elf_dynamic *dyn, struct elf_deps *d)
{
	uint64_t rp = dyn->runpath != NONE ? dyn->runpath : dyn->rpath;
	int r;

	for (size_t i = 0; i < dyn->n_needed; i++) {
		char *name = NULL;

		r = span_string(span, lo, hi, dyn->needed[i], NAME_LEN_MAX, &name);
		if (r > 0)
			r = strv_consume(&d->needed, name);
		if (r < 0) {
			free(name);
			return r;
		}
	}
	r = span_string(span, lo, hi, rp, PATH_SIZE_MAX - 1, &d->runpath);
	return r < 0 ? r : 0;
}

/* Reads, in one read, the part of the string table that holds the names, and copies them. */
static int dynamic_strings(struct elf_file *f, const struct elf_phdrs *ph,
			   const struct elf_dynamic *dyn, struct elf_deps *d)
{
	_cleanup_free_ uint8_t *span = NULL;
	uint64_t off, avail, table, lo = UINT64_MAX, hi = 0;
	int r;

	/* Unmapped, the table's place in the file would be a guess: no names rather than wrong
	 * ones. */
	r = vaddr_to_offset(f, ph, dyn->strtab, &off, &avail);
	if (r <= 0)
		return r;
	table = min_u64(dyn->strsz, avail);
	for (size_t i = 0; i < dyn->n_needed; i++)
		span_add(dyn->needed[i], NAME_LEN_MAX, table, &lo, &hi);
	span_add(dyn->runpath != NONE ? dyn->runpath : dyn->rpath, PATH_SIZE_MAX - 1, table, &lo,
		 &hi);
	if (lo >= hi)
		return 0;
	hi = hi - lo > STRTAB_MAX ? lo + STRTAB_MAX : hi;
	r = elf_fetch(f, off + lo, (size_t)(hi - lo), &span);
	if (r < 0)
		return r;
	return dynamic_names(span, lo, hi, dyn, d);
}

static int elf_read_dynamic(struct elf_file *f, const struct elf_phdrs *ph, struct elf_deps *d)
{
	_cleanup_free_ struct elf_dynamic *dyn = NULL;
	_cleanup_free_ uint8_t *buf = NULL;
	const uint8_t *p;
	uint64_t off, size;
	int r;

	p = phdr_find(f, ph, PT_DYNAMIC);
	if (!p)
		return 0;
	off = FIELD(f, p, Phdr, p_offset);
	size = FIELD(f, p, Phdr, p_filesz);
	if (off > f->size || size > f->size - off)
		return -ENOEXEC;
	size = min_u64(size, DYNAMIC_MAX);
	r = elf_fetch(f, off, (size_t)size, &buf);
	if (r < 0)
		return r;
	dyn = malloc(sizeof(*dyn));
	if (!dyn)
		return -ENOMEM;
	dynamic_scan(f, buf, (size_t)size, dyn);
	if (dyn->n_needed == 0 && dyn->runpath == NONE && dyn->rpath == NONE)
		return 0;  /* no string to read (a static PIE) */
	return dynamic_strings(f, ph, dyn, d);
}

int elf_deps_read(elf_read_fn read, void *userdata, uint64_t file_size, struct elf_deps *ret)
{
	_cleanup_free_ struct elf_file *f = NULL;
	_cleanup_(elf_deps_done) struct elf_deps d = {};
	_cleanup_(elf_phdrs_done) struct elf_phdrs ph = {};
	int r;

	f = calloc(1, sizeof(*f));
	d.needed = calloc(1, sizeof(char *));
	if (!f || !d.needed)
		return -ENOMEM;
	*f = (struct elf_file){ .read = read, .userdata = userdata, .size = file_size };
	r = elf_read_head(f);
	if (r < 0)
		return r;
	d.machine = (uint16_t)FIELD(f, f->head, Ehdr, e_machine);
	d.is_64 = f->is_64;
	r = elf_read_phdrs(f, &ph);
	if (r < 0)
		return r;
	r = elf_read_interp(f, &ph, &d.interp);
	if (r < 0)
		return r;
	r = elf_read_dynamic(f, &ph, &d);
	if (r < 0)
		return r;
	*ret = d;
	d = (struct elf_deps){};
	return 0;
}

void elf_deps_done(struct elf_deps *d)
{
	free(d->interp);
	strv_free(d->needed);
	free(d->runpath);
	*d = (struct elf_deps){};
}
