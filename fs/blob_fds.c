/*
 * fs/blob_fds.c: see blob_fds.h.  Direct-mapped: a digest's first bytes pick its slot (they
 * are uniformly random already), and a slot holds one fd, with a count of the readers using
 * it.  A miss opens outside the lock, then takes the slot only if nobody is using it (closing
 * the fd it held); a slot in use stays as it is and the new fd goes back to its reader alone,
 * closed at put.  So an fd is never closed while a reader may still splice from it, and a
 * collision costs at most the open() that the cache would have saved.
 * Load: one get and one put per FUSE read, from up to 64 threads; the lock per slot is held
 * for a compare and a counter update only.
 */
#include "blob_fds.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cache/base/util.h"

struct blob_fd_slot {
	pthread_mutex_t lock;
	uint8_t digest[32];     /* guarded by lock; meaningful when fd >= 0 */
	int fd;                 /* guarded by lock; -EBADF when empty */
	unsigned users;         /* guarded by lock */
};

struct blob_fds {
	unsigned n_slots;
	struct blob_fd_slot slots[];
};

int blob_fds_new(unsigned n_slots, struct blob_fds **ret)
{
	struct blob_fds *c;

	if (n_slots == 0)
		return -EINVAL;
	c = calloc(1, sizeof(*c) + (size_t)n_slots * sizeof(struct blob_fd_slot));
	if (!c)
		return -ENOMEM;
	c->n_slots = n_slots;
	for (unsigned i = 0; i < n_slots; i++) {
		pthread_mutex_init(&c->slots[i].lock, NULL);
		c->slots[i].fd = -EBADF;
	}
	*ret = c;
	return 0;
}

static void blob_fds_done(struct blob_fds *c)
{
	for (unsigned i = 0; i < c->n_slots; i++) {
		if (c->slots[i].fd >= 0)
			(void)close(c->slots[i].fd);
		pthread_mutex_destroy(&c->slots[i].lock);
	}
}
DEFINE_FREE_FUNC(struct blob_fds, blob_fds_free, blob_fds_done);

static unsigned slot_of(const struct blob_fds *c, const uint8_t digest[32])
{
	uint32_t h;

	memcpy(&h, digest, sizeof(h));
	return h % c->n_slots;
}

int blob_fds_get(struct blob_fds *c, const uint8_t digest[32],
		 int (*open_fn)(void *userdata, int *ret_fd), void *userdata, struct blob_fd *ret)
{
	unsigned i = slot_of(c, digest);
	struct blob_fd_slot *s = &c->slots[i];
	int fd, old = -EBADF, r;

	pthread_mutex_lock(&s->lock);
	if (s->fd >= 0 && memcmp(s->digest, digest, 32) == 0) {
		s->users++;
		*ret = (struct blob_fd) { .fd = s->fd, .owner = c, .slot = i, .cached = true };
		pthread_mutex_unlock(&s->lock);
		return 0;
	}
	pthread_mutex_unlock(&s->lock);

	r = open_fn(userdata, &fd);
	if (r < 0)
		return r;

	pthread_mutex_lock(&s->lock);
	if (s->fd >= 0 && memcmp(s->digest, digest, 32) == 0) {
		/* Another reader opened the same blob meanwhile: share theirs. */
		s->users++;
		*ret = (struct blob_fd) { .fd = s->fd, .owner = c, .slot = i, .cached = true };
		pthread_mutex_unlock(&s->lock);
		(void)close(fd);
		return 0;
	}
	if (s->users > 0) {
		pthread_mutex_unlock(&s->lock);
		*ret = (struct blob_fd) { .fd = fd, .owner = c, .slot = i, .cached = false };
		return 0;
	}
	old = s->fd;
	s->fd = fd;
	memcpy(s->digest, digest, 32);
	s->users = 1;
	pthread_mutex_unlock(&s->lock);
	if (old >= 0)
		(void)close(old);
	*ret = (struct blob_fd) { .fd = fd, .owner = c, .slot = i, .cached = true };
	return 0;
}

bool blob_fds_cached(struct blob_fds *c, const uint8_t digest[32])
{
	struct blob_fd_slot *s = &c->slots[slot_of(c, digest)];
	bool hit;

	pthread_mutex_lock(&s->lock);
	hit = s->fd >= 0 && memcmp(s->digest, digest, 32) == 0;
	pthread_mutex_unlock(&s->lock);
	return hit;
}

void blob_fds_put(struct blob_fd *h)
{
	struct blob_fd_slot *s;

	if (!h || h->fd < 0)
		return;
	if (!h->cached) {
		(void)close(h->fd);
	} else {
		s = &h->owner->slots[h->slot];
		pthread_mutex_lock(&s->lock);
		assert(s->users > 0 && s->fd == h->fd);
		s->users--;
		pthread_mutex_unlock(&s->lock);
	}
	h->fd = -EBADF;
}
