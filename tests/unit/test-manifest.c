/* tests/unit/test-manifest.c: media-type detection, manifest, index and config parsing on the
 * real OCI layouts in tests/fixtures/ (digests are read from their index.json, never
 * hard-coded), plus hand-written documents for what the fixtures do not show. */
#include "cache/format/manifest.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache/base/digest.h"
#include "cache/base/util.h"
#include "tap.h"

#define D64 "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define FIXTURE_MAX (1024 * 1024)
#define X8(c) c c c c c c c c
#define X64(c) X8(c) X8(c) X8(c) X8(c) X8(c) X8(c) X8(c) X8(c)

static int read_blob(const char *layout, const char *digest, char **ret, size_t *ret_len)
{
	_cleanup_free_ char *path = NULL;

	if (asprintf(&path, "fixtures/%s/blobs/sha256/%s", layout, digest + 7) < 0)
		return -ENOMEM;
	return read_full_file(path, FIXTURE_MAX, ret, ret_len);
}

/* The first descriptor of a layout's index.json: its digest and media type. */
static int layout_top(const char *layout, char **ret_digest, char **ret_media_type)
{
	_cleanup_free_ char *path = NULL, *buf = NULL;
	json_t *root, *d;
	size_t len;
	int r;

	if (asprintf(&path, "fixtures/%s/index.json", layout) < 0)
		return -ENOMEM;
	r = read_full_file(path, FIXTURE_MAX, &buf, &len);
	if (r < 0)
		return r;
	root = json_loadb(buf, len, 0, NULL);
	d = json_array_get(json_object_get(root, "manifests"), 0);
	if (!json_is_string(json_object_get(d, "digest"))) {
		json_decref(root);
		return -EPROTO;
	}
	*ret_digest = strdup(json_string_value(json_object_get(d, "digest")));
	*ret_media_type = strdup(json_string_value(json_object_get(d, "mediaType")));
	json_decref(root);
	return 0;
}

/* Loads a single-image layout and checks what every variant of the "edge" image has. */
static void test_image_layout(const char *layout, const char *want_type, const char *layer_type,
			      enum layer_compression compression)
{
	_cleanup_free_ char *digest = NULL, *desc_type = NULL, *buf = NULL, *mt = NULL;
	_cleanup_free_ char *config = NULL;
	_cleanup_(manifest_freep) struct manifest *m = NULL;
	_cleanup_(image_config_freep) struct image_config *c = NULL;
	size_t len, config_len;
	bool all = true;

	check(layout_top(layout, &digest, &desc_type) == 0, "%s: index.json has a descriptor", layout);
	if (!digest)
		return;
	check(read_blob(layout, digest, &buf, &len) == 0, "%s: manifest blob is readable", layout);
	if (!buf)
		return;

	check(manifest_detect_media_type(buf, len, NULL, &mt) == 0 && streq(mt, want_type),
	      "%s: media type detected from the document is %s", layout, want_type);
	free(mt);
	mt = NULL;
	check(manifest_detect_media_type(buf, len, desc_type, &mt) == 0 && streq(mt, desc_type),
	      "%s: the descriptor's media type is taken", layout);

	check(manifest_parse(buf, len, mt, &m) == 0, "%s: manifest parses", layout);
	if (!m)
		return;
	check(streq(m->media_type, want_type), "%s: manifest media type is %s", layout, want_type);
	check(m->n_layers == 3, "%s: three layers", layout);
	check(digest_validate(m->config_digest) == 0 && m->config_size > 0,
	      "%s: config descriptor is valid", layout);
	for (size_t i = 0; i < m->n_layers; i++)
		all = all && streq(m->layers[i].media_type, layer_type) &&
		      m->layers[i].compression == compression && m->layers[i].size > 0 &&
		      digest_validate(m->layers[i].digest) == 0;
	check(all, "%s: every layer is %s with a size and a digest", layout, layer_type);
	check(layer_desc_annotation(&m->layers[0], "no.such.annotation") == NULL,
	      "%s: an absent annotation is NULL", layout);

