/* SPDX-License-Identifier: GPL-2.0 */
#ifndef KFWD_UPSTREAM_POOL_H
#define KFWD_UPSTREAM_POOL_H

#include "config.h"
#include "endpoint.h"

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
 * transport). @srv (may be NULL) is the server whose connection count it holds. A registered
 * fd is re-pointed with EPOLL_CTL_MOD (one syscall, not two).
 */
void upstream_pool_put(struct endpoint *e, const struct sockaddr_any *addr,
		       struct upstream_server *srv, const struct pool_identity *id);
/*
 * An idle connection to @addr with identity @id, or -1. The caller owns the fd, its transport
 * (*@xprt, *@xprt_ctx: put them in the endpoint) and the connection slot of *@srv; the fd stays
 * registered in epoll (its handler must be re-pointed with EPOLL_CTL_MOD).
 */
int upstream_pool_take(const struct sockaddr_any *addr, const struct pool_identity *id,
		       struct upstream_server **srv, const struct xprt_ops **xprt, void **xprt_ctx);
void upstream_pool_flush(void);
unsigned int upstream_pool_idle_count(void);

bool sockaddr_equal(const struct sockaddr_any *a, const struct sockaddr_any *b);

#endif
