// SPDX-License-Identifier: GPL-2.0
/*
 * Listening sockets: accept, enforce max-connections, hand each client to a session; pause every
 * listener (the metrics one included) while the process is out of file descriptors.
 */
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "accept.h"
#include "log.h"
#include "http1.h"
#include "loop.h"
#include "proto.h"
#include "session.h"
#include "stats.h"
#include "tls.h"
#include "upstream_pool.h"

#define ACCEPT_BATCH 64
/*
 * At the fd limit accept() fails while the backlog keeps the listener readable: level-triggered
 * epoll would spin. The listeners lose EPOLLIN until a connection closes or this long passed,
 * and the condition is logged at most once per ACCEPT_LOG_INTERVAL_MS.
 */
#define ACCEPT_PAUSE_MS 100
#define ACCEPT_LOG_INTERVAL_MS 10000

struct listener {
	struct loop_handler h;
	int fd;
	const struct config *cfg;
	const struct proto_ops *proto; /* what its connections speak */
	size_t idx; /* its listen line in cfg: the index of its TLS context too */
};

/* The protocol of @cfg's listen line @i: checked when the configuration was applied. */
static const struct proto_ops *listen_proto(const struct config *cfg, size_t i)
{
	const struct proto_ops *p = proto_find(cfg->listens[i].proto);

	return p ? p : &http1_ops;
}

static struct listener *listeners;
static size_t n_listeners;

/* A binary upgrade's source of already bound sockets (upgrade.c), NULL when none. */
static int (*take_inherited)(const struct sockaddr_any *addr);

void listen_set_inherited(int (*take)(const struct sockaddr_any *addr))
{
	take_inherited = take;
}

/* Workers (user/workers.c): every worker's listener joins the address's SO_REUSEPORT group. */
static bool reuseport;

void listen_set_reuseport(bool on)
{
	reuseport = on;
}

/* Another listening socket to pause with ours (metrics.c registers its own). */
static void (*other_listener)(bool on);

void accept_pause_with(void (*enable)(bool on))
{
	other_listener = enable;
}

static struct {
	bool paused;
	struct timer timer;
	uint64_t last_log_ms;
	uint64_t unlogged; /* pauses since the last message */
} fd_limit;

static void set_listening(bool on)
{
	uint32_t events = on ? EPOLLIN : 0;

	for (size_t i = 0; i < n_listeners; i++)
		if (listeners[i].fd >= 0)
			(void)loop_mod(listeners[i].fd, events, &listeners[i].h);
	if (other_listener)
		other_listener(on);
}

static void resume_listening(void)
{
	if (!fd_limit.paused)
		return;
	fd_limit.paused = false;
	timer_cancel(&fd_limit.timer);
	set_listening(true);
}

static void on_pause_timer(struct timer *t)
{
	resume_listening();
}

void accept_fd_limit(int err)
{
	uint64_t now = now_ms();

	/* Also when already paused: a listener added meanwhile (reload) must stop too. */
	set_listening(false);
	if (fd_limit.paused)
		return;
	fd_limit.paused = true;
	fd_limit.unlogged++;
	stats.accept_pauses++;
	fd_limit.timer.on_expire = on_pause_timer;
	timer_arm(&fd_limit.timer, ACCEPT_PAUSE_MS);
	if (fd_limit.last_log_ms && now - fd_limit.last_log_ms < ACCEPT_LOG_INTERVAL_MS)
		return;
	log_warn("accept: %s: not accepting until a descriptor is free (%lu pauses since the "
		 "last message; raise RLIMIT_NOFILE or lower max-connections)",
		 strerror(err), (unsigned long)fd_limit.unlogged);
	fd_limit.last_log_ms = now;
	fd_limit.unlogged = 0;
}

void accept_fd_freed(void)
{
	resume_listening();
}

bool accept_out_of_fds(int err)
{
	return err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM;
}