	check(read_blob(layout, m->config_digest, &config, &config_len) == 0 &&
	      config_len == m->config_size, "%s: config blob has the descriptor's size", layout);
	if (!config)
		return;
	check(digest_verify_buffer(config, config_len, m->config_digest) == 0,
	      "%s: config blob matches its digest", layout);
	check(image_config_parse(config, config_len, &c) == 0, "%s: config parses", layout);
	if (!c)
		return;
	check(c->cmd && strv_length(c->cmd) == 1 && streq(c->cmd[0], "/bin/sh"),
	      "%s: Cmd is [/bin/sh]", layout);
	check(!c->entrypoint, "%s: no Entrypoint", layout);
	check(c->env && strv_contains(c->env, "PATH=/bin:/usr/bin:/sbin:/usr/sbin"),
	      "%s: Env has PATH", layout);
	check(c->working_dir && streq(c->working_dir, "/"), "%s: WorkingDir is /", layout);
	check(!c->user, "%s: no User", layout);
	check(streq(c->platform.os, "linux") && streq(c->platform.architecture, "amd64") &&
	      !c->platform.variant, "%s: config platform is linux/amd64", layout);
}

static void test_zstdchunked_annotations(void)
{
	_cleanup_free_ char *digest = NULL, *desc_type = NULL, *buf = NULL;
	_cleanup_(manifest_freep) struct manifest *m = NULL;
	const char *pos, *sum;
	size_t len;

	if (layout_top("zstdchunked", &digest, &desc_type) < 0 ||
	    read_blob("zstdchunked", digest, &buf, &len) < 0) {
		check(false, "zstdchunked: fixture is readable");
		return;
	}
	check(manifest_parse(buf, len, desc_type, &m) == 0, "zstdchunked: manifest parses");
	if (!m)
		return;
	pos = layer_desc_annotation(&m->layers[0], "io.containers.zstd-chunked.manifest-position");
	sum = layer_desc_annotation(&m->layers[0], "io.containers.zstd-chunked.manifest-checksum");
	check(pos && strchr(pos, ':'), "zstdchunked: manifest-position annotation is kept (%s)",
	      pos ? pos : "none");
	check(sum && digest_validate(sum) == 0, "zstdchunked: manifest-checksum annotation is kept");
	check(m->layers[0].n_annotations == 4, "zstdchunked: all four annotations are kept");
}

static void test_multiarch(void)
{
	_cleanup_free_ char *top = NULL, *top_type = NULL, *index = NULL, *mt = NULL;
	_cleanup_free_ char *child = NULL, *child_type = NULL, *available = NULL;
	_cleanup_free_ char *top_buf = NULL;
	struct platform want = {};
	size_t len, top_len;
	static const struct {
		const char *platform, *arch;
	} cases[] = {
		{ "linux/amd64", "amd64" },
		{ "linux/arm64", "arm64" },
		{ "linux/arm64/v8", "arm64" },
		{ "linux/aarch64", "arm64" },
		{ "linux/x86_64", "amd64" },
	};

	check(layout_top("multiarch", &top, &top_type) == 0 && media_type_is_index(top_type),
	      "multiarch: index.json points at an index");
	if (!top)
		return;

	/* The layout's own index.json has one entry without a platform: the nested index. */
	check(read_full_file("fixtures/multiarch/index.json", FIXTURE_MAX, &top_buf, &top_len) == 0,
	      "multiarch: index.json is readable");
	check(platform_parse("linux/amd64", &want) == 0, "linux/amd64 parses");
	check(top_buf && index_select_platform(top_buf, top_len, &want, &child, &child_type,
					       &available) == 0 &&
	      streq(child, top) && media_type_is_index(child_type) && !available,
	      "multiarch: a platform-less nested index is selected, with its index media type");
	free(child);
	free(child_type);
	child = child_type = NULL;
	platform_done(&want);

	check(read_blob("multiarch", top, &index, &len) == 0, "multiarch: nested index is readable");
	if (!index)
		return;
	check(manifest_detect_media_type(index, len, "application/json", &mt) == 0 &&
	      streq(mt, MEDIA_TYPE_OCI_INDEX),
	      "multiarch: a generic Content-Type falls back to the document's mediaType");

	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		_cleanup_free_ char *d = NULL, *t = NULL, *a = NULL, *mbuf = NULL, *cbuf = NULL;
		_cleanup_free_ char *dt = NULL;
		_cleanup_(manifest_freep) struct manifest *m = NULL;
		_cleanup_(image_config_freep) struct image_config *c = NULL;
		size_t mlen, clen;

		check(platform_parse(cases[i].platform, &want) == 0, "%s parses", cases[i].platform);
		check(index_select_platform(index, len, &want, &d, &t, &a) == 0 &&
		      streq(t, MEDIA_TYPE_OCI_MANIFEST), "multiarch: %s is selected",
		      cases[i].platform);
		platform_done(&want);
		if (!d)
			continue;

		check(read_blob("multiarch", d, &mbuf, &mlen) == 0, "multiarch: %s manifest is readable",
		      cases[i].platform);
		if (!mbuf)
			continue;
		check(!strstr(mbuf, "\"mediaType\":\"application/vnd.oci.image.manifest"),
		      "multiarch: umoci's manifest has no mediaType of its own");
		check(manifest_detect_media_type(mbuf, mlen, NULL, &dt) == 0 &&
		      streq(dt, MEDIA_TYPE_OCI_MANIFEST),
		      "multiarch: a manifest without mediaType is inferred as an OCI manifest");
		check(manifest_parse(mbuf, mlen, t, &m) == 0 &&
		      streq(m->media_type, MEDIA_TYPE_OCI_MANIFEST) && m->n_layers == 2,
		      "multiarch: %s manifest parses with the descriptor's type", cases[i].platform);
		if (!m)
			continue;
		check(read_blob("multiarch", m->config_digest, &cbuf, &clen) == 0 &&
		      image_config_parse(cbuf, clen, &c) == 0 &&
		      streq(c->platform.architecture, cases[i].arch),
		      "multiarch: %s manifest's config says %s", cases[i].platform, cases[i].arch);
	}

	check(platform_parse("linux/arm64/v7", &want) == 0, "linux/arm64/v7 parses");
	check(index_select_platform(index, len, &want, &child, &child_type, &available) == -ENOENT &&
	      available && streq(available, "linux/amd64, linux/arm64/v8"),
	      "multiarch: an explicit variant must match, and the offer is listed (%s)",
	      available ? available : "none");
	platform_done(&want);
	free(available);
	available = NULL;

	check(platform_parse("linux/s390x", &want) == 0, "linux/s390x parses");
	check(index_select_platform(index, len, &want, &child, &child_type, NULL) == -ENOENT,
	      "multiarch: an absent architecture is -ENOENT");
	platform_done(&want);

	check(platform_parse("windows/amd64", &want) == 0, "windows/amd64 parses");
	check(index_select_platform(index, len, &want, &child, &child_type, NULL) == -ENOENT,
	      "multiarch: the os must match");
	platform_done(&want);
}

