// SPDX-License-Identifier: GPL-2.0
/*
 * The RTSP/1.0 protocol module (`listen ADDR:PORT rtsp`): one upstream connection per client
 * connection, opened at the first request and chosen by the routes on the Request-URI's path.
 * Both directions are read by this file and cut by a framer (rtsp_frame.c) into message heads
 * and bodies and interleaved '$' frames: heads are parsed and rewritten in user space
 * (rtsp_rewrite.c: Request-URI to the upstream, the server's URLs back to the client's,
 * Transport cut to its TCP entries, Via, Content-Length), frames are queued on the session's
 * flows and delivered with their watermarks. The two directions are independent: a client
 * that stops reading pauses (or, with on-slow=drop-frames, thins) the server's media only,
 * never its own requests. kfwd answers the server's 401 itself when the route has
 * credentials, and tears down the sessions a vanished client left behind.
 */
#include <errno.h>
#include <llhttp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "log.h"
#include "resolve.h"
#include "rtsp.h"
#include "rtsp_auth.h"
#include "rtsp_frame.h"
#include "rtsp_parse.h"
#include "rtsp_rewrite.h"
#include "rtsp_url.h"
#include "stats.h"
#include "tcp_window.h"
#include "upstream.h"
#include "upstream_conn.h"

/* Bytes read from a socket at once: batched copy is the cheapest way to move ~1.3 KB frames
 * (README "RTSP", measured): one recv() takes dozens of frames. */
#define RTSP_READ_BATCH (64 << 10)
/* A message body (an SDP) is held whole to be rewritten: larger is 413 (502 from a server). */
#define RTSP_BODY_MAX (1 << 20)
#define RTSP_SENT_MAX 16 /* requests in flight tracked for 401 answers and states */
#define RTSP_SESSIONS_MAX 8 /* sessions set up on one connection, torn down for a lost client */
#define RTSP_ID_MAX 128
#define RTSP_URL_MAX 1024
#define RTSP_CSEQ_MAX 24
#define RTSP_REPLY_MAX 1024
#define RTSP_AUTH_LINE_MAX 2048
/* Room a rewrite may need beyond the input: every URL may grow by the prefixes' difference. */
#define RTSP_REWRITE_SLACK (16 << 10)
#define RTSP_MIN_URL_LINE 16 /* the shortest line an absolute URL can be on ("url=rtsp://x") */
/* drop-frames: server messages still queue for a stalled client, up to this many high-water
 * marks; past it the server is paused as in pause mode. */
#define RTSP_DROP_HOLD_FACTOR 4
#define RTSP_READ_BUDGET 32 /* reads per side and wake-up; epoll brings us back for more */
#define RTSP_VIA_NAME "kfwd"
/* SIGTERM: how long a connection waits for the answers to the requests in flight and to
 * kfwd's TEARDOWNs before it ends at the next frame boundary (as the gateway's TEARDOWN). */
#define RTSP_DRAIN_WAIT_MS 1000
#define RTSP_GATEWAY_TIMEOUT 504
#define RTSP_SERVICE_UNAVAILABLE 503
/* rewrite_message() out of memory: apart from every enum rtsp_rw_result */
#define RTSP_REWRITE_NOMEM (-100)

enum rtsp_play_state {
	RTSP_ST_INIT,
	RTSP_ST_DESCRIBED,
	RTSP_ST_SETUP,
	RTSP_ST_PLAYING,
	RTSP_ST_PAUSED,
};

/* One direction's reading. */
struct rtsp_side {
	struct rtsp_framer fr;
	bool head_ready; /* fr.head starts the side's buffer; its body is awaited */
	bool dropping; /* the frame in progress is discarded (on-slow=drop-frames) */
};

/* A request sent upstream whose response has not come. */
struct rtsp_sent {
	uint32_t cseq;
	uint8_t method;
	bool has_cseq; /* without one no answer can be matched: no 504 either */
	bool auth_retried;
	bool timed_out; /* the client got kfwd's 504: a late answer is dropped */
	bool own; /* kfwd's TEARDOWN (drain): its answer is not the client's */
	uint64_t sent_ms;
	char *msg; /* with credentials only: the message without Authorization, for a 401 */
	size_t head_len, msg_len;
	char *method_name;
	char *uri; /* as sent: Digest's uri */
};

struct rtsp_conn {
	struct rtsp_side c2s; /* client to server: requests, answers to server requests, RTCP */
	struct rtsp_side s2c;
	/* Messages for each peer, kfwd's own included: they join the flow at a frame boundary. */
	struct buf to_client, to_upstream;
	const struct route *route; /* NULL until a request was routed */
	bool connected;
	char dest[RTSP_URL_MAX]; /* url-embedded: the destination "host:port" */
	/* Server URLs start with upstream_prefix; the client knows them under client_prefix. */
	char client_prefix[RTSP_URL_MAX];
	char upstream_prefix[RTSP_URL_MAX];
	char teardown_url[RTSP_URL_MAX]; /* upstream form: the aggregate URL of the sessions */
	bool has_cred;
	char user[RTSP_AUTH_CRED_MAX], pass[RTSP_AUTH_CRED_MAX];
	bool has_challenge;
	struct rtsp_challenge chal;
	uint32_t nc;
	char cnonce[RTSP_AUTH_CNONCE_LEN + 1];
	struct rtsp_sent sent[RTSP_SENT_MAX];
	unsigned int n_sent;
	char sessions[RTSP_SESSIONS_MAX][RTSP_ID_MAX];
	unsigned int n_sessions;
	uint32_t last_cseq; /* the client's highest CSeq: kfwd's TEARDOWNs follow it */
	uint32_t log_cseq; /* the request the access log's pending record is for */
	char cseq[RTSP_CSEQ_MAX]; /* the request being answered */
	enum rtsp_play_state play;
	bool rejecting; /* over max-connections: the first request is answered 503 */
	bool draining; /* SIGTERM: TEARDOWN, answers awaited until drain_deadline_ms */
	bool drain_closing; /* no new item from the server: close at its next frame boundary */
	uint64_t drain_deadline_ms;
	struct tcp_window win; /* tcp-user-timeout held back while a paused client is there */
	uint64_t requests, requests_timed_out;
	uint64_t frames[DIR_COUNT], frame_bytes[DIR_COUNT];
	uint64_t frames_dropped, bytes_dropped;
};

enum msg_result {
	MSG_DONE, /* the message was handled: consume it */
	MSG_RETRY, /* not consumed; look again (the upstream connection came meanwhile) */
	MSG_STOP, /* not consumed; the session moved on (connecting, replying, closed) */
};

static const char *const play_names[] = { "init", "described", "setup", "playing", "paused" };

static struct rtsp_conn *conn_of(const struct session *s)
{
	return s->x->proto_data;
}

static bool side_mid_frame(const struct rtsp_side *sd)
{
	return sd->fr.state == RTSP_FR_PAYLOAD && !sd->dropping;
}

static struct rtsp_conn *conn_create(struct session *s)
{
	const struct config *cfg = s->cfg;
	struct rtsp_conn *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	rtsp_framer_init(&c->c2s.fr, cfg->max_request_line, cfg->max_header_size, RTSP_BODY_MAX);
	rtsp_framer_init(&c->s2c.fr, cfg->max_header_size, cfg->max_header_size, RTSP_BODY_MAX);
	s->x->proto_data = c;
	/* Until the first request is routed only the client is read. */
	s->state = S_EXCHANGE;
	s->x->req.use_splice = s->x->resp.use_splice = false;
	flow_start_body(&s->x->req, FRAMING_CLOSE, 0);
	flow_start_body(&s->x->resp, FRAMING_CLOSE, 0);
	return c;
}

