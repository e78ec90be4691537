/* SPDX-License-Identifier: GPL-2.0 */
#ifndef KFWD_XPRT_H
#define KFWD_XPRT_H

/*
 * Transport operations of an endpoint (the raw socket today, TLS next), in the manner of
 * HAProxy's xprt: the session and the flows read, write and shut down through them, and ask
 * them whether bytes may be spliced. A transport that cannot splice (TLS keeps its records in
 * user space) gets the bounded copy path, and neither the sockmap.
 *
 * Contract. e->fd is the socket; the transport keeps its state in e->xprt_ctx and, when an
 * operation would block on the socket in the other direction (a TLS read that must write), it
 * sets e->xprt_want (EPOLLIN/EPOLLOUT) which the session adds to the endpoint's epoll interest;
 * it clears it once that wait is over.
 */
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct endpoint;
struct conn_details;

struct xprt_ops {
	const char *name;
	/* >0 bytes, 0 EOF, -1 errno (EAGAIN: wait; see e->xprt_want) */
	ssize_t (*recv)(struct endpoint *e, void *buf, size_t len);
	ssize_t (*send)(struct endpoint *e, const void *buf, size_t len, bool more);
	bool (*can_splice)(const struct endpoint *e);
	size_t (*pending)(const struct endpoint *e); /* readable without a syscall */
	int (*handshake)(struct endpoint *e); /* 1 done, 0 wait (xprt_want), -1 fail */
	int (*shutdown)(struct endpoint *e); /* close_notify / FIN: 1 done, 0 wait, -1 */
	void (*release)(struct endpoint *e); /* free transport state (fd closed by caller) */
	/* Add details for `kfwdctl conn list`, keys prefixed with @side ("client"/"upstream"),
	 * e.g. client-tls-version=TLSv1.3. May be NULL. */
	void (*describe)(const struct endpoint *e, const char *side, struct conn_details *d);
};

/* The plain TCP socket: recv/send/shutdown(SHUT_WR), splice allowed. */
extern const struct xprt_ops xprt_raw;

#endif
