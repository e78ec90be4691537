// SPDX-License-Identifier: GPL-2.0
/*
 * The HTTP/1.1 protocol module: request heads (parse, route, rewrite), the exchange (request
 * forwarded, response head parsed and rewritten, bodies moved by the flows), keep-alive to the
 * next request, upgrades and CONNECT handed to tunnel.c, long response bodies to the sockmap.
 * Its operations (http1_ops) are what `listen ADDR:PORT http` (the default) gives a session.
 */
#include <errno.h>
#include <linux/sockios.h>
#include <llhttp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include "http1.h"
#include "http_rewrite.h"
#include "log.h"
#include "playlist.h"
#include "retry.h"
#include "rtsp_gateway.h"
#include "session.h"
#include "sockmap_path.h"
#include "stats.h"
#include "tunnel.h"
#include "upstream.h"
#include "upstream_conn.h"
#include "upstream_pool.h"
#include "xprt_tls.h"

/*
 * Interim (1xx) responses one request may receive before its final response: 100 Continue and
 * a few 103 Early Hints are normal; more is a server looping on them, answered with 502.
 */
#define INTERIM_MAX_COUNT 16
#define INTERIM_MAX_BYTES (64 << 10)
/*
 * Reads per wake-up for a response head: a peer that always has bytes ready must not hold the
 * loop; level-triggered epoll brings us back for the rest.
 */
#define HEAD_READ_BUDGET 16
/* Room made per read while a playlist is read whole. */
#define PLAYLIST_READ_CHUNK (64 << 10)

/*
 * A playlist response (user/playlist.c) being read whole, up to playlist-max-size, before its
 * URIs are rewritten. Until then the response has no final head as far as the session knows:
 * the upstream stays readable and a failure can still be answered 502/504.
 */
struct playlist_fetch {
	struct buf head; /* the response head as it goes out when the body is not rewritten */
	int status;
	struct playlist_body body;
};

static void http1_finish_transaction(struct session *s);

static int status_for_parse_error(enum http_error e)
{
	switch (e) {
	case HTTP_ERR_URI_TOO_LONG:
		return 414;
	case HTTP_ERR_TOO_LARGE:
		return 431;
	default:
		return 400;
	}
}

/*
 * A TLS origin: the new upstream connection gets the TLS transport towards the server's host
 * (or the URL's), with the current contexts of the upstream / url-embedded route. Its
 * handshake runs in the session's transport step before any request byte; a connection taken
 * from the pool has its TLS already. 0, or -1 (502).
 */
static int origin_tls(struct session *s)
{
	struct tls_client *c = NULL;
	char host[ROUTE_HOST_MAX];
	int tls;

	if (s->x->upstream.xprt != &xprt_raw || s->x->connect_tunnel)
		return 0;
	tls = upstream_conn_tls_target(s, s->x->conn_server, &c, host, sizeof(host));
	if (tls <= 0)
		return tls;
	if (!c || xprt_tls_client(&s->x->upstream, tls_current(), c, host) < 0) {
		log_warn("session %lu: TLS towards %s: %s", (unsigned long)s->id, host,
			 c ? strerror(errno) : "no TLS context (reloaded without tls?)");
		return -1;
	}
	return 0;
}

static void playlist_free(struct session *s)
{
	if (!s->x->playlist)
		return;
	buf_free(&s->x->playlist->head);
	free(s->x->playlist);
	s->x->playlist = NULL;
}

static void http1_start_exchange(struct session *s)
{
	static const char established[] = "HTTP/1.1 200 Connection Established\r\n\r\n";

	s->state = S_EXCHANGE;
	playlist_free(s);
	if (origin_tls(s) < 0) {
		session_reply_error(s, 502);
		return;
	}
	if (s->x->connect_tunnel) {
		if (flow_push(&s->x->resp, established, sizeof(established) - 1) < 0) {
			session_reply_error(s, 500);
			return;
		}
		session_final_status(s, 200);
		tunnel_start(s);
		return;
	}
	if (flow_push(&s->x->req, buf_start(&s->x->req_head), buf_len(&s->x->req_head)) < 0) {
		session_reply_error(s, 500);
		return;
	}
	flow_start_body(&s->x->req, s->x->req_framing, s->x->req_length);
	/* A retry's response starts afresh; the parse state is taken at its first byte. */
	session_head_free(&s->x->rs);
	s->x->final_response = false;
	s->x->req_failed = false;
	s->x->req_sent = false;
	/* Until the request is sent, the idle timeout bounds inactivity. */
	timer_arm(&s->timer, session_idle_timeout(s) < session_response_timeout(s) ?
				     session_idle_timeout(s) :
				     session_response_timeout(s));
}

