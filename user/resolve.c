// SPDX-License-Identifier: GPL-2.0
#include <ares.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include "log.h"
#include "loop.h"
#include "resolve.h"

#define RESOLVE_MAX_SOCKETS 16

struct resolve_req {
	struct resolve_req **slot;
	resolve_cb cb;
	void *arg;
	bool cancelled;
};

struct ares_sock {
	struct loop_handler h;
	int fd; /* -1 when the slot is free */
};

static ares_channel channel;
static bool initialized;
static struct ares_sock socks[RESOLVE_MAX_SOCKETS];
static struct timer ares_timer;

static void rearm_timer(void)
{
	struct timeval tv, *tvp;

	tvp = ares_timeout(channel, NULL, &tv);
	if (!tvp) {
		timer_cancel(&ares_timer);
		return;
	}
	timer_arm(&ares_timer, (uint64_t)tvp->tv_sec * 1000 + (uint64_t)tvp->tv_usec / 1000 + 1);
}

static void on_ares_timer(struct timer *t)
{
	ares_process_fd(channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
	rearm_timer();
}

static void on_ares_event(struct loop_handler *h, uint32_t events)
{
	struct ares_sock *s = (struct ares_sock *)h;
	int fd = s->fd;

	ares_process_fd(channel, (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) ? fd : ARES_SOCKET_BAD,
			(events & EPOLLOUT) ? fd : ARES_SOCKET_BAD);
	rearm_timer();
}

static void on_sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
	uint32_t events = (readable ? EPOLLIN : 0) | (writable ? EPOLLOUT : 0);
	struct ares_sock *slot = NULL, *free_slot = NULL;

	for (int i = 0; i < RESOLVE_MAX_SOCKETS; i++) {
		if (socks[i].fd == fd)
			slot = &socks[i];
		else if (socks[i].fd < 0 && !free_slot)
			free_slot = &socks[i];
	}
	if (!events) {
		if (slot) {
			loop_del(fd);
			slot->fd = -1;
		}
		return;
	}
	if (slot) {
		loop_mod(fd, events, &slot->h);
		return;
	}
	if (!free_slot) {
		/* c-ares falls back to its timeout for this socket; lookups still finish. */
		log_warn("resolver: more than %d sockets in use", RESOLVE_MAX_SOCKETS);
		return;
	}
	free_slot->fd = fd;
	free_slot->h.on_event = on_ares_event;
	if (loop_add(fd, events, &free_slot->h) < 0)
		free_slot->fd = -1;
}

int resolve_init(void)
{
	struct ares_options opts = { .sock_state_cb = on_sock_state, .timeout = 2000, .tries = 2 };
	int rc;

	for (int i = 0; i < RESOLVE_MAX_SOCKETS; i++)
		socks[i].fd = -1;
	ares_timer.on_expire = on_ares_timer;
	rc = ares_library_init(ARES_LIB_INIT_ALL);
	if (rc != ARES_SUCCESS) {
		log_err("c-ares init: %s", ares_strerror(rc));
		return -1;
	}
	rc = ares_init_options(&channel, &opts,
			       ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES);
	if (rc != ARES_SUCCESS) {
		log_err("c-ares channel: %s", ares_strerror(rc));
		ares_library_cleanup();
		return -1;
	}
	initialized = true;
	return 0;
}

void resolve_fini(void)
{
	if (!initialized)
		return;
	timer_cancel(&ares_timer);
	ares_destroy(channel); /* runs pending callbacks with ARES_EDESTRUCTION */
	ares_library_cleanup();
	initialized = false;
}

static void on_addrinfo(void *arg, int status, int timeouts, struct ares_addrinfo *res)
{
	struct resolve_req *r = arg;
	struct sockaddr_any addr;
	struct ares_addrinfo_node *n;

	if (!r->cancelled) {
		*r->slot = NULL;
		if (status == ARES_SUCCESS && res && (n = res->nodes) &&
		    n->ai_addrlen <= sizeof(addr.ss)) {
			memset(&addr, 0, sizeof(addr));
			memcpy(&addr.ss, n->ai_addr, n->ai_addrlen);
			addr.len = (socklen_t)n->ai_addrlen;
			r->cb(r->arg, 0, &addr);
		} else {
			r->cb(r->arg, status == ARES_SUCCESS ? ARES_ENOTFOUND : status, NULL);
		}
	}
	if (res)
		ares_freeaddrinfo(res);
	free(r);
}

int resolve_start(struct resolve_req **slot, const char *host, uint16_t port, resolve_cb cb,
		  void *arg)
{
	struct ares_addrinfo_hints hints = { .ai_family = AF_UNSPEC,
					     .ai_socktype = SOCK_STREAM,
					     .ai_flags = ARES_AI_NUMERICSERV };
	struct resolve_req *r;
	char service[8];

	if (!initialized)
		return -1;
	r = calloc(1, sizeof(*r));
	if (!r)
		return -1;
	r->slot = slot;
	*slot = r;
	r->cb = cb;
	r->arg = arg;
	snprintf(service, sizeof(service), "%u", port);
	/* May call on_addrinfo synchronously (hosts file); the caller must be ready for that. */
	ares_getaddrinfo(channel, host, service, &hints, on_addrinfo, r);
	rearm_timer();
	return 0;
}

void resolve_cancel(struct resolve_req **slot)
{
	if (*slot) {
		(*slot)->cancelled = true;
		*slot = NULL;
	}
}

const char *resolve_strerror(int status)
{
	return ares_strerror(status);
}