static void sent_free(struct rtsp_sent *e)
{
	free(e->msg);
	free(e->method_name);
	free(e->uri);
	memset(e, 0, sizeof(*e));
}

static void rtsp_release(struct session *s)
{
	struct rtsp_conn *c = conn_of(s);

	if (!c)
		return;
	for (unsigned int i = 0; i < c->n_sent; i++)
		sent_free(&c->sent[i]);
	buf_free(&c->to_client);
	buf_free(&c->to_upstream);
	free(c);
	s->x->proto_data = NULL;
}

/* ---- queues toward the peers */

static int flush_queue(struct flow *f, struct buf *q)
{
	if (!buf_len(q))
		return 0;
	if (flow_push(f, buf_start(q), buf_len(q)) < 0)
		return -1;
	buf_consume(q, buf_len(q));
	buf_release(q);
	return 0;
}

/* Queued messages join the flow when the stream toward that peer is between frames. */
static int flush_to_client(struct session *s, struct rtsp_conn *c)
{
	return side_mid_frame(&c->s2c) ? 0 : flush_queue(&s->x->resp, &c->to_client);
}

static int flush_to_upstream(struct session *s, struct rtsp_conn *c)
{
	if (!c->connected || side_mid_frame(&c->c2s))
		return 0;
	return flush_queue(&s->x->req, &c->to_upstream);
}

/* ---- kfwd's own answers */

static int build_answer(struct rtsp_conn *c, struct buf *out, int status, const char *extra)
{
	char text[RTSP_REPLY_MAX];
	size_t n;

	if (rtsp_build_reply(status, c->cseq, strlen(c->cseq), extra, text, sizeof(text), &n) !=
	    RTSP_RW_OK)
		return -1;
	return buf_append(out, text, n);
}

/* An answer to the request being handled; the connection goes on. -1 when out of memory. */
static int answer(struct session *s, struct rtsp_conn *c, int status, const char *extra)
{
	session_count_error(status);
	session_final_status(s, status);
	session_access_end(s);
	if (build_answer(c, &c->to_client, status, extra) < 0 || flush_to_client(s, c) < 0)
		return -1;
	return 0;
}

/* "Authorization: ...\r\n" for @e with the server's last challenge; -1 when none fits. */
static int auth_line(struct rtsp_conn *c, const struct rtsp_sent *e, char *out, size_t cap)
{
	static const char name[] = "Authorization: ";
	size_t n = sizeof(name) - 1;
	int v;

	memcpy(out, name, n);
	v = rtsp_auth_authorization(&c->chal, c->user, c->pass, e->method_name, e->uri, ++c->nc,
				    c->cnonce, out + n, cap - n - 2);
	if (v < 0)
		return -1;
	memcpy(out + n + (size_t)v, "\r\n", 3);
	return 0;
}

/*
 * TEARDOWN for every session the client set up and did not tear down (it is gone, or kfwd
 * drains: @why). Each is tracked as kfwd's own request, so its answer never reaches a client.
 */
static void send_teardowns(struct session *s, struct rtsp_conn *c, const char *why)
{
	char msg[RTSP_URL_MAX + RTSP_ID_MAX + RTSP_AUTH_LINE_MAX + 128];

	if (!c->connected || s->x->upstream.fd < 0 || side_mid_frame(&c->c2s) ||
	    !c->teardown_url[0])
		return;
	for (unsigned int i = 0; i < c->n_sessions; i++) {
		struct rtsp_sent e = { .method_name = "TEARDOWN", .uri = c->teardown_url };
		char auth[RTSP_AUTH_LINE_MAX] = "";
		int n;

		if (c->has_challenge && auth_line(c, &e, auth, sizeof(auth)) < 0)
			auth[0] = '\0';
		n = snprintf(msg, sizeof(msg),
			     "TEARDOWN %s RTSP/1.0\r\nCSeq: %u\r\nSession: %s\r\n%s"
			     "Via: RTSP/1.0 " RTSP_VIA_NAME "\r\n\r\n",
			     c->teardown_url, ++c->last_cseq, c->sessions[i], auth);

		if (n < 0 || (size_t)n >= sizeof(msg) ||
		    buf_append(&c->to_upstream, msg, (size_t)n))
			break;
		if (c->n_sent < RTSP_SENT_MAX)
			c->sent[c->n_sent++] = (struct rtsp_sent){ .cseq = c->last_cseq,
								   .method = HTTP_TEARDOWN,
								   .has_cseq = true,
								   .own = true,
								   .sent_ms = now_ms() };
		log_info("session %lu: %s, TEARDOWN of session %s sent to %s", (unsigned long)s->id,
			 why, c->sessions[i], s->up_addr_text);
	}
	c->n_sessions = 0;
	if (flush_to_upstream(s, c) == 0)
		flow_flush(&s->x->req);
}

/* kfwd's answer, then the connection closes (framing lost, or no upstream to be had). */
static void answer_close(struct session *s, struct rtsp_conn *c, int status)
{
	send_teardowns(s, c, "closing");
	resolve_cancel(&s->x->resolve);
	upstream_unwait(&s->x->wait);
	session_close_upstream(s);
	flow_reset(&s->x->req);
	session_count_error(status);
	session_final_status(s, status);
	/* Inside a frame toward the client an answer would be taken for payload. */
	if (side_mid_frame(&c->s2c) || build_answer(c, &c->to_client, status, NULL) < 0 ||
	    flush_queue(&s->x->resp, &c->to_client) < 0) {
		session_close(s);
		return;
	}
	s->x->resp.active = false;
	s->state = S_REPLYING;
	timer_arm(&s->timer, s->cfg->client_timeout_ms);
}

static void rtsp_connect_failed(struct session *s, int status)
{
	answer_close(s, conn_of(s), status);
}

/* ---- requests the server does not answer, and the session timer */

/* When the oldest request of the client awaiting its answer reaches response-timeout; 0: none. */
static uint64_t answer_deadline(const struct session *s, const struct rtsp_conn *c)
{
	uint64_t rt = session_response_timeout(s), first = 0;

	for (unsigned int i = 0; i < c->n_sent; i++) {
		const struct rtsp_sent *e = &c->sent[i];

		if (e->has_cseq && !e->timed_out && !e->own && (!first || e->sent_ms + rt < first))
			first = e->sent_ms + rt;
	}
	return first;
}

/* Answers the connection still waits for: the client's requests (not yet 504) and kfwd's own. */
static bool answers_awaited(const struct rtsp_conn *c)
{
	for (unsigned int i = 0; i < c->n_sent; i++)
		if (c->sent[i].has_cseq && !c->sent[i].timed_out)
			return true;
	return false;
}

/* A connected session's timer: the transfer's idle bound, the oldest unanswered request's
 * response-timeout, the drain's wait or the client's window check, whichever comes first. */
static void arm_exchange_timer(struct session *s, struct rtsp_conn *c)
{
	uint64_t now = now_ms(), answer_at = answer_deadline(s, c);
	uint64_t last = s->x->req.last_progress_ms > s->x->resp.last_progress_ms ?
				s->x->req.last_progress_ms :
				s->x->resp.last_progress_ms;
	uint64_t at = last + session_idle_timeout(s);

	if (answer_at && answer_at < at)
		at = answer_at;
	if (c->draining && !c->drain_closing && c->drain_deadline_ms < at)
		at = c->drain_deadline_ms;
	if (s->cfg->user_timeout_ms && c->win.next_check_ms < at)
		at = c->win.next_check_ms;
	timer_arm(&s->timer, at > now ? at - now : 0);
}

