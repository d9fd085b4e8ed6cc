/*
 * cache/format/manifest.c: OCI / Docker schema 2 manifests, indexes and image configs, parsed with
 * jansson into plain structs.  Every input came from a registry, so nothing is trusted: sizes,
 * counts and strings have ceilings, digests are validated, unknown layer types are refused.
 * Pure functions over byte buffers; no I/O, no global state.
 */
#include "manifest.h"

#include <jansson.h>
#include <sys/utsname.h>

#include "cache/base/digest.h"
#include "cache/base/error.h"
#include "cache/base/util.h"

#define DOCUMENT_MAX (4U * 1024 * 1024)   /* manifests and indexes */
#define CONFIG_MAX (16U * 1024 * 1024)    /* image configs (history can be long) */
#define LAYERS_MAX 1000
#define INDEX_ENTRIES_MAX 1000
#define ANNOTATIONS_MAX 256
#define STRV_MAX 10000
#define AVAILABLE_MAX 4096                /* length of the "what the index offers" text */

/* jansson >= 2.11 provides json_decrefp(). */
#define _cleanup_json_ _cleanup_(json_decrefp)

static const struct {
	const char *media_type;
	enum layer_compression compression;
} layer_types[] = {
	{ "application/vnd.oci.image.layer.v1.tar", LAYER_COMPRESSION_NONE },
	{ "application/vnd.oci.image.layer.v1.tar+gzip", LAYER_COMPRESSION_GZIP },
	{ "application/vnd.oci.image.layer.v1.tar+zstd", LAYER_COMPRESSION_ZSTD },
	{ "application/vnd.oci.image.layer.nondistributable.v1.tar", LAYER_COMPRESSION_NONE },
	{ "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", LAYER_COMPRESSION_GZIP },
	{ "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd", LAYER_COMPRESSION_ZSTD },
	{ "application/vnd.docker.image.rootfs.diff.tar.gzip", LAYER_COMPRESSION_GZIP },
	{ "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", LAYER_COMPRESSION_GZIP },
	/* Not in the Docker spec, but written by some tools. */
	{ "application/vnd.docker.image.rootfs.diff.tar", LAYER_COMPRESSION_NONE },
	{ "application/vnd.docker.image.rootfs.diff.tar.zstd", LAYER_COMPRESSION_ZSTD },
};

bool media_type_is_index(const char *media_type)
{
	return media_type && (streq(media_type, MEDIA_TYPE_OCI_INDEX) ||
			      streq(media_type, MEDIA_TYPE_DOCKER_LIST));
}

bool media_type_is_manifest(const char *media_type)
{
	return media_type && (streq(media_type, MEDIA_TYPE_OCI_MANIFEST) ||
			      streq(media_type, MEDIA_TYPE_DOCKER_MANIFEST));
}

static bool media_type_known(const char *media_type)
{
	return media_type_is_index(media_type) || media_type_is_manifest(media_type);
}

static int layer_compression_from_media_type(const char *media_type,
					     enum layer_compression *ret)
{
	for (size_t i = 0; i < ELEMENTSOF(layer_types); i++)
		if (streq(layer_types[i].media_type, media_type)) {
			*ret = layer_types[i].compression;
			return 0;
		}
	return -EPROTO;
}

/* Parses @buf as a JSON object.  jansson refuses nesting deeper than 2048 levels.  Manifests
 * and indexes must not repeat a key: the registry and other clients (Go keeps the last of
 * duplicates) could read another document from the same, digest-verified bytes.  Configs are
 * parsed leniently, as docker does. */
static int json_parse_object(const void *buf, size_t len, size_t max, size_t flags, json_t **ret)
{
	json_t *j;

	if (len > max)
		return -EFBIG;
	j = json_loadb(buf, len, flags, NULL);
	if (!j)
		return -EPROTO;
	if (!json_is_object(j)) {
		json_decref(j);
		return -EPROTO;
	}
	*ret = j;
	return 0;
}

