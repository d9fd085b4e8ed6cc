/* tests/tools/pktdelay.c: a link with a delay on its packets, for benchmarks (issue 17).
 *
 *   pktdelay IFACE_A IFACE_B DELAY_MS
 *
 * Forwards every Ethernet frame that arrives on IFACE_A out of IFACE_B and back, each held
 * DELAY_MS milliseconds, in order.  With IFACE_A and IFACE_B the ends of two veth pairs (client
 * on one, registry on the other, one subnet), both kernels' TCP sees the delay: a new
 * connection's slow start, and its restart after idle, cost the round trips they cost on a
 * real link -- which a relay that terminates TCP on loopback cannot show (docs/benchmarks.md,
 * "Cold start, taken apart").  netem is not in the benchmark machine's kernel.
 *
 * Frames are read and written with their virtio-net header (PACKET_VNET_HDR): a veth hands
 * over segmentation-offloaded frames of up to 64 KiB with their checksums not filled in, and
 * the header carries what the kernel needs to finish them on the other side (ethtool, which
 * could turn the offloads off, is not installed here).  Rate limits stay with tbf on the
 * veths.  Runs until killed; needs CAP_NET_RAW.  Not a test: nothing in tests/run uses it.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define FRAME_MAX (65536 + 64)   /* a virtio-net header and a GSO frame */
#define QUEUE_MAX 8192           /* frames held at once, each direction: beyond, dropped */

struct frame {
	int64_t due_us;
	size_t len;
	uint8_t *data;
};

struct queue {
	struct frame *f;
	size_t head, n;
	uint64_t dropped;
};

static int64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int open_iface(const char *name)
{
	struct sockaddr_ll sll = { .sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ALL) };
	int fd, one = 1;

	sll.sll_ifindex = (int)if_nametoindex(name);
	if (sll.sll_ifindex == 0) {
		fprintf(stderr, "pktdelay: no interface '%s'\n", name);
		return -1;
	}
	fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, htons(ETH_P_ALL));
	if (fd < 0 || bind(fd, (struct sockaddr *)&sll, sizeof(sll)) < 0 ||
	    setsockopt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof(one)) < 0 ||
	    setsockopt(fd, SOL_PACKET, PACKET_VNET_HDR, &one, sizeof(one)) < 0) {
		fprintf(stderr, "pktdelay: raw socket on '%s': %s\n", name, strerror(errno));
		return -1;
	}
	return fd;
}

/* Takes every frame waiting on @fd into @q, due @delay_us from now. */
static void receive(int fd, struct queue *q, int64_t delay_us)
{
	static uint8_t buf[FRAME_MAX];

	for (;;) {
		struct frame *f = &q->f[(q->head + q->n) % QUEUE_MAX];
		ssize_t n = recv(fd, buf, sizeof(buf), MSG_TRUNC);

		if (n < 0)
			return;
		if (q->n == QUEUE_MAX || n > FRAME_MAX) {
			q->dropped++;
			continue;
		}
		f->data = malloc((size_t)n);
		if (!f->data) {
			q->dropped++;
			continue;
		}
		memcpy(f->data, buf, (size_t)n);
		f->len = (size_t)n;
		f->due_us = now_us() + delay_us;
		q->n++;
	}
}

/* Sends the frames of @q that are due out of @fd; returns when the next one is due (or -1). */
static int64_t send_due(int fd, struct queue *q)
{
	int64_t now = now_us();

	while (q->n > 0) {
		struct frame *f = &q->f[q->head];

		if (f->due_us > now)
			return f->due_us;
		if (send(fd, f->data, f->len, 0) < 0 && errno == EAGAIN)
			return now + 100;   /* the veth's queue is full: try again shortly */
		free(f->data);
		q->head = (q->head + 1) % QUEUE_MAX;
		q->n--;
	}
	return -1;
}

int main(int argc, char **argv)
{
	struct queue qa = {}, qb = {};   /* qa: frames from A, to B */
	struct pollfd p[2];
	int64_t delay_us;

	if (argc != 4) {
		fprintf(stderr, "usage: pktdelay IFACE_A IFACE_B DELAY_MS\n");
		return 2;
	}
	delay_us = (int64_t)(atof(argv[3]) * 1000);
	p[0] = (struct pollfd) { .fd = open_iface(argv[1]), .events = POLLIN };
	p[1] = (struct pollfd) { .fd = open_iface(argv[2]), .events = POLLIN };
	qa.f = calloc(QUEUE_MAX, sizeof(struct frame));
	qb.f = calloc(QUEUE_MAX, sizeof(struct frame));
	if (p[0].fd < 0 || p[1].fd < 0 || !qa.f || !qb.f)
		return 1;
	for (;;) {
		int64_t a = send_due(p[1].fd, &qa), b = send_due(p[0].fd, &qb), next, wait_us;
		struct timespec ts;

		next = a < 0 ? b : b < 0 ? a : a < b ? a : b;
		wait_us = next < 0 ? 1000000 : next - now_us();
		if (wait_us < 0)
			wait_us = 0;
		ts = (struct timespec) { wait_us / 1000000, (wait_us % 1000000) * 1000 };
		if (ppoll(p, 2, &ts, NULL) < 0 && errno != EINTR)
			return 1;
		if (p[0].revents & POLLIN)
			receive(p[0].fd, &qa, delay_us);
		if (p[1].revents & POLLIN)
			receive(p[1].fd, &qb, delay_us);
	}
}
