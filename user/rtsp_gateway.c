// SPDX-License-Identifier: GPL-2.0
/*
 * The HTTP->RTSP gateway: a GET on `route /rtsp/ rtsp-gateway` names an RTSP URL
 * (/rtsp/HOST[:PORT]/PATH?QUERY); kfwd plays it as an RTSP client over one TCP connection
 * (OPTIONS, DESCRIBE, SETUP with TCP-interleaved transports, PLAY; 401 answered once with
 * Basic or Digest, 3xx followed a few times) and answers the HTTP client with an endless
 * video/mp2t body: the media channel's frames with their RTP headers stripped. This file owns
 * the gateway's per-connection state (s->x->proto_data), its handshake, the de-framing, the
 * keepalives and the TEARDOWN; the session proper and upstream_conn.c own the sockets.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include "log.h"
#include "route.h"
#include "rtsp_auth.h"
#include "rtsp_frame.h"
#include "rtsp_gateway.h"
#include "rtsp_parse.h"
#include "rtsp_url.h"
#include "stats.h"
#include "tcp_window.h"
#include "upstream_conn.h"
#include "util.h"

#define GW_URL_MAX 2048
#define GW_SESSION_MAX 128
#define GW_REQUEST_MAX (GW_URL_MAX * 2 + 2048)
#define GW_AUTH_MAX 1024
#define GW_MAX_REDIRECTS 5
#define GW_BODY_MAX (256 << 10) /* an SDP; big ones exist (many tracks, long attributes) */
/* Bytes read per recv(): many frames per system call. */
#define GW_READ_CHUNK (64 << 10)
/* What the upstream buffer may hold: a message head and body, or a frame cut at its end. */
#define GW_BUF_MAX (GW_BODY_MAX + (64 << 10) + GW_READ_CHUNK)
#define GW_READ_BUDGET 8
#define GW_CLIENT_READ_BUDGET 4
/*
 * While streaming, the upstream socket wakes kfwd once per this many bytes (SO_RCVLOWAT):
 * at 760 frames/s the wake-ups, not the bytes, are the cost (README, "RTSP").
 * A trickle below it is read by the flush tick.
 */
#define GW_RCVLOWAT (16 << 10)
#define GW_FLUSH_MS 200
#define GW_TEARDOWN_MS 1000 /* the wait for TEARDOWN's answer after the client left */
#define GW_SESSION_TIMEOUT_DEFAULT_S 60 /* RFC 2326 §12.37 */
#define GW_DEFAULT_USER_AGENT "kfwd"
#define TS_SYNC 0x47
#define RTP_PT_MP2T 33 /* RFC 3551 static payload type */
#define RTSP_STATUS_UNAUTHORIZED 401
#define RTSP_STATUS_UNSUPPORTED_TRANSPORT 461

enum gw_state {
	GW_CONNECTING,
	GW_OPTIONS,
	GW_DESCRIBE,
	GW_SETUP,
	GW_PLAY,
	GW_FIRST_MEDIA, /* PLAY answered; the HTTP answer waits for the first media frame */
	GW_STREAMING,
	GW_TEARDOWN, /* the client left: TEARDOWN sent, its answer awaited briefly */
};

enum gw_head_state {
	GW_HEAD_NONE,
	GW_HEAD_PARSING,
};

struct gateway {
	enum gw_state state;
	const struct route *route;
	bool is_head; /* HEAD: OPTIONS and DESCRIBE only */
	bool http10;
	bool outcome_counted;
	bool rtp; /* media frames carry RTP (else MP2T/TCP: bare TS) */
	bool paused;
	bool upstream_done; /* the server closed while streaming: drain, then close */
	bool ka_options; /* keepalive with OPTIONS: no GET_PARAMETER in Public, or refused */
	bool auth_tried; /* the request in progress was answered 401 once already */
	bool have_challenge;
	uint8_t media_channel;
	unsigned int transport_offer; /* index in transport_offers[] */
	unsigned int redirects;
	unsigned int conn_gen; /* counts the connections (redirects): g->in is another one's */
	uint32_t cseq; /* of the last request sent */
	uint32_t cseq_wait; /* the handshake request whose answer is awaited */
	uint32_t ka_first_cseq; /* requests from this CSeq on are keepalives */
	uint32_t teardown_cseq;
	uint32_t nc; /* Digest nonce count */
	uint32_t session_timeout_s;
	struct rtsp_url url; /* path points into url_text */
	char url_text[GW_URL_MAX];
	char url_fmt[GW_URL_MAX]; /* without credentials: OPTIONS, DESCRIBE, PLAY */
	char setup_url[GW_URL_MAX];
	char session[GW_SESSION_MAX];
	struct rtsp_challenge challenge;
	char cnonce[RTSP_AUTH_CNONCE_LEN + 1];
	const char *req_method; /* the handshake request in progress, for a 401 retry */
	const char *req_uri;
	struct buf in; /* upstream bytes not consumed yet */
	enum gw_head_state head_state;
	struct rtsp_head head;
	uint64_t hs_deadline_ms, media_deadline_ms, ka_next_ms, flush_ms, td_deadline_ms;
	uint64_t last_rx_ms;
	struct tcp_window win; /* tcp-user-timeout held back while a paused player is there */
	uint64_t keepalives_sent, keepalives_answered;
	uint64_t frames_forwarded, frames_dropped;
};

static const char *const gw_state_names[] = {
	[GW_CONNECTING] = "connecting",
	[GW_OPTIONS] = "options",
	[GW_DESCRIBE] = "describe",
	[GW_SETUP] = "setup",
	[GW_PLAY] = "play",
	[GW_FIRST_MEDIA] = "first-media",
	[GW_STREAMING] = "streaming",
	[GW_TEARDOWN] = "teardown",
};