/* Copies an optional string member: NULL when absent or JSON null, -EPROTO if not a string. */
static int json_dup_string(json_t *obj, const char *key, char **ret)
{
	json_t *v = json_object_get(obj, key);
	char *s;

	if (!v || json_is_null(v)) {
		*ret = NULL;
		return 0;
	}
	if (!json_is_string(v))
		return -EPROTO;
	s = strdup(json_string_value(v));
	if (!s)
		return -ENOMEM;
	*ret = s;
	return 0;
}

static int json_get_size(json_t *obj, const char *key, uint64_t *ret)
{
	json_t *v = json_object_get(obj, key);

	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return -EPROTO;
	*ret = (uint64_t)json_integer_value(v);
	return 0;
}

static int json_get_digest(json_t *obj, const char *key, char **ret)
{
	json_t *v = json_object_get(obj, key);
	char *s;

	if (!json_is_string(v))
		return -EPROTO;
	if (digest_validate(json_string_value(v)) < 0)
		return -EPROTO;
	s = strdup(json_string_value(v));
	if (!s)
		return -ENOMEM;
	*ret = s;
	return 0;
}

/* Documents must say schemaVersion 2 (both OCI and Docker schema 2). */
static int check_schema_version(json_t *root)
{
	json_t *v = json_object_get(root, "schemaVersion");

	if (!json_is_integer(v) || json_integer_value(v) != 2)
		return -EPROTO;
	return 0;
}

int manifest_detect_media_type(const void *buf, size_t len, const char *content_type,
			       char **ret)
{
	_cleanup_json_ json_t *root = NULL;
	const char *mt = NULL;
	json_t *v;
	char *s;
	int r;

	if (content_type) {
		/* "type; charset=…" and surrounding blanks are not part of the type. */
		size_t n;

		content_type += strspn(content_type, " \t");
		n = strcspn(content_type, "; \t");
		if (n > 0 && n < 256) {
			char t[256];

			memcpy(t, content_type, n);
			t[n] = 0;
			if (media_type_known(t)) {
				s = strdup(t);
				if (!s)
					return -ENOMEM;
				*ret = s;
				return 0;
			}
		}
	}

	r = json_parse_object(buf, len, DOCUMENT_MAX, JSON_REJECT_DUPLICATES, &root);
	if (r < 0)
		return r;

	v = json_object_get(root, "mediaType");
	if (json_is_string(v)) {
		mt = json_string_value(v);
		if (!media_type_known(mt))
			return -EPROTO;
	} else if (v) {
		return -EPROTO;
	} else if (check_schema_version(root) < 0) {
		return -EPROTO;  /* e.g. Docker schema 1 */
	} else if (json_is_array(json_object_get(root, "manifests"))) {
		mt = MEDIA_TYPE_OCI_INDEX;
	} else if (json_is_array(json_object_get(root, "layers")) ||
		   json_is_object(json_object_get(root, "config"))) {
		mt = MEDIA_TYPE_OCI_MANIFEST;
	} else {
		return -EPROTO;
	}

	s = strdup(mt);
	if (!s)
		return -ENOMEM;
	*ret = s;
	return 0;
}

static void layer_desc_done(struct layer_desc *l)
{
	free(l->digest);
	free(l->media_type);
	for (size_t i = 0; i < l->n_annotations; i++) {
		free(l->annotations[i].key);
		free(l->annotations[i].value);
	}
	free(l->annotations);
}

static void manifest_done(struct manifest *m)
{
	free_many(m->media_type, m->config_digest, m->config_media_type);
	for (size_t i = 0; i < m->n_layers; i++)
		layer_desc_done(&m->layers[i]);
	free(m->layers);
}
DEFINE_FREE_FUNC(struct manifest, manifest_free, manifest_done);

static int parse_annotations(json_t *obj, struct layer_desc *l)
{
	const char *key;
	json_t *v;

	if (!obj || json_is_null(obj))
		return 0;
	if (!json_is_object(obj))
		return -EPROTO;
	if (json_object_size(obj) > ANNOTATIONS_MAX)
		return -EFBIG;

	l->annotations = calloc(json_object_size(obj) ?: 1, sizeof(struct annotation));
	if (!l->annotations)
		return -ENOMEM;

	json_object_foreach(obj, key, v) {
		struct annotation *a = &l->annotations[l->n_annotations];

		if (!json_is_string(v))
			return -EPROTO;
		a->key = strdup(key);
		a->value = strdup(json_string_value(v));
		l->n_annotations++;
		if (!a->key || !a->value)
			return -ENOMEM;
	}
	return 0;
}