/*
 * The client's requests unanswered for response-timeout get kfwd's 504 with their CSeq. The
 * connection goes on, as RFC 2326 has a 504 end a request, not the connection: the media
 * already set up keeps flowing (cameras that ignore GET_PARAMETER keepalives exist, and
 * must not cost the stream), and a late answer is dropped, its CSeq already answered.
 */
static int expire_requests(struct session *s, struct rtsp_conn *c)
{
	uint64_t now = now_ms(), rt = session_response_timeout(s);

	for (unsigned int i = 0; i < c->n_sent; i++) {
		struct rtsp_sent *e = &c->sent[i];

		if (!e->has_cseq || e->timed_out || e->own || now - e->sent_ms < rt)
			continue;
		e->timed_out = true;
		free(e->msg); /* no 401 to answer any more */
		e->msg = NULL;
		c->requests_timed_out++;
		log_info("session %lu: %s (CSeq %u) unanswered by %s for %lu ms: 504",
			 (unsigned long)s->id, e->method_name ? e->method_name : "request", e->cseq,
			 s->up_addr_text, (unsigned long)(now - e->sent_ms));
		snprintf(c->cseq, sizeof(c->cseq), "%u", e->cseq);
		session_count_error(RTSP_GATEWAY_TIMEOUT);
		if (s->x->log_pending && c->log_cseq == e->cseq) {
			session_final_status(s, RTSP_GATEWAY_TIMEOUT);
			session_access_end(s);
		} else {
			session_count_status(RTSP_GATEWAY_TIMEOUT);
		}
		if (build_answer(c, &c->to_client, RTSP_GATEWAY_TIMEOUT, NULL) < 0 ||
		    flush_to_client(s, c) < 0)
			return -1;
	}
	return 0;
}

/* ---- routing */

/* What a request names: its route, the client-side URL prefix and the destination. */
struct rtsp_target {
	const struct route *route;
	size_t prefix_len; /* url[0, prefix_len) maps to the upstream prefix */
	char nocred_prefix[RTSP_URL_MAX]; /* the same without credentials (url-embedded) */
	struct rtsp_url dest; /* url-embedded */
};

static int copy_text(char *out, size_t cap, const char *a, size_t alen, const char *b, size_t blen)
{
	if (alen + blen >= cap)
		return -1;
	memcpy(out, a, alen);
	memcpy(out + alen, b, blen);
	out[alen + blen] = '\0';
	return 0;
}

/* url-embedded: "/rtsp/[user:pass@]host[:port]/path" after the route's prefix. */
static int target_embedded(const struct route *r, const char *url, const char *path,
			   size_t path_len, struct rtsp_target *t)
{
	size_t skip = r->prefix_len;
	const char *rest, *auth_start, *at, *slashes;

	if (skip < path_len && path[skip] == '/' && r->prefix[r->prefix_len - 1] != '/')
		skip++;
	rest = path + skip;
	if (skip > path_len || rtsp_url_parse_embedded(rest, path_len - skip, &t->dest) < 0)
		return -1;
	t->prefix_len = (size_t)(t->dest.path - url);
	/* The prefix shown to the client never carries the credentials. */
	slashes = memmem(rest, (size_t)(t->dest.path - rest), "//", 2);
	auth_start = slashes ? slashes + 2 : rest;
	at = memrchr(auth_start, '@', (size_t)(t->dest.path - auth_start));
	return copy_text(t->nocred_prefix, sizeof(t->nocred_prefix), url,
			 (size_t)(auth_start - url), at ? at + 1 : auth_start,
			 (size_t)(t->dest.path - (at ? at + 1 : auth_start)));
}

/*
 * A Request-URI: rtsp://, or rtsps:// from a client of a TLS listener (the server is asked
 * rtsp://, the client's scheme comes back in the URLs mapped to it). @u->path points into @url.
 */
static int parse_request_uri(const char *url, size_t len, struct rtsp_url *u)
{
	static const char tls_scheme[] = "rtsps://";
	const size_t n = sizeof(tls_scheme) - 1;
	char *plain;
	int r;

	if (len < n || strncasecmp(url, tls_scheme, n))
		return rtsp_url_parse(url, len, u);
	/* "rtsp://" then the rest: one byte shorter, so the path moves back by one. */
	plain = malloc(len);
	if (!plain)
		return -1;
	memcpy(plain, "rtsp://", n - 1);
	memcpy(plain + n - 1, url + n, len - n);
	r = rtsp_url_parse(plain, len - 1, u);
	if (r == 0)
		u->path = url + (u->path - plain) + 1;
	free(plain);
	return r;
}

/* The route of the Request-URI @url and what it maps; an RTSP status when there is none. */
static int request_target(const struct session *s, const char *url, size_t len,
			  struct rtsp_target *t)
{
	struct rtsp_url u;
	const char *path = "/";
	size_t path_len = 1, authority_len = 0;

	memset(t, 0, sizeof(*t));
	if (len == 1 && url[0] == '*') {
		t->route = route_match(s->cfg, path, path_len, NULL, 0);
		return t->route ? 0 : 404;
	}
	if (parse_request_uri(url, len, &u) < 0)
		return 400;
	authority_len = (size_t)(u.path - url);
	if (u.path_len) {
		path = u.path;
		path_len = u.path_len;
	}
	t->route = route_match(s->cfg, path, path_len, u.host, strlen(u.host));
	if (!t->route)
		return 404;
	if (t->route->kind == ROUTE_URL_EMBEDDED)
		return target_embedded(t->route, url, path, path_len, t) < 0 ? 400 : 0;
	t->prefix_len = authority_len;
	if (t->route->strip_prefix && u.path_len) {
		size_t n = t->route->prefix_len;

		/* "/cam/" strips "/cam": the URL keeps its '/' after the prefix. */
		if (n && t->route->prefix[n - 1] == '/')
			n--;
		t->prefix_len += n;
	}
	return copy_text(t->nocred_prefix, sizeof(t->nocred_prefix), url, t->prefix_len, "", 0) <
			       0 ?
		       414 :
		       0;
}

static int dest_text(const struct rtsp_url *d, char *out, size_t cap)
{
	struct rtsp_url bare = *d;

	bare.path_len = 0;
	return rtsp_url_format(&bare, out, cap) < 0 ? -1 : 0;
}

