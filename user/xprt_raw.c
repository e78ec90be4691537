// SPDX-License-Identifier: GPL-2.0
/* The raw transport: the endpoint's TCP socket as it is (see xprt.h). */
#include <sys/socket.h>

#include "endpoint.h"
#include "xprt.h"

/*
 * A TCP read that returns less than asked emptied the receive queue (tcp_recvmsg copies until
 * the queue is empty or @len is reached): the readable hint drops now, saving the recv() that
 * would only return EAGAIN. Level-triggered epoll reports any byte that arrives later.
 */
static ssize_t raw_recv(struct endpoint *e, void *buf, size_t len)
{
	ssize_t n = recv(e->fd, buf, len, 0);

	if (n > 0 && (size_t)n < len)
		e->readable = false;
	return n;
}

static ssize_t raw_send(struct endpoint *e, const void *buf, size_t len, bool more)
{
	return send(e->fd, buf, len, MSG_NOSIGNAL | (more ? MSG_MORE : 0));
}

static bool raw_can_splice(const struct endpoint *e)
{
	return true;
}

static size_t raw_pending(const struct endpoint *e)
{
	return 0;
}

static int raw_handshake(struct endpoint *e)
{
	return 1;
}

/* FIN after what was sent. -1 with errno (ENOTCONN: the peer is gone already). */
static int raw_shutdown(struct endpoint *e)
{
	return shutdown(e->fd, SHUT_WR) == 0 ? 1 : -1;
}

static void raw_release(struct endpoint *e)
{
}

const struct xprt_ops xprt_raw = {
	.name = "raw",
	.recv = raw_recv,
	.send = raw_send,
	.can_splice = raw_can_splice,
	.pending = raw_pending,
	.handshake = raw_handshake,
	.shutdown = raw_shutdown,
	.release = raw_release,
};
