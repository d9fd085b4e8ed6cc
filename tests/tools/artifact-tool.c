/*
 * tests/tools/artifact-tool.c: drives cache/registry/artifact_cache.h against a real registry for
 * the integration tests (tests/integration/test_artifacts.py).  Not installed.
 *
 *   artifact-tool push [--to REPO] IMAGE TYPE MEDIATYPE=FILE...
 *       publishes an artifact for IMAGE's manifest (what its tag names) in IMAGE's repository,
 *       or in REPO ("host/path"); prints the artifact's digest
 *   artifact-tool ls [--cache DB] IMAGE TYPE|-
 *       looks up (own repository, then the configured artifact-repository of $LAZYROOT_CONFIG)
 *       and prints "PLACE DIGEST ARTIFACT_TYPE" per artifact
 *   artifact-tool fetch [--cache DB] IMAGE TYPE MAX OUT
 *       the first blob of the first artifact found, at most MAX bytes, into OUT
 *
 * Credentials as lazyroot finds them ($REGISTRY_AUTH_FILE…).  Exit 0 on success, 1 with the
 * error's message and errno name on stderr.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cache/base/error.h"
#include "cache/base/util.h"
#include "cache/config.h"
#include "cache/registry/artifact_cache.h"
#include "cache/registry/credentials.h"
#include "cache/registry/registry.h"
#include "cache/store/index_db.h"

#define FILE_MAX (64u << 20)

static const struct credentials_options creds = {};
static const struct registry_options ropts = { .credentials = &creds };

static int fail(int r, const char *what)
{
	fprintf(stderr, "artifact-tool: %s: %s (%s)\n", what, error_message() ?: strerror(-r),
		strerrorname_np(-r) ?: "?");
	return 1;
}

/* The descriptor of the manifest IMAGE's tag (or digest) names. */
static int subject_of(const struct reference *image, struct artifact_desc *ret)
{
	_cleanup_(registry_freep) struct registry *r = NULL;
	_cleanup_free_ char *buf = NULL, *ctype = NULL;
	size_t len;
	int e;

	e = registry_new(image, &ropts, &r);
	if (e < 0)
		return e;
	e = registry_get_manifest(r, image->digest ?: image->tag, &buf, &len, &ctype, ret->digest);
	if (e < 0)
		return e;
	ret->size = len;
	ret->media_type = TAKE_PTR(ctype);
	return ret->media_type ? 0 : -EPROTO;
}

static int cmd_push(int argc, char **argv)
{
	_cleanup_(reference_freep) struct reference *image = NULL, *place = NULL;
	struct artifact_blob blobs[8] = {};
	char *data[8] = {}, digest[DIGEST_STRING_MAX];
	struct artifact_desc subject = {};
	const char *to = NULL;
	size_t n = 0;
	int e;

	if (argc > 2 && streq(argv[0], "--to")) {
		to = argv[1];
		argc -= 2, argv += 2;
	}
	if (argc < 3 || argc - 2 > (int)ELEMENTSOF(blobs))
		return fail(-EINVAL, "usage: push [--to REPO] IMAGE TYPE MEDIATYPE=FILE...");
	e = reference_parse(argv[0], &image);
	if (e >= 0)
		e = reference_parse(to ?: argv[0], &place);
	if (e < 0)
		return fail(e, "reference");
	for (int i = 2; i < argc; i++, n++) {
		char *eq = strchr(argv[i], '=');

		if (!eq)
			return fail(-EINVAL, argv[i]);
		*eq = 0;
		blobs[n].media_type = argv[i];
		e = read_full_file(eq + 1, FILE_MAX, &data[n], &blobs[n].size);
		if (e < 0)
			return fail(e, eq + 1);
		blobs[n].data = data[n];
	}
	e = subject_of(image, &subject);
	if (e < 0)
		return fail(e, "subject");
	e = artifact_publish(NULL, place, image, &ropts, &subject, argv[1], blobs, n, digest);
	free(subject.media_type);
	for (size_t i = 0; i < n; i++)
		free(data[i]);
	if (e < 0)
		return fail(e, "push");
	printf("%s\n", digest);
	return 0;
}