/* The first routed request: where the connection goes. MSG_STOP after an answer or error. */
static enum msg_result start_upstream(struct session *s, struct rtsp_conn *c,
				      const struct rtsp_target *t, const struct rtsp_head *h)
{
	const struct route *r = t->route;

	c->route = r;
	memcpy(c->client_prefix, t->nocred_prefix, sizeof(c->client_prefix));
	s->x->req_method = (uint8_t)h->http.parser.method;
	/* The connection's target for its lifetime: given back when the session closes. */
	if (!session_target_start(s)) {
		answer_close(s, c, 500);
		return MSG_STOP;
	}
	s->x->target->route = r;
	s->route = r;
	if (r->auth) {
		const char *colon = strchr(r->auth, ':');

		c->has_cred = true;
		snprintf(c->user, sizeof(c->user), "%.*s", (int)(colon - r->auth), r->auth);
		snprintf(c->pass, sizeof(c->pass), "%s", colon + 1);
	}
	if (r->kind == ROUTE_UPSTREAM) {
		upstream_conn_choose_server(s);
	} else {
		const struct rtsp_url *d = &t->dest;
		char addr[RTSP_URL_HOST_MAX + 16];

		if (dest_text(d, c->upstream_prefix, sizeof(c->upstream_prefix)) < 0) {
			answer_close(s, c, 414);
			return MSG_STOP;
		}
		snprintf(c->dest, sizeof(c->dest), "%s:%u", d->host, d->port);
		if (d->has_credentials) {
			c->has_cred = true;
			memcpy(c->user, d->user, sizeof(c->user));
			memcpy(c->pass, d->pass, sizeof(c->pass));
		}
		snprintf(s->x->target->host, sizeof(s->x->target->host), "%s", d->host);
		s->x->target->port = d->port;
		s->x->target->host_is_literal = d->host_is_literal;
		snprintf(addr, sizeof(addr), d->ipv6 ? "[%s]:%u" : "%s:%u", d->host, d->port);
		if (d->host_is_literal &&
		    (parse_addr_port(addr, &s->x->target->addr, false) < 0 ||
		     !route_destination_allowed(s->cfg, d->host, &s->x->target->addr))) {
			log_info("session %lu: destination %s denied", (unsigned long)s->id, addr);
			answer_close(s, c, 403);
			return MSG_STOP;
		}
		upstream_conn_to_destination(s);
	}
	/* A connect that completed at once already made the session ready. */
	return s->state == S_EXCHANGE && c->connected ? MSG_RETRY : MSG_STOP;
}

static void rtsp_connected(struct session *s)
{
	struct rtsp_conn *c = conn_of(s);

	s->state = S_EXCHANGE;
	c->connected = true;
	if (c->route->kind == ROUTE_UPSTREAM)
		snprintf(c->upstream_prefix, sizeof(c->upstream_prefix), "rtsp://%s",
			 s->up_addr_text);
	/* Both flows carry the framed streams until the end; this file fills them. */
	s->x->req.use_splice = s->x->resp.use_splice = false;
	flow_start_body(&s->x->req, FRAMING_CLOSE, 0);
	flow_start_body(&s->x->resp, FRAMING_CLOSE, 0);
	s->x->final_response = s->x->response_started = true;
	tcp_window_check(&c->win, s->client.fd, s->cfg->user_timeout_ms, s->x->resp.bytes_out);
	arm_exchange_timer(s, c);
}

/* ---- rewriting */

static bool is_sdp(const struct rtsp_head *h, const char *base)
{
	static const char sdp[] = "application/sdp";

	return h->content_type.len >= sizeof(sdp) - 1 &&
	       !strncasecmp(base + h->content_type.off, sdp, sizeof(sdp) - 1);
}

static size_t grow_room(const struct rtsp_url_map *m, size_t len)
{
	size_t grow = m->client_len > m->upstream_len ? m->client_len - m->upstream_len :
							m->upstream_len - m->client_len;

	return len + (len / RTSP_MIN_URL_LINE + 1) * grow + RTSP_REWRITE_SLACK;
}

/*
 * The message at @base (head @h, @body_len bytes of body) rewritten by @rw and appended to
 * @out: the head, then the body (an SDP's absolute controls mapped too). *@head_len is the new
 * head's length. RTSP_REWRITE_NOMEM, or an rtsp_rw_result.
 */
static int rewrite_message(const char *base, const struct rtsp_head *h, size_t body_len,
			   struct rtsp_rewrite *rw, struct buf *out, size_t *head_len)
{
	const char *body = base + h->head_len;
	char *sdp = NULL, *head = NULL;
	size_t cap, n = body_len, hl;
	int r;

	if (body_len && is_sdp(h, base)) {
		cap = grow_room(rw->map, body_len);
		sdp = malloc(cap);
		if (!sdp)
			return RTSP_REWRITE_NOMEM;
		r = rtsp_rewrite_sdp(body, body_len, rw->map, rw->dir, sdp, cap, &n);
		if (r != RTSP_RW_OK)
			goto out;
		rw->content_length = (int64_t)n;
		body = sdp;
	}
	cap = grow_room(rw->map, h->head_len);
	head = malloc(cap);
	r = head ? rtsp_rewrite_head(base, h, rw, head, cap, &hl) : RTSP_REWRITE_NOMEM;
	if (r != RTSP_RW_OK)
		goto out;
	*head_len = hl;
	r = buf_append(out, head, hl) < 0 || buf_append(out, body, n) < 0 ? RTSP_REWRITE_NOMEM :
									    RTSP_RW_OK;
out:
	free(head);
	free(sdp);
	return r;
}

/* ---- requests from the client */

static void cseq_text(struct rtsp_conn *c, const struct rtsp_head *h, const char *base)
{
	c->cseq[0] = '\0';
	if (h->has_cseq && h->cseq_span.len < sizeof(c->cseq)) {
		memcpy(c->cseq, base + h->cseq_span.off, h->cseq_span.len);
		c->cseq[h->cseq_span.len] = '\0';
	}
	if (h->has_cseq && h->cseq > c->last_cseq)
		c->last_cseq = h->cseq;
}

/* A head the parser refused: its CSeq found by hand, so the 4xx still echoes it. */
static void cseq_scan(struct rtsp_conn *c, const char *p, size_t len)
{
	static const char name[] = "\ncseq:";
	size_t n = 0;

	c->cseq[0] = '\0';
	for (size_t i = 0; i + sizeof(name) - 1 < len; i++) {
		if (strncasecmp(p + i, name, sizeof(name) - 1))
			continue;
		i += sizeof(name) - 1;
		while (i < len && (p[i] == ' ' || p[i] == '\t'))
			i++;
		while (i < len && p[i] >= '0' && p[i] <= '9' && n + 1 < sizeof(c->cseq))
			c->cseq[n++] = p[i++];
		c->cseq[n] = '\0';
		return;
	}
}

static bool session_known(const struct rtsp_conn *c, const char *id, size_t len, unsigned int *at)
{
	for (unsigned int i = 0; i < c->n_sessions; i++) {
		if (strlen(c->sessions[i]) == len && !memcmp(c->sessions[i], id, len)) {
			*at = i;
			return true;
		}
	}
	return false;
}

/*
 * Send the request @e (its message without Authorization) upstream, with kfwd's Authorization
 * when @add_auth and a challenge is known, and track it until its response. Takes @e's memory.
 */
static int queue_request(struct session *s, struct rtsp_conn *c, struct rtsp_sent *e, bool add_auth)
{
	char line[RTSP_AUTH_LINE_MAX];
	size_t hl = e->head_len;
	int rc;

	if (add_auth && c->has_challenge && auth_line(c, e, line, sizeof(line)) == 0)
		rc = buf_append(&c->to_upstream, e->msg, hl - 2) < 0 ||
				     buf_append(&c->to_upstream, line, strlen(line)) < 0 ||
				     buf_append(&c->to_upstream, e->msg + hl - 2,
						e->msg_len - hl + 2) < 0 ?
			     -1 :
			     0;
	else
		rc = buf_append(&c->to_upstream, e->msg, e->msg_len);
	if (!c->has_cred) {
		/* Nothing to answer a 401 with: keep only what the states need. */
		free(e->msg);
		e->msg = NULL;
	}
	/* The oldest request was answered 504 and its late answer never came: it gives way. */
	if (c->n_sent == RTSP_SENT_MAX && c->sent[0].timed_out) {
		sent_free(&c->sent[0]);
		memmove(&c->sent[0], &c->sent[1], (c->n_sent - 1) * sizeof(c->sent[0]));
		c->n_sent--;
	}
	if (c->n_sent < RTSP_SENT_MAX)
		c->sent[c->n_sent++] = *e;
	else
		sent_free(e);
	if (rc < 0 || flush_to_upstream(s, c) < 0)
		return -1;
	return 0;
}

