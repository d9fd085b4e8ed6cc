/*
 * cli/private_users.c: choosing and applying a mount's private users range (see
 * private_users.h).  `pick` chooses from a hash of the name (sha256 here; nspawn hashes a
 * machine name with siphash), so that a name keeps its range from one mount to the next (the
 * overlay's writes stay owned right), and
 * checks candidates against what the host knows of ranges in use: its users and groups, the
 * subordinate ranges podman and others use, running nspawn containers and live lazyroot
 * mounts.  Runs once a mount; the host's user database is read once per pick.
 */
#include "private_users.h"

#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <pwd.h>
#include <sys/stat.h>

#include "cache/base/digest.h"
#include "cache/base/error.h"
#include "cache/base/log.h"
#include "cache/base/util.h"
#include "cache/store/mount_records.h"
#include "fs/tree.h"
#include "cli/exit_status.h"

/* nspawn's own tries before it gives up. */
#define PICK_TRIES 100
/* Where a running systemd-nspawn locks the base it uses (an OFD lock on the file). */
#define NSPAWN_UID_LOCK_DIR "/run/systemd/nspawn-uid"

struct id_span {
	uint32_t first, last;
};

/* Ids and ranges in use on the host, each a span; only those at or above PICK_MIN matter. */
struct taken {
	struct id_span *spans;
	size_t n, allocated;
};

static void taken_done(struct taken *t)
{
	free(t->spans);
}

static int taken_add(struct taken *t, uint64_t first, uint64_t count)
{
	uint64_t last = first + (count ? count : 1) - 1;

	if (last < PRIVATE_USERS_PICK_MIN || first > UINT32_MAX)
		return 0;
	if (GREEDY_REALLOC(t->spans, t->allocated, t->n + 1) < 0)
		return -ENOMEM;
	t->spans[t->n++] = (struct id_span) {
		(uint32_t)first, last > UINT32_MAX ? UINT32_MAX : (uint32_t)last,
	};
	return 0;
}

static bool taken_overlaps(const struct taken *t, uint32_t base)
{
	uint32_t last = base + PRIVATE_USERS_RANGE - 1;

	for (size_t i = 0; i < t->n; i++)
		if (t->spans[i].first <= last && t->spans[i].last >= base)
			return true;
	return false;
}

/* Every user and group of the host's database (files, and whatever NSS enumerates). */
static int taken_add_host_ids(struct taken *t)
{
	struct passwd *pw;
	struct group *gr;
	int r = 0;

	setpwent();
	while (r >= 0 && (pw = getpwent()))
		r = taken_add(t, pw->pw_uid, 1);
	endpwent();
	setgrent();
	while (r >= 0 && (gr = getgrent()))
		r = taken_add(t, gr->gr_gid, 1);
	endgrent();
	return r;
}

/* "name:first:count" lines of /etc/subuid or /etc/subgid: ranges given to users' own user
 * namespaces (rootless podman, buildah).  A missing file holds none. */
static int taken_add_subids(struct taken *t, const char *path)
{
	_cleanup_fclose_ FILE *f = fopen(path, "re");
	char line[512];
	int r = 0;

	while (r >= 0 && f && fgets(line, sizeof(line), f)) {
		unsigned long long first, count;
		const char *p = strchr(line, ':');

		if (p && sscanf(p, ":%llu:%llu", &first, &count) == 2 && count > 0)
			r = taken_add(t, first, count);
	}
	return r;
}

static int collect_mount_base(void *userdata, const struct mount_record *rec)
{
	return rec->private_users ? taken_add(userdata, rec->private_users, PRIVATE_USERS_RANGE) : 0;
}

/* Whether a running systemd-nspawn holds @base: it keeps an OFD write lock on
 * /run/systemd/nspawn-uid/BASE while the container runs.  Asks without taking the lock. */
static bool nspawn_holds(uint32_t base)
{
	char path[sizeof(NSPAWN_UID_LOCK_DIR) + 16];
	_cleanup_close_ int fd = -EBADF;
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };

	snprintf(path, sizeof(path), NSPAWN_UID_LOCK_DIR "/%" PRIu32, base);
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return false;
	if (fcntl(fd, F_OFD_GETLK, &fl) < 0)
		return false;
	return fl.l_type != F_UNLCK;
}

/* The @try'th candidate for @name: a multiple of 65536 in [PICK_MIN, PICK_MAX). */
static int pick_candidate(const char *name, unsigned try, uint32_t *ret)
{
	_cleanup_free_ char *s = NULL;
	char digest[DIGEST_STRING_MAX];
	uint32_t h;
	int r;

	if (try == 0)
		s = strdup(name);
	else if (asprintf(&s, "%s#%u", name, try) < 0)
		s = NULL;
	if (!s)
		return -ENOMEM;
	r = digest_buffer(s, strlen(s), digest);
	if (r < 0)
		return r;
	if (sscanf(digest + strlen("sha256:"), "%8" SCNx32, &h) != 1)
		return -EINVAL;
	*ret = (PRIVATE_USERS_PICK_MIN + h % (PRIVATE_USERS_PICK_MAX - PRIVATE_USERS_PICK_MIN)) &
	       ~(PRIVATE_USERS_RANGE - 1);
	return 0;
}

int private_users_pick(const char *name, uint32_t *ret_base)
{
	return private_users_pick_prefer(name, 0, ret_base);
}

static bool pick_bounds(uint32_t base)
{
	return base % PRIVATE_USERS_RANGE == 0 && base >= PRIVATE_USERS_PICK_MIN &&
	       base < PRIVATE_USERS_PICK_MAX;
}

