/* SPDX-License-Identifier: GPL-2.0 */
#ifndef KFWD_UPSTREAM_POOL_H
#define KFWD_UPSTREAM_POOL_H

#include "config.h"

/*
 * Idle keep-alive connections to upstream servers, keyed by address. Only a connection whose
 * last response was read to its end, with nothing unread, paused or pending, may be put here
 * (session.c decides); while idle it is watched, and any byte or close from the server
 * discards it.
 */
void upstream_pool_configure(unsigned int max_idle_per_server, uint64_t idle_timeout_ms);
/*
 * @srv (may be NULL) is the server whose connection count this connection holds. @in_epoll:
 * the fd is still registered (the pool re-points it with EPOLL_CTL_MOD: one syscall, not two).
 */
void upstream_pool_put(int fd, const struct sockaddr_any *addr, struct upstream_server *srv,
		       bool in_epoll);
/*
 * An idle connection to @addr, or -1. The caller owns the fd and the connection slot of *@srv;
 * the fd stays registered in epoll (its handler must be re-pointed with EPOLL_CTL_MOD).
 */
int upstream_pool_take(const struct sockaddr_any *addr, struct upstream_server **srv);
void upstream_pool_flush(void);
unsigned int upstream_pool_idle_count(void);

bool sockaddr_equal(const struct sockaddr_any *a, const struct sockaddr_any *b);

#endif