/* What a request does to the states kfwd keeps (sessions to tear down, the aggregate URL). */
static void note_request(struct rtsp_conn *c, const struct rtsp_head *h, const char *base,
			 const char *uri)
{
	unsigned int at;

	if (h->http.parser.method == HTTP_TEARDOWN &&
	    session_known(c, base + h->session_id.off, h->session_id.len, &at)) {
		memmove(c->sessions[at], c->sessions[at + 1],
			(c->n_sessions - at - 1) * sizeof(c->sessions[0]));
		c->n_sessions--;
	}
	if (h->http.parser.method == HTTP_PLAY ||
	    (h->http.parser.method == HTTP_SETUP && !c->teardown_url[0]))
		snprintf(c->teardown_url, sizeof(c->teardown_url), "%s", uri);
}

static enum msg_result answered(struct session *s, struct rtsp_conn *c, int status,
				const char *extra)
{
	if (answer(s, c, status, extra) < 0) {
		session_close(s);
		return MSG_STOP;
	}
	return MSG_DONE;
}

/* The request rewritten toward the upstream and queued. */
static enum msg_result forward_request(struct session *s, struct rtsp_conn *c,
				       const struct rtsp_target *t, const char *base,
				       const struct rtsp_head *h, size_t body_len)
{
	const char *url = base + h->http.url.off;
	struct rtsp_url_map map = { url, t->prefix_len, c->upstream_prefix,
				    strlen(c->upstream_prefix) };
	struct rtsp_rewrite rw = { &map, RTSP_TO_UPSTREAM, RTSP_VIA_NAME,
				   h->http.parser.method == HTTP_SETUP, -1 };
	char uri[RTSP_URL_MAX];
	struct rtsp_out o = { uri, sizeof(uri) - 1, 0, false };
	struct rtsp_sent e = { .cseq = h->cseq,
			       .method = (uint8_t)h->http.parser.method,
			       .has_cseq = h->has_cseq,
			       .sent_ms = now_ms() };
	struct buf msg = { 0 };
	int r;

	rtsp_map_url(&map, RTSP_TO_UPSTREAM, url, h->http.url.len, &o);
	if (o.overflow)
		return answered(s, c, 414, NULL);
	uri[o.len] = '\0';
	r = rewrite_message(base, h, body_len, &rw, &msg, &e.head_len);
	if (r == RTSP_RW_NO_TRANSPORT || r == RTSP_RW_OVERFLOW || r == RTSP_RW_MALFORMED) {
		buf_free(&msg);
		return answered(s, c,
				r == RTSP_RW_NO_TRANSPORT ? 461 :
				r == RTSP_RW_OVERFLOW	  ? 413 :
							    400,
				NULL);
	}
	e.msg = buf_start(&msg);
	e.msg_len = buf_len(&msg);
	e.uri = strdup(uri);
	e.method_name = strndup(base, strcspn(base, " "));
	e.auth_retried = rtsp_header_next(h, base, "Authorization", -1) >= 0;
	if (r != RTSP_RW_OK || !e.uri || !e.method_name ||
	    queue_request(s, c, &e, !e.auth_retried) < 0) {
		if (r != RTSP_RW_OK || !e.uri || !e.method_name)
			sent_free(&e);
		session_close(s);
		return MSG_STOP;
	}
	note_request(c, h, base, uri);
	s->requests++;
	arm_exchange_timer(s, c);
	return MSG_DONE;
}

/* 405 with the methods the route allows, in Public (RTSP's Allow). */
static enum msg_result method_not_allowed(struct session *s, struct rtsp_conn *c,
					  const struct route *r)
{
	char allow[512], extra[560];

	route_allow_header(r, allow, sizeof(allow));
	snprintf(extra, sizeof(extra), "Public: %s\r\n", allow);
	return answered(s, c, 405, extra);
}

/*
 * The access log's record of the request being handled: one at a time, a pipelined request
 * ends the record of the one before (without its status). A first request that waited for its
 * connection is handled twice: one record.
 */
static void log_begin(struct session *s, struct rtsp_conn *c, const struct rtsp_head *h,
		      const char *base)
{
	if (s->x->log_pending && h->has_cseq && c->log_cseq == h->cseq)
		return;
	session_access_end(s);
	s->x->req_method = (uint8_t)h->http.parser.method;
	session_access_begin(s, base + h->http.url.off, h->http.url.len);
	c->log_cseq = h->cseq;
}

static enum msg_result client_request(struct session *s, struct rtsp_conn *c, const char *base,
				      const struct rtsp_head *h, size_t body_len)
{
	const char *url = base + h->http.url.off;
	struct rtsp_target t;
	int status;

	cseq_text(c, h, base);
	log_begin(s, c, h, base);
	if (c->rejecting) {
		answer_close(s, c, RTSP_SERVICE_UNAVAILABLE);
		return MSG_STOP;
	}
	if (h->proxy_require.len) {
		char extra[RTSP_REPLY_MAX / 2];

		snprintf(extra, sizeof(extra), "Unsupported: %.*s\r\n",
			 (int)(h->proxy_require.len < sizeof(extra) - 20 ? h->proxy_require.len :
									   sizeof(extra) - 20),
			 base + h->proxy_require.off);
		return answered(s, c, 551, extra);
	}
	if (c->route && h->http.url.len == 1 && url[0] == '*') {
		memset(&t, 0, sizeof(t));
		t.route = c->route;
		status = 0;
	} else {
		status = request_target(s, url, h->http.url.len, &t);
	}
	if (status)
		return answered(s, c, status, NULL);
	if (!route_allows_method(t.route, h->http.parser.method))
		return method_not_allowed(s, c, t.route);
	if (!c->route)
		return start_upstream(s, c, &t, h);
	if (t.route->kind == ROUTE_URL_EMBEDDED && t.prefix_len) {
		char d[RTSP_URL_MAX];

		snprintf(d, sizeof(d), "%s:%u", t.dest.host, t.dest.port);
		if (strcmp(d, c->dest))
			t.route = NULL;
	}
	/* One upstream connection per client connection: another destination is refused. */
	if (t.route != c->route)
		return answered(s, c, 400, NULL);
	if (!c->connected)
		return MSG_STOP;
	return forward_request(s, c, &t, base, h, body_len);
}

/* A message of the client: a request, or its answer to a server request. */
static enum msg_result client_message(struct session *s, struct rtsp_conn *c, const char *base,
				      const struct rtsp_head *h, size_t body_len)
{
	struct rtsp_url_map map = { c->client_prefix, strlen(c->client_prefix), c->upstream_prefix,
				    strlen(c->upstream_prefix) };
	struct rtsp_rewrite rw = { &map, RTSP_TO_UPSTREAM, RTSP_VIA_NAME, false, -1 };
	enum msg_result res;
	size_t hl;
	int r;

	if (h->is_request) {
		res = client_request(s, c, base, h, body_len);
		if (res == MSG_DONE) {
			c->requests++;
			stats.rtsp_requests++;
			if (!c->route)
				timer_arm(&s->timer, s->cfg->client_timeout_ms);
		}
		return res;
	}
	if (!c->connected)
		return MSG_DONE; /* no server asked anything */
	r = rewrite_message(base, h, body_len, &rw, &c->to_upstream, &hl);
	if (r != RTSP_RW_OK || flush_to_upstream(s, c) < 0) {
		session_close(s);
		return MSG_STOP;
	}
	return MSG_DONE;
}

