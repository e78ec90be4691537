// SPDX-License-Identifier: GPL-2.0
/*
 * Pacing a flow whose destination reads slowly and steadily (a player at its stream's bit rate):
 * instead of EPOLLOUT, a timer on a coarse grid brings the flow back when the destination has
 * taken about half of what its socket holds. A TCP socket reports EPOLLOUT once a third of its
 * send buffer is free (sk_stream_is_writeable(), 6.18), so a flow whose send buffer is bounded
 * (client-sndbuf, max-memory's share) wakes kfwd every sndbuf/3 bytes, and 100 streams at
 * 1 MB/s woke it about 100 times a second; on the grid, every paced flow due in the same slot
 * is served in one wake-up. Its source's EPOLLIN is off meanwhile too (the source is read at
 * the same wake-up, not on each arrival). Bytes held and backpressure are unchanged: a paced
 * flow holds what it held and its watermarks apply as before. A flow that cannot show a steady
 * rate (first block, a destination that took nothing, one fast enough to empty its socket
 * within a grid slot) waits for EPOLLOUT.
 */
#include <linux/sockios.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>

#include "flow.h"
#include "util.h"

/* The grid: paced flows wake on multiples of this, so their wake-ups coincide. */
#define PACE_GRID_MS 50
/* dst's rate is measured over at least this long (its reads come in bursts). */
#define PACE_MEASURE_MS 100
/* A measurement older than this is stale: a paced dst that took nothing for that long is
 * stalled (EPOLLOUT takes over), and a rate across a stall would be far too low. */
#define PACE_STALL_MS 500
/* The longest a paced flow waits (a destination that slowed down is re-measured then). */
#define PACE_MAX_MS 200
/* Wait until the destination may have taken this fraction of its queue (1/PACE_DRAIN_DIV). */
#define PACE_DRAIN_DIV 2
/* Without a known SO_SNDBUF: tcp_wmem's default maximum (the most autotuning gives). */
#define PACE_SNDBUF_GUESS (4u << 20)
/* The kernel doubles SO_SNDBUF values for its bookkeeping (socket(7)). */
#define SOCKBUF_KERNEL_FACTOR 2

static void pace_expire(struct timer *t)
{
	struct flow *f = container_of(t, struct flow, pace_timer);
	struct endpoint *dst = f->dst;

	if (dst->fd < 0)
		return;
	stats.paced_wakeups++;
	/* src's EPOLLIN was off while paced: what arrived meanwhile is read now. */
	if (f->src->fd >= 0)
		f->src->readable = true;
	/* What EPOLLOUT would have done: the owner marks dst writable and runs the flow. */
	dst->h.on_event(&dst->h, EPOLLOUT);
}

void flow_pace_init(struct flow *f)
{
	f->pace_timer.on_expire = pace_expire;
}

void flow_pace_cancel(struct flow *f)
{
	timer_cancel(&f->pace_timer);
	f->pace_ms = 0;
	f->pace_rate = 0;
}

/* The most dst's socket may queue: what kfwd set, else the configured size, else a guess. */
static uint64_t sndbuf_bound(const struct flow *f)
{
	if (f->sndbuf_set)
		return SOCKBUF_KERNEL_FACTOR * (uint64_t)f->sndbuf_set;
	if (f->dir == DIR_RESPONSE && f->cfg->client_sndbuf > 0)
		return SOCKBUF_KERNEL_FACTOR * (uint64_t)f->cfg->client_sndbuf;
	return PACE_SNDBUF_GUESS;
}

/*
 * dst just refused bytes (EAGAIN) with bytes still held. Its rate is what it took between two
 * refusals at least PACE_MEASURE_MS apart (its socket was full both times; a shorter interval
 * says more about when the reader's last read fell than about its rate). Arms the pace timer,
 * or leaves the flow to EPOLLOUT.
 */
void flow_pace_blocked(struct flow *f)
{
	uint64_t now = now_ms(), wait_ms, at;
	int queued;

	if (f->dst->xprt != &xprt_raw || f->pace_ms == 0) {
		f->pace_ms = now;
		f->pace_out = f->bytes_out;
		f->pace_rate = 0;
		return;
	}
	if (now - f->pace_ms > PACE_STALL_MS) {
		/* Silent that long (or on EPOLLOUT since): what it took is no rate. */
		f->pace_rate = 0;
		f->pace_ms = now;
		f->pace_out = f->bytes_out;
	} else if (now - f->pace_ms >= PACE_MEASURE_MS && f->bytes_out != f->pace_out) {
		/* Window updates come in bursts: a window without progress proves nothing yet. */
		f->pace_rate = (f->bytes_out - f->pace_out) / (now - f->pace_ms);
		f->pace_ms = now;
		f->pace_out = f->bytes_out;
	}
	/* No rate (yet), or a stalled reader: only EPOLLOUT knows when it reads again. */
	if (f->pace_rate == 0)
		return;
	/* A fast destination: skip the ioctl. */
	if (sndbuf_bound(f) / PACE_DRAIN_DIV / f->pace_rate < PACE_GRID_MS)
		return;
	if (ioctl(f->dst->fd, SIOCOUTQ, &queued) < 0 || queued <= 0)
		return;
	wait_ms = (uint64_t)queued / PACE_DRAIN_DIV / f->pace_rate;
	if (wait_ms < PACE_GRID_MS)
		return;
	if (wait_ms > PACE_MAX_MS)
		wait_ms = PACE_MAX_MS;
	at = now + wait_ms;
	at -= at % PACE_GRID_MS;
	timer_arm_at(&f->pace_timer, at);
}
