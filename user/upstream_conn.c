// SPDX-License-Identifier: GPL-2.0
/*
 * A session's upstream connection: server choice (round-robin over healthy servers), name
 * resolution for url-embedded and CONNECT destinations, connection slots (queueing for one),
 * the keep-alive pool, connect and its completion, and the retry policy's application (retry.c
 * decides, this file waits and tries again). When the connection is ready the protocol's
 * connected() runs; when none can be had, its connect_failed().
 */
#include <errno.h>
#include <llhttp.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "flow.h"
#include "log.h"
#include "resolve.h"
#include "retry.h"
#include "session.h"
#include "stats.h"
#include "upstream.h"
#include "upstream_conn.h"
#include "upstream_pool.h"
#include "util.h"
#include "xprt_tls.h"

static void on_slot_available(struct upstream_waiter *w);
static void on_connecting_event(struct loop_handler *h, uint32_t events);

/* What the retry policy needs to know of this session's request. */
bool upstream_conn_can_retry(const struct session *s, enum retry_trigger trigger)
{
	struct retry_attempt a = {
		.attempts = s->x->attempts,
		.method = s->x->req_method,
		.has_body = s->x->req_framing != FRAMING_NONE,
		.response_started = s->x->response_started || s->x->interim_sent,
		.draining = session_draining(),
	};

	return retry_allowed(s->x->target->route, trigger, &a);
}

/* Full jitter (uniform in [0, min(cap, base * 2^attempt)]): retries from many clients spread. */
static uint64_t backoff_ms(const struct session *s)
{
	return retry_backoff_pick(retry_backoff_ceiling(s->x->target->route, s->x->attempts),
				  (uint64_t)random());
}

void upstream_conn_schedule_retry(struct session *s)
{
	uint64_t delay;

	s->x->attempts++;
	stats.upstream_retries++;
	session_close_upstream(s);
	flow_reset(&s->x->req);
	delay = backoff_ms(s);
	log_info("session %lu: retry %u of %s %s in %lu ms", (unsigned long)s->id, s->x->attempts,
		 llhttp_method_name((llhttp_method_t)s->x->req_method), s->x->target->target,
		 (unsigned long)delay);
	s->state = S_BACKOFF;
	timer_arm(&s->timer, delay);
}

/* No retry: the client gets @status, or, once a response went out, its connection is cut. */
void upstream_conn_give_up(struct session *s, int status)
{
	s->x->last_failure_status = status;
	if (!s->x->response_started) {
		s->proto->connect_failed(s, status);
		return;
	}
	stats.aborted_transfers++;
	session_close(s);
}

/* A failure before any final response byte: retry if allowed, else answer @status. */
void upstream_conn_retry_or_fail(struct session *s, enum retry_trigger trigger, int status)
{
	s->x->last_failure_status = status;
	if (upstream_conn_can_retry(s, trigger)) {
		upstream_conn_schedule_retry(s);
		return;
	}
	upstream_conn_give_up(s, status);
}

static void connect_failed(struct session *s, int err)
{
	log_info("session %lu: upstream %s: %s", (unsigned long)s->id, s->up_addr_text,
		 strerror(err));
	stats.upstream_connect_errors++;
	upstream_connect_failed(s->x->server, s->cfg);
	session_close_upstream(s);
	upstream_conn_retry_or_fail(s, TRIGGER_CONNECT, err == ETIMEDOUT ? 504 : 502);
}

/* The host of "HOST:PORT" or "[V6]:PORT" (as an upstream server is written) into @out. */
static int server_host(const char *text, char *out, size_t len)
{
	const char *end = text[0] == '[' ? strchr(text, ']') : strrchr(text, ':');
	size_t n;

	if (!end)
		return -1;
	if (text[0] == '[')
		text++;
	n = (size_t)(end - text);
	if (n == 0 || n >= len)
		return -1;
	memcpy(out, text, n);
	out[n] = '\0';
	return 0;
}

int upstream_conn_tls_target(const struct session *s, const struct upstream_server *srv,
			     struct tls_client **tc, char *host, size_t len)
{
	const struct route *r = s->x->target ? s->x->target->route : NULL;
	struct tls_set *set = tls_current();

	*tc = NULL;
	if (!r)
		return 0;
	if (r->kind == ROUTE_URL_EMBEDDED) {
		if (!r->tls.on)
			return 0;
		*tc = tls_set_route_prefixed(set, r->prefix);
		snprintf(host, len, "%s", s->x->target->host);
		return 1;
	}
	if (!r->upstream || !r->upstream->tls.on)
		return 0;
	*tc = tls_set_upstream_named(set, r->upstream->name);
	/* The server as written, without its port (and brackets). */
	return srv && server_host(srv->text, host, len) == 0 ? 1 : -1;
}

