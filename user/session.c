// SPDX-License-Identifier: GPL-2.0
/*
 * The session proper: one client connection's lifecycle. The registry of sessions, the two
 * endpoints and their epoll interest, the timer and its dispatch, kfwd's own error replies and
 * the linger before close; the access log record and the monitor events of the connection;
 * the free lists of per-request records (exchanges, parse states, targets), so idle connections
 * hold none.
 * Everything that depends on what the connection speaks goes through s->proto (struct
 * proto_ops, chosen by the listener); the upstream connection is upstream_conn.c's.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "access_log.h"
#include "event.h"
#include "http_rewrite.h"
#include "log.h"
#include "resolve.h"
#include "session.h"
#include "stats.h"
#include "upstream.h"
#include "upstream_pool.h"
#include "util.h"
#include "xprt_tls.h"

#define LINGER_MS 2000
#define SESSION_MAX_TRANSITIONS 64
/* Relayed interim bytes the client has not taken yet: past this the upstream is not read. */
#define INTERIM_BACKLOG_MAX (8 << 10)
/*
 * Reads per wake-up for a lingering client: a peer that always has bytes ready must not hold
 * the loop; level-triggered epoll brings us back for the rest.
 */
#define LINGER_READ_BUDGET 16

static struct session *sessions;
static unsigned int n_sessions;
static uint64_t next_id = 1;
static unsigned int worker_no; /* 0: the only process (workers 1) */
static bool draining;
static void (*closed_hook)(void);

const char *session_state_name(enum session_state st)
{
	static const char *const names[] = { "request-head", "resolving", "queued",   "backoff",
					     "connecting",   "exchange",  "replying", "linger" };

	return st <= S_LINGER ? names[st] : "?";
}

unsigned int session_count(void)
{
	return n_sessions;
}

struct session *session_first(void)
{
	return sessions;
}

/*
 * Interest kept registered while the session does not want it, until an event for it comes:
 * between a request and its response the client sends nothing (but a pipelined request or a
 * FIN), so leaving EPOLLIN on saves two epoll_ctl per request for one rare extra wake-up.
 */
#define LAZY_OFF_MASK (EPOLLIN | EPOLLRDHUP)

static struct loop_handler *endpoint_target(struct endpoint *e)
{
	return e->via ? e->via : &e->h;
}

/*
 * The registration may keep more than @mask: only lazily-dropped bits, and none has fired.
 * @exact: the sockmap module's masks (edge-triggered, or none while the kernel moves the
 * bytes) are applied as they are.
 */
static bool keep_registration(const struct endpoint *e, uint32_t mask, bool exact)
{
	uint32_t extra = e->registered & ~mask;

	if (exact || (mask & ~e->registered))
		return false;
	if (extra & ~LAZY_OFF_MASK)
		return false;
	return !e->unwanted_event;
}

static void endpoint_watch(struct endpoint *e, uint32_t mask, bool exact)
{
	if (e->fd < 0)
		return;
	e->wanted = mask;
	/* HUP/ERR are reported whatever the mask: keep a hung-up fd we cannot act on out. */
	if (e->hup && !(mask & (EPOLLIN | EPOLLOUT))) {
		if (e->in_epoll) {
			loop_del(e->fd);
			e->in_epoll = false;
		}
		return;
	}
	if (!e->in_epoll) {
		if (loop_add(e->fd, mask, endpoint_target(e)) == 0) {
			e->in_epoll = true;
			e->registered = mask;
			e->unwanted_event = false;
		}
		return;
	}
	if (keep_registration(e, mask, exact))
		return;
	if (loop_mod(e->fd, mask, endpoint_target(e)) == 0) {
		e->registered = mask;
		e->unwanted_event = false;
	}
}

static void endpoint_close(struct endpoint *e)
{
	if (e->fd >= 0) {
		if (e->in_epoll)
			loop_del(e->fd);
		e->xprt->release(e);
		e->xprt_ctx = NULL;
		e->xprt_want = 0;
		close(e->fd);
		if (e->via)
			upstream_pool_link_drop(e->via);
	}
	e->fd = -1;
	e->via = NULL;
	e->in_epoll = false;
	e->registered = 0;
	buf_free(&e->in);
}