/*
 * SETUP's Transport offers, in order: the three TCP transports as one list, then, after a 461
 * (gst-rtsp-server refuses a list whose first entry it does not know), the last two alone.
 */
static const char *const transport_offers[] = {
	("MP2T/RTP/TCP;unicast;interleaved=0-1,MP2T/TCP;unicast;interleaved=0-1,"
	 "RTP/AVP/TCP;unicast;interleaved=0-1"),
	"MP2T/TCP;unicast;interleaved=0-1",
	"RTP/AVP/TCP;unicast;interleaved=0-1",
};

static void arm_timer(struct session *s);

static struct gateway *gw_of(const struct session *s)
{
	return s->x->proto_data;
}

static void count_outcome(struct gateway *g, enum gateway_outcome o)
{
	if (g->outcome_counted)
		return;
	g->outcome_counted = true;
	stats.gateway_handshakes[o]++;
}

static const char *user_agent(const struct session *s)
{
	const struct route *r = gw_of(s)->route;

	if (r->user_agent)
		return r->user_agent;
	return s->cfg->rtsp_user_agent ? s->cfg->rtsp_user_agent : GW_DEFAULT_USER_AGENT;
}

/* ---- requests */

/* The Authorization line for @method @uri when a challenge is known; "" otherwise. */
static int auth_line(struct gateway *g, const char *method, const char *uri, char *out, size_t cap)
{
	char value[GW_AUTH_MAX];

	out[0] = '\0';
	if (!g->have_challenge)
		return 0;
	if (rtsp_auth_authorization(&g->challenge, g->url.user, g->url.pass, method, uri, ++g->nc,
				    g->cnonce, value, sizeof(value)) < 0)
		return -1;
	if ((size_t)snprintf(out, cap, "Authorization: %s\r\n", value) >= cap)
		return -1;
	return 0;
}

/* Queue a request towards the server (sent by the next pump). 0, or -1 (too long, no memory). */
static int send_request(struct session *s, const char *method, const char *uri, const char *extra)
{
	struct gateway *g = gw_of(s);
	char auth[GW_AUTH_MAX + 32], sess[GW_SESSION_MAX + 16] = "", text[GW_REQUEST_MAX];
	int n;

	if (auth_line(g, method, uri, auth, sizeof(auth)) < 0)
		return -1;
	if (g->session[0])
		snprintf(sess, sizeof(sess), "Session: %s\r\n", g->session);
	n = snprintf(text, sizeof(text),
		     "%s %s RTSP/1.0\r\nCSeq: %u\r\nUser-Agent: %s\r\n%s%s%s\r\n", method, uri,
		     g->cseq + 1, user_agent(s), sess, auth, extra ? extra : "");
	if (n < 0 || (size_t)n >= sizeof(text) || flow_push(&s->x->req, text, (size_t)n) < 0)
		return -1;
	g->cseq++;
	return 0;
}

/* A handshake step's request: its answer is awaited (and retried once after a 401). */
static int send_step(struct session *s, const char *method, const char *uri)
{
	struct gateway *g = gw_of(s);
	char extra[256];

	extra[0] = '\0';
	if (!strcmp(method, "DESCRIBE"))
		snprintf(extra, sizeof(extra), "Accept: application/sdp\r\n");
	else if (!strcmp(method, "SETUP"))
		snprintf(extra, sizeof(extra), "Transport: %s\r\n",
			 transport_offers[g->transport_offer]);
	else if (!strcmp(method, "PLAY"))
		snprintf(extra, sizeof(extra), "Range: npt=0.000-\r\n");
	if (send_request(s, method, uri, extra) < 0)
		return -1;
	g->req_method = method;
	g->req_uri = uri;
	g->cseq_wait = g->cseq;
	return 0;
}

/*
 * TEARDOWN now, without waiting for its answer: queued, pumped once, then the write side shut
 * and what the server already sent discarded, so the close that follows is a FIN, not an RST
 * that could destroy the request in flight.
 */
static void teardown_quick(struct session *s)
{
	struct gateway *g = gw_of(s);
	char sink[4096];

	if (s->x->upstream.fd < 0 || !g->session[0])
		return;
	if (send_request(s, "TEARDOWN", g->url_fmt, NULL) < 0 || flow_pump(&s->x->req) != FLOW_OK)
		return;
	if (shutdown(s->x->upstream.fd, SHUT_WR) < 0)
		return;
	for (int i = 0; i < GW_READ_BUDGET; i++)
		if (recv(s->x->upstream.fd, sink, sizeof(sink), MSG_DONTWAIT | MSG_TRUNC) <= 0)
			break;
}

/* The handshake failed before the HTTP answer: @status to the client, TEARDOWN upstream. */
static void gw_fail(struct session *s, int status, enum gateway_outcome o, const char *why)
{
	struct gateway *g = gw_of(s);
	char extra[256];

	log_info("session %lu: rtsp-gateway %s: %s", (unsigned long)s->id, g->url_fmt, why);
	count_outcome(g, o);
	teardown_quick(s);
	if (s->x->response_started) {
		session_close(s);
		return;
	}
	snprintf(extra, sizeof(extra), "X-Kfwd-Error: %s\r\n", why);
	session_reply_error_headers(s, status, extra);
}

/* ---- the HTTP answer */

