/*
 * cli/stats.c: the statistics of a mount.  The daemon runs one thread that accepts
 * connections on a unix socket (mode 0600, in the mount's 0700 state directory) and writes the
 * current counters as one JSON object; `lazyroot stats` reads it and prints it as JSON or as
 * lines for people.
 */
#include "stats.h"

#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "cache/base/log.h"
#include "cache/base/util.h"
#include "fs/fs.h"
#include "fs/profile.h"
#include "cli/cli.h"
#include "cache/store/mount_records.h"
#include "cli/mountinfo.h"
#include "cli/verb_args.h"

static const char stats_usage[] =
	"Usage: lazyroot stats [--json] MOUNTPOINT\n\n"
	"Show what a mount fetched: bytes, requests, chunks fetched, served from\n"
	"the cache and failed, and the progress of its prefetch.\n";

#define STATS_REPLY_MAX (64 * 1024)

struct stats_server {
	int fd;
	int stop_pipe[2];        /* a write wakes the thread to exit */
	pthread_t thread;
	char *target, *image, *digest;
	uint64_t pull_requests, pull_bytes;
	char **layer_digests, **layer_served;
	char **layer_index;      /* as stats_identity's */
	struct fetcher *fetcher; /* borrowed; outlives the server */
	struct fs_profile *profile;  /* borrowed; NULL: none */
	struct fs *fs;               /* borrowed; outlives the server */
};

/* [{"digest": …, "served": "eager" | "estargz" | "zstd:chunked" | "gzip-index",
 *   "seek_index": "built here" | "fetched from HOST/REPO" | "imported" | null}, …] */
static json_t *layers_json(const struct stats_server *s)
{
	json_t *a = json_array();

	for (size_t i = 0; a && s->layer_digests && s->layer_digests[i] && s->layer_served &&
			   s->layer_served[i]; i++) {
		const char *index = s->layer_index && i < strv_length(s->layer_index) ?
				    s->layer_index[i] : "";

		json_array_append_new(a, json_pack("{s:s, s:s, s:o}", "digest",
						   s->layer_digests[i], "served", s->layer_served[i],
						   "seek_index", index[0] ? json_string(index) :
									    json_null()));
	}
	return a;
}

/* {"chunks", "skipped", "fetched", "used", "recorded", "fetching"}: the start profile's chunks
 * the image has and has not, how many of them the mount fetched and its reads used. */
static json_t *profile_json(const struct stats_server *s)
{
	struct fs_profile_stats st;

	fs_profile_get_stats(s->profile, &st);
	return json_pack("{s:I, s:I, s:I, s:I, s:I, s:b}", "chunks", (json_int_t)st.chunks,
			 "skipped", (json_int_t)st.skipped, "fetched", (json_int_t)st.fetched,
			 "used", (json_int_t)st.used, "recorded", (json_int_t)st.recorded,
			 "fetching", st.fetching);
}

/* {"parsed", "fetched"}: programs and libraries whose ELF headers the mount read at their
 * first read, and those it fetched whole ahead of the loader (fs/exec_ahead.h). */
static json_t *exec_ahead_json(const struct stats_server *s)
{
	struct exec_ahead_stats st;

	fs_get_exec_ahead_stats(s->fs, &st);
	return json_pack("{s:I, s:I}", "parsed", (json_int_t)st.parsed,
			 "fetched", (json_int_t)st.fetched);
}

static char *stats_json(const struct stats_server *s)
{
	struct fetch_stats st = {};
	json_t *o;
	char *text;

	if (s->fetcher)
		fetcher_get_stats(s->fetcher, &st);
	o = json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:{s:I, s:I, s:b}}",
		      "mountpoint", s->target, "image", s->image, "digest", s->digest,
		      "pull_bytes", (json_int_t)s->pull_bytes,
		      "pull_requests", (json_int_t)s->pull_requests,
		      "bytes_fetched", (json_int_t)st.bytes_fetched,
		      "requests", (json_int_t)st.requests,
		      "requests_running", (json_int_t)st.requests_running,
		      "chunks_fetched", (json_int_t)st.chunks_fetched,
		      "chunks_cached", (json_int_t)st.chunks_cached,
		      "chunks_failed", (json_int_t)st.chunks_failed,
		      "chunks_refetched", (json_int_t)st.chunks_refetched,
		      "chunks_no_space", (json_int_t)st.chunks_no_space,
		      "prefetch", "total", (json_int_t)st.prefetch_total,
		      "done", (json_int_t)st.prefetch_done, "running", st.prefetch_running);
	if (!o)
		return NULL;
	json_object_set_new(o, "layers", layers_json(s));
	json_object_set_new(o, "profile", profile_json(s));
	json_object_set_new(o, "exec_ahead", exec_ahead_json(s));
	text = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	return text;
}

