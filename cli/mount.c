/*
 * cli/mount.c: `lazyroot mount REF DIR`.  Checks everything it can before touching the
 * network, pulls the image (every layer indexed, pinned to one manifest digest), builds the
 * merged tree in memory, then starts the daemon that serves FUSE (cli/mount_daemon.c); the
 * command returns once the daemon reports the mount ready, or its error.
 */
#include <dirent.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>

#include "cache/base/error.h"
#include "cache/base/log.h"
#include "cache/base/util.h"
#include "cache/format/layer_lazy.h"
#include "cache/config.h"
#include "cache/gc.h"
#include "cache/seek.h"
#include "cache/base/trace.h"
#include "cache/share/profile_remote.h"
#include "cache/share/seek_remote.h"
#include "fs/fs.h"
#include "cli/cli.h"
#include "cli/cache_args.h"
#include "cli/machine.h"
#include "cli/mount_daemon.h"
#include "cli/mount_tree.h"
#include "cli/mountinfo.h"
#include "cli/overlay.h"
#include "cli/private_users.h"
#include "cli/progress.h"
#include "cli/verb_args.h"

static const char mount_usage[] =
	"Usage: lazyroot mount [OPTIONS] REF DIR\n"
	"       lazyroot mount [OPTIONS] --machine=NAME [REF]\n\n"
	"Mount image REF read-only at DIR; file contents come from the cache.\n\n"
	"  -o, --overlay=DIR      mount overlayfs at DIR, writes go to DIR/upper\n"
	"  -M, --machine=NAME     mount as machine NAME for systemd-nspawn -M, machinectl\n"
	"                         and systemd-nspawn@NAME.service (see MACHINES in lazyroot(1))\n"
	"      --volatile         like --overlay, with writes in memory (tmpfs)\n"
	"      --private-users=BASE|pick  show uids and gids shifted by BASE (for nspawn -U)\n"
	IMAGE_OPTIONS_HELP
	"      --record-profile[=SECONDS]  record the chunks the first SECONDS (default 10)\n"
	"                         of reads use as the image's start profile\n"
	"      --profile=no       do not fetch the image's start profile at mount\n"
	"  -f, --foreground       serve in the foreground (for systemd units)\n"
	"  -d, --debug            log every FUSE request (implies --foreground)\n"
	"  -v, --verbose          more messages\n"
	"  -h, --help             this help\n";

/* A lazy read that cannot get its bytes fails after this long (--timeout): long enough for a
 * slow registry to answer a few MiB and retry, short enough that a program sees EIO before a
 * user gives up on it. */
#define FETCH_TIMEOUT_MS_DEFAULT 30000L

static int check_dir_empty(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *de;
	int r = 1;

	if (!d)
		return -errno;
	while ((de = readdir(d)))
		if (!streq(de->d_name, ".") && !streq(de->d_name, "..")) {
			r = 0;
			break;
		}
	closedir(d);
	return r;
}

static int check_mountpoint(const char *target)
{
	struct mount_record old = {};
	struct stat st;
	int r;

	if (stat(target, &st) < 0) {
		if (errno == ENOENT)
			log_error("mountpoint '%s' does not exist", target);
		else
			log_error_errno(errno, "cannot access mountpoint '%s': %m", target);
		return -ERR_MOUNT;
	}
	if (!S_ISDIR(st.st_mode)) {
		log_error("mountpoint '%s' is not a directory", target);
		return -ERR_MOUNT;
	}
	if (mount_record_read(target, &old) >= 0) {
		bool alive = old.pid > 0 && kill(old.pid, 0) == 0;

		if (alive || mountinfo_find(target, NULL) > 0) {
			log_error("'%s' is already a lazyroot mount (of '%s')", target,
				  old.image ? old.image : "?");
			mount_record_done(&old);
			return -ERR_MOUNT;
		}
		/* Left by a daemon that died with nothing mounted: forget it. */
		(void)mount_record_remove(old.dir);
		mount_record_done(&old);
	}
	r = check_dir_empty(target);
	if (r < 0) {
		log_error_errno(r, "cannot read mountpoint '%s': %m", target);
		return -ERR_MOUNT;
	}
	if (r == 0) {
		log_error("mountpoint '%s' is not empty", target);
		return -ERR_MOUNT;
	}
	return 0;
}