int listen_socket(const struct sockaddr_any *addr, const char *text)
{
	const struct sockaddr *sa = (const struct sockaddr *)&addr->ss;
	int fd, one = 1;

	/* Taking over from a running kfwd (-x): its socket, accept queue and all. */
	fd = take_inherited ? take_inherited(addr) : -1;
	if (fd >= 0)
		return fd;
	fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		log_err("listen %s: socket: %m", text);
		return -1;
	}
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0) {
		log_err("listen %s: SO_REUSEADDR: %m", text);
		goto fail;
	}
	if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0) {
		log_err("listen %s: SO_REUSEPORT: %m", text);
		goto fail;
	}
	if (sa->sa_family == AF_INET6 &&
	    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0) {
		log_err("listen %s: IPV6_V6ONLY: %m", text);
		goto fail;
	}
	if (bind(fd, sa, addr->len) < 0) {
		log_err("listen %s: bind: %m", text);
		goto fail;
	}
	if (listen(fd, 1024) < 0) {
		log_err("listen %s: %m", text);
		goto fail;
	}
	return fd;
fail:
	close(fd);
	return -1;
}

static void on_accept(struct loop_handler *h, uint32_t events)
{
	struct listener *l = (struct listener *)h;

	if (l->fd < 0)
		return; /* closed by listeners_update() earlier in this batch */
	for (int i = 0; i < ACCEPT_BATCH; i++) {
		int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		unsigned int active;

		if (fd < 0) {
			if (accept_out_of_fds(errno))
				accept_fd_limit(errno); /* the backlog waits in the kernel */
			else if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
				log_warn("accept: %m");
			return;
		}
		stats.connections_accepted++;
		active = session_count();
		if (active >= l->cfg->max_connections + ACCEPT_REJECT_SLACK) {
			close(fd);
			stats.connections_rejected++;
			continue;
		}
		/* l serves listens[l->idx] of the current configuration and TLS contexts (l may be
		 * an entry of the array a reload replaced in this batch: see listeners_update). */
		session_create(fd, l->cfg, l->proto, active >= l->cfg->max_connections,
			       tls_set_listener(tls_current(), l->idx));
	}
}

/* After listen_socket() said why: which line of the configuration asked for it. */
void log_listen_line(const struct config *cfg, const struct listen_addr *a)
{
	if (a->from_args)
		log_err("-l %s: cannot listen (option %d)", a->text, a->line);
	else
		log_err("%s:%d: cannot listen on %s", cfg->path ? cfg->path : "<embedded>", a->line,
			a->text);
}

int listeners_open(const struct config *cfg)
{
	session_set_closed_hook(accept_fd_freed);
	listeners = calloc(cfg->n_listens, sizeof(*listeners));
	if (!listeners)
		return -1;
	for (size_t i = 0; i < cfg->n_listens; i++) {
		struct listener *l = &listeners[i];

		l->fd = listen_socket(&cfg->listens[i].addr, cfg->listens[i].text);
		if (l->fd < 0) {
			log_listen_line(cfg, &cfg->listens[i]);
			goto fail;
		}
		n_listeners++;
		l->h.on_event = on_accept;
		l->cfg = cfg;
		l->proto = listen_proto(cfg, i);
		l->idx = i;
		if (loop_add(l->fd, fd_limit.paused ? 0 : EPOLLIN, &l->h) < 0)
			goto fail;
		log_info("listening on %s", cfg->listens[i].text);
	}
	return 0;
fail:
	listeners_close();
	return -1;
}

/* listeners[j] listens on its configuration's listens[j] (listeners_open, listeners_update). */
static const struct listen_addr *listener_addr(size_t j)
{
	return &listeners[j].cfg->listens[j];
}

static bool listener_kept(const struct listener *nl, size_t n, int fd)
{
	for (size_t i = 0; i < n; i++)
		if (nl[i].fd == fd)
			return true;
	return false;
}

/*
 * @nl[i] for each listen line of @cfg: the socket of an old listener on the same address
 * (marked in @kept), else a new one registered with the loop. 0, or -1 with @err set; the
 * caller closes what was opened (entries whose cfg is @cfg and whose fd is not kept).
 */