/* CONNECT host:port: a tunnel to a destination allow/deny admits, when `connect on`. */
static void handle_connect(struct session *s)
{
	const struct config *cfg = s->cfg;
	struct http_head *h = s->x->rq;
	const char *url = buf_start(&s->client.in) + h->url.off;

	if (!cfg->connect_enabled) {
		session_reply_error(s, 501);
		return;
	}
	if (!session_target_start(s)) {
		session_reply_error(s, 500);
		return;
	}
	s->route = NULL;
	if (route_target_connect(url, h->url.len, s->x->target) < 0 || h->has_content_length ||
	    h->has_transfer_encoding) {
		session_reply_error(s, 400);
		return;
	}
	if (s->x->target->host_is_literal &&
	    !route_destination_allowed(cfg, s->x->target->host, &s->x->target->addr)) {
		log_info("session %lu: CONNECT to %s denied", (unsigned long)s->id,
			 s->x->target->host);
		session_reply_error(s, 403);
		return;
	}
	s->x->connect_tunnel = true;
	s->x->req_framing = FRAMING_NONE;
	s->x->req_length = 0;
	s->x->req_is_head = false;
	s->x->req_keep_alive = false;
	s->x->client_http10 = h->http_minor == 0;
	buf_free(&s->x->req_head);
	buf_consume(&s->client.in, h->head_len);
	upstream_conn_to_destination(s);
}

/* The Host header of @h; -1 when there is not exactly one where RFC 9112 §3.2 requires it. */
static int request_host(const struct http_head *h, const char *base,
			const struct http_header **host)
{
	int hosts = 0;

	*host = NULL;
	for (unsigned int i = 0; i < h->n_headers; i++) {
		if (http_span_eq(base, h->headers[i].name, "Host")) {
			*host = &h->headers[i];
			hosts++;
		}
	}
	return h->http_major != 1 || (h->http_minor >= 1 && hosts != 1) || hosts > 1 ? -1 : 0;
}

/* s->x->target for route @r; -1 after answering (400, 500). */
static int request_target(struct session *s, const struct route *r, const struct http_target *form,
			  const char *path, size_t path_len, const char *route_host,
			  size_t route_host_len)
{
	if (!session_target_start(s)) {
		session_reply_error(s, 500);
		return -1;
	}
	if (form->form == HTTP_TARGET_ASTERISK) {
		/* "*" is forwarded as it is: no prefix to strip. */
		s->x->target->route = r;
		s->x->target->target = strdup("*");
		if (!s->x->target->target) {
			session_reply_error(s, 500);
			return -1;
		}
		s->x->target->target_len = 1;
	} else if (route_target_build(r, path, path_len, s->x->target) < 0) {
		session_reply_error(s, 400);
		return -1;
	}
	s->route = r;
	if (form->form == HTTP_TARGET_ABSOLUTE && !s->x->target->host_header[0] &&
	    !r->host_rewrite) {
		if (route_host_len >= sizeof(s->x->target->host_header)) {
			session_reply_error(s, 400);
			return -1;
		}
		memcpy(s->x->target->host_header, route_host, route_host_len);
		s->x->target->host_header[route_host_len] = '\0';
	}
	return 0;
}

/*
 * The route of the request and its target; false after answering (404, 405, 400, 403). RFC 9112
 * §3.2.2: an absolute-form's authority replaces Host; "*" goes where "/" does.
 */
static bool request_route(struct session *s, const struct http_head *h, const char *base,
			  const struct http_header *host, const struct route **out)
{
	const char *url = base + h->url.off, *route_host = NULL, *path = "/";
	size_t route_host_len = 0, path_len = 1;
	struct http_target form;
	const struct route *r;

	if (http_target_parse(url, h->url.len, h->parser.method, &form) < 0) {
		session_reply_error(s, 400);
		return false;
	}
	if (host) {
		route_host = base + host->value.off;
		route_host_len = host->value.len;
	}
	if (form.form == HTTP_TARGET_ABSOLUTE) {
		route_host = url + form.authority.off;
		route_host_len = form.authority.len;
	}
	if (form.path.len) {
		path = url + form.path.off;
		path_len = form.path.len;
	}
	r = route_match(s->cfg, path, path_len, route_host, route_host_len);
	if (r && form.form == HTTP_TARGET_ASTERISK && r->kind != ROUTE_UPSTREAM) {
		session_reply_error(s, 400); /* no destination named */
		return false;
	}
	if (!r) {
		session_reply_error(s, 404);
		return false;
	}
	if (!route_allows_method(r, h->parser.method)) {
		char allow[512], extra[560];

		route_allow_header(r, allow, sizeof(allow));
		snprintf(extra, sizeof(extra), "Allow: %s\r\n", allow);
		session_reply_error_headers(s, 405, extra);
		return false;
	}
	if (request_target(s, r, &form, path, path_len, route_host, route_host_len) < 0)
		return false;
	if (r->kind == ROUTE_URL_EMBEDDED && s->x->target->host_is_literal &&
	    !route_destination_allowed(s->cfg, s->x->target->host, &s->x->target->addr)) {
		log_info("session %lu: destination %s denied", (unsigned long)s->id,
			 s->x->target->host);
		session_reply_error(s, 403);
		return false;
	}
	*out = r;
	return true;
}

