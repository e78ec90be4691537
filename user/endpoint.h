/* SPDX-License-Identifier: GPL-2.0 */
#ifndef KFWD_ENDPOINT_H
#define KFWD_ENDPOINT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "buf.h"
#include "loop.h"
#include "xprt.h"

struct session;

/* One socket of a session (the client's or the upstream's). */
struct endpoint {
	struct loop_handler h;
	struct session *s;
	int fd; /* -1 when closed */
	uint32_t registered; /* epoll mask in force; meaningful while in_epoll */
	uint32_t wanted; /* the mask the session asked for last (registered may hold more) */
	bool in_epoll;
	/* An event came for interest the session no longer wants: drop it now. */
	bool unwanted_event;
	/*
	 * The epoll target of a pooled upstream connection (upstream_pool.c), which forwards the
	 * events here while this endpoint owns the socket, or NULL: registered with &h itself.
	 * The socket keeps one registration for its whole life, whoever owns it.
	 */
	struct loop_handler *via;
	/*
	 * Readiness hints: set by epoll events, cleared when a syscall returns EAGAIN (or a raw
	 * read returns less than asked: the queue was empty), so the data path only tries
	 * syscalls that can make progress.
	 */
	bool readable;
	bool writable;
	bool rd_eof; /* a read returned 0 */
	bool hup; /* EPOLLHUP/EPOLLERR seen */
	struct buf in; /* bytes read and not yet consumed (heads, chunk size lines) */
	/* The transport (xprt.h): &xprt_raw unless another was put in place after attach. */
	const struct xprt_ops *xprt;
	void *xprt_ctx;
	uint32_t xprt_want; /* EPOLLIN/EPOLLOUT the transport waits for */
};

/* Read into @b's free space, at most @max bytes, through the transport. As recv(). */
ssize_t endpoint_recv_buf(struct endpoint *e, struct buf *b, size_t max);

static inline bool endpoint_can_splice(const struct endpoint *e)
{
	return e->xprt->can_splice(e);
}

/* Readable now: epoll said so, or the transport holds bytes already (TLS records). */
static inline bool endpoint_readable(const struct endpoint *e)
{
	return e->readable || (e->fd >= 0 && e->xprt->pending(e));
}

#endif