static void test_docker_list(void)
{
	static const char list[] =
		"{\"schemaVersion\":2,\"mediaType\":\"application/vnd.docker.distribution.manifest.list.v2+json\","
		"\"manifests\":["
		"{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"sha256:" D64 "\",\"size\":1,"
		" \"platform\":{\"os\":\"unknown\",\"architecture\":\"unknown\"}},"
		"{\"mediaType\":\"application/vnd.docker.distribution.manifest.v2+json\",\"digest\":\"sha256:" X64("1") "\",\"size\":1,"
		" \"platform\":{\"os\":\"linux\",\"architecture\":\"arm\",\"variant\":\"v6\"}},"
		"{\"mediaType\":\"application/vnd.docker.distribution.manifest.v2+json\",\"digest\":\"sha256:" X64("a") "\",\"size\":1,"
		" \"platform\":{\"os\":\"linux\",\"architecture\":\"arm\",\"variant\":\"v7\"}},"
		"{\"mediaType\":\"application/vnd.docker.distribution.manifest.v2+json\",\"digest\":\"sha256:" X64("b") "\",\"size\":1,"
		" \"platform\":{\"os\":\"linux\",\"architecture\":\"arm64\"}},"
		"{\"mediaType\":\"application/vnd.in-toto+json\",\"digest\":\"sha256:" X64("c") "\",\"size\":1,"
		" \"platform\":{\"os\":\"linux\",\"architecture\":\"amd64\"}}"
		"]}";
	const char *doc = list;
	static const struct {
		const char *platform;
		int result;
		char first;
	} cases[] = {
		{ "linux/arm", 0, 'a' },        /* no variant: v7 is arm's default */
		{ "linux/arm/v6", 0, '1' },
		{ "linux/arm/v7", 0, 'a' },
		{ "linux/arm64/v8", 0, 'b' },   /* an arm64 entry without variant is v8 */
		{ "linux/arm64", 0, 'b' },
		{ "linux/amd64", -ENOENT, 0 },  /* only an artifact for amd64 */
		{ "unknown/unknown", -ENOENT, 0 },
	};
	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		_cleanup_free_ char *d = NULL, *t = NULL, *a = NULL;
		struct platform want = {};
		int r;

		check(platform_parse(cases[i].platform, &want) == 0, "%s parses", cases[i].platform);
		r = index_select_platform(doc, strlen(doc), &want, &d, &t, &a);
		check(r == cases[i].result && (r < 0 || (d[7] == cases[i].first &&
							 streq(t, MEDIA_TYPE_DOCKER_MANIFEST))),
		      "docker list: %s -> %s", cases[i].platform,
		      r < 0 ? "no match" : d);
		if (r == -ENOENT)
			check(a && !strstr(a, "unknown") && strstr(a, "linux/arm/v6"),
			      "docker list: attestations are not offered (%s)", a ? a : "none");
		platform_done(&want);
	}
}

