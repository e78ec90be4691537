// SPDX-License-Identifier: GPL-2.0
/*
 * The keep-alive pool of idle upstream connections (see upstream_pool.h): each record owns its
 * socket and its transport state (a TLS connection's SSL) while idle, and relays the socket's
 * epoll events to whichever session owns it otherwise.
 */
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "loop.h"
#include "upstream.h"
#include "upstream_pool.h"

/* What a pooled connection is watched for while idle. */
#define POOL_EVENTS (EPOLLIN | EPOLLRDHUP)

/* A server address as the pool keys it (IPv4 or IPv6 and port): 28 bytes, not 132. */
union pool_addr {
	struct sockaddr sa;
	struct sockaddr_in in;
	struct sockaddr_in6 in6;
};

/*
 * A pooled upstream connection, from its first return to the pool until its socket closes. It
 * is the socket's epoll target all that time: while a session owns the socket, events are
 * forwarded to the session's endpoint; while idle, they discard it. So moving the socket
 * between the pool and sessions changes no registration and allocates nothing.
 */
struct idle_conn {
	struct loop_handler h; /* first: the endpoint's via points here */
	struct loop_handler *owner; /* the owning endpoint's handler; NULL while idle */
	struct timer timer;
	int fd;
	/* While idle: the transport and its state. Its release and recv get an endpoint made of
	 * these and fd (idle_endpoint()), which is all a transport uses. */
	const struct xprt_ops *xprt;
	void *xprt_ctx;
	uint32_t xprt_want;
	const void *tls; /* struct pool_identity */
	char *name;
	union pool_addr addr;
	struct upstream_server *srv;
	struct idle_conn *prev, *next;
};

static struct idle_conn *idle_head; /* most recently used first */
static unsigned int idle_count;
static unsigned int max_idle = 32;
static uint64_t idle_timeout_ms = 60000;

