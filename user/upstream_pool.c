// SPDX-License-Identifier: GPL-2.0
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
	c->prev = c->next = NULL;
	idle_count--;
	timer_cancel(&c->timer);
}

static void discard(struct idle_conn *c)
{
	unlink_conn(c);
	loop_del(c->fd);
	close(c->fd);
	c->fd = -1;
	loop_defer_free(c, free);
	upstream_conn_closed(c->srv);
}

/*
 * An idle server sends nothing: a byte, a close or an error discards the connection. An event
 * that epoll reported while a session still owned the socket may arrive after it came back in
 * the same batch (the session read those bytes meanwhile): a peek tells.
 */
static bool idle_event_real(struct idle_conn *c, uint32_t events)
{
	char byte;

	if (events & (EPOLLERR | EPOLLHUP | EPOLLRDHUP))
		return true;
	if (!(events & EPOLLIN))
		return false;
	return recv(c->fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT) >= 0 || errno != EAGAIN;
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

void upstream_pool_put(int fd, const struct sockaddr_any *addr, struct upstream_server *srv,
		       const struct pool_registration *reg)
{
	unsigned int same = 0;
	struct idle_conn *c, *oldest = NULL;

	/* Fewer idle connections in all than the cap: no address can be at it. */
	for (c = idle_count >= max_idle ? idle_head : NULL; c; c = c->next) {
		if (sockaddr_equal(&c->addr, addr)) {
			same++;
			oldest = c;
		}
	}
	c = reg->via ? (struct idle_conn *)reg->via : NULL;
	if (max_idle == 0) {
		if (c)
			upstream_pool_link_drop(&c->h);
		close(fd);
		upstream_conn_closed(srv);
		return;
	}
	if (same >= max_idle)
		discard(oldest);
	if (c) {
		/* Its registration points at the record already: only a wider mask changes. */
		c->owner = NULL;
		if ((!reg->in_epoll && loop_add(fd, POOL_EVENTS, &c->h) < 0) ||
		    (reg->in_epoll && reg->events != POOL_EVENTS &&
		     loop_mod(fd, POOL_EVENTS, &c->h) < 0)) {
			upstream_pool_link_drop(&c->h);
			c = NULL;
		}
	} else {
		c = conn_new(fd, reg->in_epoll);
	}
	if (!c) {
		close(fd);
		upstream_conn_closed(srv);
		return;
	}
	c->srv = srv;
	c->fd = fd;
	c->addr = *addr;
	c->next = idle_head;
	if (idle_head)
		idle_head->prev = c;
	idle_head = c;
	idle_count++;
	timer_arm(&c->timer, idle_timeout_ms);
	upstream_conn_idle(srv);
}

int upstream_pool_take(const struct sockaddr_any *addr, struct upstream_server **srv,
		       struct loop_handler *owner, struct loop_handler **via)
{
	for (struct idle_conn *c = idle_head; c; c = c->next) {
		if (!sockaddr_equal(&c->addr, addr))
			continue;
		unlink_conn(c);
		c->owner = owner;
		*srv = c->srv;
		*via = &c->h;
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
	loop_defer_free(c, free);
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
