/* tests/unit/test-source_local.c: the tar header index (PAX and GNU long names, links,
 * truncation, junk) on archives libarchive writes, and a local source on the oci-gzip fixture:
 * the manifest the tag selects, its descriptor (source_local_head_manifest), blob ranges. */
#include "cache/registry/source_local.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cache/base/digest.h"
#include "cache/base/error.h"
#include "cache/registry/registry.h"
#include "cache/registry/tar_index.h"
#include "tap.h"

#define ZERO64 "0000000000000000000000000000000000000000000000000000000000000000"
#define LONG_DIR "a-directory-name-that-is-long-enough/to-need-more-than-one-hundred-bytes/" \
	"in-a-tar-header-name-field/"

/* Writes members {name, data} (data NULL: a symlink to "target") in @format to a temp file. */
static int write_archive(int format, const char *const *names, const char *const *datas,
			 size_t n, char *path)
{
	struct archive *a = archive_write_new();
	int fd = mkstemp(path);

	if (fd < 0 || !a)
		return -1;
	(void)close(fd);
	archive_write_set_format(a, format);
	if (archive_write_open_filename(a, path) != ARCHIVE_OK)
		return -1;
	for (size_t i = 0; i < n; i++) {
		struct archive_entry *e = archive_entry_new();

		archive_entry_set_pathname(e, names[i]);
		archive_entry_set_perm(e, 0644);
		if (datas[i]) {
			archive_entry_set_filetype(e, AE_IFREG);
			archive_entry_set_size(e, strlen(datas[i]));
		} else {
			archive_entry_set_filetype(e, AE_IFLNK);
			archive_entry_set_symlink(e, "../" LONG_DIR "file");
		}
		archive_write_header(a, e);
		if (datas[i])
			archive_write_data(a, datas[i], strlen(datas[i]));
		archive_entry_free(e);
	}
	archive_write_close(a);
	archive_write_free(a);
	return 0;
}

static bool member_is(int fd, const struct tar_index *t, const char *name, const char *want)
{
	const struct tar_member *m = tar_index_find(t, name);
	char buf[256] = "";

	if (!m || m->size >= sizeof(buf) || tar_pread(fd, buf, m->size, m->offset) < 0)
		return false;
	return strcmp(buf, want) == 0;
}

static void test_formats(void)
{
	static const char *const names[] = { "./" LONG_DIR "file", "short", "dir/link", "short" };
	static const char *const datas[] = { "long-named contents\n", "first\n", NULL, "second\n" };
	const struct { int format; const char *what; } formats[] = {
		{ ARCHIVE_FORMAT_TAR_PAX_RESTRICTED, "pax" },
		{ ARCHIVE_FORMAT_TAR_GNUTAR, "gnu" },
	};

	for (size_t i = 0; i < ELEMENTSOF(formats); i++) {
		char path[] = "/tmp/test-tar-index-XXXXXX";
		struct tar_index *t = NULL;
		uint64_t cut = 0;
		struct stat st;
		int fd;

		check(write_archive(formats[i].format, names, datas, ELEMENTSOF(names), path) == 0,
		      "%s: libarchive writes the test archive", formats[i].what);
		fd = open(path, O_RDONLY | O_CLOEXEC);
		check(fd >= 0 && fstat(fd, &st) == 0, "%s: the archive opens", formats[i].what);
		check(tar_index_scan(fd, st.st_size, &t) == 0 && t, "%s: headers scan", formats[i].what);
		if (t) {
			check(member_is(fd, t, LONG_DIR "file", "long-named contents\n"),
			      "%s: a name over 100 bytes is found, './' stripped", formats[i].what);
			check(member_is(fd, t, "short", "second\n"),
			      "%s: the last member of a name wins", formats[i].what);
			check(member_is(fd, t, "dir/link", "long-named contents\n"),
			      "%s: a symbolic link is followed within the archive", formats[i].what);
			check(tar_index_find(t, "missing") == NULL, "%s: a missing name is NULL",
			      formats[i].what);
			cut = tar_index_find(t, "short")->offset + 3;
			t = tar_index_free(t);
		}
		check(cut > 0 && tar_index_scan(fd, cut, &t) == -ENODATA && !t,
		      "%s: an archive cut inside a member is truncated (-ENODATA)", formats[i].what);
		check(tar_index_scan(fd, 300, &t) == -ENODATA && !t,
		      "%s: an archive cut inside a header is truncated", formats[i].what);
		(void)close(fd);
		(void)unlink(path);
	}

	{
		char path[] = "/tmp/test-tar-index-XXXXXX";
		char junk[2048];
		struct tar_index *t = NULL;
		int fd = mkstemp(path);

		memset(junk, 'x', sizeof(junk));
		check(fd >= 0 && write(fd, junk, sizeof(junk)) == (ssize_t)sizeof(junk),
		      "write a junk file");
		check(tar_index_scan(fd, sizeof(junk), &t) == -EPROTO && !t,
		      "a file that is no tar is -EPROTO (header checksum)");
		(void)close(fd);
		(void)unlink(path);
	}
}