static bool sa_equal(const struct sockaddr *sa, const struct sockaddr *sb)
{
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

bool sockaddr_equal(const struct sockaddr_any *a, const struct sockaddr_any *b)
{
	return sa_equal((const struct sockaddr *)&a->ss, (const struct sockaddr *)&b->ss);
}

static bool addr_is(const struct idle_conn *c, const struct sockaddr_any *addr)
{
	return sa_equal(&c->addr.sa, (const struct sockaddr *)&addr->ss);
}

static struct endpoint idle_endpoint(const struct idle_conn *c)
{
	return (struct endpoint){
		.fd = c->fd, .xprt = c->xprt, .xprt_ctx = c->xprt_ctx, .xprt_want = c->xprt_want
	};
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
	c->prev = c->next = NULL;
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
	struct endpoint ep = idle_endpoint(c);

	unlink_conn(c);
	loop_del(c->fd);
	ep.xprt->release(&ep);
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

/* The record takes @id (a copy of its name): nothing is allocated when it has it already. */
static int identity_set(struct idle_conn *c, const struct pool_identity *id)
{
	char *name = NULL;

	if (identity_equal(c, id))
		return 0;
	if (id->tls && !(name = strdup(id->name)))
		return -1;
	free(c->name);
	c->name = name;
	c->tls = id->tls;
	return 0;
}

/*
 * An idle server sends nothing: a byte, a close or an error discards the connection. An event
 * that epoll reported while a session still owned the socket may arrive after it came back in
 * the same batch (the session read those bytes meanwhile): a peek tells. A readable idle TLS
 * connection may only have received records without application data (TLS 1.3 session
 * tickets, a key update): the transport consumes them and says EAGAIN.
 */
static bool idle_event_real(struct idle_conn *c, uint32_t events)
{
	struct endpoint ep;
	bool real;
	char byte;

	if (events & (EPOLLERR | EPOLLHUP | EPOLLRDHUP))
		return true;
	if (!(events & EPOLLIN))
		return false;
	if (c->xprt == &xprt_raw)
		return recv(c->fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT) >= 0 || errno != EAGAIN;
	ep = idle_endpoint(c);
	real = ep.xprt->recv(&ep, &byte, 1) >= 0 || errno != EAGAIN || ep.xprt_want == EPOLLOUT;
	c->xprt_ctx = ep.xprt_ctx;
	c->xprt_want = ep.xprt_want;
	return real;
}

static void on_conn_event(struct loop_handler *h, uint32_t events)
{
	struct idle_conn *c = (struct idle_conn *)h;

	if (c->owner) {
		c->owner->on_event(c->owner, events);
		return;
	}
	if (c->fd >= 0 && idle_event_real(c, events)) {
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
static void drop(struct endpoint *e, struct upstream_server *srv)
{
	e->xprt->release(e);
	close(e->fd);
	upstream_conn_closed(srv);
}

/* The pool's record for a socket returning for the first time, registered through it. */
static struct idle_conn *conn_new(int fd, bool in_epoll)
{
	struct idle_conn *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->h.on_event = on_conn_event;
	c->timer.on_expire = on_idle_timeout;
	if ((in_epoll ? loop_mod(fd, POOL_EVENTS, &c->h) : loop_add(fd, POOL_EVENTS, &c->h)) < 0) {
		free(c);
		return NULL;
	}
	return c;
}

/*
 * The record of a socket coming back from @e's registration: its own (via) re-registered only
 * if the mask in force is not POOL_EVENTS, or a new one. NULL: the socket cannot be pooled.
 */
static struct idle_conn *conn_for(const struct endpoint *e)
{
	struct idle_conn *c = (struct idle_conn *)e->via;

	if (!c)
		return conn_new(e->fd, e->in_epoll);
	/* Its registration points at the record already: only another mask changes. */
	c->owner = NULL;
	if ((!e->in_epoll && loop_add(e->fd, POOL_EVENTS, &c->h) < 0) ||
	    (e->in_epoll && e->registered != POOL_EVENTS &&
	     loop_mod(e->fd, POOL_EVENTS, &c->h) < 0)) {
		upstream_pool_link_drop(&c->h);
		return NULL;
	}
	return c;
}

/* Move @e's socket and transport out of the endpoint, which is left closed. */
static struct endpoint endpoint_take(struct endpoint *e)
{
	struct endpoint ep = { .fd = e->fd, .xprt = e->xprt, .xprt_ctx = e->xprt_ctx };

	e->fd = -1;
	e->in_epoll = false;
	e->via = NULL;
	e->xprt = &xprt_raw;
	e->xprt_ctx = NULL;
	e->xprt_want = 0;
	return ep;
}

void upstream_pool_put(struct endpoint *e, const struct sockaddr_any *addr,
		       struct upstream_server *srv, const struct pool_identity *id)
{
	unsigned int same = 0;
	struct idle_conn *c, *oldest = NULL;
	struct endpoint ep;

	/* Fewer idle connections in all than the cap: no address can be at it. */
	for (c = idle_count >= max_idle ? idle_head : NULL; c; c = c->next) {
		if (addr_is(c, addr)) {
			same++;
			oldest = c;
		}
	}
	if (max_idle == 0) {
		if (e->via)
			upstream_pool_link_drop(e->via);
		ep = endpoint_take(e);
		drop(&ep, srv);
		return;
	}
	if (same >= max_idle)
		discard(oldest);
	c = conn_for(e);
	ep = endpoint_take(e);
	if (c && identity_set(c, id) < 0) {
		upstream_pool_link_drop(&c->h);
		c = NULL;
	}
	if (!c) {
		drop(&ep, srv);
		return;
	}
	c->srv = srv;
	c->fd = ep.fd;
	c->xprt = ep.xprt;
	c->xprt_ctx = ep.xprt_ctx;
	c->xprt_want = ep.xprt_want;
	memset(&c->addr, 0, sizeof(c->addr));
	memcpy(&c->addr, &addr->ss, addr->len < sizeof(c->addr) ? addr->len : sizeof(c->addr));
	c->next = idle_head;
	if (idle_head)
		idle_head->prev = c;
	idle_head = c;
	idle_count++;
	timer_arm(&c->timer, idle_timeout_ms);
	upstream_conn_idle(srv);
}

int upstream_pool_take(const struct sockaddr_any *addr, const struct pool_identity *id,
		       struct loop_handler *owner, struct pool_taken *t)
{
	for (struct idle_conn *c = idle_head; c; c = c->next) {
		if (!addr_is(c, addr) || !identity_equal(c, id))
			continue;
		unlink_conn(c);
		c->owner = owner;
		t->srv = c->srv;
		t->via = &c->h;
		t->xprt = c->xprt;
		t->xprt_ctx = c->xprt_ctx;
		/* The transport state is the owner's now; the pool gets it back at the next put. */
		c->xprt = &xprt_raw;
		c->xprt_ctx = NULL;
		return c->fd;
	}
	return -1;
}

void upstream_pool_link_drop(struct loop_handler *via)
{
	struct idle_conn *c = (struct idle_conn *)via;

	/* The owner closed the socket: events already queued in this batch are ignored. */
	c->owner = NULL;
	c->fd = -1;
	loop_defer_free(c, conn_free);
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