static void *stats_thread(void *userdata)
{
	struct stats_server *s = userdata;

	for (;;) {
		struct pollfd p[2] = {
			{ .fd = s->fd, .events = POLLIN },
			{ .fd = s->stop_pipe[0], .events = POLLIN },
		};
		_cleanup_close_ int conn = -EBADF;
		_cleanup_free_ char *text = NULL;

		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			return NULL;
		}
		if (p[1].revents)
			return NULL;
		conn = accept4(s->fd, NULL, NULL, SOCK_CLOEXEC);
		if (conn < 0)
			continue;
		text = stats_json(s);
		if (text)
			(void)send(conn, text, strlen(text), MSG_NOSIGNAL);
	}
}

struct stats_server *stats_server_stop(struct stats_server *s)
{
	if (!s)
		return NULL;
	if (s->stop_pipe[1] >= 0) {
		(void)write(s->stop_pipe[1], "x", 1);
		(void)pthread_join(s->thread, NULL);
	}
	closep(&s->fd);
	closep(&s->stop_pipe[0]);
	closep(&s->stop_pipe[1]);
	free(s->target);
	free(s->image);
	free(s->digest);
	strv_free(s->layer_digests);
	strv_free(s->layer_served);
	strv_free(s->layer_index);
	free(s);
	return NULL;
}
DEFINE_CLEANUP_FUNC(struct stats_server *, stats_server_stop);

static int socket_address(const char *path, struct sockaddr_un *ret, socklen_t *ret_len)
{
	*ret = (struct sockaddr_un) { .sun_family = AF_UNIX };
	if (strlen(path) >= sizeof(ret->sun_path))
		return -ENAMETOOLONG;
	strcpy(ret->sun_path, path);
	*ret_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path) + 1);
	return 0;
}

int stats_server_start(const char *socket_path, const struct stats_identity *id,
		       struct fetcher *fetcher, struct stats_server **ret)
{
	_cleanup_(stats_server_stopp) struct stats_server *s = NULL;
	struct sockaddr_un sa;
	socklen_t sa_len;
	int r;

	r = socket_address(socket_path, &sa, &sa_len);
	if (r < 0)
		return r;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->fd = s->stop_pipe[0] = s->stop_pipe[1] = -EBADF;
	s->fetcher = fetcher;
	s->profile = id->profile;
	s->fs = id->fs;
	s->pull_requests = id->pull_requests;
	s->pull_bytes = id->pull_bytes;
	s->target = strdup(id->target);
	s->image = strdup(id->image ? id->image : "");
	s->digest = strdup(id->digest ? id->digest : "");
	if (!s->target || !s->image || !s->digest)
		return -ENOMEM;
	for (size_t i = 0; id->layer_digests && id->layer_served && id->layer_digests[i] &&
			   id->layer_served[i]; i++)
		if (strv_push(&s->layer_digests, id->layer_digests[i]) < 0 ||
		    strv_push(&s->layer_served, id->layer_served[i]) < 0 ||
		    (id->layer_index && id->layer_index[i] &&
		     strv_push(&s->layer_index, id->layer_index[i]) < 0))
			return -ENOMEM;

	s->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s->fd < 0)
		return -errno;
	(void)unlink(socket_path);
	if (bind(s->fd, (struct sockaddr *)&sa, sa_len) < 0)
		return -errno;
	if (chmod(socket_path, 0600) < 0 || listen(s->fd, 8) < 0)
		return -errno;
	if (pipe2(s->stop_pipe, O_CLOEXEC) < 0)
		return -errno;
	r = -pthread_create(&s->thread, NULL, stats_thread, s);
	if (r < 0) {
		closep(&s->stop_pipe[1]);  /* no thread to join */
		s->stop_pipe[1] = -EBADF;
		return r;
	}
	*ret = TAKE_PTR(s);
	return 0;
}

static int stats_fetch(const char *socket_path, char **ret)
{
	_cleanup_close_ int fd = -EBADF;
	_cleanup_free_ char *buf = NULL;
	struct sockaddr_un sa;
	socklen_t sa_len;
	size_t len = 0;
	int r;

	r = socket_address(socket_path, &sa, &sa_len);
	if (r < 0)
		return r;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sa_len) < 0)
		return -errno;
	buf = malloc(STATS_REPLY_MAX + 1);
	if (!buf)
		return -ENOMEM;
	for (;;) {
		ssize_t n = read(fd, buf + len, STATS_REPLY_MAX - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		len += (size_t)n;
		if (len == STATS_REPLY_MAX)
			return -EFBIG;
	}
	buf[len] = 0;
	*ret = TAKE_PTR(buf);
	return 0;
}

static json_int_t get_int(json_t *o, const char *key)
{
	return json_integer_value(json_object_get(o, key));
}