void session_endpoint_attach(struct endpoint *e, int fd)
{
	e->fd = fd;
	e->in_epoll = false;
	e->registered = 0;
	e->readable = false;
	e->writable = true;
	e->rd_eof = false;
	e->hup = false;
	e->unwanted_event = false;
	e->wanted = 0;
	e->via = NULL;
	e->xprt = &xprt_raw;
	e->xprt_ctx = NULL;
	e->xprt_want = 0;
}

/*
 * Per-request records given back are kept for the next request, up to a cap: every request
 * has an exchange (1 KiB), parses two heads (2.2 KiB each) and has a target (0.8 KiB), and an
 * idle connection holds none. A head is held only while it is parsed, an exchange and a target
 * for the whole exchange: their cap covers a few dozen requests in flight (at most 36 KiB of
 * heads, 53 KiB of targets and 67 KiB of exchanges kept).
 */
#define HEAD_POOL_MAX 16
#define TARGET_POOL_MAX 64
#define EXCHANGE_POOL_MAX 64

struct record_pool {
	size_t size;
	unsigned int len, max;
	void **items;
};

/* What a request routes to and connects to: one record, s->x->target and s->x->up_addr point in. */
struct request_record {
	struct route_target target;
	struct sockaddr_any up_addr;
};

static void *head_items[HEAD_POOL_MAX], *target_items[TARGET_POOL_MAX];
static void *exchange_items[EXCHANGE_POOL_MAX];
static struct record_pool exchange_pool = { sizeof(struct exchange), 0, EXCHANGE_POOL_MAX,
					    exchange_items };
static struct record_pool head_pool = { sizeof(struct http_head), 0, HEAD_POOL_MAX, head_items };
static struct record_pool target_pool = { sizeof(struct request_record), 0, TARGET_POOL_MAX,
					  target_items };
static const char no_upstream[] = "";

static void *record_get(struct record_pool *p)
{
	return p->len ? p->items[--p->len] : malloc(p->size);
}

static void record_put(struct record_pool *p, void *rec)
{
	if (rec && p->len < p->max)
		p->items[p->len++] = rec;
	else
		free(rec);
}

struct http_head *session_head_start(struct http_head **slot, bool is_request)
{
	if (!*slot) {
		*slot = record_get(&head_pool);
		if (!*slot)
			return NULL;
	}
	http_head_init(*slot, is_request);
	return *slot;
}

void session_head_free(struct http_head **slot)
{
	record_put(&head_pool, *slot);
	*slot = NULL;
}

struct route_target *session_target_start(struct session *s)
{
	struct request_record *rec = (struct request_record *)s->x->target;

	if (!rec) {
		rec = record_get(&target_pool);
		if (!rec)
			return NULL;
	} else {
		route_target_free(&rec->target);
	}
	memset(rec, 0, sizeof(*rec));
	s->x->target = &rec->target;
	s->x->up_addr = &rec->up_addr;
	return s->x->target;
}

void session_target_end(struct session *s)
{
	if (!s->x->target)
		return;
	route_target_free(s->x->target);
	record_put(&target_pool, s->x->target);
	s->x->target = NULL;
	s->x->up_addr = NULL;
}

/* A flow of @s's exchange, carrying on the connection's totals. */
static void flow_from_tally(struct flow *f, enum flow_dir dir, struct endpoint *src,
			    struct endpoint *dst, const struct session *s)
{
	const struct flow_tally *t = &s->tally[dir];

	flow_init(f, dir, src, dst, s->cfg);
	f->conn_id = s->id;
	f->bytes_spliced = t->bytes_spliced;
	f->bytes_copied = t->bytes_copied;
	f->bytes_out = t->bytes_out;
	f->pauses = t->pauses;
	f->resumes = t->resumes;
	f->earned = t->earned;
}