/* Layer @index of the manifest; the message names it by its digest once that is known. */
static int parse_layer(json_t *obj, size_t index, struct layer_desc *l)
{
	int r;

	if (!json_is_object(obj))
		return error_set(-EPROTO, "layer %zu is not a JSON object", index + 1);
	r = json_get_digest(obj, "digest", &l->digest);
	if (r == -EPROTO)
		return error_set(r, "layer %zu has no valid digest", index + 1);
	if (r < 0)
		return r;

	r = json_dup_string(obj, "mediaType", &l->media_type);
	if (r == -EPROTO || (r >= 0 && !l->media_type))
		return error_set(-EPROTO, "layer %s has no media type", l->digest);
	if (r < 0)
		return r;
	r = layer_compression_from_media_type(l->media_type, &l->compression);
	if (r < 0)
		return error_set(r, "layer %s: unsupported media type %.200s", l->digest,
				 l->media_type);
	r = json_get_size(obj, "size", &l->size);
	if (r < 0)
		return error_set(r, "layer %s has no valid size", l->digest);

	return parse_annotations(json_object_get(obj, "annotations"), l);
}

int manifest_parse(const void *buf, size_t len, const char *media_type, struct manifest **ret)
{
	_cleanup_(manifest_freep) struct manifest *m = NULL;
	_cleanup_json_ json_t *root = NULL;
	json_t *config, *layers, *layer;
	size_t i;
	int r;

	r = json_parse_object(buf, len, DOCUMENT_MAX, JSON_REJECT_DUPLICATES, &root);
	if (r < 0)
		return error_set(r, "not a JSON object of at most %u bytes without duplicate keys",
				 DOCUMENT_MAX);
	r = check_schema_version(root);
	if (r < 0)
		return error_set(r, "schemaVersion is not 2");

	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;

	r = json_dup_string(root, "mediaType", &m->media_type);
	if (r < 0)
		return r;
	if (!m->media_type) {
		if (!media_type)
			return -EPROTO;
		m->media_type = strdup(media_type);
		if (!m->media_type)
			return -ENOMEM;
	}
	if (!media_type_is_manifest(m->media_type))
		return error_set(-EPROTO, "unsupported media type %.200s", m->media_type);
	/* Both a manifest and an index (CVE-2021-41190): which one it is must not depend on
	 * who reads it. */
	if (json_object_get(root, "manifests"))
		return error_set(-EPROTO, "both a manifest and an index (it has \"manifests\")");

	config = json_object_get(root, "config");
	if (!json_is_object(config))
		return error_set(-EPROTO, "no config descriptor");
	r = json_get_digest(config, "digest", &m->config_digest);
	if (r < 0)
		return r == -EPROTO ? error_set(r, "config descriptor has no valid digest") : r;
	r = json_dup_string(config, "mediaType", &m->config_media_type);
	if (r == -EPROTO || (r >= 0 && !m->config_media_type))
		return error_set(-EPROTO, "config %s has no media type", m->config_digest);
	if (r < 0)
		return r;
	r = json_get_size(config, "size", &m->config_size);
	if (r < 0)
		return error_set(r, "config %s has no valid size", m->config_digest);

	layers = json_object_get(root, "layers");
	if (!json_is_array(layers))
		return error_set(-EPROTO, "no layers array");
	if (json_array_size(layers) > LAYERS_MAX)
		return error_set(-EFBIG, "more than %u layers", LAYERS_MAX);

	m->layers = calloc(json_array_size(layers) ?: 1, sizeof(struct layer_desc));
	if (!m->layers)
		return -ENOMEM;
	json_array_foreach(layers, i, layer) {
		/* Counted before parsing, so a half-parsed layer is freed too. */
		m->n_layers++;
		r = parse_layer(layer, i, &m->layers[i]);
		if (r < 0)
			return r;
	}

	*ret = TAKE_PTR(m);
	return 0;
}

