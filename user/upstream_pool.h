/* SPDX-License-Identifier: GPL-2.0 */
#ifndef KFWD_UPSTREAM_POOL_H
#define KFWD_UPSTREAM_POOL_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "endpoint.h"
#include "loop.h"

/*
 * Idle keep-alive connections to upstream servers, keyed by address and identity. Only a
 * connection whose last response was read to its end, with nothing unread, paused or pending,
 * may be put here (session.c decides); while idle it is watched, and any byte or close from the
 * server discards it (a TLS one's close_notify included; TLS records without application data,
 * such as a late session ticket, are consumed and keep it).
 */
void upstream_pool_configure(unsigned int max_idle_per_server, uint64_t idle_timeout_ms);

/*
 * What a pooled connection must match besides its address: a TLS connection the origin
 * settings it was made with (the struct tls_client of its configuration) and the server name
 * it sent and verified; a plain one has tls NULL (and no name).
 */
struct pool_identity {
	const void *tls;
	const char *name;
};

/*
 * Pool @e's connection, its transport state included; @e is left closed (fd -1, raw
 * transport, no via). @srv (may be NULL) is the server whose connection count it holds. A
 * socket that was pooled before (@e->via) keeps its registration (no syscall); a new one is
 * re-pointed at its pool record once.
 */
void upstream_pool_put(struct endpoint *e, const struct sockaddr_any *addr,
		       struct upstream_server *srv, const struct pool_identity *id);

/* A connection taken from the pool: what the taker puts in its endpoint. */
struct pool_taken {
	struct upstream_server *srv; /* whose connection slot the caller now holds */
	struct loop_handler *via; /* the socket's pool record: endpoint.h's via */
	const struct xprt_ops *xprt;
	void *xprt_ctx;
};

/*
 * An idle connection to @addr with identity @id, or -1. The caller owns the fd, its transport
 * (@t->xprt, @t->xprt_ctx) and the connection slot of @t->srv; the fd stays registered in epoll
 * for EPOLLIN|EPOLLRDHUP through @t->via, which forwards its events to @owner from now on.
 * Whoever closes the fd calls upstream_pool_link_drop(@t->via).
 */
int upstream_pool_take(const struct sockaddr_any *addr, const struct pool_identity *id,
		       struct loop_handler *owner, struct pool_taken *t);
void upstream_pool_link_drop(struct loop_handler *via);
void upstream_pool_flush(void);
unsigned int upstream_pool_idle_count(void);

bool sockaddr_equal(const struct sockaddr_any *a, const struct sockaddr_any *b);

#endif