static void flow_to_tally(const struct flow *f, struct flow_tally *t)
{
	t->bytes_spliced = f->bytes_spliced;
	t->bytes_copied = f->bytes_copied;
	t->bytes_out = f->bytes_out;
	t->pauses = (uint32_t)f->pauses;
	t->resumes = (uint32_t)f->resumes;
	/* An allowance is at most a flow's full sizes (flow_budget.c), far below 4 GiB. */
	t->earned = f->earned > UINT32_MAX ? UINT32_MAX : (uint32_t)f->earned;
}

/* A closed upstream endpoint: the other end of an idle connection's flows in `conn list`. */
static struct endpoint no_endpoint = { .fd = -1, .xprt = &xprt_raw };

const struct flow *session_flow_view(const struct session *s, enum flow_dir dir, struct flow *idle)
{
	struct endpoint *c = (struct endpoint *)&s->client;

	if (s->x)
		return dir == DIR_REQUEST ? &s->x->req : &s->x->resp;
	if (dir == DIR_REQUEST)
		flow_from_tally(idle, dir, c, &no_endpoint, s);
	else
		flow_from_tally(idle, dir, &no_endpoint, c, s);
	return idle;
}

struct exchange *session_exchange_take(struct session *s)
{
	struct exchange *x = s->x;

	if (x)
		return x;
	x = record_get(&exchange_pool);
	if (!x)
		return NULL;
	memset(x, 0, sizeof(*x));
	x->upstream.h.on_event = session_endpoint_event;
	x->upstream.s = s;
	x->upstream.fd = -1;
	x->upstream.xprt = &xprt_raw;
	flow_from_tally(&x->req, DIR_REQUEST, &s->client, &x->upstream, s);
	flow_from_tally(&x->resp, DIR_RESPONSE, &x->upstream, &s->client, s);
	s->x = x;
	return x;
}

static void exchange_recycle(void *p)
{
	record_put(&exchange_pool, p);
}

void session_exchange_put(struct session *s)
{
	struct exchange *x = s->x;

	if (!x)
		return;
	flow_to_tally(&x->req, &s->tally[DIR_REQUEST]);
	flow_to_tally(&x->resp, &s->tally[DIR_RESPONSE]);
	s->x = NULL;
	loop_defer_free(x, exchange_recycle);
}

/*
 * Everything the exchange holds (the session closes). The record stays in s->x until
 * session_free(): code that closed the session may still look at it in this batch.
 */
static void exchange_close(struct session *s)
{
	struct exchange *x = s->x;

	if (!x)
		return;
	session_access_end(s);
	resolve_cancel(&x->resolve);
	upstream_unwait(&x->wait);
	flow_reset(&x->req);
	flow_reset(&x->resp);
	session_close_upstream(s);
	session_target_end(s);
	buf_free(&x->req_head);
	session_head_free(&x->rq);
	session_head_free(&x->rs);
}

/*
 * Upstream address texts are shared, counted by their holders: the thousands of idle
 * connections that went to one server hold one copy of its text, not one each.
 */
#define SHARED_TEXT_BUCKETS 64

struct shared_text {
	struct shared_text *next;
	unsigned int refs;
	char text[];
};

static struct shared_text *shared_texts[SHARED_TEXT_BUCKETS];

static struct shared_text **text_bucket(const char *text)
{
	uint32_t h = 2166136261u; /* FNV-1a */

	for (const unsigned char *p = (const unsigned char *)text; *p; p++)
		h = (h ^ *p) * 16777619u;
	return &shared_texts[h % SHARED_TEXT_BUCKETS];
}

/* @text, shared with whoever holds it already; NULL when out of memory. */
static const char *text_get(const char *text)
{
	struct shared_text **bucket = text_bucket(text), *e;
	size_t len;

	for (e = *bucket; e; e = e->next) {
		if (!strcmp(e->text, text)) {
			e->refs++;
			return e->text;
		}
	}
	len = strlen(text) + 1;
	e = malloc(sizeof(*e) + len);
	if (!e)
		return NULL;
	memcpy(e->text, text, len);
	e->refs = 1;
	e->next = *bucket;
	*bucket = e;
	return e->text;
}