static int push_answer_head(struct session *s)
{
	struct gateway *g = gw_of(s);
	char head[256];
	int n = snprintf(
		head, sizeof(head),
		"HTTP/1.%d 200 OK\r\nContent-Type: video/mp2t\r\nCache-Control: no-cache\r\n"
		"Connection: close\r\n\r\n",
		g->http10 ? 0 : 1);

	if (flow_push(&s->x->resp, head, (size_t)n) < 0)
		return -1;
	session_final_status(s, 200);
	s->x->final_response = s->x->response_started = true;
	s->close_after = true;
	/*
	 * The stream is charged to max-memory like a close-delimited body: its allowance grows
	 * the client's SO_SNDBUF and the RTSP server's SO_RCVBUF (created at the floor's size)
	 * as the player proves it keeps up.
	 */
	flow_budget_start(&s->x->resp, FRAMING_CLOSE, 0);
	return 0;
}

/* HEAD: DESCRIBE said MPEG-TS; answer with the head alone and close upstream. */
static void answer_head_request(struct session *s)
{
	struct gateway *g = gw_of(s);

	count_outcome(g, GATEWAY_OK);
	teardown_quick(s);
	session_close_upstream(s);
	if (push_answer_head(s) < 0) {
		session_close(s);
		return;
	}
	s->state = S_REPLYING;
	timer_arm(&s->timer, s->cfg->client_timeout_ms);
}

/* The first media frame arrived: the 200 goes out, the stream follows. */
static int start_streaming(struct session *s)
{
	struct gateway *g = gw_of(s);
	int lowat = GW_RCVLOWAT;

	if (push_answer_head(s) < 0) {
		session_close(s);
		return -1;
	}
	count_outcome(g, GATEWAY_OK);
	g->state = GW_STREAMING;
	if (setsockopt(s->x->upstream.fd, SOL_SOCKET, SO_RCVLOWAT, &lowat, sizeof(lowat)) < 0)
		log_debug("SO_RCVLOWAT: %m");
	arm_timer(s);
	return 0;
}

/* ---- URLs and the SDP */

/* The line of @sdp at @p (up to CR/LF), its length. */
static size_t line_len(const char *p, const char *end)
{
	const char *e = p;

	while (e < end && *e != '\r' && *e != '\n')
		e++;
	return (size_t)(e - p);
}

struct sdp_media {
	bool found;
	bool is_ts;
	const char *control;
	size_t control_len;
};

/*
 * The first media of @sdp: MPEG-TS when its first format is the static type 33 or its rtpmap
 * names MP2T; its a=control.
 */
static void sdp_first_media(const char *sdp, size_t len, struct sdp_media *m)
{
	const char *p = sdp, *end = sdp + len;
	char fmt[16] = "";

	memset(m, 0, sizeof(*m));
	for (; p < end;
	     p += line_len(p, end), p += p < end && *p == '\r', p += p < end && *p == '\n') {
		size_t n = line_len(p, end);

		if (n > 2 && !strncmp(p, "m=", 2)) {
			const char *f;
			int k = 0;

			if (m->found)
				break;
			m->found = true;
			/* m=<media> <port> <proto> <fmt> ... */
			f = p;
			for (int field = 0; field < 3 && f < p + n; field++) {
				f = memchr(f, ' ', (size_t)(p + n - f));
				f = f ? f + 1 : p + n;
			}
			while (f < p + n && *f != ' ' && k < (int)sizeof(fmt) - 1)
				fmt[k++] = *f++;
			fmt[k] = '\0';
			m->is_ts = atoi(fmt) == RTP_PT_MP2T && fmt[0];
		} else if (m->found && n > 9 && !strncmp(p, "a=rtpmap:", 9)) {
			size_t fl = strlen(fmt);

			if (!strncmp(p + 9, fmt, fl) && p[9 + fl] == ' ')
				m->is_ts = n >= 9 + fl + 5 && !strncasecmp(p + 10 + fl, "MP2T", 4);
		} else if (m->found && n > 10 && !strncmp(p, "a=control:", 10) && !m->control) {
			m->control = p + 10;
			m->control_len = n - 10;
		}
	}
}

/* ---- handshake answers */

/* (Re)point the gateway at @text (an rtsp:// URL, or the url-embedded form when @embedded). */
static int set_url(struct gateway *g, const char *text, size_t len, bool embedded)
{
	struct rtsp_url old = g->url;
	int rc;

	if (len >= sizeof(g->url_text))
		return -1;
	memcpy(g->url_text, text, len);
	g->url_text[len] = '\0';
	rc = embedded ? rtsp_url_parse_embedded(g->url_text, len, &g->url) :
			rtsp_url_parse(g->url_text, len, &g->url);
	if (rc < 0 || rtsp_url_format(&g->url, g->url_fmt, sizeof(g->url_fmt)) < 0)
		return -1;
	/* A redirect on the same host keeps the credentials the first URL carried. */
	if (!embedded && !g->url.has_credentials && old.has_credentials &&
	    !strcmp(old.host, g->url.host)) {
		g->url.has_credentials = true;
		memcpy(g->url.user, old.user, sizeof(old.user));
		memcpy(g->url.pass, old.pass, sizeof(old.pass));
	}
	return 0;
}