static int check_dev_fuse(void)
{
	_cleanup_close_ int fd = -EBADF;

	/* Other users mount through the setuid fusermount3, which opens /dev/fuse itself. */
	if (geteuid() != 0)
		return 0;
	fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);

	if (fd < 0) {
		log_error_errno(errno, "cannot open /dev/fuse: %m (is the fuse module loaded?)");
		return -ERR_MOUNT;
	}
	return 0;
}

static int prefetch_add(void *userdata, const struct fs_chunk_ref *c)
{
	struct mount_daemon *d = userdata;
	struct fetch_chunk *fc;

	if (GREEDY_REALLOC(d->prefetch, d->n_prefetch_allocated, d->n_prefetch + 1) < 0)
		return -ENOMEM;
	fc = &d->prefetch[d->n_prefetch++];
	*fc = (struct fetch_chunk) {
		.layer = c->layer, .blob_offset = c->blob_offset, .blob_length = c->blob_length,
		.size = c->size,
	};
	digest_format_sha256(c->digest, fc->digest);
	return 0;
}

/* Evicts least recently used images no mount uses: first down to max-size; if that
 * evicted nothing, down to @need bytes less than what is left (at least the least recently
 * used image).  @need 0 (the fetcher's trim, the disk has room): max-size only, and not if a
 * pull or gc holds the cache.  Returns how many it evicted. */
static int make_room_gc(struct cache *c, uint64_t max_size, uint64_t need)
{
	struct gc_options o = { .max_size = max_size, .tmp_min_age = GC_TMP_MIN_AGE_SEC,
				.no_wait = need == 0 };
	struct gc_result res = {};
	uint64_t freed;
	size_t n;
	int r;

	r = cache_gc(c, &o, &res);
	n = strv_length(res.evicted);
	freed = res.evicted_bytes + res.orphan_bytes;
	if (r >= -ENOSPC && n == 0 && res.blob_bytes > 0 && need > 0) {
		o.max_size = res.blob_bytes > need ? res.blob_bytes - need : 1;
		gc_result_done(&res);
		res = (struct gc_result) {};
		r = cache_gc(c, &o, &res);
		n = strv_length(res.evicted);
		freed += res.evicted_bytes + res.orphan_bytes;
	}
	if (r < 0 && r != -ENOSPC) {
		gc_result_done(&res);
		return r;
	}
	if (freed > 0)
		log_warning("cache '%s' is %s: evicted %zu unmounted image(s), least recently used "
			    "first (%llu bytes freed)", c->dir, need > 0 ? "full" : "over max-size",
			    n, (unsigned long long)freed);
	else
		log_debug("cache '%s' is full and no image can be evicted", c->dir);
	gc_result_done(&res);
	return freed > 0 ? 1 : 0;
}

/* The fetcher's make_room (fetcher_options): with max-size in the configuration file, a store
 * that has no room evicts images no mount uses, as `lazyroot gc` does.  @userdata: the cache
 * directory.  Runs in the daemon, which opens the index anew (it must not carry the mount
 * command's connection across fork()). */
static int make_room(void *userdata, uint64_t need)
{
	_cleanup_(cache_freep) struct cache *c = NULL;
	uint64_t max_size;
	int r;

	r = config_max_size(&max_size, NULL);
	if (r < 0 || max_size == 0)
		return r < 0 ? r : 0;
	r = cache_open(userdata, &c);
	if (r < 0)
		return r;
	return make_room_gc(c, max_size, need);
}

/* Images with eStargz or zstd:chunked layers get a fetcher for the chunks not yet stored, and
 * the list of chunks to prefetch. */
