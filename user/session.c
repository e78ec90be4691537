// SPDX-License-Identifier: GPL-2.0
/*
 * One client connection and the transactions on it, in the order data flows:
 * request head (parse) -> route -> resolve/connect (or a pooled connection) -> exchange (both
 * flows move bytes) -> next request, or close.
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

#include "accept.h"
#include "access_log.h"
#include "ctl.h"
#include "http_rewrite.h"
#include "log.h"
#include "resolve.h"
#include "session.h"
#include "sockmap.h"
#include "sockmap_path.h"
#include "stats.h"
#include "upstream.h"
#include "upstream_pool.h"

#define LINGER_MS 2000
#define SESSION_MAX_TRANSITIONS 64
/*
 * Interim (1xx) responses one request may receive before its final response: 100 Continue and
 * a few 103 Early Hints are normal; more is a server looping on them, answered with 502.
 */
#define INTERIM_MAX_COUNT 16
#define INTERIM_MAX_BYTES (64 << 10)
/* Relayed interim bytes the client has not taken yet: past this the upstream is not read. */
#define INTERIM_BACKLOG_MAX (8 << 10)
/*
 * Reads per wake-up for a response head and for a lingering client: a peer that always has
 * bytes ready must not hold the loop; level-triggered epoll brings us back for the rest.
 */
#define HEAD_READ_BUDGET 16
#define LINGER_READ_BUDGET 16

static struct session *sessions;
static unsigned int n_sessions;
static uint64_t next_id = 1;
static bool draining;

static void session_run(struct session *s);
static void sockmap_finish(struct session *s);
static void finish_transaction(struct session *s);
static void connect_upstream(struct session *s, bool allow_pool);

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

static void endpoint_watch(struct endpoint *e, uint32_t mask)
{
	if (e->fd < 0)
		return;
	/* HUP/ERR are reported whatever the mask: keep a hung-up fd we cannot act on out. */
	if (e->hup && !(mask & (EPOLLIN | EPOLLOUT))) {
		if (e->in_epoll) {
			loop_del(e->fd);
			e->in_epoll = false;
		}
		return;
	}
	if (!e->in_epoll) {
		if (loop_add(e->fd, mask, &e->h) == 0) {
			e->in_epoll = true;
			e->registered = mask;
		}
		return;
	}
	if ((mask != e->registered || e->force_mod) && loop_mod(e->fd, mask, &e->h) == 0) {
		e->registered = mask;
		e->force_mod = false;
	}
}

static void endpoint_close(struct endpoint *e)
{
	if (e->fd >= 0) {
		if (e->in_epoll)
			loop_del(e->fd);
		close(e->fd);
	}
	e->fd = -1;
	e->in_epoll = false;
	e->registered = 0;
	buf_free(&e->in);
}

static void endpoint_attach(struct endpoint *e, int fd)
{
	e->fd = fd;
	e->in_epoll = false;
	e->registered = 0;
	e->readable = false;
	e->writable = true;
	e->rd_eof = false;
	e->hup = false;
	e->force_mod = false;
}

static struct http_head *head_start(struct http_head **slot, bool is_request)
{
	if (!*slot) {
		*slot = malloc(sizeof(**slot));
		if (!*slot)
			return NULL;
	}
	http_head_init(*slot, is_request);
	return *slot;
}

static void head_free(struct http_head **slot)
{
	free(*slot);
	*slot = NULL;
}

/* Interim responses wait for the client: the upstream is not read meanwhile. */
static bool interim_backlogged(const struct session *s)
{
	return !s->final_response && flow_level(&s->resp) >= INTERIM_BACKLOG_MAX;
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
		if (s->sockmap) {
			/* Edge-triggered, as the module asks: HUP cannot be masked, and the last
			 * bytes drain after both FINs. */
			cmask = s->sm_events_client ? s->sm_events_client | EPOLLET : 0;
			umask = s->sm_events_upstream ? s->sm_events_upstream | EPOLLET : 0;
			break;
		}
		if (flow_wants_read(&s->req))
			cmask |= EPOLLIN | EPOLLRDHUP;
		if (flow_wants_write(&s->resp))
			cmask |= EPOLLOUT;
		if ((!s->final_response && !interim_backlogged(s)) || flow_wants_read(&s->resp))
			umask |= EPOLLIN | EPOLLRDHUP;
		if (flow_wants_write(&s->req))
			umask |= EPOLLOUT;
		break;
	case S_REPLYING:
		if (flow_wants_write(&s->resp))
			cmask |= EPOLLOUT;
		break;
	}
	endpoint_watch(&s->client, cmask);
	endpoint_watch(&s->upstream, umask);
}

static void close_upstream(struct session *s)
{
	struct upstream_server *srv = s->conn_server;

	if (s->upstream.fd < 0)
		return;
	endpoint_close(&s->upstream);
	s->conn_server = NULL;
	/* Last: it may hand the freed slot to a queued session. */
	upstream_conn_closed(srv);
}

static uint64_t connect_timeout(const struct session *s)
{
	const struct route *r = s->target.route;

	return r && r->connect_timeout_ms ? r->connect_timeout_ms : s->cfg->connect_timeout_ms;
}

static uint64_t response_timeout(const struct session *s)
{
	const struct route *r = s->target.route;

	return r && r->response_timeout_ms ? r->response_timeout_ms : s->cfg->response_timeout_ms;
}

static uint64_t idle_timeout(const struct session *s)
{
	const struct route *r = s->target.route;

	if (s->tunnel)
		return s->cfg->tunnel_timeout_ms;

	return r && r->idle_timeout_ms ? r->idle_timeout_ms : s->cfg->transfer_timeout_ms;
}

/* Deferred: the configuration outlives every use of s->cfg in this batch. */
static void session_free(void *p)
{
	struct session *s = p;

	config_put(s->cfg);
	free(s);
}

/*
 * tcp-keepalive finds a peer that vanished while the connection is idle (nothing unacked);
 * tcp-user-timeout one that vanished while bytes were in flight, which keepalive never probes
 * and retransmissions alone would give up on only after ~15 minutes (tcp_retries2). The kernel
 * then fails the socket with ETIMEDOUT and the session closes as for any peer error.
 */
static void set_dead_peer_options(int fd, const struct config *cfg)
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

static void access_begin(struct session *s, const char *target, size_t len)
{
	if (!access_log_enabled())
		return;
	free(s->log_target);
	s->log_target = target ? strndup(target, len) : NULL;
	s->log_has_method = target != NULL;
	s->log_pending = true;
	s->log_start_ms = now_ms();
	s->log_in0 = s->req.bytes_out;
	s->log_out0 = s->resp.bytes_out;
	s->log_spliced0 = s->req.bytes_spliced + s->resp.bytes_spliced;
	s->log_status = 0;
	s->log_sockmap = false;
}