int private_users_pick_prefer(const char *name, uint32_t preferred, uint32_t *ret_base)
{
	_cleanup_(taken_done) struct taken t = {};
	int r;

	r = taken_add_host_ids(&t);
	if (r >= 0)
		r = taken_add_subids(&t, "/etc/subuid");
	if (r >= 0)
		r = taken_add_subids(&t, "/etc/subgid");
	if (r >= 0)
		r = mount_records_foreach_live(collect_mount_base, &t);
	if (r < 0)
		return error_set(r, "cannot list the id ranges in use");

	/* As nspawn's pick reads its tree's owner first: the range a tree was written in. */
	if (pick_bounds(preferred) && !taken_overlaps(&t, preferred) && !nspawn_holds(preferred)) {
		*ret_base = preferred;
		return 0;
	}
	for (unsigned try = 0; try < PICK_TRIES; try++) {
		uint32_t base;

		r = pick_candidate(name, try, &base);
		if (r < 0)
			return r;
		if (taken_overlaps(&t, base) || nspawn_holds(base))
			continue;
		*ret_base = base;
		return 0;
	}
	return error_set(-EBUSY, "no free range of %" PRIu32 " ids found for '%s' in %u tries",
			 PRIVATE_USERS_RANGE, name, PICK_TRIES);
}

static int parse_base(const char *arg, uint32_t *ret)
{
	unsigned long long v;
	char *end = NULL;

	if (!arg[0] || arg[0] == '-' || arg[0] == '+')
		return -EINVAL;
	errno = 0;
	v = strtoull(arg, &end, 10);
	if (errno != 0 || *end != '\0' || v % PRIVATE_USERS_RANGE != 0 || v > PRIVATE_USERS_BASE_MAX)
		return -EINVAL;
	*ret = (uint32_t)v;
	return 0;
}

int private_users_parse(const char *arg, const char *name, uint32_t *ret_base)
{
	return private_users_parse_prefer(arg, name, 0, ret_base);
}

int private_users_parse_prefer(const char *arg, const char *name, uint32_t preferred,
			       uint32_t *ret_base)
{
	uint32_t base;
	int r;

	if (streq(arg, "no") || streq(arg, "off")) {
		*ret_base = 0;
		return 0;
	}
	if (streq(arg, "pick")) {
		r = private_users_pick_prefer(name, preferred, &base);
		if (r < 0) {
			log_error("cannot pick a private users range: %s", error_take(r));
			return -ERR_MOUNT;
		}
		log_debug("private users: picked base %" PRIu32 " for '%s'", base, name);
		*ret_base = base;
		return 0;
	}
	if (parse_base(arg, &base) < 0) {
		log_error("invalid --private-users '%s': use pick, no, or a multiple of 65536 from 0 "
			  "to %" PRIu32, arg, PRIVATE_USERS_BASE_MAX);
		return -ERR_USAGE;
	}
	*ret_base = base;
	return 0;
}

/* The directory whose entries list @ino (any one, for a hard link); 0 if none. */
static fs_ino_t tree_parent_of(const struct fs_tree *t, fs_ino_t ino, const char **ret_name)
{
	size_t n = fs_tree_count(t);

	for (fs_ino_t d = FS_ROOT_INO; d <= n; d++) {
		const char *name;
		fs_ino_t child;

		for (size_t pos = 0; fs_tree_readdir(t, d, pos, &name, &child) == 0; pos++)
			if (child == ino) {
				*ret_name = name;
				return d;
			}
	}
	return 0;
}

/* "/a/b/c" for @ino, for a message (slow: scans the tree once per component). */
static char *tree_path(const struct fs_tree *t, fs_ino_t ino)
{
	_cleanup_free_ char *path = strdup("");

	while (path && ino != FS_ROOT_INO) {
		const char *name = NULL;
		fs_ino_t parent = tree_parent_of(t, ino, &name);
		char *p;

		if (!parent)
			break;
		if (asprintf(&p, "/%s%s", name, path) < 0)
			return NULL;
		free(path);
		path = p;
		ino = parent;
	}
	if (path && !path[0])
		return strdup("/");
	return TAKE_PTR(path);
}

int private_users_apply(struct fs_tree *t, uint32_t base)
{
	_cleanup_free_ char *path = NULL;
	fs_ino_t bad = 0;
	struct stat st;
	int r;

	if (base == 0)
		return 0;
	r = fs_tree_shift_ids(t, base, PRIVATE_USERS_RANGE, &bad);
	if (r != -ERANGE)
		return r;
	path = tree_path(t, bad);
	if (fs_tree_stat(t, bad, &st) == 0 &&
	    (st.st_uid >= PRIVATE_USERS_RANGE || st.st_gid >= PRIVATE_USERS_RANGE))
		log_error("image file '%s' is owned by %u:%u, outside the %" PRIu32 " ids (0-%" PRIu32
			  ") a private users range maps: mount without --private-users",
			  path ? path : "?", (unsigned)st.st_uid, (unsigned)st.st_gid,
			  PRIVATE_USERS_RANGE, PRIVATE_USERS_RANGE - 1);
	else
		log_error("image file '%s' has an ACL entry for an id outside the %" PRIu32 " ids "
			  "(0-%" PRIu32 ") a private users range maps: mount without --private-users",
			  path ? path : "?", PRIVATE_USERS_RANGE, PRIVATE_USERS_RANGE - 1);
	return -ERANGE;
}