/* The head sent upstream (kept in s->x->req_head for a retry); -1 when out of memory. */
static int request_forward_head(struct session *s, const struct route *r, const struct http_head *h,
				const char *base)
{
	struct request_rewrite rw = { 0 };
	char client[INET6_ADDRSTRLEN];

	rw.target = s->x->target->target;
	rw.target_len = s->x->target->target_len;
	if (s->x->target->host_header[0])
		rw.host = s->x->target->host_header;
	else if (r->host_rewrite)
		rw.host = r->host_rewrite;
	session_client_host(s, client);
	rw.client_addr = client;
	rw.client_tls = s->client.xprt == &xprt_tls_ops;
	rw.forwarded = r->forwarded;
	rw.overrides = r->header_overrides;
	rw.n_overrides = r->n_header_overrides;
	rw.upgrade = http_upgrade_header(h, base);
	s->x->req_upgrade = rw.upgrade >= 0;
	buf_free(&s->x->req_head);
	return http_build_request(&s->x->req_head, h, base, &rw);
}

static void handle_request(struct session *s)
{
	struct http_head *h = s->x->rq;
	const char *base = buf_start(&s->client.in);
	const char *url = base + h->url.off;
	const struct http_header *host;
	const struct route *r;

	stats.requests++;
	s->requests++;
	session_access_begin(s, url, h->url.len);
	s->x->interim_sent = s->x->response_started = s->x->final_response = false;
	s->x->interim_count = 0;
	s->x->interim_bytes = 0;
	s->x->retried = false;
	s->close_after = false;
	s->x->attempts = 0;
	if (request_host(h, base, &host) < 0) {
		session_reply_error(s, 400);
		return;
	}
	s->x->req_upgrade = s->x->connect_tunnel = s->x->tunnel = false;
	if (h->parser.method == HTTP_CONNECT) {
		handle_connect(s);
		return;
	}
	if (!request_route(s, h, base, host, &r))
		return;
	if (r->kind == ROUTE_RTSP_GATEWAY) {
		/* The gateway takes the session over: it answers from an RTSP server. */
		s->x->req_is_head = h->parser.method == HTTP_HEAD;
		s->x->client_http10 = h->http_minor == 0;
		buf_consume(&s->client.in, h->head_len);
		rtsp_gateway_start(s, r, s->x->target->target, s->x->target->target_len);
		return;
	}
	s->x->req_framing = h->chunked		  ? FRAMING_CHUNKED :
			    h->has_content_length ? FRAMING_LENGTH :
						    FRAMING_NONE;
	s->x->req_length = h->content_length;
	s->x->req_is_head = h->parser.method == HTTP_HEAD;
	s->x->req_keep_alive = h->keep_alive && !session_draining();
	s->x->client_http10 = h->http_minor == 0;
	if (r->mode >= 0)
		s->x->req.use_splice = s->x->resp.use_splice = r->mode != DATA_PATH_COPY;
	if (request_forward_head(s, r, h, base) < 0) {
		session_reply_error(s, 500);
		return;
	}
	buf_consume(&s->client.in, h->head_len);
	/* Nothing pipelined behind the head: no buffer held while the response is awaited. */
	buf_release(&s->client.in);
	if (r->kind == ROUTE_UPSTREAM)
		upstream_conn_choose_server(s);
	else
		upstream_conn_to_destination(s);
}

