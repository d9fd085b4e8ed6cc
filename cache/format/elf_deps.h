/* cache/format/elf_deps.h: the program interpreter and the shared libraries an ELF file names,
 * for the daemon to prefetch them when the file is exec'd.
 *
 * The bytes come from an image anyone may have built: the parser trusts no offset, size or count
 * in them, allocates at most about 1.5 MiB, and reads through a callback in at most four reads
 * (each may be a network fetch): the first 4 KiB (the ELF header and, in what linkers write, the
 * program headers; a fifth read when they are elsewhere), PT_INTERP, PT_DYNAMIC, and the span
 * of the dynamic string table that holds the names.  Bytes already read are not asked for again.  A wrong answer only costs
 * a useless prefetch, so what is odd but harmless (a name too long, a string table that no
 * PT_LOAD maps) is left out rather than refused. */
#ifndef LAZYROOT_ELF_DEPS_H
#define LAZYROOT_ELF_DEPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct elf_deps {
	char *interp;     /* PT_INTERP's path, NULL if none */
	char **needed;    /* DT_NEEDED names in order, NULL-terminated, never NULL after success */
	char *runpath;    /* DT_RUNPATH, else DT_RPATH; NULL if neither */
	uint16_t machine; /* e_machine */
	bool is_64;       /* ELFCLASS64 */
};

/* Reads @n bytes at @off of the file into @buf; returns how many were read (fewer only at the
 * end of the file) or -errno. */
typedef int (*elf_read_fn)(void *userdata, uint64_t off, void *buf, size_t n);

/* Parses the ELF file of @file_size bytes read through @read. -ENOEXEC if it is not ELF or is
 * malformed (out-of-bounds offsets, sizes, counts, or a read that comes back short of
 * @file_size); errors of @read are returned as they are (-EIO if it returns more than it was
 * asked for).  A static executable gives no interp and no
 * needed (success).  Leaves out, without failing: DT_NEEDED names past the 256th, names that
 * are empty, longer than 255 bytes, not NUL-terminated inside the string table (DT_STRSZ, and
 * the PT_LOAD that maps it) or ending over 1 MiB after the first name, and every name when
 * DT_STRTAB lies in no PT_LOAD.  @ret is set only on success;
 * release it with elf_deps_done(). */
int elf_deps_read(elf_read_fn read, void *userdata, uint64_t file_size, struct elf_deps *ret);

void elf_deps_done(struct elf_deps *d);   /* frees, zeroes; NULL-safe fields */

#endif