static int setup_lazy(struct mount_daemon *d, const struct reference *ref, struct cache *cache,
		      const struct image *img, const struct fs_tree *tree)
{
	const struct manifest *m = img->manifest;
	struct blob_store *bs = cache->bs;
	bool lazy = seek_image_is_lazy(cache, m) > 0;  /* gzip layers with a seek index */
	int r;

	for (size_t i = 0; i < m->n_layers; i++)
		if (layer_format_detect(&m->layers[i]) != LAYER_FORMAT_TAR)
			lazy = true;
	if (!lazy)
		return 0;

	r = mount_request_fetcher_new(d->req, ref, img, NULL, &(struct fetcher_options) {
			.timeout_ms = d->req->fetch_timeout_ms > 0 ? d->req->fetch_timeout_ms :
								     FETCH_TIMEOUT_MS_DEFAULT,
			.make_room = make_room, .make_room_userdata = d->state.cache_dir,
			.seek_failed = seek_failed_drop, .seek_failed_userdata = d->state.cache_dir,
			.cache_dir = d->state.cache_dir,
		}, bs, &d->fetcher);
	if (r >= 0)
		r = seek_fetcher_attach(cache, m, d->fetcher);
	if (r < 0)
		return r;
	if (d->req->prefetch == PREFETCH_NONE)
		return 0;
	return fs_tree_foreach_prefetch(tree, d->req->prefetch == PREFETCH_ALL, prefetch_add, d);
}

/* Creates the mount's runtime state and writes it with our pid: from here on, gc and rm
 * treat the image as mounted.  The daemon writes it again with its own pid once it serves. */
static int prepare_state(struct mount_daemon *d, const struct mount_request *req, struct cache *cache,
			 struct image *img)
{
	int r;

	r = mount_record_dir_for(d->state.target, &d->state.dir);
	if (r >= 0)
		r = mkdir_p(d->state.dir, 0700);
	if (r < 0) {
		log_error_errno(r, "cannot create runtime state for '%s': %m", d->state.target);
		return -ERR_MOUNT;
	}
	d->state_created = true;
	d->state.image = TAKE_PTR(img->ref);
	d->state.digest = strdup(img->manifest_digest);
	/* gc and rm of this cache, and only of this one, must see the image as mounted. */
	d->state.cache_dir = realpath(cache->dir, NULL);
	if (req->volatile_upper) {
		free(d->overlay_dir);
		if (asprintf(&d->overlay_dir, "%s/volatile", d->state.dir) < 0)
			d->overlay_dir = NULL;
		else
			(void)mkdir(d->overlay_dir, 0700);
	}
	if (d->overlay_dir) {
		d->state.upper = strdup(req->volatile_upper ? "volatile" : "overlay");
		if (asprintf(&d->state.fuse_mountpoint, "%s/lower", d->state.dir) >= 0)
			(void)mkdir(d->state.fuse_mountpoint, 0755);
	} else {
		d->state.upper = strdup("none");
		d->state.fuse_mountpoint = strdup(d->state.target);
	}
	if (!d->state.image || !d->state.digest || !d->state.cache_dir || !d->state.upper || !d->state.fuse_mountpoint ||
	    (req->volatile_upper && !d->overlay_dir)) {
		log_error("out of memory");
		return -ENOMEM;
	}
	d->state.pid = getpid();
	r = mount_record_write(&d->state);
	if (r < 0) {
		log_error_errno(r, "cannot write mount state in '%s': %m", d->state.dir);
		return -ERR_MOUNT;
	}
	return 0;
}

/* An upper directory written in another id range would show the container wrong owners. */
static int check_overlay_upper(const char *dir, uint32_t base)
{
	uid_t uid;
	gid_t gid;
	int r;

	r = overlay_check_upper(dir, base, &uid, &gid);
	if (r == -EXDEV)
		return log_error_errno(-ERR_MOUNT, "overlay directory '%s' holds an upper directory "
				       "owned by %u:%u, outside the ids %" PRIu32 "-%" PRIu32 " of this "
				       "mount: use the --private-users it was written with, or another "
				       "directory", dir, (unsigned)uid, (unsigned)gid, base,
				       base + PRIVATE_USERS_RANGE - 1);
	if (r < 0)
		return log_error_errno(-ERR_MOUNT, "cannot check overlay directory '%s': %s", dir,
				       strerror(-r));
	return 0;
}

