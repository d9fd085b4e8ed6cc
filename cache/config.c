/* cache/config.c: reads the configuration file (see config.h).  It is tiny and read once per
 * command, so it is parsed line by line without keeping anything. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache/base/util.h"

#define CONFIG_DEFAULT_PATH "/etc/lazyroot/lazyroot.conf"
#define CONFIG_MAX (64 * 1024)

const char *config_path(void)
{
	const char *e = getenv("LAZYROOT_CONFIG");

	return e && *e ? e : CONFIG_DEFAULT_PATH;
}

int parse_size(const char *s, uint64_t *ret)
{
	unsigned long long v;
	unsigned shift = 0;
	char *end;

	while (isspace((unsigned char)*s))
		s++;
	if (!isdigit((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno == ERANGE)
		return -ERANGE;
	switch (toupper((unsigned char)*end)) {
	case 'K':
		shift = 10;
		break;
	case 'M':
		shift = 20;
		break;
	case 'G':
		shift = 30;
		break;
	case 'T':
		shift = 40;
		break;
	}
	if (shift) {
		end++;
		if (*end == 'i')
			end++;
		if (*end == 'B' || *end == 'b')
			end++;
	} else if (*end == 'B' || *end == 'b') {
		end++;
	}
	while (isspace((unsigned char)*end))
		end++;
	if (*end)
		return -EINVAL;
	if (shift && v > (UINT64_MAX >> shift))
		return -ERANGE;
	*ret = (uint64_t)v << shift;
	return 0;
}

int parse_duration(const char *s, int64_t *ret_seconds)
{
	unsigned long long v;
	int64_t unit = 1;
	char *end;

	if (!isdigit((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno == ERANGE)
		return -ERANGE;
	switch (*end) {
	case 'd':
		unit *= 24;
		/* fall through */
	case 'h':
		unit *= 60;
		/* fall through */
	case 'm':
		unit *= 60;
		/* fall through */
	case 's':
		end++;
		break;
	}
	if (*end)
		return -EINVAL;
	if (v > (unsigned long long)INT64_MAX / (unsigned long long)unit)
		return -ERANGE;
	*ret_seconds = (int64_t)v * unit;
	return 0;
}

/* artifact-repository: a repository name that fits the buffer. */
static int config_repository(struct artifact_config *a, const char *value)
{
	if (strlen(value) >= sizeof(a->repository) || strpbrk(value, " \t@"))
		return -EINVAL;
	memcpy(a->repository, value, strlen(value) + 1);
	return 0;
}

static char *strip(char *s)
{
	char *e;

	while (isspace((unsigned char)*s))
		s++;
	e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

static int config_yes_no(const char *value, bool *ret)
{
	if (!streq(value, "yes") && !streq(value, "no"))
		return -EINVAL;
	*ret = streq(value, "yes");
	return 0;
}

/* Sets the field @key names from @value; unknown keys are ignored.  -EINVAL if malformed. */
static int config_apply(struct config *cfg, const char *key, const char *value)
{
	if (streq(key, "max-size"))
		return parse_size(value, &cfg->max_size) < 0 ? -EINVAL : 0;
	if (streq(key, "layer-max-expanded"))
		return parse_size(value, &cfg->layer.max_expanded) < 0 ? -EINVAL : 0;
	if (streq(key, "layer-max-ratio"))
		return parse_size(value, &cfg->layer.max_ratio) < 0 ? -EINVAL : 0;
	if (streq(key, "artifact-repository"))
		return config_repository(&cfg->artifacts, value);
	if (streq(key, "artifact-ttl"))
		return parse_duration(value, &cfg->artifacts.ttl_s) < 0 ? -EINVAL : 0;
	if (streq(key, "artifact-miss-ttl"))
		return parse_duration(value, &cfg->artifacts.miss_ttl_s) < 0 ? -EINVAL : 0;
	if (streq(key, "seek-index-on-pull"))
		return config_yes_no(value, &cfg->seek_index_on_pull);
	if (streq(key, "seek-index-publish"))
		return config_yes_no(value, &cfg->seek_index_publish);
	if (streq(key, "seek-index-fetch"))
		return config_yes_no(value, &cfg->seek_index_fetch);
	return 0;
}

int config_read(struct config *ret, unsigned *ret_line)
{
	_cleanup_free_ char *buf = NULL;
	/* Keeping a seek index costs a full pull no download and a few % of its CPU time
	 * (tests/bench/seek_on_pull.py), and it goes with the last image of its layer. */
	struct config cfg = { .layer = LAYER_LIMITS_DEFAULT, .artifacts = ARTIFACT_CONFIG_DEFAULT,
			      .seek_index_on_pull = true, .seek_index_fetch = true };
	char *line, *save = NULL;
	unsigned n = 0;
	int r;

	cfg.layer.source = config_path();
	r = read_full_file(config_path(), CONFIG_MAX, &buf, NULL);
	if (r == -ENOENT) {
		*ret = cfg;
		return 0;
	}
	if (r < 0)
		return r;

	/* strtok_r would skip empty lines and so miscount; split by hand. */
	for (line = buf; line; line = save) {
		char *key, *value, *eq;

		save = strchr(line, '\n');
		if (save)
			*save++ = '\0';
		n++;
		key = strip(line);
		if (!*key || *key == '#')
			continue;
		eq = strchr(key, '=');
		if (!eq)
			goto bad;
		*eq = '\0';
		value = strip(eq + 1);
		key = strip(key);
		if (config_apply(&cfg, key, value) < 0)
			goto bad;
	}
	*ret = cfg;
	return 0;
bad:
	if (ret_line)
		*ret_line = n;
	return -EINVAL;
}

int config_max_size(uint64_t *ret_max_size, unsigned *ret_line)
{
	struct config cfg;
	int r;

	r = config_read(&cfg, ret_line);
	if (r < 0)
		return r;
	*ret_max_size = cfg.max_size;
	return 0;
}