/* Connect to the current URL's server (allow/deny apply as for url-embedded routes). */
static void gw_connect(struct session *s)
{
	struct gateway *g = gw_of(s);
	/* The HTTP request's target (its route), held until the session closes: the gateway
	 * never ends the transaction that started it. */
	struct route_target *t = s->x->target;
	snprintf(t->host, sizeof(t->host), "%s", g->url.host);
	t->port = g->url.port;
	t->host_is_literal = false;
	memset(&t->addr, 0, sizeof(t->addr));
	if (g->url.host_is_literal) {
		char hp[RTSP_URL_HOST_MAX + 16];

		snprintf(hp, sizeof(hp), "%s%s%s:%u", g->url.ipv6 ? "[" : "", g->url.host,
			 g->url.ipv6 ? "]" : "", g->url.port);
		if (parse_addr_port(hp, &t->addr, false) < 0) {
			gw_fail(s, 400, GATEWAY_REFUSED, "bad address");
			return;
		}
		t->host_is_literal = true;
		if (!route_destination_allowed(s->cfg, t->host, &t->addr)) {
			gw_fail(s, 403, GATEWAY_REFUSED, "destination denied");
			return;
		}
	}
	g->state = GW_CONNECTING;
	g->hs_deadline_ms = now_ms() + s->cfg->rtsp_handshake_timeout_ms;
	upstream_conn_to_destination(s);
}

/* A 3xx with Location: start over there (at most GW_MAX_REDIRECTS times). */
static void follow_redirect(struct session *s, const struct rtsp_head *h, const char *base)
{
	struct gateway *g = gw_of(s);
	char target[GW_URL_MAX];

	if (!h->location.len) {
		gw_fail(s, 502, GATEWAY_REFUSED, "redirect without Location");
		return;
	}
	if (++g->redirects > GW_MAX_REDIRECTS) {
		gw_fail(s, 502, GATEWAY_REFUSED, "too many redirects");
		return;
	}
	/* A relative Location is resolved against the URL that answered (RFC 3986 §5.2). */
	if (rtsp_url_resolve(g->url_fmt, base + h->location.off, h->location.len, target,
			     sizeof(target)) < 0 ||
	    set_url(g, target, strlen(target), false) < 0) {
		gw_fail(s, 502, GATEWAY_BAD_ANSWER, "bad redirect Location");
		return;
	}
	log_info("session %lu: rtsp-gateway redirected to %s", (unsigned long)s->id, g->url_fmt);
	g->conn_gen++;
	session_close_upstream(s);
	flow_reset(&s->x->req);
	buf_free(&g->in);
	g->head_state = GW_HEAD_NONE;
	g->session[0] = '\0';
	g->have_challenge = g->auth_tried = g->ka_options = false;
	g->nc = 0;
	gw_connect(s);
}

/* 401: answer the challenge once, with the URL's credentials. */
static void answer_challenge(struct session *s, const struct rtsp_head *h, const char *base)
{
	struct gateway *g = gw_of(s);

	if (g->auth_tried || !g->url.has_credentials ||
	    rtsp_auth_choose(h, base, &g->challenge) < 0) {
		gw_fail(s, 401, GATEWAY_REFUSED, "authorization refused or impossible");
		return;
	}
	g->have_challenge = true;
	g->auth_tried = true;
	g->nc = 0;
	if (rtsp_auth_cnonce(g->cnonce) < 0 || send_step(s, g->req_method, g->req_uri) < 0)
		gw_fail(s, 500, GATEWAY_BAD_ANSWER, "cannot build the request");
}

static void after_describe(struct session *s, const struct rtsp_head *h, const char *base,
			   const char *body, size_t blen)
{
	struct gateway *g = gw_of(s);
	struct sdp_media m;
	char cbase[GW_URL_MAX];
	const struct http_span *b = h->content_base.len ? &h->content_base : &h->content_location;

	sdp_first_media(body, blen, &m);
	if (!m.found || !m.is_ts) {
		gw_fail(s, 502, GATEWAY_NOT_TS,
			m.found ? "the stream is not MPEG-TS" : "no media in the SDP");
		return;
	}
	if (g->is_head) {
		answer_head_request(s);
		return;
	}
	/* A base that is not an absolute URL is ignored: the DESCRIBE URL is the base then. */
	if (b->len && b->len < sizeof(cbase) && rtsp_url_has_scheme(base + b->off, b->len))
		snprintf(cbase, sizeof(cbase), "%.*s", (int)b->len, base + b->off);
	else
		snprintf(cbase, sizeof(cbase), "%s", g->url_fmt);
	/* "*" or no control: the request URL (RFC 2326 §C.1.1). */
	if (!m.control_len || (m.control_len == 1 && m.control[0] == '*') ?
		    (size_t)snprintf(g->setup_url, sizeof(g->setup_url), "%s", g->url_fmt) >=
			    sizeof(g->setup_url) :
		    rtsp_url_resolve(cbase, m.control, m.control_len, g->setup_url,
				     sizeof(g->setup_url)) < 0) {
		gw_fail(s, 502, GATEWAY_BAD_ANSWER, "media control URL too long");
		return;
	}
	g->state = GW_SETUP;
	if (send_step(s, "SETUP", g->setup_url) < 0)
		gw_fail(s, 500, GATEWAY_BAD_ANSWER, "cannot build the request");
}

/* SETUP's Transport answer: the profile and the media's interleaved channel. */
static int after_setup(struct session *s, const struct rtsp_head *h, const char *base)
{
	struct gateway *g = gw_of(s);
	char tr[512];
	const char *il;

	if (!h->transport.len || h->transport.len >= sizeof(tr))
		return -1;
	snprintf(tr, sizeof(tr), "%.*s", (int)h->transport.len, base + h->transport.off);
	if (!strcasestr(tr, "/TCP"))
		return -1;
	g->rtp = strncasecmp(tr, "MP2T/TCP", 8) != 0;
	il = strcasestr(tr, "interleaved=");
	g->media_channel = il ? (uint8_t)atoi(il + strlen("interleaved=")) : 0;
	return 0;
}

static uint64_t keepalive_interval_ms(const struct gateway *g)
{
	uint32_t t = g->session_timeout_s ? g->session_timeout_s : GW_SESSION_TIMEOUT_DEFAULT_S;

	return (uint64_t)t * 1000 / 2;
}

