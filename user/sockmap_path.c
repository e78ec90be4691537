// SPDX-License-Identifier: GPL-2.0
/*
 * The BPF sockmap data path in the daemon: loading it (the event ring in the loop), and the
 * session's side of a hand-over: what a tunnel or a response body takes along (bytes kfwd
 * holds), pumping the flow, its idle timeout, and its counters at the end.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include "log.h"
#include "loop.h"
#include "mem_budget.h"
#include "session.h"
#include "sockmap.h"
#include "sockmap_path.h"
#include "stats.h"

static char reason[256] = "not enabled: no data-path or route mode asks for sockmap";
static struct loop_handler event_handler;
static bool event_registered;

/* A master's: the workers' flows (user/workers.c); NULL when the flows are this process's. */
static sockmap_event_cb router;
/* A worker never loads BPF: it would clean the master's pins away as stale. */
static bool load_forbidden;

static void on_ring_event(struct loop_handler *h, uint32_t events)
{
	/* Each flow's owner hears of its events through sockmap_flow_args.on_event. */
	if (sockmap_handle_events(router, NULL) < 0)
		log_warn("sockmap: reading the event ring failed");
}

void sockmap_path_route_events(sockmap_event_cb route)
{
	router = route;
}

void sockmap_path_share_after_fork(uint8_t tag)
{
	load_forbidden = true;
	event_registered = false; /* the master reads the ring */
	if (sockmap_ready())
		sockmap_share_after_fork(tag);
	else
		snprintf(
			reason, sizeof(reason),
			"workers: the master did not load it (it must be in the configuration kfwd "
			"starts with)");
}

void sockmap_path_init(const struct config *cfg)
{
	int fd;

	if (sockmap_ready() || !config_wants_sockmap(cfg))
		return;
	if (load_forbidden) {
		log_warn("sockmap data path unavailable (%s): tunnels use splice", reason);
		return;
	}
	if (sockmap_init(cfg->bpf_pin_dir, reason, sizeof(reason)) < 0) {
		log_warn("sockmap data path unavailable (%s): tunnels use splice", reason);
		return;
	}
	fd = sockmap_event_fd();
	event_handler.on_event = on_ring_event;
	if (fd < 0 || loop_add(fd, EPOLLIN, &event_handler) < 0) {
		snprintf(reason, sizeof(reason), "event ring not pollable");
		log_warn("sockmap data path unavailable (%s): tunnels use splice", reason);
		sockmap_shutdown();
		return;
	}
	event_registered = true;
	reason[0] = '\0';
	log_info("sockmap data path ready, pinned under %s", cfg->bpf_pin_dir);
}

void sockmap_path_fini(void)
{
	if (!sockmap_ready())
		return;
	if (event_registered)
		loop_del(sockmap_event_fd());
	event_registered = false;
	sockmap_shutdown();
}

const char *sockmap_path_reason(void)
{
	return sockmap_ready() ? NULL : reason;
}

/* ---- the session side */