/*
 * An idle connection from the pool for this request: same address, and for a TLS origin the
 * same origin settings and server name (a connection verified for one name never serves
 * another). Attached to s->x->upstream with its transport; -1 when there is none.
 */
static int take_pooled(struct session *s, struct upstream_server **srv)
{
	struct pool_identity id = { 0 };
	struct tls_client *tc;
	char host[ROUTE_HOST_MAX];
	struct pool_taken t;
	int fd, tls = upstream_conn_tls_target(s, s->x->server, &tc, host, sizeof(host));

	if (tls < 0 || (tls > 0 && !tc))
		return -1;
	if (tls > 0) {
		id.tls = tc;
		id.name = tc->sni ? tc->sni : host;
	}
	fd = upstream_pool_take(s->x->up_addr, &id, &s->x->upstream.h, &t);
	if (fd < 0)
		return -1;
	session_endpoint_attach(&s->x->upstream, fd);
	s->x->upstream.via = t.via;
	s->x->upstream.xprt = t.xprt;
	s->x->upstream.xprt_ctx = t.xprt_ctx;
	*srv = t.srv;
	return fd;
}

void upstream_conn_open(struct session *s, bool allow_pool)
{
	const struct config *cfg = s->cfg;
	const struct sockaddr *sa = (const struct sockaddr *)&s->x->up_addr->ss;
	struct upstream_server *pooled_srv = NULL;
	int fd = allow_pool && s->proto->pooled_upstream ? take_pooled(s, &pooled_srv) : -1;
	int one = 1;
	int rcvbuf = flow_upstream_rcvbuf(cfg);

	if (fd >= 0) {
		s->x->upstream_reused = true;
		stats.upstream_reuses++;
		/* Still registered, through its pool record, which forwards the events here. */
		s->x->upstream.in_epoll = true;
		s->x->upstream.registered = EPOLLIN | EPOLLRDHUP;
		s->x->conn_server = pooled_srv;
		s->proto->connected(s);
		return;
	}
	if (!upstream_slot_free(s->x->server, cfg->upstream_max_conns)) {
		/* Wait for a connection to this server to close or become idle. */
		s->state = S_QUEUED;
		s->x->wait.wake = on_slot_available;
		upstream_wait(s->x->server, &s->x->wait);
		timer_arm(&s->timer, session_connect_timeout(s));
		return;
	}
	s->x->upstream_reused = false;
	fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		log_warn("upstream socket: %m");
		s->proto->connect_failed(s, 503);
		return;
	}
	/* Before connect, so the window scale matches: bounds what a stalled client can pile up
	 * in our receive queue (autotuning alone let 27 MB queue on one connection). */
	if (rcvbuf > 0 && setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf)) < 0)
		log_warn("SO_RCVBUF: %m");
	if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0)
		log_debug("TCP_NODELAY: %m");
	session_dead_peer_options(fd, cfg);
	stats.upstream_connects++;
	session_endpoint_attach(&s->x->upstream, fd);
	s->x->conn_server = s->x->server;
	upstream_conn_opened(s->x->server);
	if (connect(fd, sa, s->x->up_addr->len) == 0) {
		s->proto->connected(s);
		return;
	}
	if (errno != EINPROGRESS) {
		connect_failed(s, errno);
		return;
	}
	s->x->upstream.writable = false;
	s->x->upstream.h.on_event = on_connecting_event;
	s->state = S_CONNECTING;
	timer_arm(&s->timer, session_connect_timeout(s));
}

/* Pick a server of the route's upstream (round-robin, healthy ones) and connect. */
void upstream_conn_choose_server(struct session *s)
{
	struct upstream *u = s->x->target->route->upstream;
	/* A retry goes elsewhere: a server that failed may fail again before it is marked down. */
	struct upstream_server *srv = upstream_pick(u, s->x->attempts ? s->x->server : NULL);

	if (!srv) {
		/* Fast: no connect attempt, no backoff. During a retry the answer is the one the
		 * last failure earned (504 after a timeout), not a generic 502. */
		log_info("session %lu: every server of upstream %s is down", (unsigned long)s->id,
			 u->name);
		s->proto->connect_failed(s, s->x->attempts && s->x->last_failure_status ?
						    s->x->last_failure_status :
						    502);
		return;
	}
	s->x->server = srv;
	*s->x->up_addr = srv->addr;
	session_set_upstream_text(s, srv->text);
	upstream_conn_open(s, true);
}