/* The request in progress is over, answered or not: its access log line. */
static void access_end(struct session *s)
{
	struct access_entry e = { .conn = s->id, .client = s->client_addr };

	if (!s->log_pending)
		return;
	s->log_pending = false;
	if (s->log_has_method) {
		e.method = llhttp_method_name((llhttp_method_t)s->req_method);
		e.target = s->log_target ? s->log_target : "?";
	}
	e.status = s->log_status;
	e.bytes_in = s->req.bytes_out - s->log_in0;
	e.bytes_out = s->resp.bytes_out - s->log_out0;
	e.duration_ms = now_ms() - s->log_start_ms;
	if (s->sockmap || s->log_sockmap)
		e.data_path = "sockmap";
	else if (s->req.bytes_spliced + s->resp.bytes_spliced > s->log_spliced0)
		e.data_path = "splice";
	else
		e.data_path = "copy";
	access_log_write(&e);
	free(s->log_target);
	s->log_target = NULL;
}

static void session_close(struct session *s)
{
	if (s->client.fd < 0)
		return;
	ctl_notify_conn_close(s);
	if (s->sockmap)
		sockmap_finish(s);
	access_end(s);
	timer_cancel(&s->timer);
	resolve_cancel(&s->resolve);
	upstream_unwait(s);
	flow_reset(&s->req);
	flow_reset(&s->resp);
	close_upstream(s);
	endpoint_close(&s->client);
	accept_fd_freed();
	route_target_free(&s->target);
	buf_free(&s->req_head);
	head_free(&s->rq);
	head_free(&s->rs);
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

void session_kill(struct session *s)
{
	session_close(s);
}

static void count_status(int status)
{
	if (status >= 100 && status < 600)
		stats.responses[status / 100 - 1]++;
}

/* The final status of the request in progress went (or goes) toward the client. */
static void final_status(struct session *s, int status)
{
	count_status(status);
	s->last_status = status;
	s->log_status = status;
}

/* kfwd's own answer; the connection closes after it. Only before any final response byte. */
static void reply_error_headers(struct session *s, int status, const char *extra_headers)
{
	struct buf text = { 0 };

	if (!s->log_pending)
		access_begin(s, NULL, 0);
	resolve_cancel(&s->resolve);
	upstream_unwait(s);
	close_upstream(s);
	flow_reset(&s->req);
	if (s->resp.active)
		flow_reset(&s->resp);
	if (status >= 400 && status < 500)
		stats.client_errors++;
	else if (status == 502)
		stats.upstream_errors++;
	else if (status == 504)
		stats.timeouts++;
	final_status(s, status);
	if (http_build_error(&text, status, extra_headers) < 0 ||
	    flow_push(&s->resp, buf_start(&text), buf_len(&text)) < 0) {
		buf_free(&text);
		session_close(s);
		return;
	}
	buf_free(&text);
	s->resp.active = false;
	s->close_after = true;
	s->state = S_REPLYING;
	timer_arm(&s->timer, s->cfg->client_timeout_ms);
}

static void reply_error(struct session *s, int status)
{
	reply_error_headers(s, status, NULL);
}

static void begin_linger(struct session *s)
{
	/* FIN after the last byte; reading on until the client closes avoids an RST that could
	 * destroy response bytes still in flight. */
	if (shutdown(s->client.fd, SHUT_WR) < 0) {
		session_close(s);
		return;
	}
	s->state = S_LINGER;
	timer_arm(&s->timer,
		  s->cfg->client_timeout_ms < LINGER_MS ? s->cfg->client_timeout_ms : LINGER_MS);
}

static int status_for_parse_error(enum http_error e)
{
	switch (e) {
	case HTTP_ERR_URI_TOO_LONG:
		return 414;
	case HTTP_ERR_TOO_LARGE:
		return 431;
	case HTTP_ERR_TRANSFER_CODING:
		return 501;
	default:
		return 400;
	}
}

static enum data_path route_data_path(const struct session *s)
{
	const struct route *r = s->target.route;

	return r && r->mode >= 0 ? (enum data_path)r->mode : s->cfg->data_path;
}

/* Everything a flow holds in user space, then up to @src_max bytes its source sent past the
 * head. */
static int collect_pending(struct buf *out, struct flow *f, size_t src_max)
{
	size_t src_len = buf_len(&f->src->in) < src_max ? buf_len(&f->src->in) : src_max;

	if (buf_append(out, buf_start(&f->out), buf_len(&f->out)) < 0 ||
	    buf_append(out, buf_start(&f->pending), buf_len(&f->pending)) < 0 ||
	    buf_append(out, buf_start(&f->src->in), src_len) < 0)
		return -1;
	return 0;
}

static void sockmap_finish(struct session *s)
{
	struct sockmap_stats st;

	if (sockmap_flow_stats(s->sockmap_flow, &st) == 0) {
		const struct sockmap_dir_stats *a = &st.dir[SOCKMAP_A_TO_B];
		const struct sockmap_dir_stats *b = &st.dir[SOCKMAP_B_TO_A];

		stats.bytes_sockmap[DIR_REQUEST] += a->redirected;
		stats.bytes_sockmap[DIR_RESPONSE] += b->redirected;
		stats.bytes_copied[DIR_REQUEST] += a->user_written;
		stats.bytes_copied[DIR_RESPONSE] += b->user_written;
		s->req.pauses += a->pause_count;
		s->resp.pauses += b->pause_count;
		s->req.bytes_out += a->redirected + a->user_written;
		s->resp.bytes_out += b->redirected + b->user_written;
	}
	sockmap_flow_del(s->sockmap_flow);
	s->sockmap = false;
	s->sockmap_response = false;
}

static uint64_t sockmap_bytes(const struct session *s)
{
	struct sockmap_stats st;

	if (sockmap_flow_stats(s->sockmap_flow, &st) < 0)
		return 0;
	return st.dir[0].redirected + st.dir[0].user_written + st.dir[1].redirected +
	       st.dir[1].user_written;
}

void session_sockmap_bytes(uint64_t out[DIR_COUNT])
{
	struct sockmap_stats st;

	out[DIR_REQUEST] = stats.bytes_sockmap[DIR_REQUEST];
	out[DIR_RESPONSE] = stats.bytes_sockmap[DIR_RESPONSE];
	for (struct session *s = sessions; s; s = s->next) {
		if (!s->sockmap || sockmap_flow_stats(s->sockmap_flow, &st) < 0)
			continue;
		out[DIR_REQUEST] += st.dir[SOCKMAP_A_TO_B].redirected;
		out[DIR_RESPONSE] += st.dir[SOCKMAP_B_TO_A].redirected;
	}
}

/*
 * End a failed sockmap tunnel with resets: bytes the program passed wait in the psock queue,
 * not the receive queue, so close() alone would send a FIN and a sender held by a closed
 * window would never learn that the tunnel is gone.
 */
static void sockmap_abort(struct session *s)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };

	if (s->client.fd >= 0)
		(void)setsockopt(s->client.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	if (s->upstream.fd >= 0)
		(void)setsockopt(s->upstream.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	stats.aborted_transfers++;
	session_close(s);
}

/* A reset or failed socket: the kernel's sends to it fail without telling kfwd. */
static bool socket_failed(const struct endpoint *e)
{
	int err = 0;
	socklen_t len = sizeof(err);

	if (!e->hup)
		return false;
	return getsockopt(e->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err != 0;
}

static void sockmap_step(struct session *s)
{
	struct sockmap_want want;
	int r;

	if (socket_failed(&s->client) || socket_failed(&s->upstream)) {
		log_info("session %lu: sockmap flow peer reset, closing", (unsigned long)s->id);
		sockmap_abort(s);
		return;
	}
	r = sockmap_flow_pump(s->sockmap_flow, &want);
	if (r != SOCKMAP_RUNNING) {
		if (r < 0) {
			log_info("session %lu: sockmap flow failed: %m", (unsigned long)s->id);
			sockmap_abort(s);
			return;
		}
		if (s->sockmap_response) {
			/* Every body byte is in the client's send queue and SHUT_WR went out. */
			struct sockmap_stats st;

			if (sockmap_flow_stats(s->sockmap_flow, &st) == 0 &&
			    st.dir[SOCKMAP_B_TO_A].cut) {
				log_info("session %lu: upstream %s closed inside the response body",
					 (unsigned long)s->id, s->up_addr_text);
				stats.aborted_transfers++;
			}
			sockmap_finish(s);
			finish_transaction(s);
			return;
		}
		session_close(s);
		return;
	}
	s->sm_events_client = want.events_a;
	s->sm_events_upstream = want.events_b;
	if (want.timeout_ms >= 0) {
		s->sm_timer = true;
		timer_arm(&s->timer, (uint64_t)want.timeout_ms);
	} else if (s->sm_timer || !timer_armed(&s->timer)) {
		s->sm_timer = false;
		timer_arm(&s->timer, idle_timeout(s));
	}
}

/*
 * The sockmap module gives back what it drained from a source that never paused long enough to
 * be taken over: those bytes come first on the splice path, which goes on instead.
 */
static int sockmap_spill(void *owner, int dir, const void *data, size_t len)
{
	struct session *s = owner;
	struct endpoint *src = dir == SOCKMAP_A_TO_B ? &s->client : &s->upstream;

	return buf_append(&src->in, data, len);
}

/* What every sockmap flow of this session starts with: its sockets, cap and mode. */
static void sockmap_args_init(struct sockmap_flow_args *args, struct session *s)
{
	memset(args, 0, sizeof(*args));
	args->fd_a = s->client.fd;
	args->fd_b = s->upstream.fd;
	args->cap_bytes = s->cfg->sockmap_cap;
	if (route_data_path(s) == DATA_PATH_SOCKMAP_UNBOUNDED)
		args->flags = SOCKMAP_UNBOUNDED;
	args->owner = s;
	args->spill = sockmap_spill;
}

/* sockmap_flow_add_ex() failed: EAGAIN means nothing was lost and splice goes on. */
static bool sockmap_add_failed(struct session *s)
{
	if (errno == EAGAIN) {
		log_debug("session %lu: source never paused for the sockmap hand-over: splice",
			  (unsigned long)s->id);
		stats.sockmap_start_fallbacks++;
		return false;
	}
	log_warn("session %lu: sockmap flow add failed: %m", (unsigned long)s->id);
	return true;
}

/*
 * Hand a tunnel to the BPF sockmap when its data path says so and the path is ready. Bytes
 * kfwd holds (the 101 head, bytes read past the heads) go to the module first. Falls back to
 * splice when a pipe already holds bytes (they could not be handed over in order).
 */
static void sockmap_start(struct session *s)
{
	enum data_path dp = route_data_path(s);
	struct sockmap_flow_args args;
	struct buf to_up = { 0 }, to_client = { 0 };
	int rc;

	if (dp != DATA_PATH_SOCKMAP && dp != DATA_PATH_SOCKMAP_UNBOUNDED)
		return;
	if (!sockmap_ready() || s->req.pipe_level || s->resp.pipe_level) {
		log_debug("session %lu: tunnel stays on splice (%s)", (unsigned long)s->id,
			  sockmap_ready() ? "pipe not empty" : sockmap_path_reason());
		return;
	}
	if (collect_pending(&to_up, &s->req, SIZE_MAX) < 0 ||
	    collect_pending(&to_client, &s->resp, SIZE_MAX) < 0) {
		buf_free(&to_up);
		buf_free(&to_client);
		session_close(s);
		return;
	}
	sockmap_args_init(&args, s);
	args.pending_a_to_b = buf_start(&to_up);
	args.pending_a_to_b_len = buf_len(&to_up);
	args.pending_b_to_a = buf_start(&to_client);
	args.pending_b_to_a_len = buf_len(&to_client);
	rc = sockmap_flow_add_ex(&args, &s->sockmap_flow);
	buf_free(&to_up);
	buf_free(&to_client);
	if (rc < 0) {
		/* Unless the module gave its bytes back, it may have consumed queued bytes: the
		 * tunnel cannot go on. */
		if (sockmap_add_failed(s))
			session_close(s);
		return;
	}
	flow_reset(&s->req);
	flow_reset(&s->resp);
	buf_free(&s->client.in);
	buf_free(&s->upstream.in);
	s->sockmap = true;
	s->log_sockmap = true;
	s->sm_timer = false;
	s->sm_last_bytes = 0;
	s->sm_last_change_ms = now_ms();
	stats.sockmap_flows++;
	sockmap_step(s);
}

/*
 * Should this response body go through the sockmap? Only when its route asks for it, the
 * request is wholly delivered (the upstream connection then carries nothing but this body),
 * and both connections end with the body: a socket leaves the sockmap only at connection end
 * (taking one out mid-stream corrupted bytes on this kernel), so a Content-Length body long
 * enough to be worth it closes its client connection after it.
 */
static bool response_wants_sockmap(const struct session *s, enum body_framing framing,
				   uint64_t length)
{
	enum data_path dp = route_data_path(s);

	if (dp != DATA_PATH_SOCKMAP && dp != DATA_PATH_SOCKMAP_UNBOUNDED)
		return false;
	if (!sockmap_ready() || !flow_complete(&s->req) || s->req_failed || s->req.pipe_level)
		return false;
	if (framing == FRAMING_CLOSE)
		return true;
	return framing == FRAMING_LENGTH && s->cfg->sockmap_body_min &&
	       length >= s->cfg->sockmap_body_min;
}

/*
 * Hand the rest of a response to the sockmap, upstream to client only: the head and the body
 * bytes read with it go first, then the program redirects the upstream's bytes, up to the
 * Content-Length when there is one. The client's bytes (a pipelined request) stay unread: the
 * connection closes after this response.
 */
static void sockmap_start_response(struct session *s)
{
	struct sockmap_flow_args args;
	struct flow *f = &s->resp;
	struct buf to_client = { 0 };
	size_t body_held = buf_len(&s->upstream.in);
	int rc;

	if (f->framing == FRAMING_LENGTH && body_held > f->remaining)
		body_held = (size_t)f->remaining;
	if (collect_pending(&to_client, f, body_held) < 0) {
		buf_free(&to_client);
		session_close(s);
		return;
	}
	sockmap_args_init(&args, s);
	args.flags |= SOCKMAP_B_TO_A_ONLY;
	if (f->framing == FRAMING_LENGTH) {
		args.flags |= SOCKMAP_B_LIMIT;
		args.limit_b_to_a = f->remaining - body_held;
	}
	args.pending_b_to_a = buf_start(&to_client);
	args.pending_b_to_a_len = buf_len(&to_client);
	rc = sockmap_flow_add_ex(&args, &s->sockmap_flow);
	buf_free(&to_client);
	if (rc < 0) {
		if (sockmap_add_failed(s)) {
			/* The module may have consumed upstream bytes: the response is lost. */
			stats.aborted_transfers++;
			session_close(s);
		}
		return;
	}
	flow_reset(&s->resp);
	s->resp.body_done = true;
	buf_free(&s->upstream.in);
	s->sockmap = true;
	s->log_sockmap = true;
	s->sockmap_response = true;
	s->sm_timer = false;
	s->sm_last_bytes = 0;
	s->sm_last_change_ms = now_ms();
	stats.sockmap_flows++;
	stats.sockmap_responses++;
	sockmap_step(s);
}

void session_sockmap_event(uint64_t flow_id)
{
	struct session *s = sockmap_flow_owner(flow_id);

	if (s && s->sockmap && s->sockmap_flow == flow_id && s->client.fd >= 0)
		session_run(s);
}

/* After a 101 or a CONNECT: bytes flow both ways, each direction until its source's EOF. */
static void start_tunnel(struct session *s)
{
	s->tunnel = true;
	s->final_response = true;
	s->response_started = true;
	s->close_after = true;
	s->upstream_reusable = false;
	buf_free(&s->req_head);
	flow_start_body(&s->req, FRAMING_CLOSE, 0);
	flow_start_body(&s->resp, FRAMING_CLOSE, 0);
	stats.tunnels++;
	timer_arm(&s->timer, s->cfg->tunnel_timeout_ms);
	sockmap_start(s);
}

static void start_exchange(struct session *s)
{
	static const char established[] = "HTTP/1.1 200 Connection Established\r\n\r\n";

	s->state = S_EXCHANGE;
	if (s->connect_tunnel) {
		if (flow_push(&s->resp, established, sizeof(established) - 1) < 0) {
			reply_error(s, 500);
			return;
		}
		final_status(s, 200);
		start_tunnel(s);
		return;
	}
	if (flow_push(&s->req, buf_start(&s->req_head), buf_len(&s->req_head)) < 0) {
		reply_error(s, 500);
		return;
	}
	flow_start_body(&s->req, s->req_framing, s->req_length);
	if (!head_start(&s->rs, false)) {
		reply_error(s, 500);
		return;
	}
	s->final_response = false;
	s->req_failed = false;
	s->req_sent = false;
	/* Until the request is sent, the idle timeout bounds inactivity. */
	timer_arm(&s->timer,
		  idle_timeout(s) < response_timeout(s) ? idle_timeout(s) : response_timeout(s));
}

static void sockaddr_text(const struct sockaddr_any *a, char *out, size_t len)
{
	const struct sockaddr *sa = (const struct sockaddr *)&a->ss;
	char ip[INET6_ADDRSTRLEN] = "?";

	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *sin = (const void *)sa;

		inet_ntop(AF_INET, &sin->sin_addr, ip, sizeof(ip));
		snprintf(out, len, "%s:%u", ip, ntohs(sin->sin_port));
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const void *)sa;

		inet_ntop(AF_INET6, &sin6->sin6_addr, ip, sizeof(ip));
		snprintf(out, len, "[%s]:%u", ip, ntohs(sin6->sin6_port));
	} else {
		snprintf(out, len, "?");
	}
}