static void text_put(const char *text)
{
	struct shared_text *e, **pp;

	if (text == no_upstream)
		return;
	e = container_of(text, struct shared_text, text);
	if (--e->refs)
		return;
	for (pp = text_bucket(text); *pp != e; pp = &(*pp)->next)
		;
	*pp = e->next;
	free(e);
}

void session_set_upstream_text(struct session *s, const char *text)
{
	const char *shared;

	if (!strcmp(s->up_addr_text, text))
		return;
	shared = text_get(text);
	if (!shared)
		return; /* keeps the previous text: only logs and conn list show it */
	text_put(s->up_addr_text);
	s->up_addr_text = shared;
}

bool session_interim_backlogged(const struct session *s)
{
	return !s->x->final_response && flow_level(&s->x->resp) >= INTERIM_BACKLOG_MAX;
}

static void update_events(struct session *s)
{
	uint32_t cmask = 0, umask = 0;

	switch (s->state) {
	case S_REQUEST_HEAD:
	case S_LINGER:
		cmask = EPOLLIN | EPOLLRDHUP;
		break;
	case S_RESOLVING:
	case S_QUEUED:
	case S_BACKOFF:
		break;
	case S_CONNECTING:
		umask = EPOLLOUT;
		break;
	case S_EXCHANGE:
		if (s->proto->interest) {
			s->proto->interest(s, &cmask, &umask);
			break;
		}
		if (s->x->sockmap) {
			/* Edge-triggered, as the module asks: HUP cannot be masked, and the last
			 * bytes drain after both FINs. */
			cmask = s->x->sm_events_client ? s->x->sm_events_client | EPOLLET : 0;
			umask = s->x->sm_events_upstream ? s->x->sm_events_upstream | EPOLLET : 0;
			break;
		}
		if (flow_wants_read(&s->x->req))
			cmask |= EPOLLIN | EPOLLRDHUP;
		if (flow_wants_write(&s->x->resp))
			cmask |= EPOLLOUT;
		if ((!s->x->final_response && !session_interim_backlogged(s)) ||
		    flow_wants_read(&s->x->resp))
			umask |= EPOLLIN | EPOLLRDHUP;
		if (flow_wants_write(&s->x->req))
			umask |= EPOLLOUT;
		break;
	case S_REPLYING:
		if (flow_wants_write(&s->x->resp))
			cmask |= EPOLLOUT;
		break;
	}
	if (!s->x) {
		endpoint_watch(&s->client, cmask | s->client.xprt_want, false);
		return;
	}
	endpoint_watch(&s->client, cmask | s->client.xprt_want, s->x->sockmap);
	endpoint_watch(&s->x->upstream, umask | s->x->upstream.xprt_want, s->x->sockmap);
}

void session_close_upstream(struct session *s)
{
	struct upstream_server *srv;

	if (!s->x || s->x->upstream.fd < 0)
		return;
	srv = s->x->conn_server;
	endpoint_close(&s->x->upstream);
	s->x->conn_server = NULL;
	/* Last: it may hand the freed slot to a queued session. */
	upstream_conn_closed(srv);
}

uint64_t session_connect_timeout(const struct session *s)
{
	const struct route *r = s->route;

	return r && r->connect_timeout_ms ? r->connect_timeout_ms : s->cfg->connect_timeout_ms;
}

uint64_t session_response_timeout(const struct session *s)
{
	const struct route *r = s->route;

	return r && r->response_timeout_ms ? r->response_timeout_ms : s->cfg->response_timeout_ms;
}

uint64_t session_idle_timeout(const struct session *s)
{
	const struct route *r = s->route;

	if (s->x && s->x->tunnel)
		return s->cfg->tunnel_timeout_ms;

	return r && r->idle_timeout_ms ? r->idle_timeout_ms : s->cfg->transfer_timeout_ms;
}