static void step_request_head(struct session *s)
{
	const struct config *cfg = s->cfg;
	struct endpoint *c = &s->client;

	for (;;) {
		size_t had;
		ssize_t n;

		if (buf_len(&c->in)) {
			enum http_parse_status st;

			/* The first byte of a request: the exchange starts. */
			if (!session_exchange_take(s) ||
			    (!s->x->rq && !session_head_start(&s->x->rq, true))) {
				session_reply_error(s, 500);
				return;
			}
			st = http_head_feed(s->x->rq, buf_start(&c->in), buf_len(&c->in),
					    cfg->max_request_line, cfg->max_header_size);
			if (st == HTTP_PARSE_DONE) {
				s->x->req_method = s->x->rq->parser.method;
				handle_request(s);
				session_head_free(&s->x->rq);
				return;
			}
			if (st == HTTP_PARSE_ERROR) {
				log_debug("session %lu: bad request: %s", (unsigned long)s->id,
					  s->x->rq->error_reason ? s->x->rq->error_reason :
								   "limits");
				session_reply_error(s, status_for_parse_error(s->x->rq->error));
				session_head_free(&s->x->rq);
				return;
			}
		}
		if (!endpoint_readable(c))
			return;
		if (buf_reserve(&c->in, 4096, cfg->max_header_size + 4096) < 0) {
			session_reply_error(s, 431);
			return;
		}
		had = buf_len(&c->in);
		n = endpoint_recv_buf(c, &c->in, cfg->max_header_size + 1);
		if (n > 0) {
			/* The first byte of a head starts its clock; later bytes do not extend it,
			 * so a client trickling a head cannot hold the connection forever. */
			if (!had)
				timer_arm(&s->timer, cfg->client_timeout_ms);
			continue;
		}
		if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
			c->readable = false;
			return;
		}
		/* Closed (or reset) between requests or inside a head: nothing to answer. */
		session_close(s);
		return;
	}
}

static bool may_replace_pooled(struct session *s)
{
	/* A pooled connection the server had already closed: resend once on a fresh one, when
	 * no byte of a body was consumed and nothing of a response arrived. */
	return s->x->upstream_reused && !s->x->retried && s->x->req_framing == FRAMING_NONE &&
	       http_method_idempotent(s->x->req_method) && !s->x->interim_sent &&
	       !s->x->response_started && buf_len(&s->x->req_head) > 0 &&
	       buf_len(&s->x->upstream.in) == 0;
}

/* The upstream closed, reset or misbehaved before a final response head. */
static void upstream_failed(struct session *s, int status, const char *why)
{
	log_info("session %lu: upstream %s: %s", (unsigned long)s->id, s->up_addr_text, why);
	if (may_replace_pooled(s)) {
		s->x->retried = true;
		stats.upstream_retries++;
		session_close_upstream(s);
		flow_reset(&s->x->req);
		upstream_conn_open(s, false);
		return;
	}
	if (!s->x->upstream_reused)
		upstream_request_failed(s->x->server);
	session_close_upstream(s);
	upstream_conn_retry_or_fail(s, TRIGGER_EMPTY, status);
}

/*
 * The upstream answered something kfwd refuses to forward (a malformed or oversized head, an
 * interim flood): 502, never a retry. The `connect` retry rule covers a connection that failed
 * before any response byte; a server that answers garbage would answer it again (HAProxy retries
 * a junk response only with retry-on junk-response, nginx only with invalid_header).
 */
static void upstream_refused(struct session *s, const char *why)
{
	log_info("session %lu: upstream %s: %s", (unsigned long)s->id, s->up_addr_text, why);
	session_close_upstream(s);
	upstream_conn_give_up(s, 502);
}

/*
 * A 1xx head: 101 switches to a tunnel (only after an upgrade request whose body is sent);
 * the others (100 Continue, 103 Early Hints) are relayed as they are, within the interim caps.
 * Returns as handle_response_head().
 */
static int handle_interim_head(struct session *s, struct http_head *h, const char *base)
{
	struct buf head = { 0 };

	if (h->status == 101) {
		if (!s->x->req_upgrade || !flow_complete(&s->x->req)) {
			upstream_refused(s, "101 without an upgrade request");
			return -1;
		}
		if (http_build_switch(&head, h, base) < 0 ||
		    flow_push(&s->x->resp, buf_start(&head), buf_len(&head)) < 0) {
			buf_free(&head);
			upstream_failed(s, 502, "out of memory");
			return -1;
		}
		buf_free(&head);
		session_final_status(s, 101);
		buf_consume(&s->x->upstream.in, h->head_len);
		tunnel_start(s);
		return 1;
	}
	s->x->interim_count++;
	s->x->interim_bytes += h->head_len;
	if (s->x->interim_count > INTERIM_MAX_COUNT || s->x->interim_bytes > INTERIM_MAX_BYTES) {
		stats.interim_floods++;
		upstream_refused(s, "too many interim responses");
		return -1;
	}
	if (flow_push(&s->x->resp, base, h->head_len) < 0) {
		upstream_failed(s, 502, "out of memory");
		return -1;
	}
	session_count_status(h->status);
	s->x->interim_sent = true;
	buf_consume(&s->x->upstream.in, h->head_len);
	http_head_init(s->x->rs, false);
	return 0;
}

/* How a url-embedded route's Location values and playlist URIs are rewritten. */
static const struct location_rewrite *location_for(const struct session *s,
						   struct location_rewrite *loc)
{
	const struct route *r = s->x->target->route;