enum retry_trigger {
	TRIGGER_CONNECT, /* refused or timed out: nothing reached the server */
	TRIGGER_EMPTY, /* closed or reset before any response byte */
	TRIGGER_5XX,
	TRIGGER_TIMEOUT, /* no response head in time */
};

static bool method_idempotent(unsigned int method)
{
	switch (method) {
	case HTTP_GET:
	case HTTP_HEAD:
	case HTTP_OPTIONS:
	case HTTP_TRACE:
	case HTTP_PUT:
	case HTTP_DELETE:
		return true;
	default:
		return false;
	}
}

static bool can_retry(const struct session *s, enum retry_trigger trigger)
{
	const struct route *r = s->target.route;
	static const unsigned int needs[] = { RETRY_ON_CONNECT, RETRY_ON_CONNECT, RETRY_ON_5XX,
					      RETRY_ON_TIMEOUT };

	if (!r || !(r->retry_on & needs[trigger]) || s->attempts >= r->retries)
		return false;
	/* Never once anything of a response went to the client. */
	if (s->response_started || s->interim_sent || draining)
		return false;
	if (trigger == TRIGGER_CONNECT)
		return true; /* the request never left: safe for every method */
	/* The server may have acted on it; and a body already forwarded cannot be sent again. */
	if (!method_idempotent(s->req_method) && !r->retry_non_idempotent)
		return false;
	return s->req_framing == FRAMING_NONE;
}