/* Deferred: the configuration outlives every use of s->cfg in this batch. */
static void session_free(void *p)
{
	struct session *s = p;

	text_put(s->up_addr_text);
	if (s->x)
		record_put(&exchange_pool, s->x);
	config_put(s->cfg);
	free(s);
}

/* Tell the control plane (kfwdctl monitor) that this connection opened or closed. */
static void session_event(const struct session *s, enum kev_type type)
{
	char client[ADDR_TEXT_MAX];
	struct kev ev = { .type = type, .conn_id = s->id, .client = client };
	struct flow idle;

	if (!kev_listening())
		return;
	session_peer_text(s, client, sizeof(client));
	if (type == KEV_CONN_CLOSE) {
		ev.upstream = s->up_addr_text;
		ev.bytes_up = session_flow_view(s, DIR_REQUEST, &idle)->bytes_out;
		ev.bytes_down = session_flow_view(s, DIR_RESPONSE, &idle)->bytes_out;
		ev.duration_ms = now_ms() - s->created_ms;
		ev.status = (uint32_t)(s->last_status > 0 ? s->last_status : 0);
	}
	kev_emit(&ev);
}

void session_peer_text(const struct session *s, char *out, size_t len)
{
	char host[INET6_ADDRSTRLEN];

	if (addr_peer_text(s->client.fd, out, len) == 0)
		return;
	session_client_host(s, host);
	snprintf(out, len, "%s", host);
}

/* Kept in binary: an idle connection holds 18 bytes for it, not 62 of text. */
static void client_ip_set(struct session *s, const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)ss;

		memcpy(s->client_ip, &in->sin_addr, sizeof(in->sin_addr));
		s->client_family = AF_INET;
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;

		memcpy(s->client_ip, &in6->sin6_addr, sizeof(in6->sin6_addr));
		s->client_family = AF_INET6;
	}
}

void session_client_host(const struct session *s, char out[INET6_ADDRSTRLEN])
{
	if (!s->client_family || !inet_ntop(s->client_family, s->client_ip, out, INET6_ADDRSTRLEN))
		snprintf(out, INET6_ADDRSTRLEN, "unknown");
}

void session_set_worker(unsigned int worker, uint64_t first_id)
{
	worker_no = worker;
	next_id = first_id;
}

void session_describe(const struct session *s, struct conn_details *d)
{
	d->n = 0;
	if (worker_no) {
		conn_details_add(d, "worker", "%u", worker_no);
		conn_details_add(d, "pid", "%d", (int)getpid());
	}
	if (s->proto->describe)
		s->proto->describe(s, d);
	if (s->client.fd >= 0 && s->client.xprt->describe)
		s->client.xprt->describe(&s->client, "client", d);
	if (s->x && s->x->upstream.fd >= 0 && s->x->upstream.xprt->describe)
		s->x->upstream.xprt->describe(&s->x->upstream, "upstream", d);
}

/*
 * tcp-keepalive finds a peer that vanished while the connection is idle (nothing unacked);
 * tcp-user-timeout one that vanished while bytes were in flight, which keepalive never probes
 * and retransmissions alone would give up on only after ~15 minutes (tcp_retries2). The kernel
 * then fails the socket with ETIMEDOUT and the session closes as for any peer error.
 */
void session_dead_peer_options(int fd, const struct config *cfg)
{
	int on = 1, idle = (int)cfg->keepalive_idle_s, intvl = (int)cfg->keepalive_intvl_s;
	int cnt = (int)cfg->keepalive_cnt, user_timeout = (int)cfg->user_timeout_ms;

	if (cfg->keepalive_cnt &&
	    (setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on)) < 0 ||
	     setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle)) < 0 ||
	     setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl)) < 0 ||
	     setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt)) < 0))
		log_warn("tcp-keepalive: %m");
	if (cfg->user_timeout_ms &&
	    setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout, sizeof(user_timeout)) < 0)
		log_warn("tcp-user-timeout: %m");
}