/* The range of --private-users: pick's name is the machine's, else the mountpoint's path, and
 * it tries first the range a kept upper directory was written in. */
static int mount_private_users(const struct mount_request *req, struct mount_daemon *d)
{
	uint32_t preferred = 0;
	uid_t uid;
	gid_t gid;

	if (!req->private_users)
		return 0;
	if (req->overlay_dir && overlay_upper_owner(req->overlay_dir, &uid, &gid) >= 0 &&
	    (uid & ~(uid_t)0xFFFF) == (gid & ~(gid_t)0xFFFF))
		preferred = uid & ~(uid_t)0xFFFF;
	return private_users_parse_prefer(req->private_users,
					  req->private_users_name ?: d->state.target, preferred,
					  &d->state.private_users);
}

/* Everything that can be checked before the network: the mountpoint, /dev/fuse, the overlay
 * directory. */
static int mount_check(const struct mount_request *req, struct mount_daemon *d)
{
	char resolved[PATH_MAX];
	int r;

	r = path_make_absolute(req->mountpoint, &d->state.target);
	if (r < 0)
		return log_error_errno(-ERR_MOUNT, "mountpoint '%s' does not exist: %s",
				       req->mountpoint, strerror(-r));
	r = mount_private_users(req, d);
	if (r < 0)
		return r;
	r = check_mountpoint(d->state.target);
	if (r == 0)
		r = check_dev_fuse();
	if (r < 0)
		return r;
	if ((req->overlay_dir || req->volatile_upper) && geteuid() != 0) {
		log_error("--overlay and --volatile need root (kernel overlayfs); mount without them");
		return -ERR_MOUNT;
	}
	if (!req->overlay_dir)
		return 0;
	if (overlay_check_path(req->overlay_dir) < 0) {
		log_error("overlay directory '%s' may not contain ',' ':' or '\\'", req->overlay_dir);
		return -ERR_USAGE;
	}
	/* upper/ and work/ are made once the image's root is known (mount_build). */
	r = mkdir_p(req->overlay_dir, 0755);
	if (r < 0 || !realpath(req->overlay_dir, resolved)) {
		log_error_errno(r < 0 ? r : errno, "cannot prepare overlay directory '%s': %m",
				req->overlay_dir);
		return -ERR_MOUNT;
	}
	r = check_overlay_upper(resolved, d->state.private_users);
	if (r < 0)
		return r;
	d->overlay_dir = strdup(resolved);
	return d->overlay_dir ? 0 : -ENOMEM;
}

/* Pulls the image and records the mount, so that from then on gc and rm see it mounted. */
static int mount_pull(const struct mount_request *req, const struct reference *ref,
		      struct cache *cache, struct mount_daemon *d, struct image **ret_img)
{
	_cleanup_(image_freep) struct image *img = NULL;
	_cleanup_close_ int pin_fd = -EBADF;
	_cleanup_free_ char *what = NULL;
	struct pull_options po = {
		.platform = req->platform, .policy = req->policy,
		.registry = mount_request_registry_options(req),
		.find_seek_indexes = seek_remote_fetch,
		/* A mount that records its profile, or was told to use none, looks none up. */
		.find_start_profile = req->record_profile_ms || req->no_profile ? NULL :
								      profile_remote_fetch,
	};
	enum pull_failure failure;
	int r;

	/* Held shared from the pull until the mount state names the image: an explicit gc or
	 * rm (which lock it exclusively) either runs before the pull or sees the image as
	 * mounted, never in between. */
	r = cache_lock(cache, LOCK_SH, &pin_fd);
	if (r < 0) {
		log_error_errno(r, "cannot lock cache '%s': %m", cache->dir);
		return -ERR_CACHE;
	}
	what = reference_to_string(ref);
	po.progress_userdata = progress_new(what ? what : req->ref);
	po.progress = progress_update;
	r = image_pull(cache, ref, &po, &img, &failure);
	progress_free(po.progress_userdata);
	if (r < 0) {
		log_error("cannot pull '%s': %s", req->ref, error_take(r));
		return pull_failure_errno(failure);
	}
	r = prepare_state(d, req, cache, img);
	if (r < 0)
		return r;
	*ret_img = TAKE_PTR(img);
	return 0;
}

