/* cli/private_users.h: the UID/GID range a mount presents its tree in (--private-users).  A
 * mount with base B shows every file's uid and gid as B + id, so that `systemd-nspawn -U` takes
 * B from the root directory's owner, finds the tree already owned by its range and chowns
 * nothing (see lazyroot(1), PRIVATE USERS).  A range is 65536 ids starting at a multiple of
 * 65536, as nspawn's `pick` and `-U` require; base 0 means off (ids as in the image). */
#pragma once

#include <stdint.h>

struct fs_tree;

#define PRIVATE_USERS_RANGE UINT32_C(0x10000)
/* Where `pick` chooses, nspawn's bounds for its own pick (524288 .. 1879048192): above the
 * host's regular users, below the ranges systemd keeps for other uses. */
#define PRIVATE_USERS_PICK_MIN UINT32_C(0x00080000)
#define PRIVATE_USERS_PICK_MAX UINT32_C(0x6FFF0000)
/* The highest base given by number: its range must end below 2^32 - 1, which is no id. */
#define PRIVATE_USERS_BASE_MAX UINT32_C(0xFFFE0000)

/* A free range for the mount or machine called @name (a machine name, or the mountpoint's
 * absolute path): the same for the same name while it stays free, chosen from a hash of @name
 * between PRIVATE_USERS_PICK_MIN and _MAX.  Never a range a live lazyroot mount records, that
 * a running systemd-nspawn holds (/run/systemd/nspawn-uid/), or that holds a host user or group
 * (passwd, group, /etc/subuid, /etc/subgid).  0, or -EBUSY (logged, as error_set) when 100
 * candidates were all taken, -ENOMEM. */
int private_users_pick(const char *name, uint32_t *ret_base);
/* The same, trying @preferred first when it is a base in those bounds (0: none): the range a
 * kept overlay upper directory is owned by, as nspawn's pick first tries its root's owner. */
int private_users_pick_prefer(const char *name, uint32_t preferred, uint32_t *ret_base);

/* Parses --private-users=@arg: "pick" (then picks for @name), a base (a multiple of 65536 up
 * to PRIVATE_USERS_BASE_MAX), or "no"/"off"/"0" for off (*ret_base = 0).  A bad value logs one
 * line naming it and the rule, and returns -ERR_USAGE; a failed pick logs and returns
 * -ERR_MOUNT. */
int private_users_parse(const char *arg, const char *name, uint32_t *ret_base);
/* The same, with pick trying @preferred first (see private_users_pick_prefer()). */
int private_users_parse_prefer(const char *arg, const char *name, uint32_t preferred,
			       uint32_t *ret_base);

/* With @base != 0: checks that every uid and gid of the frozen tree @t, and every id its POSIX
 * ACLs name, fits the range (below 65536), and makes the tree present them shifted by @base;
 * with 0, does nothing.  An id the range cannot hold logs one line naming the file, the id and
 * the range, and returns -ERANGE. */
int private_users_apply(struct fs_tree *t, uint32_t base);