/* ---- messages from the server */

static int sent_find(const struct rtsp_conn *c, const struct rtsp_head *h)
{
	for (unsigned int i = 0; h->has_cseq && i < c->n_sent; i++)
		if (c->sent[i].cseq == h->cseq)
			return (int)i;
	return -1;
}

static void sent_remove(struct rtsp_conn *c, unsigned int i, bool free_it)
{
	if (free_it)
		sent_free(&c->sent[i]);
	memmove(&c->sent[i], &c->sent[i + 1], (c->n_sent - i - 1) * sizeof(c->sent[0]));
	c->n_sent--;
}

/*
 * A 401 to a request kfwd holds credentials for: send it again with an Authorization answering
 * the challenge, and keep the 401 from the client. False when it cannot be answered.
 */
static bool answer_challenge(struct session *s, struct rtsp_conn *c, unsigned int i,
			     const struct rtsp_head *h, const char *base)
{
	struct rtsp_sent e = c->sent[i];
	struct rtsp_challenge ch;

	if (!c->has_cred || e.auth_retried || !e.msg || rtsp_auth_choose(h, base, &ch) < 0)
		return false;
	if (!c->has_challenge || strcmp(ch.nonce, c->chal.nonce)) {
		c->nc = 0;
		if (rtsp_auth_cnonce(c->cnonce) < 0)
			return false;
	}
	c->chal = ch;
	c->has_challenge = true;
	sent_remove(c, i, false);
	e.auth_retried = true;
	e.sent_ms = now_ms();
	if (queue_request(s, c, &e, true) < 0) {
		session_close(s);
		return true;
	}
	log_debug("session %lu: answered the challenge of %s", (unsigned long)s->id,
		  s->up_addr_text);
	return true;
}

static void note_response(struct rtsp_conn *c, uint8_t method, const struct rtsp_head *h,
			  const char *base)
{
	unsigned int at;

	if (h->status < 200 || h->status >= 300)
		return;
	switch (method) {
	case HTTP_DESCRIBE:
		if (c->play < RTSP_ST_SETUP)
			c->play = RTSP_ST_DESCRIBED;
		if (h->content_base.len && h->content_base.len < sizeof(c->teardown_url) &&
		    !c->teardown_url[0])
			snprintf(c->teardown_url, sizeof(c->teardown_url), "%.*s",
				 (int)h->content_base.len, base + h->content_base.off);
		break;
	case HTTP_SETUP:
		if (c->play < RTSP_ST_SETUP)
			c->play = RTSP_ST_SETUP;
		if (h->session_id.len && h->session_id.len < RTSP_ID_MAX &&
		    !session_known(c, base + h->session_id.off, h->session_id.len, &at) &&
		    c->n_sessions < RTSP_SESSIONS_MAX) {
			memcpy(c->sessions[c->n_sessions], base + h->session_id.off,
			       h->session_id.len);
			c->sessions[c->n_sessions++][h->session_id.len] = '\0';
		}
		break;
	case HTTP_PLAY:
		c->play = RTSP_ST_PLAYING;
		break;
	case HTTP_PAUSE:
		c->play = RTSP_ST_PAUSED;
		break;
	case HTTP_TEARDOWN:
		if (!c->n_sessions)
			c->play = RTSP_ST_INIT;
		break;
	default:
		break;
	}
}

/* A response, or a request of the server: its URLs back to the client's, then queued. */
static enum msg_result server_message(struct session *s, struct rtsp_conn *c, const char *base,
				      const struct rtsp_head *h, size_t body_len)
{
	struct rtsp_url_map map = { c->client_prefix, strlen(c->client_prefix), c->upstream_prefix,
				    strlen(c->upstream_prefix) };
	struct rtsp_rewrite rw = { &map, RTSP_TO_CLIENT, RTSP_VIA_NAME, false, -1 };
	size_t hl;
	int i, r;

	if (!h->is_request) {
		stats.rtsp_responses++;
		i = sent_find(c, h);
		if (i >= 0 && h->status == 401 && answer_challenge(s, c, (unsigned int)i, h, base))
			return s->client.fd >= 0 ? MSG_DONE : MSG_STOP;
		if (i >= 0 && (c->sent[i].timed_out || c->sent[i].own)) {
			/* The client's CSeq was answered 504, or the request was kfwd's. */
			log_debug("session %lu: answer to CSeq %u of %s not forwarded",
				  (unsigned long)s->id, h->cseq, s->up_addr_text);
			note_response(c, c->sent[i].method, h, base);
			sent_remove(c, (unsigned int)i, true);
			return MSG_DONE;
		}
		if (i >= 0) {
			note_response(c, c->sent[i].method, h, base);
			sent_remove(c, (unsigned int)i, true);
		}
		if (s->x->log_pending && h->has_cseq && h->cseq == c->log_cseq) {
			session_final_status(s, h->status);
			session_access_end(s);
		} else {
			session_count_status(h->status);
			s->last_status = h->status;
		}
	}
	r = rewrite_message(base, h, body_len, &rw, &c->to_client, &hl);
	if (r != RTSP_RW_OK) {
		log_info("session %lu: cannot rewrite a message of %s", (unsigned long)s->id,
			 s->up_addr_text);
		answer_close(s, c, 502);
		return MSG_STOP;
	}
	if (flush_to_client(s, c) < 0) {
		session_close(s);
		return MSG_STOP;
	}
	return MSG_DONE;
}

/* ---- reading both sides */

static struct endpoint *side_src(struct session *s, bool from_client)
{
	return from_client ? &s->client : &s->x->upstream;
}

static struct flow *side_dst(struct session *s, bool from_client)
{
	return from_client ? &s->x->req : &s->x->resp;
}

/* A head is buffered: handle its message once the body is there too. As side_consume(). */
static int message_ready(struct session *s, struct rtsp_conn *c, struct rtsp_side *sd,
			 bool from_client)
{
	struct buf *in = &side_src(s, from_client)->in;
	const struct rtsp_head *h = &sd->fr.head;
	size_t body = (size_t)h->content_length, need = h->head_len + body;
	enum msg_result r;

	if (buf_len(in) < need)
		return 0;
	r = from_client ? client_message(s, c, buf_start(in), h, body) :
			  server_message(s, c, buf_start(in), h, body);
	if (r == MSG_STOP || s->client.fd < 0)
		return -1;
	if (r == MSG_RETRY)
		return c->connected && s->state == S_EXCHANGE ? 1 : -1;
	buf_consume(in, need);
	rtsp_frame_moved(&sd->fr, body);
	sd->head_ready = false;
	return 1;
}