struct range_buf {
	unsigned char *buf;
	size_t n, size;
};

static int range_fill(void *userdata, const void *buf, size_t n)
{
	struct range_buf *b = userdata;

	if (n > b->size - b->n)
		return -EFBIG;
	memcpy(b->buf + b->n, buf, n);
	b->n += n;
	return 0;
}

static void test_oci_layout(void)
{
	struct reference *ref = NULL;
	struct source_local *s = NULL;
	char digest[72], head_digest[72], *buf = NULL, *ct = NULL, *head_type = NULL, *idx = NULL;
	uint64_t head_size = 0, requests = 1, bytes = 0;
	unsigned char range[1 << 16];
	struct range_buf rb = { .buf = range, .size = sizeof(range) };
	size_t len = 0, idx_len = 0;

	check(reference_parse("oci:fixtures/oci-gzip:edge", &ref) == 0, "parse oci: ref");
	check(source_local_new(ref, &s) == 0, "a local source is created");
	check(source_local_ping(s) == 0, "the layout opens");
	check(source_local_head_manifest(s, head_digest, &head_size, &head_type) == 0 &&
	      head_type && strcmp(head_type, "application/vnd.oci.image.manifest.v1+json") == 0,
	      "head_manifest answers from index.json");
	check(read_full_file("fixtures/oci-gzip/index.json", 1 << 20, &idx, &idx_len) == 0 &&
	      strstr(idx, head_digest), "the digest is the one index.json names");
	check(source_local_get_manifest(s, "ignored-tag", &buf, &len, &ct, digest) == 0,
	      "get_manifest by the reference's tag");
	check(strcmp(digest, head_digest) == 0 && len == head_size &&
	      digest_verify_buffer(buf, len, digest) == 0, "the manifest hashes to its digest");
	free(buf);
	free(ct);
	buf = ct = NULL;
	check(source_local_get_manifest(s, head_digest, &buf, &len, &ct, digest) == 0 &&
	      len == head_size, "get_manifest by digest");
	check(source_local_stream_blob(s, head_digest, 0, 1, range_fill, &rb) == 0 &&
	      rb.n == 1 && range[0] == '{', "a blob range is read");
	rb.n = 0;
	check(source_local_stream_blob(s, head_digest, 1, REGISTRY_TO_END, range_fill, &rb) == 0 &&
	      rb.n == head_size - 1, "a range open at its end is read to the blob's end");
	check(source_local_stream_blob(s, head_digest, head_size, 1, range_fill, &rb) == -EPROTO,
	      "a range past the end is -EPROTO");
	check(source_local_get_blob(s, "sha256:" ZERO64, 1024, &buf, &len) == -ENOENT &&
	      strstr(error_message(), "not found"), "a missing blob is -ENOENT, said so");
	source_local_get_counters(s, &requests, &bytes);
	check(requests == 0 && bytes > head_size, "no requests, bytes read counted");
	free(buf);
	free(ct);
	free(idx);
	free(head_type);
	source_local_free(s);
	reference_free(ref);

	check(reference_parse("oci:fixtures/oci-gzip:nope", &ref) == 0 &&
	      source_local_new(ref, &s) == 0, "a source for an unknown tag");
	check(source_local_head_manifest(s, head_digest, &head_size, &head_type) == -ENOENT &&
	      strstr(error_message(), "tag 'nope' not found"), "an unknown tag is -ENOENT");
	source_local_free(s);
	reference_free(ref);
}

int main(void)
{
	test_formats();
	test_oci_layout();
	return tap_done();
}