static bool public_has(const struct rtsp_head *h, const char *base, const char *method)
{
	size_t n = strlen(method);
	const char *p = base + h->public_methods.off, *end = p + h->public_methods.len;

	for (; p + n <= end; p++)
		if (!strncasecmp(p, method, n) && (p + n == end || !isalpha((unsigned char)p[n])) &&
		    (p == base + h->public_methods.off || !isalpha((unsigned char)p[-1])))
			return true;
	return false;
}

/* The answer to the handshake request in progress. */
static void handshake_answer(struct session *s, const struct rtsp_head *h, const char *base,
			     const char *body, size_t blen)
{
	struct gateway *g = gw_of(s);
	int st = h->status;

	if (!h->has_cseq || h->cseq != g->cseq_wait)
		return; /* an answer to something else (a keepalive) */
	if (!g->session[0] && h->session_id.len && h->session_id.len < sizeof(g->session))
		snprintf(g->session, sizeof(g->session), "%.*s", (int)h->session_id.len,
			 base + h->session_id.off);
	if (h->has_session_timeout)
		g->session_timeout_s = h->session_timeout;
	if (st >= 300 && st < 400) {
		follow_redirect(s, h, base);
		return;
	}
	if (st == RTSP_STATUS_UNAUTHORIZED) {
		answer_challenge(s, h, base);
		return;
	}
	if (st == RTSP_STATUS_UNSUPPORTED_TRANSPORT && g->state == GW_SETUP &&
	    g->transport_offer + 1 < ARRAY_LEN(transport_offers)) {
		g->transport_offer++;
		if (send_step(s, "SETUP", g->setup_url) < 0)
			gw_fail(s, 500, GATEWAY_BAD_ANSWER, "cannot build the request");
		return;
	}
	if (st < 200 || st >= 300) {
		char why[64];

		snprintf(why, sizeof(why), "%s answered %d", g->req_method, st);
		gw_fail(s, st == 403 || st == 404 ? st : 502, GATEWAY_REFUSED, why);
		return;
	}
	g->auth_tried = false;
	switch (g->state) {
	case GW_OPTIONS:
		g->ka_options = h->public_methods.len && !public_has(h, base, "GET_PARAMETER");
		g->state = GW_DESCRIBE;
		if (send_step(s, "DESCRIBE", g->url_fmt) < 0)
			gw_fail(s, 500, GATEWAY_BAD_ANSWER, "cannot build the request");
		break;
	case GW_DESCRIBE:
		after_describe(s, h, base, body, blen);
		break;
	case GW_SETUP:
		if (after_setup(s, h, base) < 0) {
			gw_fail(s, 502, GATEWAY_BAD_ANSWER, "no TCP transport in SETUP's answer");
			break;
		}
		g->state = GW_PLAY;
		if (send_step(s, "PLAY", g->url_fmt) < 0)
			gw_fail(s, 500, GATEWAY_BAD_ANSWER, "cannot build the request");
		break;
	case GW_PLAY:
		g->state = GW_FIRST_MEDIA;
		g->media_deadline_ms = now_ms() + s->cfg->rtsp_first_media_timeout_ms;
		g->ka_next_ms = now_ms() + keepalive_interval_ms(g);
		g->ka_first_cseq = g->cseq + 1;
		break;
	default:
		break;
	}
}

/* A request from the server (GET_PARAMETER as a keepalive of its own, ANNOUNCE...). */
static int server_request(struct session *s, const struct rtsp_head *h, const char *base)
{
	char text[256];
	bool known = h->http.parser.method == HTTP_GET_PARAMETER ||
		     h->http.parser.method == HTTP_OPTIONS;
	int n = snprintf(text, sizeof(text), "RTSP/1.0 %s\r\nCSeq: %.*s\r\n\r\n",
			 known ? "200 OK" : "501 Not Implemented", (int)h->cseq_span.len,
			 base + h->cseq_span.off);

	if (n < 0 || (size_t)n >= sizeof(text))
		return 0; /* a CSeq too long to echo: not answered */
	return flow_push(&s->x->req, text, (size_t)n);
}

/* One whole message at @base (head @h, @blen body bytes after it). -1: the session moved on. */
static int on_message(struct session *s, struct rtsp_head *h, char *base, size_t blen)
{
	struct gateway *g = gw_of(s);
	enum session_state before = s->state;
	unsigned int gen = g->conn_gen;

	if (h->is_request)
		return server_request(s, h, base) < 0 ? -1 : 0;
	switch (g->state) {
	case GW_OPTIONS:
	case GW_DESCRIBE:
	case GW_SETUP:
	case GW_PLAY:
		handshake_answer(s, h, base, base + h->head_len, blen);
		/* A failure, a redirect or a HEAD answer: the connection is gone or going. */
		return s->state != before || !gw_of(s) || gw_of(s)->conn_gen != gen ? -1 : 0;
	case GW_FIRST_MEDIA:
	case GW_STREAMING:
		if (h->has_cseq && h->cseq >= g->ka_first_cseq) {
			g->keepalives_answered++;
			if (h->status == 405 || h->status == 451 || h->status == 501)
				g->ka_options = true;
		}
		return 0;
	case GW_TEARDOWN:
		if (h->has_cseq && h->cseq == g->teardown_cseq) {
			session_close(s);
			return -1;
		}
		return 0;
	default:
		return 0;
	}
}

/*
 * A message at @p (@avail bytes buffered): handled once its head and body are all there.
 * *@used: its bytes (0: more needed). -1 when the session moved on.
 */