/* A '$' frame header: forwarded, or the whole frame discarded for a slow client. */
static int frame_header(struct session *s, struct rtsp_conn *c, struct rtsp_side *sd,
			bool from_client, uint32_t len)
{
	struct buf *in = &side_src(s, from_client)->in;
	struct flow *dst = side_dst(s, from_client);
	enum flow_dir dir = from_client ? DIR_REQUEST : DIR_RESPONSE;

	if (!from_client && c->route && c->route->drop_frames &&
	    flow_level(dst) >= flow_high_water(dst)) {
		sd->dropping = sd->fr.state == RTSP_FR_PAYLOAD;
		c->frames_dropped++;
		c->bytes_dropped += RTSP_FRAME_HDR_LEN + len;
		stats.rtsp_frames_dropped++;
		stats.rtsp_bytes_dropped += RTSP_FRAME_HDR_LEN + len;
	} else {
		if (flow_push(dst, buf_start(in), RTSP_FRAME_HDR_LEN) < 0) {
			session_close(s);
			return -1;
		}
		c->frames[dir]++;
		c->frame_bytes[dir] += RTSP_FRAME_HDR_LEN + len;
		stats.rtsp_frames++;
	}
	buf_consume(in, RTSP_FRAME_HDR_LEN);
	return 1;
}

/* Payload bytes of the frame in progress, as far as they are buffered. */
static int payload_bytes(struct session *s, struct rtsp_side *sd, bool from_client)
{
	struct buf *in = &side_src(s, from_client)->in;
	uint64_t pending = rtsp_frame_pending(&sd->fr);
	size_t n = buf_len(in) < pending ? buf_len(in) : (size_t)pending;

	if (!n)
		return 0;
	if (!sd->dropping && flow_push(side_dst(s, from_client), buf_start(in), n) < 0) {
		session_close(s);
		return -1;
	}
	rtsp_frame_moved(&sd->fr, n);
	buf_consume(in, n);
	if (sd->fr.state != RTSP_FR_PAYLOAD)
		sd->dropping = false;
	return 1;
}

/* The framer refused the side's bytes: 4xx to a client, 502 for a server; then close. */
static void side_error(struct session *s, struct rtsp_conn *c, struct rtsp_side *sd,
		       bool from_client)
{
	struct buf *in = &side_src(s, from_client)->in;

	if (!from_client) {
		log_info("session %lu: upstream %s sent a malformed message", (unsigned long)s->id,
			 s->up_addr_text);
		answer_close(s, c, 502);
		return;
	}
	log_debug("session %lu: bad request: %s", (unsigned long)s->id,
		  sd->fr.error == RTSP_FRAME_GARBAGE ? "garbage" : sd->fr.head.error_reason);
	cseq_scan(c, buf_start(in), buf_len(in));
	answer_close(s, c,
		     sd->fr.error == RTSP_FRAME_GARBAGE ? 400 :
							  rtsp_error_status(sd->fr.head.error));
}

/* One item of the bytes buffered from a side: 1 when something was consumed, 0 when more
 * bytes are needed, -1 when the session moved on. */
static int side_consume(struct session *s, struct rtsp_conn *c, bool from_client)
{
	struct rtsp_side *sd = from_client ? &c->c2s : &c->s2c;
	struct buf *in = &side_src(s, from_client)->in;
	struct rtsp_frame_event ev;

	if (sd->fr.state == RTSP_FR_PAYLOAD)
		return payload_bytes(s, sd, from_client);
	/* Draining: the client's stream ends here, at a boundary (no message of it queued yet). */
	if (!from_client && c->drain_closing)
		return 0;
	if (sd->head_ready)
		return message_ready(s, c, sd, from_client);
	if (!buf_len(in))
		return 0;
	/* A boundary: kfwd's own messages for this side's peer go before the next item. */
	if ((from_client ? flush_to_upstream(s, c) : flush_to_client(s, c)) < 0) {
		session_close(s);
		return -1;
	}
	rtsp_frame_step(&sd->fr, (uint8_t *)buf_start(in), buf_len(in), &ev);
	switch (ev.kind) {
	case RTSP_EV_HEAD:
		sd->head_ready = true;
		return message_ready(s, c, sd, from_client);
	case RTSP_EV_FRAME:
		return frame_header(s, c, sd, from_client, ev.len);
	case RTSP_EV_ERROR:
		side_error(s, c, sd, from_client);
		return -1;
	default:
		return 0;
	}
}

/* Discard the rest of a dropped frame in the kernel: MSG_TRUNC copies nothing (TCP). */
static int discard_payload(struct session *s, struct rtsp_side *sd, size_t want)
{
	ssize_t n = recv(s->x->upstream.fd, NULL, want, MSG_TRUNC | MSG_DONTWAIT);

	if (n > 0) {
		rtsp_frame_moved(&sd->fr, (uint64_t)n);
		if (sd->fr.state != RTSP_FR_PAYLOAD)
			sd->dropping = false;
		return 1;
	}
	if (n == 0) {
		s->x->upstream.rd_eof = true;
		return 1;
	}
	if (errno == EAGAIN || errno == EINTR) {
		s->x->upstream.readable = false;
		return 0;
	}
	s->x->upstream.rd_eof = true;
	return 1;
}

/*
 * How much the side may read now: RTSP_READ_BATCH, the rest of the frame in progress when its
 * peer holds too much (a pause never falls between a frame's header and its payload), or 0
 * (paused; on-slow=drop-frames keeps reading, and dropping, up to RTSP_DROP_HOLD_FACTOR).
 */
static size_t read_allowance(struct session *s, struct rtsp_conn *c, struct rtsp_side *sd,
			     bool from_client)
{
	struct flow *dst = side_dst(s, from_client);
	size_t level = flow_level(dst), high = flow_high_water(dst);
	uint64_t pending = rtsp_frame_pending(&sd->fr);
	bool in_frame = sd->fr.state == RTSP_FR_PAYLOAD;

	if (!from_client && c->drain_closing) /* the rest of the frame in progress, no more */
		return in_frame && !sd->dropping ?
			       (pending < RTSP_READ_BATCH ? (size_t)pending : RTSP_READ_BATCH) :
			       0;
	if (!dst->paused && level < high)
		return RTSP_READ_BATCH;
	if (in_frame)
		return pending < RTSP_READ_BATCH ? (size_t)pending : RTSP_READ_BATCH;
	if (!from_client && c->route && c->route->drop_frames &&
	    level < high * RTSP_DROP_HOLD_FACTOR)
		return RTSP_READ_BATCH;
	flow_hold_full(dst);
	return 0;
}

/* Read from a side: 1 when bytes (or the end) came, 0 when nothing can come now. */
static int side_read(struct session *s, struct rtsp_conn *c, bool from_client)
{
	struct rtsp_side *sd = from_client ? &c->c2s : &c->s2c;
	struct endpoint *src = side_src(s, from_client);
	const struct config *cfg = s->cfg;
	size_t want;
	ssize_t n;

	if (src->fd < 0 || src->rd_eof || !endpoint_readable(src))
		return 0;
	want = read_allowance(s, c, sd, from_client);
	if (!want)
		return 0;
	if (sd->dropping && !buf_len(&src->in) && src->xprt == &xprt_raw)
		return discard_payload(s, sd, want);
	if (buf_reserve(&src->in, want, cfg->max_header_size + RTSP_BODY_MAX + RTSP_READ_BATCH) <
	    0) {
		session_close(s);
		return -1;
	}
	n = endpoint_recv_buf(src, &src->in, want);
	if (n > 0)
		return 1;
	if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
		src->readable = false;
		buf_release(&src->in);
		return 0;
	}
	/* The end, or a reset: what was read before still goes on. */
	src->rd_eof = true;
	return 1;
}

/* Consume and read a side, within RTSP_READ_BUDGET reads. -1 when the session moved on. */
static int side_run(struct session *s, struct rtsp_conn *c, bool from_client, bool *progress)
{
	for (int reads = 0;; reads++) {
		int r;

		while ((r = side_consume(s, c, from_client)) > 0)
			*progress = true;
		if (r < 0)
			return -1;
		if (reads == RTSP_READ_BUDGET)
			return 0;
		r = side_read(s, c, from_client);
		if (r <= 0)
			return r;
		*progress = true;
	}
}