void session_access_begin(struct session *s, const char *target, size_t len)
{
	if (!access_log_enabled())
		return;
	free(s->x->log_target);
	s->x->log_target = target ? strndup(target, len) : NULL;
	s->x->log_has_method = target != NULL;
	s->x->log_pending = true;
	s->x->log_start_ms = now_ms();
	s->x->log_in0 = s->x->req.bytes_out;
	s->x->log_out0 = s->x->resp.bytes_out;
	s->x->log_spliced0 = s->x->req.bytes_spliced + s->x->resp.bytes_spliced;
	s->x->log_status = 0;
	s->x->log_sockmap = false;
}

/* The request in progress is over, answered or not: its access log line. */
void session_access_end(struct session *s)
{
	char host[INET6_ADDRSTRLEN];
	struct access_entry e = { .conn = s->id, .client = host };

	if (!s->x || !s->x->log_pending)
		return;
	session_client_host(s, host);
	s->x->log_pending = false;
	if (s->x->log_has_method) {
		e.method = llhttp_method_name((llhttp_method_t)s->x->req_method);
		e.target = s->x->log_target ? s->x->log_target : "?";
	}
	e.status = s->x->log_status;
	e.bytes_in = s->x->req.bytes_out - s->x->log_in0;
	e.bytes_out = s->x->resp.bytes_out - s->x->log_out0;
	e.duration_ms = now_ms() - s->x->log_start_ms;
	if (s->x->sockmap || s->x->log_sockmap)
		e.data_path = "sockmap";
	else if (s->x->req.bytes_spliced + s->x->resp.bytes_spliced > s->x->log_spliced0)
		e.data_path = "splice";
	else
		e.data_path = "copy";
	access_log_write(&e);
	free(s->x->log_target);
	s->x->log_target = NULL;
}

void session_close(struct session *s)
{
	if (s->client.fd < 0)
		return;
	session_event(s, KEV_CONN_CLOSE);
	/* What a protocol holds lives with an exchange (an idle HTTP connection holds none). */
	if (s->proto->release && s->x)
		s->proto->release(s);
	timer_cancel(&s->timer);
	exchange_close(s);
	endpoint_close(&s->client);
	if (closed_hook)
		closed_hook();
	if (s->prev)
		s->prev->next = s->next;
	else
		sessions = s->next;
	if (s->next)
		s->next->prev = s->prev;
	n_sessions--;
	stats.connections_active--;
	loop_defer_free(s, session_free);
	if (draining && n_sessions == 0)
		loop_stop();
}

void session_set_closed_hook(void (*fn)(void))
{
	closed_hook = fn;
}

bool session_draining(void)
{
	return draining;
}

void session_kill(struct session *s)
{
	session_close(s);
}

void session_count_status(int status)
{
	if (status >= 100 && status < 600)
		stats.responses[status / 100 - 1]++;
}

/* The final status of the request in progress went (or goes) toward the client. */
void session_final_status(struct session *s, int status)
{
	session_count_status(status);
	s->last_status = status;
	s->x->log_status = status;
}

void session_count_error(int status)
{
	if (status >= 400 && status < 500)
		stats.client_errors++;
	else if (status == 502)
		stats.upstream_errors++;
	else if (status == 504)
		stats.timeouts++;
}

/* kfwd's own answer; the connection closes after it. Only before any final response byte. */
void session_reply_error_headers(struct session *s, int status, const char *extra_headers)
{
	struct buf text = { 0 };

	if (!session_exchange_take(s)) {
		session_close(s);
		return;
	}
	if (!s->x->log_pending)
		session_access_begin(s, NULL, 0);
	resolve_cancel(&s->x->resolve);
	upstream_unwait(&s->x->wait);
	session_close_upstream(s);
	flow_reset(&s->x->req);
	if (s->x->resp.active)
		flow_reset(&s->x->resp);
	session_count_error(status);
	session_final_status(s, status);
	if (http_build_error(&text, status, extra_headers) < 0 ||
	    flow_push(&s->x->resp, buf_start(&text), buf_len(&text)) < 0) {
		buf_free(&text);
		session_close(s);
		return;
	}
	buf_free(&text);
	s->x->resp.active = false;
	s->close_after = true;
	s->state = S_REPLYING;
	timer_arm(&s->timer, s->cfg->client_timeout_ms);
}