const char *layer_desc_annotation(const struct layer_desc *l, const char *key)
{
	for (size_t i = 0; i < l->n_annotations; i++)
		if (streq(l->annotations[i].key, key))
			return l->annotations[i].value;
	return NULL;
}

void platform_done(struct platform *p)
{
	free_many(p->os, p->architecture, p->variant);
	*p = (struct platform) {};
}

static bool platform_word_valid(const char *s, size_t n)
{
	if (n == 0 || n > 64)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
		      c == '-'))
			return false;
	}
	return true;
}

/* The variant an architecture implies when an index entry names none, as containerd's
 * platform normalisation has it. */
static const char *default_variant(const char *architecture)
{
	if (streq(architecture, "arm64"))
		return "v8";
	if (streq(architecture, "arm"))
		return "v7";
	return NULL;
}

int platform_parse(const char *s, struct platform *ret)
{
	static const struct {
		const char *alias, *architecture, *variant;
	} aliases[] = {
		{ "x86_64", "amd64", NULL },
		{ "x86-64", "amd64", NULL },
		{ "aarch64", "arm64", NULL },
		{ "armhf", "arm", "v7" },
		{ "armel", "arm", "v6" },
		{ "i386", "386", NULL },
		{ "i686", "386", NULL },
	};
	_cleanup_(platform_done) struct platform p = {};
	const char *parts[3];
	size_t lens[3], n = 0;
	const char *q = s;

	if (!s)
		return -EINVAL;
	for (;;) {
		const char *slash = strchr(q, '/');

		if (n == 3)
			return -EINVAL;
		parts[n] = q;
		lens[n] = slash ? (size_t)(slash - q) : strlen(q);
		if (!platform_word_valid(parts[n], lens[n]))
			return -EINVAL;
		n++;
		if (!slash)
			break;
		q = slash + 1;
	}
	if (n < 2)
		return -EINVAL;

	p.os = strndup(parts[0], lens[0]);
	p.architecture = strndup(parts[1], lens[1]);
	if (n == 3)
		p.variant = strndup(parts[2], lens[2]);
	if (!p.os || !p.architecture || (n == 3 && !p.variant))
		return -ENOMEM;

	for (size_t i = 0; i < ELEMENTSOF(aliases); i++) {
		if (!streq(p.architecture, aliases[i].alias))
			continue;
		free(p.architecture);
		p.architecture = strdup(aliases[i].architecture);
		if (!p.architecture)
			return -ENOMEM;
		if (!p.variant && aliases[i].variant) {
			p.variant = strdup(aliases[i].variant);
			if (!p.variant)
				return -ENOMEM;
		}
		break;
	}

	*ret = p;
	p = (struct platform) {};
	return 0;
}

int platform_host(struct platform *ret)
{
	static const struct {
		const char *machine, *architecture, *variant;
	} machines[] = {
		{ "x86_64", "amd64", NULL },
		{ "aarch64", "arm64", "v8" },
		{ "armv8l", "arm", "v8" },
		{ "armv7l", "arm", "v7" },
		{ "armv6l", "arm", "v6" },
		{ "i386", "386", NULL },
		{ "i486", "386", NULL },
		{ "i586", "386", NULL },
		{ "i686", "386", NULL },
		{ "ppc64le", "ppc64le", NULL },
		{ "ppc64", "ppc64", NULL },
		{ "s390x", "s390x", NULL },
		{ "riscv64", "riscv64", NULL },
		{ "mips64", "mips64", NULL },
		{ "loongarch64", "loong64", NULL },
	};
	_cleanup_(platform_done) struct platform p = {};
	const char *arch = NULL, *variant = NULL;
	struct utsname u;

	if (uname(&u) < 0)
		return -errno;
	for (size_t i = 0; i < ELEMENTSOF(machines); i++)
		if (streq(u.machine, machines[i].machine)) {
			arch = machines[i].architecture;
			variant = machines[i].variant;
			break;
		}
	if (!arch)
		arch = u.machine;

	p.os = strdup("linux");
	p.architecture = strdup(arch);
	if (variant)
		p.variant = strdup(variant);
	if (!p.os || !p.architecture || (variant && !p.variant))
		return -ENOMEM;

	*ret = p;
	p = (struct platform) {};
	return 0;
}