static const char *manifest_with_layer(char *buf, size_t size, const char *layer_type,
				       const char *layer_digest)
{
	(void)snprintf(buf, size,
		       "{\"schemaVersion\":2,\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\","
		       "\"digest\":\"sha256:" D64 "\",\"size\":2},\"layers\":[{\"mediaType\":\"%s\","
		       "\"digest\":\"%s\",\"size\":10}]}", layer_type, layer_digest);
	return buf;
}

static void test_layer_types(void)
{
	static const struct {
		const char *type;
		int result;
		enum layer_compression compression;
	} cases[] = {
		{ "application/vnd.oci.image.layer.v1.tar", 0, LAYER_COMPRESSION_NONE },
		{ "application/vnd.oci.image.layer.v1.tar+gzip", 0, LAYER_COMPRESSION_GZIP },
		{ "application/vnd.oci.image.layer.v1.tar+zstd", 0, LAYER_COMPRESSION_ZSTD },
		{ "application/vnd.oci.image.layer.nondistributable.v1.tar", 0, LAYER_COMPRESSION_NONE },
		{ "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", 0, LAYER_COMPRESSION_GZIP },
		{ "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd", 0, LAYER_COMPRESSION_ZSTD },
		{ "application/vnd.docker.image.rootfs.diff.tar.gzip", 0, LAYER_COMPRESSION_GZIP },
		{ "application/vnd.docker.image.rootfs.diff.tar.zstd", 0, LAYER_COMPRESSION_ZSTD },
		{ "application/vnd.cncf.helm.chart.content.v1.tar+gzip", -EPROTO, 0 },
		{ "application/vnd.oci.image.layer.v1.tar+bzip2", -EPROTO, 0 },
		{ "", -EPROTO, 0 },
	};
	char buf[1024];

	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		_cleanup_(manifest_freep) struct manifest *m = NULL;
		const char *doc = manifest_with_layer(buf, sizeof(buf), cases[i].type, "sha256:" D64);
		int r = manifest_parse(doc, strlen(doc), MEDIA_TYPE_OCI_MANIFEST, &m);

		check(r == cases[i].result && (r < 0 || m->layers[0].compression == cases[i].compression),
		      "layer type '%s' is %s", cases[i].type, r < 0 ? "refused" : "accepted");
	}
}