/* A slot or a pooled connection on the server this session queued for may be had. */
static void on_slot_available(struct upstream_waiter *w)
{
	struct session *s = container_of(w, struct exchange, wait)->upstream.s;

	if (s->state != S_QUEUED || s->client.fd < 0)
		return;
	upstream_conn_open(s, true);
	if (s->client.fd >= 0 && s->state != S_QUEUED)
		session_run(s);
}

static void retry_now(struct session *s)
{
	if (s->x->target->route->kind == ROUTE_UPSTREAM)
		upstream_conn_choose_server(s);
	else
		upstream_conn_open(s, false);
}

static void upstream_conn_finish(struct session *s)
{
	int err = 0;
	socklen_t len = sizeof(err);

	if (getsockopt(s->x->upstream.fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		err = errno;
	if (err) {
		connect_failed(s, err);
		return;
	}
	s->x->upstream.writable = true;
	upstream_mark_ok(s->x->server);
	s->proto->connected(s);
}

/* The upstream text of a destination by address: ADDR:PORT. */
static void upstream_text_numeric(struct session *s)
{
	char text[ADDR_TEXT_MAX];

	addr_text(&s->x->up_addr->ss, text, sizeof(text));
	session_set_upstream_text(s, text);
}

static void on_resolved(void *arg, int status, const struct sockaddr_any *addr)
{
	struct session *s = arg;

	if (!addr) {
		log_info("session %lu: resolve %s: %s", (unsigned long)s->id, s->x->target->host,
			 resolve_strerror(status));
		s->proto->connect_failed(s, 502);
	} else if (!route_destination_allowed(s->cfg, s->x->target->host, addr)) {
		log_info("session %lu: destination %s denied", (unsigned long)s->id,
			 s->x->target->host);
		s->proto->connect_failed(s, 403);
	} else {
		*s->x->up_addr = *addr;
		upstream_text_numeric(s);
		upstream_conn_open(s, !s->x->connect_tunnel);
	}
	/* May run inside resolve_start() (names from /etc/hosts): session_run updates events. */
	if (s->client.fd >= 0 && s->state != S_RESOLVING)
		session_run(s);
}

/*
 * A destination named by the request (url-embedded, CONNECT): connect to a literal address, or
 * resolve the name first; on_resolved checks allow/deny against the address.
 */
void upstream_conn_to_destination(struct session *s)
{
	char text[ROUTE_HOST_MAX + 16];

	s->x->server = NULL;
	if (s->x->target->host_is_literal) {
		*s->x->up_addr = s->x->target->addr;
		upstream_text_numeric(s);
		/* A tunnel owns its connection: never a pooled one. */
		upstream_conn_open(s, !s->x->connect_tunnel);
		return;
	}
	s->state = S_RESOLVING;
	snprintf(text, sizeof(text), "%s:%u", s->x->target->host, s->x->target->port);
	session_set_upstream_text(s, text);
	timer_arm(&s->timer, session_connect_timeout(s));
	if (resolve_start(&s->x->resolve, s->x->target->host, s->x->target->port, on_resolved, s) <
	    0)
		s->proto->connect_failed(s, 502);
}

/*
 * The upstream socket reported while its connect was in progress: the connection is made or
 * failed. The endpoint goes back to the session's handler, which records the readiness.
 */
static void on_connecting_event(struct loop_handler *h, uint32_t events)
{
	struct endpoint *e = (struct endpoint *)h;
	struct session *s = e->s;

	e->h.on_event = session_endpoint_event;
	if (e->fd < 0 || s->client.fd < 0 || s->state != S_CONNECTING) {
		session_endpoint_event(h, events);
		return;
	}
	upstream_conn_finish(s);
	if (s->client.fd < 0)
		return;
	/* A failed connect closed this socket (a retry may be connecting another). */
	if (e->fd < 0 || s->state == S_CONNECTING)
		session_run(s);
	else
		session_endpoint_event(h, events);
}

void upstream_conn_timeout(struct session *s)
{
	switch (s->state) {
	case S_RESOLVING:
		log_info("session %lu: resolving %s timed out", (unsigned long)s->id,
			 s->up_addr_text);
		s->proto->connect_failed(s, 504);
		break;
	case S_QUEUED:
		log_info("session %lu: no connection slot on %s in time", (unsigned long)s->id,
			 s->up_addr_text);
		s->proto->connect_failed(s, 503);
		break;
	case S_BACKOFF:
		retry_now(s);
		break;
	case S_CONNECTING:
		log_info("session %lu: connect to %s timed out", (unsigned long)s->id,
			 s->up_addr_text);
		stats.upstream_connect_errors++;
		upstream_connect_failed(s->x->server, s->cfg);
		session_close_upstream(s);
		upstream_conn_retry_or_fail(s, TRIGGER_CONNECT, 504);
		break;
	default:
		break;
	}
}