/* Full jitter (uniform in [0, min(cap, base * 2^attempt)]): retries from many clients spread. */
static uint64_t backoff_ms(const struct session *s)
{
	const struct route *r = s->target.route;
	uint64_t ceiling = r->retry_backoff_ms;

	for (unsigned int i = 1; i < s->attempts && ceiling < r->retry_backoff_max_ms; i++)
		ceiling *= 2;
	if (ceiling > r->retry_backoff_max_ms)
		ceiling = r->retry_backoff_max_ms;
	return ceiling ? (uint64_t)random() % (ceiling + 1) : 0;
}

static void schedule_retry(struct session *s)
{
	uint64_t delay;

	s->attempts++;
	stats.upstream_retries++;
	close_upstream(s);
	flow_reset(&s->req);
	delay = backoff_ms(s);
	log_info("session %lu: retry %u of %s %s in %lu ms", (unsigned long)s->id, s->attempts,
		 llhttp_method_name((llhttp_method_t)s->req_method), s->target.target,
		 (unsigned long)delay);
	s->state = S_BACKOFF;
	timer_arm(&s->timer, delay);
}

/* A failure before any final response byte: retry if allowed, else answer @status. */
static void retry_or_fail(struct session *s, enum retry_trigger trigger, int status)
{
	s->last_failure_status = status;
	if (can_retry(s, trigger)) {
		schedule_retry(s);
		return;
	}
	if (!s->response_started) {
		reply_error(s, status);
		return;
	}
	stats.aborted_transfers++;
	session_close(s);
}

static void connect_failed(struct session *s, int err)
{
	log_info("session %lu: upstream %s: %s", (unsigned long)s->id, s->up_addr_text,
		 strerror(err));
	stats.upstream_connect_errors++;
	upstream_connect_failed(s->server, s->cfg);
	close_upstream(s);
	retry_or_fail(s, TRIGGER_CONNECT, err == ETIMEDOUT ? 504 : 502);
}