	if (r->kind != ROUTE_URL_EMBEDDED)
		return NULL;
	loc->prefix = r->prefix;
	loc->authority = s->x->target->host_header;
	loc->req_path = s->x->target->target;
	loc->tls = r->tls.on;
	loc->other_prefix = route_embedded_prefix(s->cfg, !loc->tls);
	loc->rtsp_prefix = route_rtsp_prefix(s->cfg);
	return loc;
}

/* Read this response whole and rewrite it? One announced too large is not (counted). */
static bool playlist_wanted(struct session *s, const struct http_head *h, const char *base,
			    enum body_framing framing)
{
	if (s->x->target->route->kind != ROUTE_URL_EMBEDDED || !s->cfg->playlist_max_size ||
	    framing == FRAMING_NONE ||
	    !playlist_response(h, base, s->x->target->target, s->x->target->target_len))
		return false;
	if (framing == FRAMING_LENGTH && h->content_length > s->cfg->playlist_max_size) {
		stats.playlists_unmodified++;
		return false;
	}
	return true;
}

/* Start reading a playlist's body whole; @head (taken) goes out if it is not rewritten. */
static int playlist_begin(struct session *s, const struct http_head *h, enum body_framing framing,
			  struct buf *head)
{
	struct playlist_fetch *p = calloc(1, sizeof(*p));

	if (!p)
		return -1;
	p->head = *head;
	memset(head, 0, sizeof(*head));
	p->status = h->status;
	playlist_body_init(&p->body, framing, h->content_length);
	s->x->playlist = p;
	buf_free(&s->x->req_head);
	buf_consume(&s->x->upstream.in, h->head_len);
	timer_arm(&s->timer, session_idle_timeout(s));
	return 0;
}

/* Returns 1 when a final response head was taken, 0 when more is needed, -1 on failure. */
static int handle_response_head(struct session *s)
{
	struct http_head *h = s->x->rs;
	const char *base = buf_start(&s->x->upstream.in);
	struct location_rewrite loc = { 0 };
	enum body_framing framing;
	struct buf head = { 0 };
	bool sockmap_body, playlist;
	int rc;

	if (h->status < 100 || h->status > 999) {
		upstream_refused(s, "bad status");
		return -1;
	}
	if (h->status < 200)
		return handle_interim_head(s, h, base);
	upstream_mark_ok(s->x->server);
	if (h->status >= 500 && upstream_conn_can_retry(s, TRIGGER_5XX)) {
		log_info("session %lu: upstream %s answered %d", (unsigned long)s->id,
			 s->up_addr_text, h->status);
		upstream_conn_schedule_retry(s);
		return -1;
	}
	if (s->x->req_is_head || h->status == 204 || h->status == 304)
		framing = FRAMING_NONE;
	else if (h->has_transfer_encoding)
		framing = h->chunked ? FRAMING_CHUNKED : FRAMING_CLOSE;
	else if (h->has_content_length)
		framing = FRAMING_LENGTH;
	else
		framing = FRAMING_CLOSE;

	playlist = playlist_wanted(s, h, base, framing);
	sockmap_body = !playlist && sockmap_session_wants_response(s, framing, h->content_length);
	s->x->upstream_reusable = h->keep_alive && framing != FRAMING_CLOSE && !s->x->req_failed &&
				  !sockmap_body;
	/* An answer before the request body was fully sent poisons the upstream connection, and
	 * the client connection cannot find its next request: both close after this response. */
	if (!flow_complete(&s->x->req) || s->x->req_failed) {
		s->x->upstream_reusable = false;
		s->close_after = true;
	}
	if (!s->x->req_keep_alive || framing == FRAMING_CLOSE || sockmap_body || session_draining())
		s->close_after = true;

	rc = http_build_response(&head, h, base, s->close_after, s->x->client_http10,
				 location_for(s, &loc));
	if (rc == 0 && playlist) {
		rc = playlist_begin(s, h, framing, &head);
		if (rc == 0)
			return 1;
	}
	if (rc == 0)
		rc = flow_push(&s->x->resp, buf_start(&head), buf_len(&head));
	buf_free(&head);
	if (rc < 0) {
		upstream_failed(s, 502, "out of memory");
		return -1;
	}
	session_final_status(s, h->status);
	s->x->final_response = true;
	s->x->response_started = true;
	buf_free(&s->x->req_head);
	buf_consume(&s->x->upstream.in, h->head_len);
	flow_start_body(&s->x->resp, framing, h->content_length);
	timer_arm(&s->timer, session_idle_timeout(s));
	if (sockmap_body) {
		if (sockmap_session_start_response(s) == SOCKMAP_STEP_RESPONSE_DONE)
			http1_finish_transaction(s);
		if (s->client.fd < 0)
			return -1;
	}
	return 1;
}