/* The client left: its sessions are torn down, then both connections close. */
static void client_gone(struct session *s, struct rtsp_conn *c)
{
	log_debug("session %lu: client gone", (unsigned long)s->id);
	send_teardowns(s, c, "client gone");
	session_close(s);
}

/* The server is done with: what it sent still reaches the client, then the client is closed. */
static void finish_to_client(struct session *s, struct rtsp_conn *c)
{
	if (flush_queue(&s->x->resp, &c->to_client) < 0) {
		session_close(s);
		return;
	}
	session_close_upstream(s);
	s->x->resp.active = false;
	s->state = S_REPLYING;
	timer_arm(&s->timer, s->cfg->client_timeout_ms);
}

static void upstream_gone(struct session *s, struct rtsp_conn *c)
{
	log_info("session %lu: upstream %s closed the connection", (unsigned long)s->id,
		 s->up_addr_text);
	finish_to_client(s, c);
}

/*
 * Draining: TEARDOWN for the client's sessions (once its stream toward the server is between
 * frames), then, with no answer awaited or after RTSP_DRAIN_WAIT_MS, the end at the next frame
 * boundary of the server's stream: the client reads whole messages and frames, then EOF.
 */
static void drain_step(struct session *s, struct rtsp_conn *c)
{
	if (c->n_sessions)
		send_teardowns(s, c, "draining");
	if (!c->drain_closing && (!answers_awaited(c) || now_ms() >= c->drain_deadline_ms))
		c->drain_closing = true;
	if (!c->drain_closing || side_mid_frame(&c->s2c))
		return;
	log_info("session %lu: draining, closed at a frame boundary", (unsigned long)s->id);
	finish_to_client(s, c);
}

/* Deliver what both flows hold. 1 when bytes moved, 0 when none, -1 when a peer failed. */
static int flush_flows(struct session *s, struct rtsp_conn *c)
{
	uint64_t before = s->x->req.bytes_out + s->x->resp.bytes_out;

	if (flow_flush(&s->x->resp) != FLOW_OK) {
		client_gone(s, c);
		return -1;
	}
	if (c->connected && flow_flush(&s->x->req) != FLOW_OK) {
		upstream_gone(s, c);
		return -1;
	}
	return s->x->req.bytes_out + s->x->resp.bytes_out != before;
}

static void rtsp_step(struct session *s)
{
	struct rtsp_conn *c = conn_of(s);

	if (!c) {
		c = conn_create(s);
		if (!c) {
			session_close(s);
			return;
		}
	}
	for (int round = 0; round < RTSP_READ_BUDGET; round++) {
		bool progress = false;
		int r = flush_flows(s, c);

		if (r < 0)
			return;
		if (side_run(s, c, true, &progress) < 0)
			return;
		if (c->connected && side_run(s, c, false, &progress) < 0)
			return;
		r = flush_flows(s, c);
		if (r < 0)
			return;
		if (!progress && !r)
			break;
	}
	if (c->connected)
		tcp_window_progress(&c->win, s->client.fd, s->cfg->user_timeout_ms,
				    s->x->resp.bytes_out);
	if (s->client.rd_eof)
		client_gone(s, c);
	else if (c->connected && s->x->upstream.rd_eof)
		upstream_gone(s, c);
	else if (c->draining && c->connected && s->state == S_EXCHANGE)
		drain_step(s, c);
}

static void rtsp_timeout(struct session *s)
{
	struct rtsp_conn *c = conn_of(s);
	uint64_t now = now_ms(), last;

	if (s->state != S_EXCHANGE) {
		upstream_conn_timeout(s);
		return;
	}
	if (!c || !c->connected) {
		/* No request (or none routed) within client-timeout. */
		session_close(s);
		return;
	}
	if (expire_requests(s, c) < 0) {
		session_close(s);
		return;
	}
	/* A player that paused its reading is not a dead peer (tcp_window.c). */
	if (s->cfg->user_timeout_ms && now >= c->win.next_check_ms)
		tcp_window_check(&c->win, s->client.fd, s->cfg->user_timeout_ms,
				 s->x->resp.bytes_out);
	last = s->x->req.last_progress_ms > s->x->resp.last_progress_ms ?
		       s->x->req.last_progress_ms :
		       s->x->resp.last_progress_ms;
	if (now - last >= session_idle_timeout(s))
		session_exchange_idle(s); /* closes */
	else
		arm_exchange_timer(s, c); /* the drain, if any, goes on in rtsp_step */
}

/* Over max-connections: the first request is read for its CSeq and answered 503, then the
 * connection closes (client-timeout bounds a client that sends nothing). */
static void rtsp_reject(struct session *s)
{
	struct rtsp_conn *c = conn_create(s);

	if (!c) {
		session_close(s);
		return;
	}
	c->rejecting = true;
}

/*
 * SIGTERM: rather than lasting until drain-timeout and being cut there (mid-frame, the
 * server's session left to its timeout), a connection ends at a clean point (drain_step). One
 * with nothing routed yet closes now.
 */
static void rtsp_drain(struct session *s)
{
	struct rtsp_conn *c = conn_of(s);

	if (s->state == S_REPLYING || s->state == S_LINGER)
		return; /* ending already */
	if (!c || !c->route || c->rejecting) {
		session_close(s);
		return;
	}
	c->draining = true;
	c->drain_deadline_ms = now_ms() + RTSP_DRAIN_WAIT_MS;
	if (s->state == S_EXCHANGE && c->connected) {
		arm_exchange_timer(s, c);
		session_run(s);
	}
}

static void rtsp_describe(const struct session *s, struct conn_details *d)
{
	const struct rtsp_conn *c = conn_of(s);

	if (!c)
		return;
	conn_details_add(d, "rtsp-state", "%s", play_names[c->play]);
	if (c->n_sessions)
		conn_details_add(d, "rtsp-session", "%s", c->sessions[c->n_sessions - 1]);
	conn_details_add(d, "rtsp-requests", "%lu", (unsigned long)c->requests);
	conn_details_add(d, "requests-timed-out", "%lu", (unsigned long)c->requests_timed_out);
	conn_details_add(d, "frames-forwarded", "%lu", (unsigned long)c->frames[DIR_RESPONSE]);
	conn_details_add(d, "bytes-forwarded", "%lu", (unsigned long)c->frame_bytes[DIR_RESPONSE]);
	conn_details_add(d, "frames-from-client", "%lu", (unsigned long)c->frames[DIR_REQUEST]);
	conn_details_add(d, "frames-dropped", "%lu", (unsigned long)c->frames_dropped);
	conn_details_add(d, "bytes-dropped", "%lu", (unsigned long)c->bytes_dropped);
	conn_details_add(d, "pauses", "%lu", (unsigned long)s->x->resp.pauses);
	if (c->route)
		conn_details_add(d, "on-slow", "%s",
				 c->route->drop_frames ? "drop-frames" : "pause");
}

const struct proto_ops rtsp_ops = {
	.name = "rtsp",
	.step = rtsp_step,
	.timeout = rtsp_timeout,
	.connected = rtsp_connected,
	.connect_failed = rtsp_connect_failed,
	.release = rtsp_release,
	.describe = rtsp_describe,
	.reject = rtsp_reject,
	.drain = rtsp_drain,
};