static int take_message(struct session *s, char *p, size_t avail, size_t *used)
{
	struct gateway *g = gw_of(s);
	enum rtsp_parse_status st;

	*used = 0;
	if (g->head_state == GW_HEAD_NONE) {
		rtsp_head_init(&g->head);
		g->head_state = GW_HEAD_PARSING;
	}
	st = rtsp_head_feed(&g->head, p, avail, s->cfg->max_header_size, s->cfg->max_header_size,
			    GW_BODY_MAX);
	if (st == RTSP_PARSE_MORE)
		return 0;
	if (st == RTSP_PARSE_ERROR) {
		if (g->state >= GW_FIRST_MEDIA && s->x->response_started) {
			log_info("session %lu: rtsp-gateway: garbage from the server",
				 (unsigned long)s->id);
			session_close(s);
			return -1;
		}
		gw_fail(s, 502, GATEWAY_BAD_ANSWER, "malformed answer");
		return -1;
	}
	if (avail - g->head.head_len < g->head.content_length)
		return 0;
	g->head_state = GW_HEAD_NONE;
	*used = g->head.head_len + g->head.content_length;
	return on_message(s, &g->head, p, (size_t)g->head.content_length);
}

/*
 * One interleaved frame (@payload, @n bytes, on @channel). Media TS bytes move down to
 * @out + *@w (never past the frame: the buffer is compacted in place). -1: the session moved on.
 */
static int on_frame(struct session *s, uint8_t channel, uint8_t *payload, size_t n, char *out,
		    size_t *w)
{
	struct gateway *g = gw_of(s);
	size_t off = 0, end = n;

	if ((g->state != GW_FIRST_MEDIA && g->state != GW_STREAMING) || channel != g->media_channel)
		return 0; /* RTCP, other channels, media after the client left */
	if (g->rtp && rtsp_rtp_payload(payload, n, &off, &end) < 0) {
		g->frames_dropped++;
		stats.gateway_frames_dropped++;
		return 0;
	}
	if (off == end)
		return 0;
	if (g->state == GW_FIRST_MEDIA) {
		if (payload[off] != TS_SYNC) {
			gw_fail(s, 502, GATEWAY_NOT_TS, "the media is not MPEG-TS");
			return -1;
		}
		if (start_streaming(s) < 0)
			return -1;
	}
	if (g->route->drop_frames && flow_level(&s->x->resp) + *w >= flow_high_water(&s->x->resp)) {
		g->frames_dropped++;
		stats.gateway_frames_dropped++;
		return 0;
	}
	memmove(out + *w, payload + off, end - off);
	*w += end - off;
	g->frames_forwarded++;
	stats.gateway_frames++;
	return 0;
}

/*
 * Everything whole in g->in: messages handled, media frames de-framed in place, their TS bytes
 * queued for the client in one push. -1 when the session moved on.
 */
static int process_input(struct session *s)
{
	struct gateway *g = gw_of(s);
	char *p = buf_start(&g->in);
	size_t len = buf_len(&g->in), r = 0, w = 0;

	while (r < len) {
		size_t used;

		if (p[r] == RTSP_FRAME_MAGIC && g->head_state == GW_HEAD_NONE) {
			size_t n;

			if (len - r < RTSP_FRAME_HDR_LEN)
				break;
			n = ((size_t)(uint8_t)p[r + 2] << 8) | (uint8_t)p[r + 3];
			if (len - r - RTSP_FRAME_HDR_LEN < n)
				break;
			if (on_frame(s, (uint8_t)p[r + 1], (uint8_t *)p + r + RTSP_FRAME_HDR_LEN, n,
				     p, &w) < 0)
				return -1;
			r += RTSP_FRAME_HDR_LEN + n;
			continue;
		}
		if (take_message(s, p + r, len - r, &used) < 0)
			return -1;
		if (!used)
			break;
		r += used;
	}
	if (w && flow_push(&s->x->resp, p, w) < 0) {
		session_close(s);
		return -1;
	}
	buf_consume(&g->in, r);
	return 0;
}

/* ---- the steps */

/* Pause mode: the server is not read while the client's flow holds the high-water mark. */
static bool update_pause(struct session *s)
{
	struct gateway *g = gw_of(s);
	size_t level = flow_level(&s->x->resp), high = flow_high_water(&s->x->resp);

	if (g->route->drop_frames)
		return false;
	if (!g->paused && level >= high) {
		g->paused = true;
		s->x->resp.pauses++;
		stats.pauses++;
	} else if (g->paused && level <= high / 4) {
		g->paused = false;
		s->x->resp.resumes++;
		stats.resumes++;
	}
	return g->paused;
}

/* The server closed or failed. -1: the session moved on (or drains what is left). */
static int upstream_ended(struct session *s, const char *why)
{
	struct gateway *g = gw_of(s);

	if (g->state == GW_TEARDOWN) {
		session_close(s);
		return -1;
	}
	if (!s->x->response_started) {
		gw_fail(s, 502, GATEWAY_BAD_ANSWER, why);
		return -1;
	}
	log_info("session %lu: rtsp-gateway %s: %s", (unsigned long)s->id, g->url_fmt, why);
	g->upstream_done = true;
	session_close_upstream(s);
	return 0;
}