/* The tree's ids shifted into the private users range, and the overlay's upper and work
 * directories, owned by that range, the upper with the image root's mode. */
static int mount_build_upper(struct mount_daemon *d, struct fs_tree *tree)
{
	struct stat st;
	int r;

	if (private_users_apply(tree, d->state.private_users) < 0)
		return -ERR_MOUNT;
	r = fs_tree_stat(tree, FS_ROOT_INO, &st);
	d->upper_mode = r < 0 ? 0755 : st.st_mode & 07777;
	if (!d->req->overlay_dir)
		return 0;
	r = overlay_prepare_dir(d->overlay_dir, d->state.private_users, d->upper_mode);
	if (r < 0)
		return log_error_errno(-ERR_MOUNT, "cannot prepare overlay directory '%s': %s",
				       d->overlay_dir, strerror(-r));
	return 0;
}

/* The tree, the fetcher of lazy layers and the filesystem the daemon serves. */
static int mount_build(struct mount_daemon *d, const struct reference *ref, struct cache *cache,
		       const struct image *img)
{
	_cleanup_(fs_tree_freep) struct fs_tree *tree = NULL;
	int64_t t0 = trace_enabled() ? trace_now_us() : 0;
	int r;

	if (mount_tree_build(cache, img, &tree) < 0)
		return -ERR_REGISTRY;
	trace_step("tree", img->manifest_digest, t0, 0);
	r = mount_build_upper(d, tree);
	if (r < 0)
		return r;
	d->pull_requests = img->pull_requests;
	d->pull_bytes = img->pull_bytes;
	r = setup_lazy(d, ref, cache, img, tree);
	for (size_t i = 0; r >= 0 && i < img->manifest->n_layers; i++)
		if (strv_push(&d->layer_digests, img->manifest->layers[i].digest) < 0 ||
		    strv_push(&d->layer_served, seek_layer_served(cache, &img->manifest->layers[i])) < 0 ||
		    seek_layer_origin_append(cache, &img->manifest->layers[i], &d->layer_index) < 0)
			r = -ENOMEM;
	if (r < 0)
		return log_error_errno(r == -ENOMEM ? r : -ERR_OTHER,
				       "cannot set up fetching of lazy layers: %s", strerror(-r));
	if (r >= 0 && d->fetcher)
		r = mount_profile_setup(&d->profile, d->req, ref, cache, img, tree);
	if (r < 0)
		return log_error_errno(r, "cannot set up the start profile: %m");
	if (cache_gc_auto(cache) < 0)
		log_warning("automatic gc of cache '%s' failed, ignoring", cache->dir);
	/* SQLite connections must not cross fork(); the daemon needs only the blob store. */
	cache_close_db(cache);

	r = fs_new(tree, cache->bs, d->fetcher, &d->fs);
	if (r < 0) {
		log_error_errno(r, "cannot set up the filesystem: %m");
		return -ERR_MOUNT;
	}
	fs_set_profile(d->fs, d->profile.profile);
	tree = NULL;  /* the fs owns it now */
	return 0;
}