static void connect_upstream(struct session *s, bool allow_pool)
{
	const struct config *cfg = s->cfg;
	const struct sockaddr *sa = (const struct sockaddr *)&s->up_addr.ss;
	struct upstream_server *pooled_srv = NULL;
	int fd = allow_pool ? upstream_pool_take(&s->up_addr, &pooled_srv) : -1;
	int one = 1;

	if (fd >= 0) {
		s->upstream_reused = true;
		stats.upstream_reuses++;
		endpoint_attach(&s->upstream, fd);
		/* Still registered, with the pool's handler: update_events re-points it. */
		s->upstream.in_epoll = true;
		s->upstream.registered = EPOLLIN | EPOLLRDHUP;
		s->upstream.force_mod = true;
		s->conn_server = pooled_srv;
		start_exchange(s);
		return;
	}
	if (!upstream_slot_free(s->server, cfg->upstream_max_conns)) {
		/* Wait for a connection to this server to close or become idle. */
		s->state = S_QUEUED;
		upstream_wait(s->server, s);
		timer_arm(&s->timer, connect_timeout(s));
		return;
	}
	s->upstream_reused = false;
	fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		log_warn("upstream socket: %m");
		reply_error(s, 503);
		return;
	}
	/* Before connect, so the window scale matches: bounds what a stalled client can pile up
	 * in our receive queue (autotuning alone let 27 MB queue on one connection). */
	if (cfg->upstream_rcvbuf > 0 && setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &cfg->upstream_rcvbuf,
						   sizeof(cfg->upstream_rcvbuf)) < 0)
		log_warn("SO_RCVBUF: %m");
	if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0)
		log_debug("TCP_NODELAY: %m");
	set_dead_peer_options(fd, cfg);
	stats.upstream_connects++;
	endpoint_attach(&s->upstream, fd);
	s->conn_server = s->server;
	upstream_conn_opened(s->server);
	if (connect(fd, sa, s->up_addr.len) == 0) {
		start_exchange(s);
		return;
	}
	if (errno != EINPROGRESS) {
		connect_failed(s, errno);
		return;
	}
	s->upstream.writable = false;
	s->state = S_CONNECTING;
	timer_arm(&s->timer, connect_timeout(s));
}

/* Pick a server of the route's upstream (round-robin, healthy ones) and connect. */
static void choose_server(struct session *s)
{
	struct upstream *u = s->target.route->upstream;
	/* A retry goes elsewhere: a server that failed may fail again before it is marked down. */
	struct upstream_server *srv = upstream_pick(u, s->attempts ? s->server : NULL);

	if (!srv) {
		/* Fast: no connect attempt, no backoff. During a retry the answer is the one the
		 * last failure earned (504 after a timeout), not a generic 502. */
		log_info("session %lu: every server of upstream %s is down", (unsigned long)s->id,
			 u->name);
		reply_error(s,
			    s->attempts && s->last_failure_status ? s->last_failure_status : 502);
		return;
	}
	s->server = srv;
	s->up_addr = srv->addr;
	snprintf(s->up_addr_text, sizeof(s->up_addr_text), "%s", srv->text);
	connect_upstream(s, true);
}

void session_slot_available(struct session *s)
{
	if (s->state != S_QUEUED || s->client.fd < 0)
		return;
	connect_upstream(s, true);
	if (s->client.fd >= 0 && s->state != S_QUEUED)
		session_run(s);
}

static void retry_now(struct session *s)
{
	if (s->target.route->kind == ROUTE_UPSTREAM)
		choose_server(s);
	else
		connect_upstream(s, false);
}