static int read_upstream(struct session *s)
{
	struct gateway *g = gw_of(s);
	struct endpoint *u = &s->x->upstream;

	for (int i = 0; i < GW_READ_BUDGET && u->fd >= 0; i++) {
		ssize_t n;

		if (update_pause(s) || !endpoint_readable(u))
			return 0;
		if (buf_reserve(&g->in, GW_READ_CHUNK, GW_BUF_MAX) < 0) {
			gw_fail(s, 502, GATEWAY_BAD_ANSWER, "answer too large");
			return -1;
		}
		n = endpoint_recv_buf(u, &g->in, GW_READ_CHUNK);
		if (n > 0) {
			g->last_rx_ms = now_ms();
			if (process_input(s) < 0)
				return -1;
			continue;
		}
		if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
			u->readable = false;
			return 0;
		}
		return upstream_ended(s, n == 0 ? "server closed" : strerror(errno));
	}
	return 0;
}

/* The client left (or kfwd drains): TEARDOWN, its answer awaited briefly, then close. */
static void begin_teardown(struct session *s)
{
	struct gateway *g = gw_of(s);
	int lowat = 1;

	count_outcome(g, GATEWAY_ABORTED);
	flow_reset(&s->x->resp);
	if (s->x->upstream.fd < 0 || !g->session[0] ||
	    send_request(s, "TEARDOWN", g->url_fmt, NULL) < 0) {
		session_close(s);
		return;
	}
	g->teardown_cseq = g->cseq;
	g->state = GW_TEARDOWN;
	g->paused = false;
	if (setsockopt(s->x->upstream.fd, SOL_SOCKET, SO_RCVLOWAT, &lowat, sizeof(lowat)) < 0)
		log_debug("SO_RCVLOWAT: %m");
	g->td_deadline_ms = now_ms() + GW_TEARDOWN_MS;
	timer_arm(&s->timer, GW_TEARDOWN_MS);
}

/* Bytes from the client are not expected (the body is endless): discarded; EOF = gone. */
static bool client_gone(struct session *s)
{
	struct endpoint *c = &s->client;
	char sink[4096];

	for (int i = 0; i < GW_CLIENT_READ_BUDGET && (c->readable || c->hup); i++) {
		ssize_t n = c->xprt->recv(c, sink, sizeof(sink));

		if (n > 0)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
			c->readable = false;
			return false;
		}
		return true;
	}
	return false;
}

static void arm_timer(struct session *s)
{
	struct gateway *g = gw_of(s);
	uint64_t now = now_ms(), at;

	switch (g->state) {
	case GW_OPTIONS:
	case GW_DESCRIBE:
	case GW_SETUP:
	case GW_PLAY:
		at = g->hs_deadline_ms;
		break;
	case GW_FIRST_MEDIA:
		at = g->media_deadline_ms < g->ka_next_ms ? g->media_deadline_ms : g->ka_next_ms;
		break;
	case GW_STREAMING:
		g->flush_ms = now + GW_FLUSH_MS;
		at = g->ka_next_ms < g->flush_ms ? g->ka_next_ms : g->flush_ms;
		break;
	case GW_TEARDOWN:
		at = g->td_deadline_ms;
		break;
	default:
		return;
	}
	timer_arm(&s->timer, at > now ? at - now : 0);
}

static void gw_step(struct session *s)
{
	struct gateway *g = gw_of(s);

	if (!g)
		return;
	if (g->state != GW_TEARDOWN && (client_gone(s) || session_draining())) {
		log_debug("session %lu: rtsp-gateway: client gone", (unsigned long)s->id);
		begin_teardown(s);
		if (s->client.fd < 0)
			return;
	}
	if (s->x->upstream.fd >= 0 && flow_pump(&s->x->req) != FLOW_OK) {
		upstream_ended(s, "server refused a request");
		if (s->state != S_EXCHANGE)
			return;
	}
	for (int round = 0; round < 2; round++) {
		bool was_paused = g->paused;

		if (read_upstream(s) < 0 || s->state != S_EXCHANGE)
			return;
		if (s->x->upstream.fd >= 0 && flow_pump(&s->x->req) != FLOW_OK) {
			upstream_ended(s, "server refused a request");
			if (s->state != S_EXCHANGE)
				return;
		}
		if (g->state == GW_TEARDOWN || !s->x->response_started)
			return;
		if (flow_pump(&s->x->resp) != FLOW_OK) {
			begin_teardown(s);
			return;
		}
		tcp_window_progress(&g->win, s->client.fd, s->cfg->user_timeout_ms,
				    s->x->resp.bytes_out);
		if (g->upstream_done && flow_drained(&s->x->resp)) {
			session_begin_linger(s);
			return;
		}
		/* Drained below the low-water mark: read the server again at once. */
		if (!(was_paused && !update_pause(s)))
			break;
	}
}

static void send_keepalive(struct session *s)
{
	struct gateway *g = gw_of(s);

	if (send_request(s, g->ka_options ? "OPTIONS" : "GET_PARAMETER", g->url_fmt, NULL) < 0)
		return;
	g->keepalives_sent++;
	stats.gateway_keepalives++;
	/* Sent even while the flow is paused: the answer is read when reading resumes. */
	if (flow_pump(&s->x->req) != FLOW_OK)
		upstream_ended(s, "keepalive refused");
}