char *platform_to_string(const struct platform *p)
{
	char *s;

	if (asprintf(&s, "%s/%s%s%s", p->os ?: "?", p->architecture ?: "?",
		     p->variant ? "/" : "", p->variant ?: "") < 0)
		return NULL;
	return s;
}

/* How well an index entry fits @want: 0 no match, higher is better. */
static int platform_rank(json_t *platform, const struct platform *want)
{
	const char *os, *arch, *variant, *want_variant;

	if (!json_is_object(platform))
		return 1;  /* no platform: usable, but any real match wins */

	os = json_string_value(json_object_get(platform, "os"));
	arch = json_string_value(json_object_get(platform, "architecture"));
	variant = json_string_value(json_object_get(platform, "variant"));
	if (!os || !arch || !streq(os, want->os) || !streq(arch, want->architecture))
		return 0;

	if (!variant)
		variant = default_variant(arch);
	want_variant = want->variant ?: default_variant(want->architecture);

	if (!variant && !want_variant)
		return 3;
	if (variant && want_variant && streq(variant, want_variant))
		return 3;
	if (want->variant)
		return 0;  /* the caller asked for this variant explicitly */
	return 2;
}

static int available_append(char **available, size_t *len, json_t *platform)
{
	const char *os, *arch, *variant;
	char *n;
	int k;

	if (!json_is_object(platform))
		return 0;
	os = json_string_value(json_object_get(platform, "os"));
	arch = json_string_value(json_object_get(platform, "architecture"));
	variant = json_string_value(json_object_get(platform, "variant"));
	if (!os || !arch || *len > AVAILABLE_MAX)
		return 0;

	k = snprintf(NULL, 0, "%s%s/%s%s%s", *len ? ", " : "", os, arch, variant ? "/" : "",
		     variant ?: "");
	n = realloc(*available, *len + k + 1);
	if (!n)
		return -ENOMEM;
	(void)snprintf(n + *len, k + 1, "%s%s/%s%s%s", *len ? ", " : "", os, arch,
		       variant ? "/" : "", variant ?: "");
	*available = n;
	*len += k;
	return 0;
}

int index_select_platform(const void *buf, size_t len, const struct platform *want,
			  char **ret_digest, char **ret_media_type, char **ret_available)
{
	_cleanup_json_ json_t *root = NULL;
	_cleanup_free_ char *available = NULL;
	json_t *manifests, *entry, *best = NULL;
	size_t i, available_len = 0;
	int best_rank = 0, r;
	char *digest, *mt;

	if (!want || !want->os || !want->architecture)
		return -EINVAL;

	r = json_parse_object(buf, len, DOCUMENT_MAX, JSON_REJECT_DUPLICATES, &root);
	if (r < 0)
		return r;
	r = check_schema_version(root);
	if (r < 0)
		return r;
	manifests = json_object_get(root, "manifests");
	if (!json_is_array(manifests))
		return -EPROTO;
	if (json_object_get(root, "layers") || json_object_get(root, "config"))
		return -EPROTO;         /* also a manifest: see manifest_parse() */
	if (json_array_size(manifests) > INDEX_ENTRIES_MAX)
		return -EFBIG;

	json_array_foreach(manifests, i, entry) {
		json_t *platform, *v;
		const char *emt;
		int rank;

		if (!json_is_object(entry))
			return -EPROTO;

		/* A descriptor without a media type can only be an image manifest. */
		v = json_object_get(entry, "mediaType");
		if (v && !json_is_string(v))
			return -EPROTO;
		emt = v ? json_string_value(v) : MEDIA_TYPE_OCI_MANIFEST;
		if (!media_type_known(emt))
			continue;  /* artifacts, signatures */

		platform = json_object_get(entry, "platform");
		if (json_is_object(platform)) {
			const char *os = json_string_value(json_object_get(platform, "os"));
			const char *arch = json_string_value(json_object_get(platform,
									     "architecture"));

			/* BuildKit's attestation manifests say unknown/unknown. */
			if ((os && streq(os, "unknown")) || (arch && streq(arch, "unknown")))
				continue;
		}

		r = available_append(&available, &available_len, platform);
		if (r < 0)
			return r;

		rank = platform_rank(platform, want);
		if (rank > best_rank) {
			best_rank = rank;
			best = entry;
		}
	}

	if (!best) {
		if (ret_available) {
			if (!available) {
				available = strdup("nothing");
				if (!available)
					return -ENOMEM;
			}
			*ret_available = TAKE_PTR(available);
		}
		return -ENOENT;
	}

	if (json_is_string(json_object_get(best, "mediaType")))
		mt = strdup(json_string_value(json_object_get(best, "mediaType")));
	else
		mt = strdup(MEDIA_TYPE_OCI_MANIFEST);
	if (!mt)
		return -ENOMEM;
	r = json_get_digest(best, "digest", &digest);
	if (r < 0) {
		free(mt);
		return r;
	}

	*ret_digest = digest;
	*ret_media_type = mt;
	if (ret_available)
		*ret_available = NULL;
	return 0;
}