static void on_connected(struct session *s)
{
	int err = 0;
	socklen_t len = sizeof(err);

	if (getsockopt(s->upstream.fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		err = errno;
	if (err) {
		connect_failed(s, err);
		return;
	}
	s->upstream.writable = true;
	upstream_mark_ok(s->server);
	start_exchange(s);
}

static void on_resolved(void *arg, int status, const struct sockaddr_any *addr)
{
	struct session *s = arg;

	if (!addr) {
		log_info("session %lu: resolve %s: %s", (unsigned long)s->id, s->target.host,
			 resolve_strerror(status));
		reply_error(s, 502);
	} else if (!route_destination_allowed(s->cfg, s->target.host, addr)) {
		log_info("session %lu: destination %s denied", (unsigned long)s->id,
			 s->target.host);
		reply_error(s, 403);
	} else {
		s->up_addr = *addr;
		sockaddr_text(&s->up_addr, s->up_addr_text, sizeof(s->up_addr_text));
		connect_upstream(s, !s->connect_tunnel);
	}
	/* May run inside resolve_start() (names from /etc/hosts): session_run updates events. */
	if (s->client.fd >= 0 && s->state != S_RESOLVING)
		session_run(s);
}

/*
 * A destination named by the request (url-embedded, CONNECT): connect to a literal address, or
 * resolve the name first; on_resolved checks allow/deny against the address.
 */
static void connect_destination(struct session *s)
{
	s->server = NULL;
	if (s->target.host_is_literal) {
		s->up_addr = s->target.addr;
		sockaddr_text(&s->up_addr, s->up_addr_text, sizeof(s->up_addr_text));
		/* A tunnel owns its connection: never a pooled one. */
		connect_upstream(s, !s->connect_tunnel);
		return;
	}
	s->state = S_RESOLVING;
	snprintf(s->up_addr_text, sizeof(s->up_addr_text), "%s:%u", s->target.host, s->target.port);
	timer_arm(&s->timer, connect_timeout(s));
	if (resolve_start(&s->resolve, s->target.host, s->target.port, on_resolved, s) < 0)
		reply_error(s, 502);
}

/* CONNECT host:port: a tunnel to a destination allow/deny admits, when `connect on`. */
static void handle_connect(struct session *s)
{
	const struct config *cfg = s->cfg;
	struct http_head *h = s->rq;
	const char *url = buf_start(&s->client.in) + h->url.off;

	if (!cfg->connect_enabled) {
		reply_error(s, 501);
		return;
	}
	route_target_free(&s->target);
	if (route_target_connect(url, h->url.len, &s->target) < 0 || h->has_content_length ||
	    h->has_transfer_encoding) {
		reply_error(s, 400);
		return;
	}
	if (s->target.host_is_literal &&
	    !route_destination_allowed(cfg, s->target.host, &s->target.addr)) {
		log_info("session %lu: CONNECT to %s denied", (unsigned long)s->id, s->target.host);
		reply_error(s, 403);
		return;
	}
	s->connect_tunnel = true;
	s->req_framing = FRAMING_NONE;
	s->req_length = 0;
	s->req_is_head = false;
	s->req_keep_alive = false;
	s->client_http10 = h->http_minor == 0;
	buf_free(&s->req_head);
	buf_consume(&s->client.in, h->head_len);
	connect_destination(s);
}

static void handle_request(struct session *s)
{
	const struct config *cfg = s->cfg;
	struct http_head *h = s->rq;
	const char *base = buf_start(&s->client.in);
	const char *url = base + h->url.off;
	struct request_rewrite rw = { 0 };
	const struct http_header *host = NULL;
	const struct route *r;
	int hosts = 0;

	stats.requests++;
	s->requests++;
	access_begin(s, url, h->url.len);
	s->interim_sent = s->response_started = s->final_response = false;
	s->interim_count = 0;
	s->interim_bytes = 0;
	s->retried = false;
	s->close_after = false;
	s->attempts = 0;
	for (unsigned int i = 0; i < h->n_headers; i++) {
		if (http_span_eq(base, h->headers[i].name, "Host")) {
			host = &h->headers[i];
			hosts++;
		}
	}
	/* RFC 9112 §3.2: exactly one Host in HTTP/1.1. */
	if (h->http_major != 1 || (h->http_minor >= 1 && hosts != 1) || hosts > 1) {
		reply_error(s, 400);
		return;
	}
	s->req_upgrade = s->connect_tunnel = s->tunnel = false;
	if (h->parser.method == HTTP_CONNECT) {
		handle_connect(s);
		return;
	}
	if (h->url.len == 0 || url[0] != '/') {
		reply_error(s, 400);
		return;
	}
	r = route_match(cfg, url, h->url.len, host ? base + host->value.off : NULL,
			host ? host->value.len : 0);
	if (!r) {
		reply_error(s, 404);
		return;
	}
	if (!route_allows_method(r, h->parser.method)) {
		char allow[512], extra[560];

		route_allow_header(r, allow, sizeof(allow));
		snprintf(extra, sizeof(extra), "Allow: %s\r\n", allow);
		reply_error_headers(s, 405, extra);
		return;
	}
	route_target_free(&s->target);
	if (route_target_build(r, url, h->url.len, &s->target) < 0) {
		reply_error(s, 400);
		return;
	}
	if (r->kind == ROUTE_URL_EMBEDDED && s->target.host_is_literal &&
	    !route_destination_allowed(cfg, s->target.host, &s->target.addr)) {
		log_info("session %lu: destination %s denied", (unsigned long)s->id,
			 s->target.host);
		reply_error(s, 403);
		return;
	}
	s->req_framing = h->chunked	       ? FRAMING_CHUNKED :
			 h->has_content_length ? FRAMING_LENGTH :
						 FRAMING_NONE;
	s->req_length = h->content_length;
	s->req_is_head = h->parser.method == HTTP_HEAD;
	s->req_keep_alive = h->keep_alive && !draining;
	s->client_http10 = h->http_minor == 0;

	if (r->mode >= 0)
		s->req.use_splice = s->resp.use_splice = r->mode != DATA_PATH_COPY;
	rw.target = s->target.target;
	rw.target_len = s->target.target_len;
	if (s->target.host_header[0])
		rw.host = s->target.host_header;
	else if (r->host_rewrite)
		rw.host = r->host_rewrite;
	rw.client_addr = s->client_addr;
	rw.forwarded = r->forwarded;
	rw.upgrade = http_upgrade_header(h, base);
	s->req_upgrade = rw.upgrade >= 0;
	buf_free(&s->req_head);
	if (http_build_request(&s->req_head, h, base, &rw) < 0) {
		reply_error(s, 500);
		return;
	}
	buf_consume(&s->client.in, h->head_len);

	if (r->kind == ROUTE_UPSTREAM) {
		choose_server(s);
		return;
	}
	connect_destination(s);
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

			if (!s->rq && !head_start(&s->rq, true)) {
				reply_error(s, 500);
				return;
			}
			st = http_head_feed(s->rq, buf_start(&c->in), buf_len(&c->in),
					    cfg->max_request_line, cfg->max_header_size);
			if (st == HTTP_PARSE_DONE) {
				s->req_method = s->rq->parser.method;
				handle_request(s);
				head_free(&s->rq);
				return;
			}
			if (st == HTTP_PARSE_ERROR) {
				log_debug("session %lu: bad request: %s", (unsigned long)s->id,
					  s->rq->error_reason ? s->rq->error_reason : "limits");
				reply_error(s, status_for_parse_error(s->rq->error));
				head_free(&s->rq);
				return;
			}
		}
		if (!c->readable)
			return;
		if (buf_reserve(&c->in, 4096, cfg->max_header_size + 4096) < 0) {
			reply_error(s, 431);
			return;
		}
		had = buf_len(&c->in);
		n = buf_recv(&c->in, c->fd, cfg->max_header_size + 1);
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
	return s->upstream_reused && !s->retried && s->req_framing == FRAMING_NONE &&
	       method_idempotent(s->req_method) && !s->interim_sent && !s->response_started &&
	       buf_len(&s->req_head) > 0 && buf_len(&s->upstream.in) == 0;
}

/* The upstream closed, reset or misbehaved before a final response head. */
static void upstream_failed(struct session *s, int status, const char *why)
{
	log_info("session %lu: upstream %s: %s", (unsigned long)s->id, s->up_addr_text, why);
	if (may_replace_pooled(s)) {
		s->retried = true;
		stats.upstream_retries++;
		close_upstream(s);
		flow_reset(&s->req);
		connect_upstream(s, false);
		return;
	}
	if (!s->upstream_reused)
		upstream_request_failed(s->server);
	close_upstream(s);
	retry_or_fail(s, TRIGGER_EMPTY, status);
}

/* Returns 1 when a final response head was taken, 0 when more is needed, -1 on failure. */
static int handle_response_head(struct session *s)
{
	struct http_head *h = s->rs;
	const char *base = buf_start(&s->upstream.in);
	struct location_rewrite loc = { 0 };
	enum body_framing framing;
	struct buf head = { 0 };
	bool sockmap_body;
	int rc;

	if (h->status < 100 || h->status > 999) {
		upstream_failed(s, 502, "bad status");
		return -1;
	}
	if (h->status < 200) {
		if (h->status == 101) {
			if (!s->req_upgrade || !flow_complete(&s->req)) {
				upstream_failed(s, 502, "101 without an upgrade request");
				return -1;
			}
			if (http_build_switch(&head, h, base) < 0 ||
			    flow_push(&s->resp, buf_start(&head), buf_len(&head)) < 0) {
				buf_free(&head);
				upstream_failed(s, 502, "out of memory");
				return -1;
			}
			buf_free(&head);
			final_status(s, 101);
			buf_consume(&s->upstream.in, h->head_len);
			start_tunnel(s);
			return 1;
		}
		/* Interim responses (100 Continue, 103 Early Hints) are relayed as they are. */
		s->interim_count++;
		s->interim_bytes += h->head_len;
		if (s->interim_count > INTERIM_MAX_COUNT || s->interim_bytes > INTERIM_MAX_BYTES) {
			stats.interim_floods++;
			upstream_failed(s, 502, "too many interim responses");
			return -1;
		}
		if (flow_push(&s->resp, base, h->head_len) < 0) {
			upstream_failed(s, 502, "out of memory");
			return -1;
		}
		count_status(h->status);
		s->interim_sent = true;
		buf_consume(&s->upstream.in, h->head_len);
		http_head_init(s->rs, false);
		return 0;
	}
	upstream_mark_ok(s->server);
	if (h->status >= 500 && can_retry(s, TRIGGER_5XX)) {
		log_info("session %lu: upstream %s answered %d", (unsigned long)s->id,
			 s->up_addr_text, h->status);
		schedule_retry(s);
		return -1;
	}
	if (s->req_is_head || h->status == 204 || h->status == 304)
		framing = FRAMING_NONE;
	else if (h->has_transfer_encoding)
		framing = h->chunked ? FRAMING_CHUNKED : FRAMING_CLOSE;
	else if (h->has_content_length)
		framing = FRAMING_LENGTH;
	else
		framing = FRAMING_CLOSE;

	sockmap_body = response_wants_sockmap(s, framing, h->content_length);
	s->upstream_reusable = h->keep_alive && framing != FRAMING_CLOSE && !s->req_failed &&
			       !sockmap_body;
	/* An answer before the request body was fully sent poisons the upstream connection, and
	 * the client connection cannot find its next request: both close after this response. */
	if (!flow_complete(&s->req) || s->req_failed) {
		s->upstream_reusable = false;
		s->close_after = true;
	}
	if (!s->req_keep_alive || framing == FRAMING_CLOSE || sockmap_body || draining)
		s->close_after = true;

	if (s->target.route->kind == ROUTE_URL_EMBEDDED) {
		loc.prefix = s->target.route->prefix;
		loc.authority = s->target.host_header;
		loc.req_path = s->target.target;
	}
	rc = http_build_response(&head, h, base, s->close_after, s->client_http10,
				 loc.prefix ? &loc : NULL);
	if (rc == 0)
		rc = flow_push(&s->resp, buf_start(&head), buf_len(&head));
	buf_free(&head);
	if (rc < 0) {
		upstream_failed(s, 502, "out of memory");
		return -1;
	}
	final_status(s, h->status);
	s->final_response = true;
	s->response_started = true;
	buf_free(&s->req_head);
	buf_consume(&s->upstream.in, h->head_len);
	flow_start_body(&s->resp, framing, h->content_length);
	timer_arm(&s->timer, idle_timeout(s));
	if (sockmap_body) {
		sockmap_start_response(s);
		if (s->client.fd < 0)
			return -1;
	}
	return 1;
}

/*
 * Parse the response head(s) in u->in, reading more while the upstream has bytes, within
 * HEAD_READ_BUDGET reads and while relayed interim responses do not back up. Returns 1 when a
 * final response head was taken, 0 when more is needed, -1 when the session moved on (error).
 */
static int read_response_head(struct session *s)
{
	const struct config *cfg = s->cfg;
	struct endpoint *u = &s->upstream;
	unsigned int reads = 0;

	for (;;) {
		ssize_t n;

		if (buf_len(&u->in)) {
			enum http_parse_status st =
				http_head_feed(s->rs, buf_start(&u->in), buf_len(&u->in),
					       cfg->max_header_size, cfg->max_header_size);

			if (st == HTTP_PARSE_DONE) {
				int r = handle_response_head(s);

				if (r > 0)
					head_free(&s->rs);
				if (r != 0)
					return r;
				continue;
			}
			if (st == HTTP_PARSE_ERROR) {
				upstream_failed(s, 502, "malformed response head");
				return -1;
			}
		}
		if (u->rd_eof) {
			upstream_failed(s, 502, "closed before the response head");
			return -1;
		}
		if (!u->readable || interim_backlogged(s) || reads++ == HEAD_READ_BUDGET)
			return 0;
		if (buf_reserve(&u->in, 4096, cfg->max_header_size + 4096) < 0) {
			upstream_failed(s, 502, "response head too large");
			return -1;
		}
		n = buf_recv(&u->in, u->fd, cfg->max_header_size + 1);
		if (n > 0)
			continue;
		if (n == 0) {
			u->rd_eof = true;
			continue;
		}
		if (errno == EAGAIN || errno == EINTR) {
			u->readable = false;
			return 0;
		}
		upstream_failed(s, 502, strerror(errno));
		return -1;
	}
}

static bool upstream_clean(struct session *s)
{
	struct endpoint *u = &s->upstream;
	int unread = 0;

	if (!s->upstream_reusable || buf_len(&u->in) || u->rd_eof || u->hup || s->resp.paused)
		return false;
	/* Bytes past the end of the response mean the framing was not what it said. */
	if (ioctl(u->fd, SIOCINQ, &unread) < 0 || unread > 0)
		return false;
	return true;
}

static void finish_transaction(struct session *s)
{
	access_end(s);
	if (!flow_complete(&s->req) || s->req_failed) {
		s->close_after = true;
		s->upstream_reusable = false;
	}
	if (s->upstream.fd >= 0) {
		if (upstream_clean(s)) {
			int fd = s->upstream.fd;
			bool registered = s->upstream.in_epoll;

			s->upstream.in_epoll = false;
			s->upstream.fd = -1;
			buf_free(&s->upstream.in);
			struct upstream_server *srv = s->conn_server;

			s->conn_server = NULL;
			upstream_pool_put(fd, &s->up_addr, srv, registered);
		} else {
			close_upstream(s);
		}
	}
	flow_finish(&s->req);
	flow_finish(&s->resp);
	route_target_free(&s->target);
	buf_free(&s->req_head);
	if (s->close_after || draining) {
		begin_linger(s);
		return;
	}
	s->state = S_REQUEST_HEAD;
	head_free(&s->rs);
	buf_release(&s->client.in);
	timer_arm(&s->timer, s->cfg->client_timeout_ms);
}

/*
 * Both directions move independently. When one direction's source ends and everything it sent
 * has gone out, the other side's write half is shut (half-close propagated); the session ends
 * when both directions have ended.
 */
static void step_tunnel(struct session *s)
{
	struct flow *flows[2] = { &s->req, &s->resp };

	for (int i = 0; i < 2; i++) {
		struct flow *f = flows[i];

		if (!f->active)
			continue;
		if (flow_pump(f) != FLOW_OK) {
			log_debug("session %lu: tunnel closed by an error", (unsigned long)s->id);
			session_close(s);
			return;
		}
		if (flow_complete(f)) {
			if (shutdown(f->dst->fd, SHUT_WR) < 0 && errno != ENOTCONN) {
				session_close(s);
				return;
			}
			f->active = false;
		}
	}
	if (!s->req.active && !s->resp.active)
		session_close(s);
}

static void step_exchange(struct session *s)
{
	enum flow_status st;

	if (s->sockmap) {
		sockmap_step(s);
		return;
	}
	if (s->tunnel) {
		step_tunnel(s);
		return;
	}
	if (s->client.hup) {
		/* Client gone: the upstream connection is closed, not reused; pipes discarded. */
		log_debug("session %lu: client gone", (unsigned long)s->id);
		if (s->final_response && !flow_complete(&s->resp))
			stats.aborted_transfers++;
		session_close(s);
		return;
	}
	if (!s->req_failed && s->upstream.fd >= 0) {
		st = flow_pump(&s->req);
		if (st == FLOW_SRC_ERROR) {
			/* The client's body ended early or was malformed: nothing sane to answer. */
			log_info("session %lu: request body from client failed",
				 (unsigned long)s->id);
			session_close(s);
			return;
		}
		if (st == FLOW_DST_ERROR) {
			s->req_failed = true;
			flow_reset(&s->req);
			if (may_replace_pooled(s)) {
				upstream_failed(s, 502, "request refused by a pooled connection");
				return;
			}
			/* The server may still have answered (e.g. 413): read on. */
		}
		if (!s->req_sent && flow_complete(&s->req)) {
			s->req_sent = true;
			if (!s->final_response)
				timer_arm(&s->timer, response_timeout(s));
		}
	}
	if (!s->final_response && s->upstream.fd >= 0 && read_response_head(s) < 0)
		return;
	if (s->state != S_EXCHANGE)
		return;
	if (s->sockmap)
		return;
	if (s->tunnel) {
		step_tunnel(s);
		return;
	}
	st = flow_pump(&s->resp);
	if (st == FLOW_SRC_ERROR) {
		log_info("session %lu: upstream %s failed inside the response body",
			 (unsigned long)s->id, s->up_addr_text);
		stats.aborted_transfers++;
		session_close(s);
		return;
	}
	if (st == FLOW_DST_ERROR) {
		if (!flow_complete(&s->resp))
			stats.aborted_transfers++;
		session_close(s);
		return;
	}
	if (s->final_response && flow_complete(&s->resp))
		finish_transaction(s);
}

static void step_replying(struct session *s)
{
	if (s->client.hup || flow_pump(&s->resp) != FLOW_OK) {
		session_close(s);
		return;
	}
	if (flow_drained(&s->resp))
		begin_linger(s);
}

static void step_linger(struct session *s)
{
	char sink[16384];

	for (int i = 0; i < LINGER_READ_BUDGET && s->client.readable; i++) {
		ssize_t n = recv(s->client.fd, sink, sizeof(sink), 0);

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

static void session_run(struct session *s)
{
	for (int i = 0; i < SESSION_MAX_TRANSITIONS && s->client.fd >= 0; i++) {
		enum session_state before = s->state;

		switch (s->state) {
		case S_REQUEST_HEAD:
			step_request_head(s);
			break;
		case S_RESOLVING:
		case S_QUEUED:
		case S_BACKOFF:
		case S_CONNECTING:
			if (s->client.hup)
				session_close(s);
			break;
		case S_EXCHANGE:
			step_exchange(s);
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

static void on_endpoint_event(struct loop_handler *h, uint32_t events)
{
	struct endpoint *e = (struct endpoint *)h;
	struct session *s = e->s;

	if (e->fd < 0 || s->client.fd < 0)
		return; /* closed earlier in this batch */
	if (events & EPOLLIN)
		e->readable = true;
	if (events & EPOLLOUT)
		e->writable = true;
	if (events & (EPOLLERR | EPOLLHUP)) {
		/* Let the next read or write report what happened. */
		e->hup = true;
		e->readable = e->writable = true;
	}
	if (e == &s->upstream && s->state == S_CONNECTING) {
		on_connected(s);
		if (s->client.fd < 0)
			return;
	}
	session_run(s);
}

static void on_session_timer(struct timer *t)
{
	struct session *s = (struct session *)((char *)t - offsetof(struct session, timer));
	const struct config *cfg = s->cfg;
	uint64_t last, now;

	switch (s->state) {
	case S_REQUEST_HEAD:
		if (buf_len(&s->client.in))
			reply_error(s, 408);
		else
			session_close(s);
		break;
	case S_RESOLVING:
		log_info("session %lu: resolving %s timed out", (unsigned long)s->id,
			 s->up_addr_text);
		reply_error(s, 504);
		break;
	case S_QUEUED:
		log_info("session %lu: no connection slot on %s in time", (unsigned long)s->id,
			 s->up_addr_text);
		reply_error(s, 503);
		break;
	case S_BACKOFF:
		retry_now(s);
		break;
	case S_CONNECTING:
		log_info("session %lu: connect to %s timed out", (unsigned long)s->id,
			 s->up_addr_text);
		stats.upstream_connect_errors++;
		upstream_connect_failed(s->server, cfg);
		close_upstream(s);
		retry_or_fail(s, TRIGGER_CONNECT, 504);
		break;
	case S_EXCHANGE:
		if (s->sockmap) {
			uint64_t moved = sockmap_bytes(s);

			if (moved != s->sm_last_bytes) {
				s->sm_last_bytes = moved;
				s->sm_last_change_ms = now_ms();
			} else if (!s->sm_timer &&
				   now_ms() - s->sm_last_change_ms >= idle_timeout(s)) {
				log_info("session %lu: sockmap flow idle, closing",
					 (unsigned long)s->id);
				stats.timeouts++;
				if (s->sockmap_response)
					stats.aborted_transfers++;
				session_close(s);
				return;
			}
			s->sm_timer = false;
			break; /* session_run pumps and re-arms */
		}
		if (s->req_sent && !s->final_response) {
			log_info("session %lu: no response from %s in time", (unsigned long)s->id,
				 s->up_addr_text);
			upstream_request_failed(s->server);
			close_upstream(s);
			retry_or_fail(s, TRIGGER_TIMEOUT, 504);
			break;
		}
		last = s->req.last_progress_ms > s->resp.last_progress_ms ?
			       s->req.last_progress_ms :
			       s->resp.last_progress_ms;
		now = now_ms();
		if (now - last < idle_timeout(s)) {
			timer_arm(&s->timer, idle_timeout(s) - (now - last));
			return;
		}
		log_info("session %lu: transfer idle for %lu ms, closing", (unsigned long)s->id,
			 (unsigned long)(now - last));
		stats.timeouts++;
		if (!s->response_started) {
			reply_error(s, 504);
			break;
		}
		stats.aborted_transfers++;
		session_close(s);
		return;
	case S_REPLYING:
	case S_LINGER:
		session_close(s);
		return;
	}
	if (s->client.fd >= 0)
		session_run(s);
}

struct session *session_create(int fd, const struct config *cfg, bool reject)
{
	struct sockaddr_any peer = { .len = sizeof(peer.ss) };
	struct session *s = calloc(1, sizeof(*s));
	int one = 1;

	if (!s) {
		close(fd);
		return NULL;
	}
	s->id = next_id++;
	s->cfg = config_get(cfg); /* dropped in session_free() */
	s->created_ms = now_ms();
	s->timer.on_expire = on_session_timer;
	if (getpeername(fd, (struct sockaddr *)&peer.ss, &peer.len) == 0) {
		char text[INET6_ADDRSTRLEN + 16], *colon;

		sockaddr_text(&peer, text, sizeof(text));
		/* X-Forwarded-For carries the address without the port. */
		colon = strrchr(text, ':');
		if (colon)
			*colon = '\0';
		if (text[0] == '[') {
			text[strlen(text) - 1] = '\0';
			snprintf(s->client_addr, sizeof(s->client_addr), "%s", text + 1);
		} else {
			snprintf(s->client_addr, sizeof(s->client_addr), "%s", text);
		}
	} else {
		snprintf(s->client_addr, sizeof(s->client_addr), "unknown");
	}
	/* Bounds what a slow client lets pile up in kernel memory on our side. */
	if (cfg->client_sndbuf > 0 && setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &cfg->client_sndbuf,
						 sizeof(cfg->client_sndbuf)) < 0)
		log_warn("SO_SNDBUF: %m");
	if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0)
		log_debug("TCP_NODELAY: %m");
	set_dead_peer_options(fd, cfg);

	s->client.h.on_event = on_endpoint_event;
	s->client.s = s;
	endpoint_attach(&s->client, fd);
	s->upstream.h.on_event = on_endpoint_event;
	s->upstream.s = s;
	s->upstream.fd = -1;
	flow_init(&s->req, DIR_REQUEST, &s->client, &s->upstream, cfg);
	flow_init(&s->resp, DIR_RESPONSE, &s->upstream, &s->client, cfg);

	s->next = sessions;
	if (sessions)
		sessions->prev = s;
	sessions = s;
	n_sessions++;
	stats.connections_active++;
	ctl_notify_conn_open(s);

	if (reject) {
		stats.connections_rejected++;
		reply_error(s, 503);
	} else {
		s->state = S_REQUEST_HEAD;
		timer_arm(&s->timer, cfg->client_timeout_ms);
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