int mount_image(const struct mount_request *req, struct image_config **ret_config,
		char **ret_short_name)
{
	_cleanup_(reference_freep) struct reference *ref = NULL;
	_cleanup_(cache_freep) struct cache *cache = NULL;
	_cleanup_(image_freep) struct image *img = NULL;
	struct mount_daemon d = { .req = req, .report_fd = -1 };
	int r;

	r = reference_parse(req->ref, &ref);
	if (r < 0) {
		log_error("invalid image reference '%s': %s", req->ref, error_take(r));
		return -ERR_USAGE;
	}
	r = mount_check(req, &d);
	if (r >= 0)
		r = cli_cache_open(req->cache_dir, &cache);
	if (r >= 0)
		r = mount_pull(req, ref, cache, &d, &img);
	if (r >= 0)
		r = mount_build(&d, ref, cache, img);
	if (r >= 0 && req->pulled)
		r = req->pulled(req->pulled_userdata, ref, img, d.state.private_users);
	if (r < 0)
		goto finish;
	if (ret_config) {
		*ret_config = TAKE_PTR(img->config);
		*ret_short_name = reference_short_name(ref);
	}
	r = req->foreground ? mount_daemon_run(&d) : mount_daemon_start(&d);
	if (r < 0 && ret_config) {
		*ret_config = image_config_free(*ret_config);
		free(*ret_short_name);
		*ret_short_name = NULL;
	}
finish:
	/* A failed mount leaves no state behind (a daemon that started removed its own). */
	if (r < 0 && d.state_created)
		(void)mount_record_remove(d.state.dir);
	mount_daemon_done(&d);
	return r;
}

/* --machine NAME [REF]: the machine's own mountpoint and overlay. */
static int verb_mount_machine(struct mount_request *req, const char *name, int n, char **operands)
{
	if (n > 1)
		return log_error_errno(-ERR_USAGE, "mount --machine takes at most an image reference, "
				       "not a mountpoint (see 'lazyroot mount --help')");
	if (req->overlay_dir || req->volatile_upper)
		return log_error_errno(-ERR_USAGE, "a machine's writes are kept in its own overlay: "
				       "--overlay and --volatile do not apply to --machine");
	if (geteuid() != 0)
		return log_error_errno(-ERR_MOUNT, "machines need root (kernel overlayfs, "
				       "/var/lib/machines, systemd's settings)");
	return machine_mount(req, name, n == 1 ? operands[0] : NULL);
}

int verb_mount(int argc, char **argv)
{
	static const struct option options[] = {
		{ "overlay", required_argument, NULL, 'o' },
		{ "volatile", no_argument, NULL, 'V' },
		{ "machine", required_argument, NULL, 'M' },
		IMAGE_OPTIONS,
		{ "record-profile", optional_argument, NULL, OPT_RECORD_PROFILE },
		{ "profile", required_argument, NULL, OPT_PROFILE },
		{ "foreground", no_argument, NULL, 'f' },
		{ "debug", no_argument, NULL, 'd' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	_cleanup_(mount_request_done) struct mount_request req = {};
	const char *machine = NULL, *record = NULL, *profile = NULL;
	bool record_default = false;
	int r;

	r = verb_args_parse(argc, argv, &(struct verb_args) {
		.name = "mount", .max_operands = 2,
		.usage = mount_usage, .optstring = "o:M:fdvh", .options = options, .image = &req,
		.args = (const struct verb_arg[]) {
			VERB_VALUE('o', &req.overlay_dir), VERB_SWITCH('V', &req.volatile_upper),
			VERB_VALUE('M', &machine),
			VERB_SWITCH('f', &req.foreground), VERB_SWITCH('d', &req.foreground),
			VERB_SWITCH('d', &req.debug_fuse),
			VERB_SWITCH(OPT_RECORD_PROFILE, &record_default),
			VERB_VALUE(OPT_RECORD_PROFILE, &record), VERB_VALUE(OPT_PROFILE, &profile), {}
		},
	});
	if (r != 0)
		return r > 0 ? 0 : r;
	r = mount_profile_options(record_default, record, profile, &req);
	if (r < 0)
		return r;
	if (req.overlay_dir && req.volatile_upper) {
		log_error("--overlay and --volatile exclude each other");
		return -ERR_USAGE;
	}
	if (machine)
		return verb_mount_machine(&req, machine, argc - optind, argv + optind);
	if (argc - optind != 2)
		return log_error_errno(-ERR_USAGE, "mount needs an image reference and a mountpoint "
				       "(see 'lazyroot mount --help')");
	req.ref = argv[optind];
	req.mountpoint = argv[optind + 1];
	return mount_image(&req, NULL, NULL);
}