enum upstream_read {
	UP_READ_BYTES,
	UP_READ_EOF, /* rd_eof is set */
	UP_READ_AGAIN, /* nothing now: readable is cleared */
	UP_READ_ERROR, /* errno says why */
};

/* One read from the upstream into upstream.in, at most @max bytes. */
static enum upstream_read upstream_read(struct session *s, size_t max)
{
	struct endpoint *u = &s->x->upstream;
	ssize_t n = endpoint_recv_buf(u, &u->in, max);

	if (n > 0)
		return UP_READ_BYTES;
	if (n == 0) {
		u->rd_eof = true;
		return UP_READ_EOF;
	}
	if (errno == EAGAIN || errno == EINTR) {
		u->readable = false;
		return UP_READ_AGAIN;
	}
	return UP_READ_ERROR;
}

/*
 * Parse the response head(s) in u->in, reading more while the upstream has bytes, within
 * HEAD_READ_BUDGET reads and while relayed interim responses do not back up. Returns 1 when a
 * final response head was taken, 0 when more is needed, -1 when the session moved on (error).
 */
static int read_response_head(struct session *s)
{
	const struct config *cfg = s->cfg;
	struct endpoint *u = &s->x->upstream;
	unsigned int reads = 0;

	for (;;) {
		enum upstream_read rd;

		if (buf_len(&u->in)) {
			enum http_parse_status st;

			if (!s->x->rs && !session_head_start(&s->x->rs, false)) {
				upstream_refused(s, "out of memory");
				return -1;
			}
			st = http_head_feed(s->x->rs, buf_start(&u->in), buf_len(&u->in),
					    cfg->max_header_size, cfg->max_header_size);

			if (st == HTTP_PARSE_DONE) {
				int r = handle_response_head(s);

				/* A response body the sockmap took whole ended the exchange. */
				if (r > 0 && s->x)
					session_head_free(&s->x->rs);
				if (r != 0)
					return r;
				continue;
			}
			if (st == HTTP_PARSE_ERROR) {
				upstream_refused(s, "malformed response head");
				return -1;
			}
		}
		if (u->rd_eof) {
			upstream_failed(s, 502, "closed before the response head");
			return -1;
		}
		if (!endpoint_readable(u) || session_interim_backlogged(s) ||
		    reads++ == HEAD_READ_BUDGET)
			return 0;
		if (buf_reserve(&u->in, 4096, cfg->max_header_size + 4096) < 0) {
			upstream_refused(s, "response head too large");
			return -1;
		}
		rd = upstream_read(s, cfg->max_header_size + 1);
		if (rd == UP_READ_BYTES || rd == UP_READ_EOF)
			continue;
		if (rd == UP_READ_AGAIN)
			return 0;
		upstream_failed(s, 502, strerror(errno));
		return -1;
	}
}

/* The playlist went to the flow (rewritten, or as it is from where it is): the response is on. */
static int playlist_started(struct session *s, enum body_framing framing, uint64_t length)
{
	session_final_status(s, s->x->playlist->status);
	s->x->final_response = true;
	s->x->response_started = true;
	flow_start_body(&s->x->resp, framing, length);
	timer_arm(&s->timer, session_idle_timeout(s));
	playlist_free(s);
	return 1;
}

static int playlist_fail(struct session *s, int status, const char *why)
{
	log_info("session %lu: playlist from %s: %s", (unsigned long)s->id, s->up_addr_text, why);
	playlist_free(s);
	session_reply_error(s, status);
	return -1;
}

/* Over playlist-max-size: the head as built, then the body from where it is, unmodified. */
static int playlist_pass(struct session *s)
{
	struct playlist_fetch *p = s->x->playlist;

	if (flow_push(&s->x->resp, buf_start(&p->head), buf_len(&p->head)) < 0)
		return playlist_fail(s, 502, "out of memory");
	stats.playlists_unmodified++;
	return playlist_started(s, p->body.framing, p->body.length);
}

/* The bytes read from the upstream; an empty buffer has no memory (and NULL + 0 is undefined). */
static const char *upstream_bytes(const struct session *s)
{
	return buf_len(&s->x->upstream.in) ? buf_start(&s->x->upstream.in) : "";
}

/* The whole playlist, rewritten, with a Content-Length of its new size. */
static int playlist_send(struct session *s)
{
	struct playlist_fetch *p = s->x->playlist;
	struct buf body = { 0 }, head = { 0 };
	struct location_rewrite loc = { 0 };
	int rc;

	rc = playlist_body_rewrite(&p->body, upstream_bytes(s), buf_start(&p->head),
				   buf_len(&p->head), location_for(s, &loc), &head, &body);
	if (rc == 0)
		rc = flow_push(&s->x->resp, buf_start(&head), buf_len(&head));
	if (rc == 0)
		rc = flow_push(&s->x->resp, buf_start(&body), buf_len(&body));
	buf_free(&body);
	buf_free(&head);
	if (rc < 0)
		return playlist_fail(s, 502, "out of memory");
	buf_consume(&s->x->upstream.in, p->body.len);
	stats.playlists_rewritten++;
	return playlist_started(s, FRAMING_LENGTH, 0);
}