static enum data_path route_data_path(const struct session *s)
{
	const struct route *r = s->x->target->route;

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

void sockmap_session_finish(struct session *s)
{
	struct sockmap_stats st;

	if (sockmap_flow_stats(s->x->sockmap_flow, &st) == 0) {
		const struct sockmap_dir_stats *a = &st.dir[SOCKMAP_A_TO_B];
		const struct sockmap_dir_stats *b = &st.dir[SOCKMAP_B_TO_A];

		stats.bytes_copied[DIR_REQUEST] += a->user_written;
		stats.bytes_copied[DIR_RESPONSE] += b->user_written;
		s->x->req.pauses += a->pause_count;
		s->x->resp.pauses += b->pause_count;
		s->x->req.bytes_out += a->redirected + a->user_written;
		s->x->resp.bytes_out += b->redirected + b->user_written;
	}
	sockmap_flow_del(s->x->sockmap_flow);
	s->x->sockmap = false;
	s->x->sockmap_response = false;
}

static uint64_t sockmap_bytes(const struct session *s)
{
	struct sockmap_stats st;

	if (sockmap_flow_stats(s->x->sockmap_flow, &st) < 0)
		return 0;
	return st.dir[0].redirected + st.dir[0].user_written + st.dir[1].redirected +
	       st.dir[1].user_written;
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
	if (s->x->upstream.fd >= 0)
		(void)setsockopt(s->x->upstream.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
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

enum sockmap_step_result sockmap_session_step(struct session *s)
{
	struct sockmap_want want;
	int r;

	if (socket_failed(&s->client) || socket_failed(&s->x->upstream)) {
		log_info("session %lu: sockmap flow peer reset, closing", (unsigned long)s->id);
		sockmap_abort(s);
		return SOCKMAP_STEP_CLOSED;
	}
	r = sockmap_flow_pump(s->x->sockmap_flow, &want);
	if (r != SOCKMAP_RUNNING) {
		if (r < 0) {
			log_info("session %lu: sockmap flow failed: %m", (unsigned long)s->id);
			sockmap_abort(s);
			return SOCKMAP_STEP_CLOSED;
		}
		if (s->x->sockmap_response) {
			/* Every body byte is in the client's send queue and SHUT_WR went out. */
			struct sockmap_stats st;

			if (sockmap_flow_stats(s->x->sockmap_flow, &st) == 0 &&
			    st.dir[SOCKMAP_B_TO_A].cut) {
				log_info("session %lu: upstream %s closed inside the response body",
					 (unsigned long)s->id, s->up_addr_text);
				stats.aborted_transfers++;
			}
			sockmap_session_finish(s);
			return SOCKMAP_STEP_RESPONSE_DONE;
		}
		session_close(s);
		return SOCKMAP_STEP_CLOSED;
	}
	s->x->sm_events_client = want.events_a;
	s->x->sm_events_upstream = want.events_b;
	if (want.timeout_ms >= 0) {
		s->x->sm_timer = true;
		timer_arm(&s->timer, (uint64_t)want.timeout_ms);
	} else if (s->x->sm_timer || !timer_armed(&s->timer)) {
		s->x->sm_timer = false;
		timer_arm(&s->timer, session_idle_timeout(s));
	}
	return SOCKMAP_STEP_RUNNING;
}

/*
 * The sockmap module gives back what it drained from a source that never paused long enough to
 * be taken over: those bytes come first on the splice path, which goes on instead.
 */
static int sockmap_spill(void *owner, int dir, const void *data, size_t len)
{
	struct session *s = owner;
	struct endpoint *src = dir == SOCKMAP_A_TO_B ? &s->client : &s->x->upstream;

	return buf_append(&src->in, data, len);
}

/* The sockmap module reported something on this session's flow (a pause): pump it. */
static void sockmap_on_event(void *owner)
{
	struct session *s = owner;

	if (s->x->sockmap && s->client.fd >= 0)
		session_run(s);
}

/* What every sockmap flow of this session starts with: its sockets, cap and mode. */
static void sockmap_args_init(struct sockmap_flow_args *args, struct session *s)
{
	memset(args, 0, sizeof(*args));
	args->fd_a = s->client.fd;
	args->fd_b = s->x->upstream.fd;
	args->cap_bytes = s->cfg->sockmap_cap;
	if (route_data_path(s) == DATA_PATH_SOCKMAP_UNBOUNDED)
		args->flags = SOCKMAP_UNBOUNDED;
	args->owner = s;
	args->spill = sockmap_spill;
	args->on_event = sockmap_on_event;
}

/*
 * max-memory: the flow is charged its caps, and the sockets' buffers at their configured sizes
 * (passed bytes wait in the upstream's receive queue, redirected ones in the client's send
 * queue), which they get back once in the sockmap. A cap is granted like a flow's allowance:
 * MEM_BUDGET_FLOOR (sockmap-cap's minimum), and what it asks beyond as far as the budget has
 * room once the sockets are counted (the session's flows give their charges back with the
 * hand-over).
 */
static void sockmap_args_charge(struct sockmap_flow_args *args, struct session *s, int dirs)
{
	uint64_t sockets, room, fixed;

	if (!mem_budget_on())
		return;
	sockets = flow_budget_sockmap_charge(&s->x->resp);
	room = mem_budget_free() + s->x->req.charge.bytes + s->x->resp.charge.bytes;
	fixed = MEM_BUDGET_FLOOR * (uint64_t)dirs + sockets;
	room = MEM_BUDGET_FLOOR + (room > fixed ? (room - fixed) / (uint64_t)dirs : 0);
	if (args->cap_bytes > room)
		args->cap_bytes = room;
	args->mem_charge = args->cap_bytes * (uint64_t)dirs + sockets;
}

/* The flow is in the sockmap: the daemon leaves its sockets alone; its idle clock starts. */
static void sockmap_entered(struct session *s)
{
	s->x->sockmap = true;
	s->x->log_sockmap = true;
	s->x->sm_timer = false;
	s->x->sm_last_bytes = 0;
	s->x->sm_last_change_ms = now_ms();
	stats.sockmap_flows++;
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
 * On 6.18 a socket enters a sockmap only while TCP_ESTABLISHED: one whose peer already sent its
 * FIN (CLOSE_WAIT) is refused with EOPNOTSUPP, after the hand-over has drained bytes from it.
 * Checked first, so such a tunnel simply stays on splice with nothing taken.
 */
static bool tcp_established(int fd)
{
	struct tcp_info ti;
	socklen_t len = sizeof(ti);

	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0)
		return false;
	return ti.tcpi_state == TCP_ESTABLISHED;
}

/*
 * Hand a tunnel to the BPF sockmap when its data path says so and the path is ready. Bytes
 * kfwd holds (the 101 head, bytes read past the heads) go to the module first. Falls back to
 * splice when a pipe already holds bytes (they could not be handed over in order).
 */
void sockmap_session_start_tunnel(struct session *s)
{
	enum data_path dp = route_data_path(s);
	struct sockmap_flow_args args;
	struct buf to_up = { 0 }, to_client = { 0 };
	int rc;

	if (dp != DATA_PATH_SOCKMAP && dp != DATA_PATH_SOCKMAP_UNBOUNDED)
		return;
	/* The kernel forwards only what a transport leaves as plain TCP bytes. */
	if (!endpoint_can_splice(&s->client) || !endpoint_can_splice(&s->x->upstream))
		return;
	if (!sockmap_ready() || s->x->req.pipe_level || s->x->resp.pipe_level) {
		log_debug("session %lu: tunnel stays on splice (%s)", (unsigned long)s->id,
			  sockmap_ready() ? "pipe not empty" : sockmap_path_reason());
		return;
	}
	if (!tcp_established(s->client.fd) || !tcp_established(s->x->upstream.fd)) {
		log_debug("session %lu: tunnel stays on splice (a peer already closed)",
			  (unsigned long)s->id);
		stats.sockmap_start_fallbacks++;
		return;
	}
	if (collect_pending(&to_up, &s->x->req, SIZE_MAX) < 0 ||
	    collect_pending(&to_client, &s->x->resp, SIZE_MAX) < 0) {
		buf_free(&to_up);
		buf_free(&to_client);
		session_close(s);
		return;
	}
	sockmap_args_init(&args, s);
	sockmap_args_charge(&args, s, 2);
	args.pending_a_to_b = buf_start(&to_up);
	args.pending_a_to_b_len = buf_len(&to_up);
	args.pending_b_to_a = buf_start(&to_client);
	args.pending_b_to_a_len = buf_len(&to_client);
	rc = sockmap_flow_add_ex(&args, &s->x->sockmap_flow);
	buf_free(&to_up);
	buf_free(&to_client);
	if (rc < 0) {
		/* Unless the module gave its bytes back, it may have consumed queued bytes: the
		 * tunnel cannot go on. */
		if (sockmap_add_failed(s))
			session_close(s);
		return;
	}
	flow_budget_sockmap_sockets(&s->x->resp);
	flow_reset(&s->x->req);
	flow_reset(&s->x->resp);
	buf_free(&s->client.in);
	buf_free(&s->x->upstream.in);
	sockmap_entered(s);
	(void)sockmap_session_step(s);
}

/*
 * Should this response body go through the sockmap? Only when its route asks for it, the
 * request is wholly delivered (the upstream connection then carries nothing but this body),
 * and both connections end with the body: a socket leaves the sockmap only at connection end
 * (taking one out mid-stream corrupted bytes on this kernel), so a Content-Length body long
 * enough to be worth it closes its client connection after it.
 */
bool sockmap_session_wants_response(const struct session *s, enum body_framing framing,
				    uint64_t length)
{
	enum data_path dp = route_data_path(s);

	if (dp != DATA_PATH_SOCKMAP && dp != DATA_PATH_SOCKMAP_UNBOUNDED)
		return false;
	if (!sockmap_ready() || !flow_complete(&s->x->req) || s->x->req_failed ||
	    s->x->req.pipe_level)
		return false;
	if (!endpoint_can_splice(&s->client) || !endpoint_can_splice(&s->x->upstream))
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
enum sockmap_step_result sockmap_session_start_response(struct session *s)
{
	struct sockmap_flow_args args;
	struct flow *f = &s->x->resp;
	struct buf to_client = { 0 };
	size_t body_held = buf_len(&s->x->upstream.in);
	int rc;

	if (f->framing == FRAMING_LENGTH && body_held > f->remaining)
		body_held = (size_t)f->remaining;
	if (collect_pending(&to_client, f, body_held) < 0) {
		buf_free(&to_client);
		session_close(s);
		return SOCKMAP_STEP_CLOSED;
	}
	sockmap_args_init(&args, s);
	sockmap_args_charge(&args, s, 1);
	args.flags |= SOCKMAP_B_TO_A_ONLY;
	if (f->framing == FRAMING_LENGTH) {
		args.flags |= SOCKMAP_B_LIMIT;
		args.limit_b_to_a = f->remaining - body_held;
	}
	args.pending_b_to_a = buf_start(&to_client);
	args.pending_b_to_a_len = buf_len(&to_client);
	rc = sockmap_flow_add_ex(&args, &s->x->sockmap_flow);
	buf_free(&to_client);
	if (rc < 0) {
		if (sockmap_add_failed(s)) {
			/* The module may have consumed upstream bytes: the response is lost. */
			stats.aborted_transfers++;
			session_close(s);
			return SOCKMAP_STEP_CLOSED;
		}
		return SOCKMAP_STEP_RUNNING; /* on the splice path */
	}
	flow_budget_sockmap_sockets(&s->x->resp);
	flow_reset(&s->x->resp);
	s->x->resp.body_done = true;
	buf_free(&s->x->upstream.in);
	sockmap_entered(s);
	s->x->sockmap_response = true;
	stats.sockmap_responses++;
	return sockmap_session_step(s);
}

void sockmap_session_timeout(struct session *s)
{
	uint64_t moved = sockmap_bytes(s);

	if (moved != s->x->sm_last_bytes) {
		s->x->sm_last_bytes = moved;
		s->x->sm_last_change_ms = now_ms();
	} else if (!s->x->sm_timer &&
		   now_ms() - s->x->sm_last_change_ms >= session_idle_timeout(s)) {
		log_info("session %lu: sockmap flow idle, closing", (unsigned long)s->id);
		stats.timeouts++;
		if (s->x->sockmap_response)
			stats.aborted_transfers++;
		session_close(s);
		return;
	}
	/* The session runs next: sockmap_session_step() pumps and re-arms. */
	s->x->sm_timer = false;
}