static int listeners_take(const struct config *cfg, struct listener *nl, bool *kept, char *err,
			  size_t errlen)
{
	size_t i, j;

	for (i = 0; i < cfg->n_listens; i++) {
		nl[i].h.on_event = on_accept;
		nl[i].cfg = cfg;
		nl[i].proto = listen_proto(cfg, i);
		nl[i].idx = i;
		for (j = 0; j < n_listeners; j++)
			if (!kept[j] &&
			    sockaddr_equal(&listener_addr(j)->addr, &cfg->listens[i].addr))
				break;
		if (j < n_listeners) {
			kept[j] = true;
			nl[i].fd = listeners[j].fd;
			continue;
		}
		nl[i].fd = listen_socket(&cfg->listens[i].addr, cfg->listens[i].text);
		if (nl[i].fd < 0) {
			snprintf(err, errlen, "listen %s: %s", cfg->listens[i].text,
				 strerror(errno));
			return -1;
		}
		if (loop_add(nl[i].fd, fd_limit.paused ? 0 : EPOLLIN, &nl[i].h) < 0) {
			snprintf(err, errlen, "listen %s: epoll: %s", cfg->listens[i].text,
				 strerror(errno));
			close(nl[i].fd);
			nl[i].fd = -1;
			return -1;
		}
	}
	return 0;
}

/*
 * The switch-over to @nl in one go: kept sockets get their new handler, the others close, and
 * the old array stays valid for events still queued in this batch.
 */
static void listeners_switch(const struct config *cfg, struct listener *nl, const bool *kept)
{
	size_t i, j;

	/* Kept sockets: same fd, new handler. EPOLL_CTL_MOD of a registered fd does not fail
	 * short of a bug; if it did, the old handler would still serve (old configuration). */
	for (i = 0; i < cfg->n_listens; i++)
		for (j = 0; j < n_listeners; j++)
			if (kept[j] && listeners[j].fd == nl[i].fd)
				(void)loop_mod(nl[i].fd, fd_limit.paused ? 0 : EPOLLIN, &nl[i].h);
	for (j = 0; j < n_listeners; j++) {
		if (!kept[j]) {
			log_info("no longer listening on %s", listener_addr(j)->text);
			loop_del(listeners[j].fd);
			close(listeners[j].fd);
			listeners[j].fd = -1;
		}
	}
	for (i = 0; i < cfg->n_listens; i++)
		if (!listener_kept(listeners, n_listeners, nl[i].fd))
			log_info("listening on %s", cfg->listens[i].text);
	/* An event for the old array may still be queued in this batch: it must find a closed
	 * fd or the new configuration with its listen line's index (for the TLS context), and
	 * memory that is still there. */
	for (j = 0; j < n_listeners; j++) {
		listeners[j].cfg = cfg;
		for (i = 0; kept[j] && i < cfg->n_listens; i++)
			if (nl[i].fd == listeners[j].fd) {
				listeners[j].idx = i;
				listeners[j].proto = nl[i].proto;
			}
	}
	loop_defer_free(listeners, free);
	listeners = nl;
	n_listeners = cfg->n_listens;
}

int listeners_update(const struct config *cfg, char *err, size_t errlen)
{
	struct listener *nl = calloc(cfg->n_listens, sizeof(*nl));
	bool *kept = calloc(n_listeners + 1, sizeof(*kept));

	if (!nl || !kept) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	if (listeners_take(cfg, nl, kept, err, errlen) < 0)
		goto fail;
	listeners_switch(cfg, nl, kept);
	free(kept);
	return 0;
fail:
	for (size_t i = 0; nl && i < cfg->n_listens; i++) {
		if (nl[i].fd < 0 || nl[i].cfg != cfg ||
		    listener_kept(listeners, n_listeners, nl[i].fd))
			continue;
		loop_del(nl[i].fd);
		close(nl[i].fd);
	}
	free(nl);
	free(kept);
	return -1;
}

size_t listeners_fds(int *out, size_t max)
{
	size_t n = 0;

	for (size_t i = 0; i < n_listeners && n < max; i++)
		if (listeners[i].fd >= 0)
			out[n++] = listeners[i].fd;
	return n;
}

void listeners_close(void)
{
	timer_cancel(&fd_limit.timer);
	fd_limit.paused = false;
	for (size_t i = 0; i < n_listeners; i++) {
		loop_del(listeners[i].fd);
		close(listeners[i].fd);
		listeners[i].fd = -1;
	}
	/* Closing while events are dispatched (SIGTERM, a binary upgrade): an accept event of
	 * this batch may still name a listener; it must find fd -1 in memory still there. */
	if (listeners)
		loop_defer_free(listeners, free);
	listeners = NULL;
	n_listeners = 0;
}