void session_reply_error(struct session *s, int status)
{
	session_reply_error_headers(s, status, NULL);
}

void session_begin_linger(struct session *s)
{
	/* FIN after the last byte; reading on until the client closes avoids an RST that could
	 * destroy response bytes still in flight. */
	if (s->client.xprt->shutdown(&s->client) < 0) {
		session_close(s);
		return;
	}
	s->state = S_LINGER;
	timer_arm(&s->timer,
		  s->cfg->client_timeout_ms < LINGER_MS ? s->cfg->client_timeout_ms : LINGER_MS);
}

static void step_replying(struct session *s)
{
	if (s->client.hup || flow_pump(&s->x->resp) != FLOW_OK) {
		session_close(s);
		return;
	}
	if (flow_drained(&s->x->resp))
		session_begin_linger(s);
}

static void step_linger(struct session *s)
{
	char sink[16384];

	for (int i = 0; i < LINGER_READ_BUDGET && s->client.readable; i++) {
		ssize_t n = s->client.xprt->recv(&s->client, sink, sizeof(sink));

		if (n > 0)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
			s->client.readable = false;
			return;
		}
		session_close(s);
		return;
	}
}

/*
 * The transports of both endpoints are ready for the protocol (a TLS handshake done). False
 * while one waits (its xprt_want is in the epoll interest) or after a failure (closed).
 */
static bool transports_ready(struct session *s)
{
	int r = s->client.xprt->handshake(&s->client);

	/* Clear-text HTTP on a TLS port: a 400 in clear text, then close (as nginx does). */
	if (r < 0 && xprt_tls_plain_http(&s->client)) {
		s->client.xprt->release(&s->client);
		s->client.xprt = &xprt_raw;
		session_reply_error(s, 400);
		return false;
	}
	if (r > 0 && s->state == S_EXCHANGE && s->x->upstream.fd >= 0) {
		r = s->x->upstream.xprt->handshake(&s->x->upstream);
		/* A TLS origin that fails its handshake (its certificate, say): nothing was sent yet. */
		if (r < 0) {
			session_reply_error(s, 502);
			return false;
		}
	}
	if (r < 0)
		session_close(s);
	return r > 0;
}

void session_run(struct session *s)
{
	for (int i = 0; i < SESSION_MAX_TRANSITIONS && s->client.fd >= 0; i++) {
		enum session_state before = s->state;

		switch (s->state) {
		case S_REQUEST_HEAD:
		case S_EXCHANGE:
			if (transports_ready(s))
				s->proto->step(s);
			break;
		case S_RESOLVING:
		case S_QUEUED:
		case S_BACKOFF:
		case S_CONNECTING:
			if (s->client.hup)
				session_close(s);
			break;
		case S_REPLYING:
			step_replying(s);
			break;
		case S_LINGER:
			step_linger(s);
			break;
		}
		if (s->state == before)
			break;
	}
	if (s->client.fd >= 0)
		update_events(s);
}

void session_endpoint_event(struct loop_handler *h, uint32_t events)
{
	struct endpoint *e = (struct endpoint *)h;
	struct session *s = e->s;

	if (e->fd < 0 || s->client.fd < 0)
		return; /* closed earlier in this batch */
	if ((events & (EPOLLIN | EPOLLRDHUP)) && !(e->wanted & EPOLLIN))
		e->unwanted_event = true;
	if (events & EPOLLIN)
		e->readable = true;
	if (events & EPOLLOUT)
		e->writable = true;
	if (events & (EPOLLERR | EPOLLHUP)) {
		/* Let the next read or write report what happened. */
		e->hup = true;
		e->readable = e->writable = true;
	}
	session_run(s);
}