/*
 * A playlist's body read into upstream.in until it is whole, then rewritten and sent; past
 * playlist-max-size it goes out as it is. Returns 1 when the response went to the flow, 0 when
 * more is needed, -1 when the session moved on (502).
 */
static int read_playlist(struct session *s)
{
	size_t max = s->cfg->playlist_max_size;
	struct endpoint *u = &s->x->upstream;
	unsigned int reads = 0;

	for (;;) {
		int whole = playlist_body_whole(&s->x->playlist->body, upstream_bytes(s),
						buf_len(&u->in), u->rd_eof);
		enum upstream_read rd;

		if (whole < 0)
			return playlist_fail(s, 502, "bad chunked framing");
		if (whole)
			return playlist_send(s);
		if (buf_len(&u->in) > max)
			return playlist_pass(s);
		if (u->rd_eof)
			return playlist_fail(s, 502, "closed inside the body");
		if (!endpoint_readable(u) || reads++ == HEAD_READ_BUDGET)
			return 0;
		if (buf_reserve(&u->in, PLAYLIST_READ_CHUNK, max + PLAYLIST_READ_CHUNK) < 0)
			return playlist_fail(s, 502, "out of memory");
		rd = upstream_read(s, max + 1 - buf_len(&u->in));
		if (rd == UP_READ_BYTES)
			timer_arm(&s->timer, session_idle_timeout(s));
		else if (rd == UP_READ_AGAIN)
			return 0;
		else if (rd == UP_READ_ERROR)
			return playlist_fail(s, 502, strerror(errno));
	}
}

static bool upstream_clean(struct session *s)
{
	struct endpoint *u = &s->x->upstream;
	int unread = 0;

	if (!s->x->upstream_reusable || buf_len(&u->in) || u->rd_eof || u->hup ||
	    s->x->resp.paused || u->xprt->pending(u))
		return false;
	/* Bytes past the end of the response mean the framing was not what it said. A read that
	 * emptied the queue cleared the readable hint: only otherwise is the queue asked. */
	if (u->readable && (ioctl(u->fd, SIOCINQ, &unread) < 0 || unread > 0))
		return false;
	return true;
}

static void http1_finish_transaction(struct session *s)
{
	session_access_end(s);
	if (!flow_complete(&s->x->req) || s->x->req_failed) {
		s->close_after = true;
		s->x->upstream_reusable = false;
	}
	if (s->x->upstream.fd >= 0) {
		struct pool_identity id = { 0 };

		/* A TLS origin connection is pooled with its TLS state, for its settings and name. */
		if (upstream_clean(s) && (s->x->upstream.xprt == &xprt_raw ||
					  xprt_tls_origin(&s->x->upstream, &id.tls, &id.name))) {
			struct upstream_server *srv = s->x->conn_server;

			buf_free(&s->x->upstream.in);
			s->x->conn_server = NULL;
			upstream_pool_put(&s->x->upstream, s->x->up_addr, srv, &id);
		} else {
			session_close_upstream(s);
		}
	}
	flow_finish(&s->x->req);
	flow_finish(&s->x->resp);
	session_target_end(s);
	buf_free(&s->x->req_head);
	if (s->close_after || session_draining()) {
		session_begin_linger(s);
		return;
	}
	s->state = S_REQUEST_HEAD;
	session_head_free(&s->x->rs);
	session_exchange_put(s);
	buf_release(&s->client.in);
	timer_arm(&s->timer, s->cfg->client_timeout_ms);
}

/*
 * A close-delimited body ends with the connection, so a FIN after a failed upstream would tell
 * the client the cut body is whole: reset instead (a TLS origin's EOF without close_notify is
 * such a failure too).
 */
static void reset_client(struct session *s)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };

	if (setsockopt(s->client.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)) < 0)
		log_debug("session %lu: SO_LINGER: %m", (unsigned long)s->id);
}

/*
 * The request body towards the upstream: false when that ended the exchange (a 400 or 502
 * answered, the session closed). A refused request body leaves the response to be read.
 */