static void image_config_done(struct image_config *c)
{
	strv_free(c->entrypoint);
	strv_free(c->cmd);
	strv_free(c->env);
	free(c->working_dir);
	free(c->user);
	strv_free(c->diff_ids);
	platform_done(&c->platform);
}
DEFINE_FREE_FUNC(struct image_config, image_config_free, image_config_done);

/* An optional array of strings: NULL when absent or null. */
static int json_get_strv(json_t *obj, const char *key, char ***ret)
{
	_cleanup_strv_free_ char **l = NULL;
	json_t *v = json_object_get(obj, key), *e;
	size_t i;
	int r;

	if (!v || json_is_null(v)) {
		*ret = NULL;
		return 0;
	}
	if (!json_is_array(v))
		return -EPROTO;
	if (json_array_size(v) > STRV_MAX)
		return -EFBIG;

	/* An empty array stays distinguishable from an absent one. */
	l = calloc(1, sizeof(char *));
	if (!l)
		return -ENOMEM;
	json_array_foreach(v, i, e) {
		if (!json_is_string(e))
			return -EPROTO;
		r = strv_push(&l, json_string_value(e));
		if (r < 0)
			return r;
	}
	*ret = TAKE_PTR(l);
	return 0;
}

/* Like json_dup_string(), but "" counts as absent. */
static int json_dup_nonempty(json_t *obj, const char *key, char **ret)
{
	char *s;
	int r;

	r = json_dup_string(obj, key, &s);
	if (r < 0)
		return r;
	if (s && *s == 0) {
		free(s);
		s = NULL;
	}
	*ret = s;
	return 0;
}

int image_config_parse(const void *buf, size_t len, struct image_config **ret)
{
	_cleanup_(image_config_freep) struct image_config *c = NULL;
	_cleanup_json_ json_t *root = NULL;
	json_t *config, *rootfs;
	int r;

	r = json_parse_object(buf, len, CONFIG_MAX, 0, &root);
	if (r < 0)
		return r;

	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;

	r = json_dup_nonempty(root, "os", &c->platform.os);
	if (r < 0)
		return r;
	r = json_dup_nonempty(root, "architecture", &c->platform.architecture);
	if (r < 0)
		return r;
	r = json_dup_nonempty(root, "variant", &c->platform.variant);
	if (r < 0)
		return r;

	config = json_object_get(root, "config");
	if (config && !json_is_null(config)) {
		if (!json_is_object(config))
			return -EPROTO;
		r = json_get_strv(config, "Entrypoint", &c->entrypoint);
		if (r >= 0)
			r = json_get_strv(config, "Cmd", &c->cmd);
		if (r >= 0)
			r = json_get_strv(config, "Env", &c->env);
		if (r >= 0)
			r = json_dup_nonempty(config, "WorkingDir", &c->working_dir);
		if (r >= 0)
			r = json_dup_nonempty(config, "User", &c->user);
		if (r < 0)
			return r;
	}

	/* Absent or not an object: no diff_ids, which no manifest with layers agrees with. */
	rootfs = json_object_get(root, "rootfs");
	if (json_is_object(rootfs)) {
		r = json_get_strv(rootfs, "diff_ids", &c->diff_ids);
		if (r < 0)
			return r;
	}

	*ret = TAKE_PTR(c);
	return 0;
}
