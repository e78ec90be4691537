/* SPDX-License-Identifier: GPL-2.0 */
#ifndef KFWD_UPSTREAM_POOL_H
#define KFWD_UPSTREAM_POOL_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "loop.h"

/*
 * Idle keep-alive connections to upstream servers, keyed by address. Only a connection whose
 * last response was read to its end, with nothing unread, paused or pending, may be put here
 * (session.c decides); while idle it is watched, and any byte or close from the server
 * discards it.
 */
void upstream_pool_configure(unsigned int max_idle_per_server, uint64_t idle_timeout_ms);
/* How the socket handed to the pool is registered in epoll now. */
struct pool_registration {
	bool in_epoll;
	uint32_t events; /* the mask in force when in_epoll */
	struct loop_handler *via; /* the socket's pool record (endpoint.h), or NULL */
};

/*
 * @srv (may be NULL) is the server whose connection count this connection holds. A socket
 * that was pooled before keeps its registration (no syscall); a new one is re-pointed at its
 * pool record once.
 */
void upstream_pool_put(int fd, const struct sockaddr_any *addr, struct upstream_server *srv,
		       const struct pool_registration *reg);
/*
 * An idle connection to @addr, or -1. The caller owns the fd and the connection slot of *@srv;
 * the fd stays registered in epoll for EPOLLIN|EPOLLRDHUP through *@via, which forwards its
 * events to @owner from now on. Whoever closes the fd calls upstream_pool_link_drop(*@via).
 */
int upstream_pool_take(const struct sockaddr_any *addr, struct upstream_server **srv,
		       struct loop_handler *owner, struct loop_handler **via);
void upstream_pool_link_drop(struct loop_handler *via);
void upstream_pool_flush(void);
unsigned int upstream_pool_idle_count(void);

bool sockaddr_equal(const struct sockaddr_any *a, const struct sockaddr_any *b);

#endif
