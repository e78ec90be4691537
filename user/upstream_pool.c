// SPDX-License-Identifier: GPL-2.0
/*
 * The keep-alive pool of idle upstream connections (see upstream_pool.h): each entry owns its
 * socket and its transport state (a TLS connection's SSL) until it is taken or discarded.
 */
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "log.h"
#include "loop.h"
#include "upstream.h"
#include "upstream_pool.h"

struct idle_conn {
	struct loop_handler h;
	struct timer timer;
	int fd;
	struct endpoint ep; /* fd, xprt and xprt_ctx: the transport's release and recv need it */
	const void *tls; /* struct pool_identity */
	char *name;
	struct sockaddr_any addr;
	struct upstream_server *srv;
	struct idle_conn *prev, *next;
};

static struct idle_conn *idle_head; /* most recently used first */
static unsigned int idle_count;
static unsigned int max_idle = 32;
static uint64_t idle_timeout_ms = 60000;

bool sockaddr_equal(const struct sockaddr_any *a, const struct sockaddr_any *b)
{
	const struct sockaddr *sa = (const struct sockaddr *)&a->ss;
	const struct sockaddr *sb = (const struct sockaddr *)&b->ss;

	if (sa->sa_family != sb->sa_family)
		return false;
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *x = (const void *)sa, *y = (const void *)sb;

		return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *x = (const void *)sa, *y = (const void *)sb;

		return x->sin6_port == y->sin6_port &&
		       !memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr));
	}
	return false;
}

void upstream_pool_configure(unsigned int max_idle_per_server, uint64_t timeout_ms)
{
	max_idle = max_idle_per_server;
	idle_timeout_ms = timeout_ms;
}

static void unlink_conn(struct idle_conn *c)
{
	if (c->prev)
		c->prev->next = c->next;
	else
		idle_head = c->next;
	if (c->next)
		c->next->prev = c->prev;
	idle_count--;
	timer_cancel(&c->timer);
}

static void conn_free(void *p)
{
	struct idle_conn *c = p;

	free(c->name);
	free(c);
}

static void discard(struct idle_conn *c)
{
	unlink_conn(c);
	loop_del(c->fd);
	c->ep.xprt->release(&c->ep);
	close(c->fd);
	c->fd = -1;
	loop_defer_free(c, conn_free);
	upstream_conn_closed(c->srv);
}

static bool identity_equal(const struct idle_conn *c, const struct pool_identity *id)
{
	if (c->tls != id->tls)
		return false;
	return !c->tls || (c->name && id->name && !strcmp(c->name, id->name));
}

/*
 * A readable idle TLS connection may only have received records without application data
 * (TLS 1.3 session tickets, a key update): the transport consumes them and says EAGAIN.
 */
static bool only_handshake_records(struct idle_conn *c, uint32_t events)
{
	char byte;

	if (c->ep.xprt == &xprt_raw || events & (EPOLLERR | EPOLLHUP | EPOLLRDHUP))
		return false;
	return c->ep.xprt->recv(&c->ep, &byte, 1) < 0 && errno == EAGAIN &&
	       c->ep.xprt_want != EPOLLOUT;
}

static void on_idle_event(struct loop_handler *h, uint32_t events)
{
	struct idle_conn *c = (struct idle_conn *)h;

	/* An idle server sends nothing: any event is a close, an error or a protocol violation. */
	if (c->fd >= 0 && !only_handshake_records(c, events)) {
		log_debug("pooled upstream fd %d closed by server", c->fd);
		discard(c);
	}
}

static void on_idle_timeout(struct timer *t)
{
	struct idle_conn *c = (struct idle_conn *)((char *)t - offsetof(struct idle_conn, timer));

	discard(c);
}

/* Give up a connection that could not be pooled: its transport state, socket and slot. */
static void drop(struct endpoint *e, int fd, struct upstream_server *srv)
{
	e->xprt->release(e);
	close(fd);
	upstream_conn_closed(srv);
}

void upstream_pool_put(struct endpoint *e, const struct sockaddr_any *addr,
		       struct upstream_server *srv, const struct pool_identity *id)
{
	unsigned int same = 0;
	struct idle_conn *c, *oldest = NULL;
	struct endpoint ep = { .fd = e->fd, .xprt = e->xprt, .xprt_ctx = e->xprt_ctx };
	bool in_epoll = e->in_epoll;
	int fd = e->fd;

	e->fd = -1;
	e->in_epoll = false;
	e->xprt = &xprt_raw;
	e->xprt_ctx = NULL;
	e->xprt_want = 0;
	for (c = idle_head; c; c = c->next) {
		if (sockaddr_equal(&c->addr, addr)) {
			same++;
			oldest = c;
		}
	}
	if (max_idle == 0) {
		drop(&ep, fd, srv);
		return;
	}
	if (same >= max_idle)
		discard(oldest);
	c = calloc(1, sizeof(*c));
	if (!c || (id->tls && !(c->name = strdup(id->name)))) {
		free(c);
		drop(&ep, fd, srv);
		return;
	}
	c->srv = srv;
	c->h.on_event = on_idle_event;
	c->timer.on_expire = on_idle_timeout;
	c->fd = fd;
	c->ep = ep;
	c->tls = id->tls;
	c->addr = *addr;
	if ((in_epoll ? loop_mod(fd, EPOLLIN | EPOLLRDHUP, &c->h) :
			loop_add(fd, EPOLLIN | EPOLLRDHUP, &c->h)) < 0) {
		conn_free(c);
		drop(&ep, fd, srv);
		return;
	}
	c->next = idle_head;
	if (idle_head)
		idle_head->prev = c;
	idle_head = c;
	idle_count++;
	timer_arm(&c->timer, idle_timeout_ms);
	upstream_conn_idle(srv);
}

int upstream_pool_take(const struct sockaddr_any *addr, const struct pool_identity *id,
		       struct upstream_server **srv, const struct xprt_ops **xprt, void **xprt_ctx)
{
	for (struct idle_conn *c = idle_head; c; c = c->next) {
		int fd = c->fd;

		if (!sockaddr_equal(&c->addr, addr) || !identity_equal(c, id))
			continue;
		unlink_conn(c);
		c->fd = -1; /* an event already queued for it in this batch is ignored */
		*srv = c->srv;
		*xprt = c->ep.xprt;
		*xprt_ctx = c->ep.xprt_ctx;
		loop_defer_free(c, conn_free);
		return fd;
	}
	return -1;
}

void upstream_pool_flush(void)
{
	while (idle_head)
		discard(idle_head);
}

unsigned int upstream_pool_idle_count(void)
{
	return idle_count;
}