static void test_bad_documents(void)
{
	static const struct {
		const char *what, *doc;
		int result;
	} cases[] = {
		{ "not JSON", "{\"schemaVersion\":2,", -EPROTO },
		{ "not an object", "[1,2]", -EPROTO },
		{ "schema 1", "{\"schemaVersion\":1,\"fsLayers\":[]}", -EPROTO },
		{ "no config", "{\"schemaVersion\":2,\"layers\":[]}", -EPROTO },
		{ "config digest malformed",
		  "{\"schemaVersion\":2,\"config\":{\"mediaType\":\"x\",\"digest\":\"sha256:abc\",\"size\":1},\"layers\":[]}",
		  -EPROTO },
		{ "negative size",
		  "{\"schemaVersion\":2,\"config\":{\"mediaType\":\"x\",\"digest\":\"sha256:" D64 "\",\"size\":-1},\"layers\":[]}",
		  -EPROTO },
		{ "layers not an array",
		  "{\"schemaVersion\":2,\"config\":{\"mediaType\":\"x\",\"digest\":\"sha256:" D64 "\",\"size\":1},\"layers\":{}}",
		  -EPROTO },
		{ "an index is not a manifest",
		  "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\",\"manifests\":[]}",
		  -EPROTO },
		{ "zero layers are fine",
		  "{\"schemaVersion\":2,\"config\":{\"mediaType\":\"x\",\"digest\":\"sha256:" D64 "\",\"size\":1},\"layers\":[]}",
		  0 },
	};
	char buf[1024];

	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		_cleanup_(manifest_freep) struct manifest *m = NULL;

		check(manifest_parse(cases[i].doc, strlen(cases[i].doc), MEDIA_TYPE_OCI_MANIFEST, &m) ==
		      cases[i].result, "manifest_parse: %s", cases[i].what);
	}

	{
		_cleanup_(manifest_freep) struct manifest *m = NULL;
		const char *doc = manifest_with_layer(buf, sizeof(buf),
						      "application/vnd.oci.image.layer.v1.tar",
						      "sha512:" D64 D64);

		check(manifest_parse(doc, strlen(doc), MEDIA_TYPE_OCI_MANIFEST, &m) == -EPROTO,
		      "manifest_parse: a sha512 layer digest is refused");
	}

	{
		/* 1001 layers. */
		static const char layer[] = "{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\","
					    "\"digest\":\"sha256:" D64 "\",\"size\":1},";
		_cleanup_(manifest_freep) struct manifest *m = NULL;
		size_t cap = 1001 * sizeof(layer) + 512, n;
		_cleanup_free_ char *doc = malloc(cap);

		n = (size_t)snprintf(doc, cap, "{\"schemaVersion\":2,\"config\":{\"mediaType\":\"x\","
					       "\"digest\":\"sha256:" D64 "\",\"size\":1},\"layers\":[");
		for (int i = 0; i < 1001; i++) {
			memcpy(doc + n, layer, sizeof(layer) - 1);
			n += sizeof(layer) - 1;
		}
		memcpy(doc + n - 1, "]}", 3);
		n += 1;
		check(manifest_parse(doc, n, MEDIA_TYPE_OCI_MANIFEST, &m) == -EFBIG,
		      "manifest_parse: more than 1000 layers is -EFBIG");
	}

	{
		_cleanup_free_ char *mt = NULL;
		static const char idx[] = "{\"schemaVersion\":2,\"manifests\":[]}";
		static const char odd[] = "{\"schemaVersion\":2,\"mediaType\":\"text/plain\"}";

		check(manifest_detect_media_type(idx, strlen(idx),
						 " application/vnd.oci.image.index.v1+json; charset=utf-8",
						 &mt) == 0 && streq(mt, MEDIA_TYPE_OCI_INDEX),
		      "detect: Content-Type parameters are ignored");
		free(mt);
		mt = NULL;
		check(manifest_detect_media_type(idx, strlen(idx), "text/plain", &mt) == 0 &&
		      streq(mt, MEDIA_TYPE_OCI_INDEX), "detect: \"manifests\" infers an OCI index");
		free(mt);
		mt = NULL;
		check(manifest_detect_media_type(odd, strlen(odd), NULL, &mt) == -EPROTO,
		      "detect: an unknown document mediaType is -EPROTO");
		check(manifest_detect_media_type("{}", 2, NULL, &mt) == -EPROTO,
		      "detect: an empty object is -EPROTO");
		check(manifest_detect_media_type("garbage", 7, "application/octet-stream", &mt) ==
		      -EPROTO, "detect: garbage is -EPROTO");
	}
}

static void test_config(void)
{
	static const char full[] =
		"{\"architecture\":\"arm\",\"os\":\"linux\",\"variant\":\"v7\",\"config\":{"
		"\"Entrypoint\":[\"/entry\",\"--flag\"],\"Cmd\":[],\"Env\":[\"A=1\",\"B=\"],"
		"\"WorkingDir\":\"/srv\",\"User\":\"1000:1000\"}}";
	static const char nulls[] =
		"{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{\"Entrypoint\":null,"
		"\"Cmd\":null,\"User\":\"\",\"WorkingDir\":\"\"}}";
	static const char bad_env[] = "{\"config\":{\"Env\":[\"A=1\",2]}}";
	static const char bad_cmd[] = "{\"config\":{\"Cmd\":\"/bin/sh\"}}";
	_cleanup_(image_config_freep) struct image_config *c = NULL, *d = NULL, *e = NULL;

	check(image_config_parse(full, strlen(full), &c) == 0, "config: a full config parses");
	if (c) {
		check(strv_length(c->entrypoint) == 2 && streq(c->entrypoint[1], "--flag"),
		      "config: Entrypoint is read");
		check(c->cmd && strv_length(c->cmd) == 0, "config: an empty Cmd stays empty, not absent");
		check(strv_length(c->env) == 2 && streq(c->env[1], "B="), "config: Env is read");
		check(streq(c->working_dir, "/srv") && streq(c->user, "1000:1000"),
		      "config: WorkingDir and User are read");
		check(streq(c->platform.architecture, "arm") && streq(c->platform.variant, "v7"),
		      "config: architecture and variant are read");
	}
	check(image_config_parse(nulls, strlen(nulls), &d) == 0 && !d->entrypoint && !d->cmd &&
	      !d->user && !d->working_dir && !d->env, "config: null and empty values are absent");
	check(image_config_parse(bad_env, strlen(bad_env), &e) == -EPROTO,
	      "config: a non-string Env entry is -EPROTO");
	check(image_config_parse(bad_cmd, strlen(bad_cmd), &e) == -EPROTO,
	      "config: a string Cmd is -EPROTO");
	check(image_config_parse("{}", 2, &e) == 0 && !e->platform.os,
	      "config: an empty object is an empty config");
}