/* Looks up IMAGE's artifacts of TYPE with the configuration and the cache @db_path. */
static int lookup(const char *db_path, const char *image_name, const char *type,
		  struct artifact_found *ret, char subject[DIGEST_STRING_MAX])
{
	_cleanup_(reference_freep) struct reference *image = NULL;
	_cleanup_(index_db_freep) struct index_db *db = NULL;
	struct artifact_desc d = {};
	struct config cfg;
	int e;

	e = config_read(&cfg, NULL);
	if (e < 0)
		return fail(e, "config");
	e = reference_parse(image_name, &image);
	if (e < 0)
		return fail(e, "reference");
	if (db_path) {
		e = index_db_open(db_path, &db);
		if (e < 0)
			return fail(e, db_path);
	}
	e = subject_of(image, &d);
	free(d.media_type);
	if (e < 0)
		return fail(e, "subject");
	memcpy(subject, d.digest, DIGEST_STRING_MAX);
	e = artifact_lookup(db, image, NULL, &ropts, &cfg.artifacts, d.digest,
			    streq(type, "-") ? NULL : type, ret);
	return e < 0 ? fail(e, "lookup") : 0;
}

static int cmd_ls(const char *db, int argc, char **argv)
{
	struct artifact_found f = {};
	char subject[DIGEST_STRING_MAX];

	if (argc != 2)
		return fail(-EINVAL, "usage: ls [--cache DB] IMAGE TYPE|-");
	if (lookup(db, argv[0], argv[1], &f, subject))
		return 1;
	for (size_t i = 0; i < f.list.n; i++)
		printf("%s %s %s\n", f.place, f.list.items[i].digest,
		       f.list.items[i].artifact_type ?: "-");
	artifact_found_done(&f);
	return 0;
}

static int cmd_fetch(const char *db, int argc, char **argv)
{
	struct artifact_found f = {};
	struct artifact_list blobs = {};
	_cleanup_free_ char *buf = NULL;
	_cleanup_close_ int fd = -EBADF;
	char subject[DIGEST_STRING_MAX];
	size_t len;
	int e;

	if (argc != 4)
		return fail(-EINVAL, "usage: fetch [--cache DB] IMAGE TYPE MAX OUT");
	if (lookup(db, argv[0], argv[1], &f, subject))
		return 1;
	e = f.list.n ? artifact_get(f.registry, f.list.items[0].digest, subject,
				    streq(argv[1], "-") ? NULL : argv[1], &blobs)
		     : -ENOENT;
	if (e >= 0)
		e = blobs.n ? artifact_fetch_blob(f.registry, &blobs.items[0],
						  strtoull(argv[2], NULL, 10), &buf, &len)
			    : -ENOENT;
	artifact_list_done(&blobs);
	artifact_found_done(&f);
	if (e < 0)
		return fail(e, "fetch");
	fd = open(argv[3], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || write_all(fd, buf, len) < 0)
		return fail(-errno, argv[3]);
	return 0;
}

int main(int argc, char **argv)
{
	const char *db = NULL;

	if (argc < 2)
		return fail(-EINVAL, "usage: artifact-tool push|ls|fetch ...");
	if (streq(argv[1], "push"))
		return cmd_push(argc - 2, argv + 2);
	if (argc > 3 && streq(argv[2], "--cache")) {
		db = argv[3];
		argv[3] = argv[1];
		argc -= 2, argv += 2;
	}
	if (streq(argv[1], "ls"))
		return cmd_ls(db, argc - 2, argv + 2);
	if (streq(argv[1], "fetch"))
		return cmd_fetch(db, argc - 2, argv + 2);
	return fail(-EINVAL, "unknown command");
}