static void print_profile(json_t *p)
{
	if (get_int(p, "recorded") > 0)
		printf("start profile:      %" JSON_INTEGER_FORMAT " chunks recorded\n",
		       get_int(p, "recorded"));
	if (get_int(p, "chunks") == 0 && get_int(p, "skipped") == 0)
		return;
	printf("start profile:      %" JSON_INTEGER_FORMAT " chunks (%" JSON_INTEGER_FORMAT
	       " not the image's, skipped): %" JSON_INTEGER_FORMAT " fetched at mount, %"
	       JSON_INTEGER_FORMAT " read since%s\n", get_int(p, "chunks"), get_int(p, "skipped"),
	       get_int(p, "fetched"), get_int(p, "used"),
	       json_is_true(json_object_get(p, "fetching")) ? " (fetching)" : "");
}

static void print_human(json_t *o)
{
	json_t *p = json_object_get(o, "prefetch");

	printf("mountpoint:         %s\n", json_string_value(json_object_get(o, "mountpoint")));
	printf("image:              %s\n", json_string_value(json_object_get(o, "image")));
	printf("digest:             %s\n", json_string_value(json_object_get(o, "digest")));
	printf("fetched at mount:   %" JSON_INTEGER_FORMAT " bytes in %" JSON_INTEGER_FORMAT
	       " requests (manifest, config, TOCs, whole layers)\n",
	       get_int(o, "pull_bytes"), get_int(o, "pull_requests"));
	printf("fetched on demand:  %" JSON_INTEGER_FORMAT " bytes in %" JSON_INTEGER_FORMAT
	       " requests", get_int(o, "bytes_fetched"), get_int(o, "requests"));
	if (get_int(o, "requests_running") > 0)
		printf(" (%" JSON_INTEGER_FORMAT " more running)", get_int(o, "requests_running"));
	printf("\n");
	printf("chunks:             %" JSON_INTEGER_FORMAT " fetched, %" JSON_INTEGER_FORMAT
	       " served from the cache, %" JSON_INTEGER_FORMAT " failed, %" JSON_INTEGER_FORMAT
	       " fetched again after wrong bytes\n", get_int(o, "chunks_fetched"),
	       get_int(o, "chunks_cached"), get_int(o, "chunks_failed"),
	       get_int(o, "chunks_refetched"));
	if (get_int(o, "chunks_no_space") > 0)
		printf("not stored:         %" JSON_INTEGER_FORMAT " chunks (the cache is full: "
		       "No space left on device)\n", get_int(o, "chunks_no_space"));
	printf("prefetch:           %" JSON_INTEGER_FORMAT "/%" JSON_INTEGER_FORMAT " chunks%s\n",
	       get_int(p, "done"), get_int(p, "total"),
	       json_is_true(json_object_get(p, "running")) ? " (running)" : "");
	print_profile(json_object_get(o, "profile"));
	printf("programs:           %" JSON_INTEGER_FORMAT " ELF files read for their libraries, %"
	       JSON_INTEGER_FORMAT " fetched whole ahead of the loader\n",
	       get_int(json_object_get(o, "exec_ahead"), "parsed"),
	       get_int(json_object_get(o, "exec_ahead"), "fetched"));
	for (size_t i = 0; i < json_array_size(json_object_get(o, "layers")); i++) {
		json_t *l = json_array_get(json_object_get(o, "layers"), i);

		printf("layer:              %s %s%s%s\n",
		       json_string_value(json_object_get(l, "digest")),
		       json_string_value(json_object_get(l, "served")),
		       json_is_string(json_object_get(l, "seek_index")) ? ", seek index " : "",
		       json_string_value(json_object_get(l, "seek_index")) ?: "");
	}
}

int verb_stats(int argc, char **argv)
{
	static const struct option options[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	_cleanup_free_ char *target = NULL, *dir = NULL, *sock = NULL, *text = NULL;
	bool json = false;
	json_t *o;
	int r;
	const struct verb_arg args[] = { VERB_SWITCH('j', &json), {} };

	r = verb_args_parse(argc, argv, &(struct verb_args) { .name = "stats",
		.usage = stats_usage, .operands = "needs a mountpoint", .min_operands = 1,
		.max_operands = 1, .optstring = "jh", .options = options, .args = args });
	if (r != 0)
		return r > 0 ? 0 : r;
	r = path_make_absolute(argv[optind], &target);
	if (r >= 0)
		r = mount_record_dir_for(target, &dir);
	if (r < 0 || asprintf(&sock, "%s/control", dir) < 0) {
		log_error_errno(r < 0 ? r : -ENOMEM, "cannot resolve '%s': %m", argv[optind]);
		return -ERR_USAGE;
	}
	r = stats_fetch(sock, &text);
	if (r < 0) {
		if (r == -ENOENT || r == -ECONNREFUSED)
			log_error("'%s' is not a lazyroot mount with a running daemon", target);
		else
			log_error_errno(r, "cannot read the statistics of '%s': %m", target);
		return -ERR_MOUNT;
	}
	if (json) {
		printf("%s\n", text);
		return 0;
	}
	o = json_loads(text, 0, NULL);
	if (!o) {
		log_error("the daemon of '%s' sent malformed statistics", target);
		return -EPROTO;
	}
	print_human(o);
	json_decref(o);
	return 0;
}