static void gw_timeout(struct session *s)
{
	struct gateway *g = gw_of(s);
	uint64_t now = now_ms();

	if (s->state != S_EXCHANGE) {
		upstream_conn_timeout(s);
		return;
	}
	switch (g->state) {
	case GW_OPTIONS:
	case GW_DESCRIBE:
	case GW_SETUP:
	case GW_PLAY:
		if (now >= g->hs_deadline_ms) {
			gw_fail(s, 504, GATEWAY_TIMEOUT, "handshake timed out");
			return;
		}
		break;
	case GW_FIRST_MEDIA:
		if (now >= g->media_deadline_ms) {
			gw_fail(s, 504, GATEWAY_TIMEOUT, "no media in time");
			return;
		}
		break;
	case GW_TEARDOWN:
		if (now >= g->td_deadline_ms) {
			session_close(s);
			return;
		}
		break;
	default:
		break;
	}
	if ((g->state == GW_FIRST_MEDIA || g->state == GW_STREAMING) && now >= g->ka_next_ms &&
	    s->x->upstream.fd >= 0) {
		send_keepalive(s);
		g->ka_next_ms = now + keepalive_interval_ms(g);
		if (s->state != S_EXCHANGE)
			return;
	}
	if (g->state == GW_STREAMING) {
		uint64_t last = g->last_rx_ms > s->x->resp.last_progress_ms ?
					g->last_rx_ms :
					s->x->resp.last_progress_ms;

		if (now - last >= session_idle_timeout(s)) {
			log_info("session %lu: rtsp-gateway idle, closing", (unsigned long)s->id);
			stats.timeouts++;
			begin_teardown(s);
			return;
		}
		/* A player that paused its reading is not a dead peer (tcp_window.c). */
		if (s->cfg->user_timeout_ms && now >= g->win.next_check_ms)
			tcp_window_check(&g->win, s->client.fd, s->cfg->user_timeout_ms,
					 s->x->resp.bytes_out);
		/* The flush tick: bytes below SO_RCVLOWAT wake nobody. */
		if (s->x->upstream.fd >= 0 && !g->paused)
			s->x->upstream.readable = true;
	}
	arm_timer(s);
}

static void gw_connected(struct session *s)
{
	struct gateway *g = gw_of(s);

	s->state = S_EXCHANGE;
	s->x->req.use_splice = s->x->resp.use_splice = false;
	g->state = GW_OPTIONS;
	if (send_step(s, "OPTIONS", g->url_fmt) < 0) {
		gw_fail(s, 500, GATEWAY_BAD_ANSWER, "cannot build the request");
		return;
	}
	arm_timer(s);
}

static void gw_connect_failed(struct session *s, int status)
{
	count_outcome(gw_of(s), status == 504 ? GATEWAY_TIMEOUT :
				status == 403 ? GATEWAY_REFUSED :
						GATEWAY_UNREACHABLE);
	session_reply_error(s, status);
}

static void gw_release(struct session *s)
{
	struct gateway *g = gw_of(s);

	if (!g)
		return;
	count_outcome(g, GATEWAY_ABORTED);
	buf_free(&g->in);
	free(g);
	s->x->proto_data = NULL;
}

static void gw_describe(const struct session *s, struct conn_details *d)
{
	const struct gateway *g = gw_of(s);

	if (!g)
		return;
	conn_details_add(d, "rtsp-url", "%s", g->url_fmt);
	if (g->session[0])
		conn_details_add(d, "rtsp-session", "%s", g->session);
	conn_details_add(d, "state", "%s", gw_state_names[g->state]);
	conn_details_add(d, "keepalives-sent", "%lu", (unsigned long)g->keepalives_sent);
	conn_details_add(d, "keepalives-answered", "%lu", (unsigned long)g->keepalives_answered);
	conn_details_add(d, "frames-forwarded", "%lu", (unsigned long)g->frames_forwarded);
	conn_details_add(d, "frames-dropped", "%lu", (unsigned long)g->frames_dropped);
	if (g->paused)
		conn_details_add(d, "paused", "1");
}

static void gw_interest(const struct session *s, uint32_t *client, uint32_t *upstream)
{
	const struct gateway *g = gw_of(s);

	if (!g)
		return;
	if (g->state != GW_TEARDOWN) {
		*client = EPOLLIN | EPOLLRDHUP;
		if (flow_wants_write(&s->x->resp))
			*client |= EPOLLOUT;
	}
	if (s->x->upstream.fd >= 0) {
		if (!g->paused && !s->x->upstream.rd_eof)
			*upstream |= EPOLLIN | EPOLLRDHUP;
		if (flow_wants_write(&s->x->req))
			*upstream |= EPOLLOUT;
	}
}

const struct proto_ops rtsp_gateway_ops = {
	.name = "rtsp-gateway",
	.step = gw_step,
	.timeout = gw_timeout,
	.connected = gw_connected,
	.connect_failed = gw_connect_failed,
	.release = gw_release,
	.describe = gw_describe,
	.interest = gw_interest,
};

void rtsp_gateway_start(struct session *s, const struct route *r, const char *target, size_t len)
{
	struct gateway *g = calloc(1, sizeof(*g));
	size_t skip = r->prefix_len;

	if (!g) {
		session_reply_error(s, 500);
		return;
	}
	/* "route /rtsp rtsp-gateway" reads "/rtsp/host/..." too. */
	if (skip < len && target[skip] == '/' && r->prefix[r->prefix_len - 1] != '/')
		skip++;
	g->route = r;
	g->is_head = s->x->req_method == HTTP_HEAD;
	g->http10 = s->x->client_http10;
	s->proto = &rtsp_gateway_ops;
	s->x->proto_data = g;
	s->close_after = true;
	if (s->x->req_method != HTTP_GET && s->x->req_method != HTTP_HEAD) {
		snprintf(g->url_fmt, sizeof(g->url_fmt), "(none)");
		g->outcome_counted = true; /* no handshake */
		session_reply_error_headers(s, 405, "Allow: GET, HEAD\r\n");
		return;
	}
	if (set_url(g, target + skip, len - skip, true) < 0) {
		snprintf(g->url_fmt, sizeof(g->url_fmt), "(invalid)");
		gw_fail(s, 400, GATEWAY_REFUSED, "not an RTSP URL");
		return;
	}
	gw_connect(s);
}