void session_exchange_idle(struct session *s)
{
	uint64_t last = s->x->req.last_progress_ms > s->x->resp.last_progress_ms ?
				s->x->req.last_progress_ms :
				s->x->resp.last_progress_ms;
	uint64_t now = now_ms();

	if (now - last < session_idle_timeout(s)) {
		timer_arm(&s->timer, session_idle_timeout(s) - (now - last));
		return;
	}
	log_info("session %lu: transfer idle for %lu ms, closing", (unsigned long)s->id,
		 (unsigned long)(now - last));
	stats.timeouts++;
	if (!s->x->response_started) {
		session_reply_error(s, 504);
		return;
	}
	stats.aborted_transfers++;
	session_close(s);
}

/* One timer per session, its meaning given by the state: the protocol's but for the end. */
static void on_session_timer(struct timer *t)
{
	struct session *s = container_of(t, struct session, timer);

	switch (s->state) {
	case S_REPLYING:
	case S_LINGER:
		session_close(s);
		return;
	case S_REQUEST_HEAD:
		/* A TLS client still in its handshake gets no 408 (nothing to send it over). */
		if (xprt_tls_handshaking(&s->client)) {
			tls_count_handshake_error(TLS_ERR_TIMEOUT);
			session_close(s);
			return;
		}
		s->proto->timeout(s);
		break;
	default:
		s->proto->timeout(s);
		break;
	}
	if (s->client.fd >= 0)
		session_run(s);
}

struct session *session_create(int fd, const struct config *cfg, const struct proto_ops *proto,
			       bool reject, struct ssl_ctx_st *tls)
{
	struct sockaddr_any peer = { .len = sizeof(peer.ss) };
	struct session *s = calloc(1, sizeof(*s));
	int one = 1;

	if (!s) {
		close(fd);
		return NULL;
	}
	s->id = next_id++;
	s->proto = proto;
	s->cfg = config_get(cfg); /* dropped in session_free() */
	s->created_ms = now_ms();
	s->timer.on_expire = on_session_timer;
	s->up_addr_text = no_upstream;
	if (getpeername(fd, (struct sockaddr *)&peer.ss, &peer.len) == 0)
		client_ip_set(s, &peer.ss);
	/* Bounds what a slow client lets pile up in kernel memory on our side. */
	if (cfg->client_sndbuf > 0 && setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &cfg->client_sndbuf,
						 sizeof(cfg->client_sndbuf)) < 0)
		log_warn("SO_SNDBUF: %m");
	if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0)
		log_debug("TCP_NODELAY: %m");
	session_dead_peer_options(fd, cfg);

	s->client.h.on_event = session_endpoint_event;
	s->client.s = s;
	session_endpoint_attach(&s->client, fd);

	s->next = sessions;
	if (sessions)
		sessions->prev = s;
	sessions = s;
	n_sessions++;
	stats.connections_active++;
	session_event(s, KEV_CONN_OPEN);
	if (!proto->exchange_per_request && !session_exchange_take(s)) {
		session_close(s);
		return NULL;
	}

	if (tls && xprt_tls_server(&s->client, tls_current(), tls) < 0) {
		log_warn("session %lu: TLS: %m", (unsigned long)s->id);
		session_close(s);
		return NULL;
	}
	s->state = S_REQUEST_HEAD;
	timer_arm(&s->timer, cfg->client_timeout_ms);
	if (reject) {
		stats.connections_rejected++;
		if (proto->reject)
			proto->reject(s);
		else
			session_reply_error(s, 503);
	}
	session_run(s);
	return s;
}

void session_drain_all(void)
{
	struct session *s, *next;

	draining = true;
	for (s = sessions; s; s = next) {
		next = s->next;
		if (s->proto->drain) {
			s->proto->drain(s);
			continue;
		}
		/* A connection accepted a moment ago has its first request on the way: closing it
		 * would reset that request (a binary upgrade drains under full load). It is answered,
		 * then closed; client-timeout bounds a client that never sends. */
		if (s->state == S_REQUEST_HEAD && !buf_len(&s->client.in) && s->requests)
			session_close(s);
		else
			s->close_after = true;
	}
	if (n_sessions == 0)
		loop_stop();
}