static void test_platforms(void)
{
	static const char *const bad[] = { "linux", "linux/", "/amd64", "linux//v8",
					   "linux/arm64/v8/x", "Linux/AMD64", "linux/amd 64", "" };
	struct platform p = {};
	char *s;

	check(platform_parse("linux/arm64/v8", &p) == 0 && streq(p.os, "linux") &&
	      streq(p.architecture, "arm64") && streq(p.variant, "v8"), "platform: linux/arm64/v8");
	s = platform_to_string(&p);
	check(s && streq(s, "linux/arm64/v8"), "platform: prints back as linux/arm64/v8");
	free(s);
	platform_done(&p);
	check(!p.os && !p.architecture && !p.variant, "platform: platform_done clears");

	check(platform_parse("linux/armhf", &p) == 0 && streq(p.architecture, "arm") &&
	      streq(p.variant, "v7"), "platform: the Debian name armhf means arm/v7");
	platform_done(&p);

	for (size_t i = 0; i < ELEMENTSOF(bad); i++)
		check(platform_parse(bad[i], &p) == -EINVAL, "platform: '%s' is malformed", bad[i]);

	check(platform_host(&p) == 0 && streq(p.os, "linux") && p.architecture,
	      "platform: the host is linux/%s", p.architecture ? p.architecture : "?");
	platform_done(&p);
}

int main(void)
{
	check(media_type_is_index(MEDIA_TYPE_OCI_INDEX) && media_type_is_index(MEDIA_TYPE_DOCKER_LIST) &&
	      !media_type_is_index(MEDIA_TYPE_OCI_MANIFEST) && !media_type_is_index(NULL),
	      "the two index media types are indexes");
	check(media_type_is_manifest(MEDIA_TYPE_OCI_MANIFEST) &&
	      media_type_is_manifest(MEDIA_TYPE_DOCKER_MANIFEST) &&
	      !media_type_is_manifest(MEDIA_TYPE_DOCKER_LIST), "the two manifest media types are manifests");

	test_image_layout("oci-gzip", MEDIA_TYPE_OCI_MANIFEST,
			  "application/vnd.oci.image.layer.v1.tar+gzip", LAYER_COMPRESSION_GZIP);
	test_image_layout("docker-v2s2-gzip", MEDIA_TYPE_DOCKER_MANIFEST,
			  "application/vnd.docker.image.rootfs.diff.tar.gzip", LAYER_COMPRESSION_GZIP);
	test_image_layout("oci-zstd", MEDIA_TYPE_OCI_MANIFEST,
			  "application/vnd.oci.image.layer.v1.tar+zstd", LAYER_COMPRESSION_ZSTD);
	test_image_layout("oci-uncompressed", MEDIA_TYPE_OCI_MANIFEST,
			  "application/vnd.oci.image.layer.v1.tar", LAYER_COMPRESSION_NONE);
	test_image_layout("estargz", MEDIA_TYPE_OCI_MANIFEST,
			  "application/vnd.oci.image.layer.v1.tar+gzip", LAYER_COMPRESSION_GZIP);
	test_image_layout("zstdchunked-skopeo", MEDIA_TYPE_OCI_MANIFEST,
			  "application/vnd.oci.image.layer.v1.tar+zstd", LAYER_COMPRESSION_ZSTD);
	test_zstdchunked_annotations();
	test_multiarch();
	test_docker_list();
	test_layer_types();
	test_bad_documents();
	test_config();
	test_platforms();

	check(manifest_free(NULL) == NULL && image_config_free(NULL) == NULL,
	      "destructors accept NULL");
	return tap_done();
}