static bool exchange_pump_request(struct session *s)
{
	enum flow_status st = flow_pump(&s->x->req);

	if (st == FLOW_SRC_ERROR) {
		/* The client's body ended early or was malformed: the upstream connection holds
		 * part of a message and closes; the client hears 400 unless a final response has
		 * begun. */
		log_info("session %lu: request body from client failed", (unsigned long)s->id);
		if (s->x->final_response)
			session_close(s);
		else
			session_reply_error(s, 400);
		return false;
	}
	if (st == FLOW_DST_ERROR) {
		s->x->req_failed = true;
		flow_reset(&s->x->req);
		if (may_replace_pooled(s)) {
			upstream_failed(s, 502, "request refused by a pooled connection");
			return false;
		}
		/* The server may still have answered (e.g. 413): read on. */
	}
	if (!s->x->req_sent && flow_complete(&s->x->req)) {
		s->x->req_sent = true;
		if (!s->x->final_response)
			timer_arm(&s->timer, session_response_timeout(s));
	}
	return true;
}

/* The response body towards the client; the transaction ends with its last byte. */
static void exchange_pump_response(struct session *s)
{
	enum flow_status st = flow_pump(&s->x->resp);

	if (st == FLOW_SRC_ERROR) {
		log_info("session %lu: upstream %s failed inside the response body",
			 (unsigned long)s->id, s->up_addr_text);
		/* Nothing of the response reached the client yet: it can still hear 502. Else
		 * the connection is cut, so the client never takes a short body as whole. */
		if (s->x->resp.bytes_out == s->x->resp.bytes_out_at_start && !s->x->interim_sent) {
			session_reply_error(s, 502);
			return;
		}
		stats.aborted_transfers++;
		if (s->x->resp.framing == FRAMING_CLOSE)
			reset_client(s);
		session_close(s);
		return;
	}
	if (st == FLOW_DST_ERROR) {
		if (!flow_complete(&s->x->resp))
			stats.aborted_transfers++;
		session_close(s);
		return;
	}
	if (s->x->final_response && flow_complete(&s->x->resp))
		http1_finish_transaction(s);
}

static void step_exchange(struct session *s)
{
	if (s->x->sockmap) {
		if (sockmap_session_step(s) == SOCKMAP_STEP_RESPONSE_DONE)
			http1_finish_transaction(s);
		return;
	}
	if (s->x->tunnel) {
		tunnel_step(s);
		return;
	}
	if (s->client.hup) {
		/* Client gone: the upstream connection is closed, not reused; pipes discarded. */
		log_debug("session %lu: client gone", (unsigned long)s->id);
		if (s->x->final_response && !flow_complete(&s->x->resp))
			stats.aborted_transfers++;
		session_close(s);
		return;
	}
	if (!s->x->req_failed && s->x->upstream.fd >= 0 && !exchange_pump_request(s))
		return;
	if (!s->x->final_response && !s->x->playlist && s->x->upstream.fd >= 0 &&
	    read_response_head(s) < 0)
		return;
	if (s->state != S_EXCHANGE)
		return; /* the response ended (its exchange given back) or failed */
	if (s->x->playlist && read_playlist(s) < 0)
		return;
	if (s->state != S_EXCHANGE)
		return;
	if (s->x->sockmap)
		return;
	if (s->x->tunnel) {
		tunnel_step(s);
		return;
	}
	exchange_pump_response(s);
}

static void http1_step(struct session *s)
{
	if (s->state == S_REQUEST_HEAD)
		step_request_head(s);
	else
		step_exchange(s);
}

static void http1_timeout(struct session *s)
{
	switch (s->state) {
	case S_REQUEST_HEAD:
		/* Inside a head: 408; between requests: the keep-alive connection just closes. */
		if (buf_len(&s->client.in))
			session_reply_error(s, 408);
		else
			session_close(s);
		break;
	case S_EXCHANGE:
		if (s->x->sockmap) {
			sockmap_session_timeout(s);
			break;
		}
		if (s->x->playlist) {
			playlist_fail(s, 504, "not whole in time");
			break;
		}
		if (s->x->req_sent && !s->x->final_response) {
			log_info("session %lu: no response from %s in time", (unsigned long)s->id,
				 s->up_addr_text);
			upstream_request_failed(s->x->server);
			session_close_upstream(s);
			upstream_conn_retry_or_fail(s, TRIGGER_TIMEOUT, 504);
			break;
		}
		session_exchange_idle(s);
		break;
	default:
		upstream_conn_timeout(s);
		break;
	}
}

static void http1_release(struct session *s)
{
	playlist_free(s);
	if (s->x->sockmap)
		sockmap_session_finish(s);
}

const struct proto_ops http1_ops = {
	.name = "http",
	.exchange_per_request = true,
	.pooled_upstream = true,
	.step = http1_step,
	.timeout = http1_timeout,
	.connected = http1_start_exchange,
	.connect_failed = session_reply_error,
	.release = http1_release,
};
