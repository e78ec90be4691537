// SPDX-License-Identifier: GPL-2.0
/*
 * max-memory for one flow: the allowance of a long body, and the high-water mark and socket
 * buffers it gives (user/mem_budget.c keeps the global sum). An allowance starts at
 * MEM_BUDGET_FLOOR, so a client that never reads holds little (the next body of a keep-alive
 * connection asks for where the last one ended); it doubles each time dst has taken twice the
 * allowance since the last grant, up to the configured sizes. A grant never takes the sum past
 * the budget: the charge grows by no more than the allowance does, and the allowance by no more
 * than the budget has left. So only flows starting at the floor can take the sum over (more
 * than budget / floor of them, or arriving after others took the room); then an allowance above
 * the fair share shrinks back to it at the flow's next pump. A shrink lowers the mark and
 * SO_SNDBUF: bytes already held stay, in order and charged (the pipe at its level, dst's send
 * queue at what SIOCOUTQ reports until it is back under the new size); the flow stays paused
 * until dst drains them below the low mark.
 */
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include "flow.h"
#include "log.h"

/* The kernel doubles SO_SNDBUF and SO_RCVBUF values for its bookkeeping (socket(7)). */
#define SOCKBUF_KERNEL_FACTOR 2
/* Grow once dst has taken this many allowances since the last grant. */
#define GROW_PROOF 2
/* Bodies shorter than this are not charged: they fit in any allowance. */
#define SHORT_BODY (MEM_BUDGET_FLOOR / 2)
/* Never a mark below one page: a pipe write of less would be a wasted syscall. */
#define MIN_HIGH 4096

/* What a flow may hold at the configured sizes: the mark and the sockets kfwd sizes. */
struct flow_sizes {
	size_t high;
	size_t snd; /* dst's SO_SNDBUF (a response's client socket) */
	size_t rcv; /* src's SO_RCVBUF (a response's upstream socket) */
};

static void full_sizes(const struct config *cfg, enum flow_dir dir, size_t high,
		       struct flow_sizes *z)
{
	z->high = high;
	z->snd = dir == DIR_RESPONSE && cfg->client_sndbuf > 0 ? (size_t)cfg->client_sndbuf : 0;
	z->rcv = dir == DIR_RESPONSE && cfg->upstream_rcvbuf > 0 ? (size_t)cfg->upstream_rcvbuf : 0;
}

/*
 * The mark a flow has at its configured sizes: a TLS endpoint's flow is bound by
 * tls-copy-buffer-size (flow.c), which its allowance scales like any other mark.
 */
static size_t full_high(const struct flow *f)
{
	if (!endpoint_can_splice(f->src) || !endpoint_can_splice(f->dst))
		return f->cfg->tls_copy_buffer_size;
	return f->use_splice ? f->cfg->pipe_high_water : f->cfg->copy_buffer_size;
}

static size_t full_total(const struct flow_sizes *z)
{
	return z->high + SOCKBUF_KERNEL_FACTOR * (z->snd + z->rcv);
}

/* The part of @size an allowance of @allow out of @full leaves. */
static size_t scaled(size_t size, size_t allow, size_t full)
{
	return (size_t)((uint64_t)size * allow / full);
}

int flow_upstream_rcvbuf(const struct config *cfg)
{
	struct flow_sizes z;

	if (!mem_budget_on() || cfg->upstream_rcvbuf <= 0)
		return cfg->upstream_rcvbuf;
	full_sizes(cfg, DIR_RESPONSE,
		   cfg->data_path != DATA_PATH_COPY ? cfg->pipe_high_water : cfg->copy_buffer_size,
		   &z);
	if (full_total(&z) <= MEM_BUDGET_FLOOR)
		return cfg->upstream_rcvbuf;
	return (int)scaled(z.rcv, MEM_BUDGET_FLOOR, full_total(&z));
}

/* Raising SO_RCVBUF alone leaves the window clamp where the connect set it (6.18). */
static int raise_rcvbuf(int fd, int size)
{
	if (setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size)) < 0 ||
	    setsockopt(fd, IPPROTO_TCP, TCP_WINDOW_CLAMP, &size, sizeof(size)) < 0) {
		log_debug("raising SO_RCVBUF of fd %d: %m", fd);
		return -1;
	}
	return 0;
}

/* The sizes @allow gives (capped at the full sizes); returns the allowance so capped. */
static size_t sizes_for(const struct flow *f, size_t allow, struct flow_sizes *s)
{
	struct flow_sizes z;
	size_t full;

	full_sizes(f->cfg, f->dir, full_high(f), &z);
	full = full_total(&z);
	if (allow > full)
		allow = full;
	s->high = scaled(z.high, allow, full);
	if (s->high < MIN_HIGH)
		s->high = MIN_HIGH;
	s->snd = scaled(z.snd, allow, full);
	s->rcv = scaled(z.rcv, allow, full);
	return allow;
}

/*
 * What a flow with mark @high and sockets of @snd and @rcv may hold: the mark (or the level,
 * if more), the sockets as the kernel doubles them, and what dst's send queue still holds from
 * a larger SO_SNDBUF. Grows by no more than an allowance that gives these sizes.
 */
static uint64_t charge_of(const struct flow *f, size_t high, size_t snd, size_t rcv)
{
	size_t level = flow_level(f);
	uint64_t sndq = SOCKBUF_KERNEL_FACTOR * (uint64_t)snd;

	if (f->snd_queued > sndq)
		sndq = f->snd_queued;
	return (level > high ? level : high) + sndq + SOCKBUF_KERNEL_FACTOR * (uint64_t)rcv;
}

static void charge(struct flow *f)
{
	int queued;

	/*
	 * After a shrink: dst's queue counts at its real length until back under SO_SNDBUF, never
	 * above what the old size was charged (one skb past a limit is the kernel's granularity,
	 * not a grant: counting it would take the sum over with no grant made).
	 */
	if (f->snd_queued > SOCKBUF_KERNEL_FACTOR * (uint64_t)f->sndbuf_set && f->dst->fd >= 0 &&
	    ioctl(f->dst->fd, SIOCOUTQ, &queued) == 0 && (uint64_t)queued < f->snd_queued)
		f->snd_queued = queued > 0 ? (uint64_t)queued : 0;
	mem_budget_update(&f->charge, charge_of(f, f->budget_high, (size_t)f->sndbuf_set,
						(size_t)f->rcvbuf_set));
}

/*
 * The allowance between @cur and @want the budget has room for: what mem_budget_grant() gives,
 * less the bytes by which the charge would pass it (the sizes round down separately, and a
 * level above the mark or a receive buffer an earlier body grew do not scale).
 */
static size_t fit(const struct flow *f, size_t cur, size_t want)
{
	uint64_t room = mem_budget_free() + f->charge.bytes, bytes;
	size_t got = (size_t)mem_budget_grant(cur, want);
	struct flow_sizes s;

	while (got > cur) {
		sizes_for(f, got, &s);
		bytes = charge_of(f, s.high, s.snd,
				  s.rcv > (size_t)f->rcvbuf_set ? s.rcv : (size_t)f->rcvbuf_set);
		if (bytes <= room)
			break;
		got = bytes - room < got - cur ? got - (size_t)(bytes - room) : cur;
	}
	return got;
}

/*
 * Size the mark and the sockets for @allow. A receive buffer only grows: shrinking it under a
 * window already offered made the kernel drop what the sender had the right to send (measured:
 * 0.4 MB/s on loopback), so it stays charged at its size.
 */
static void apply(struct flow *f, size_t allow)
{
	struct flow_sizes s;

	f->allow = sizes_for(f, allow, &s);
	f->budget_high = s.high;
	if (s.snd && f->dst->fd >= 0 && (int)s.snd != f->sndbuf_set) {
		int snd = (int)s.snd;
		uint64_t was = SOCKBUF_KERNEL_FACTOR * (uint64_t)f->sndbuf_set;

		if (setsockopt(f->dst->fd, SOL_SOCKET, SO_SNDBUF, &snd, sizeof(snd)) == 0) {
			/* What the old size let the kernel queue stays until dst takes it. */
			if (snd < f->sndbuf_set && was > f->snd_queued)
				f->snd_queued = was;
			f->sndbuf_set = snd;
		}
	}
	if (s.rcv && f->src->fd >= 0 && (int)s.rcv > f->rcvbuf_set &&
	    raise_rcvbuf(f->src->fd, (int)s.rcv) == 0)
		f->rcvbuf_set = (int)s.rcv;
	f->budget_out = f->bytes_out;
	charge(f);
}

void flow_budget_start(struct flow *f, enum body_framing framing, uint64_t length)
{
	struct flow_sizes z;
	int rcv = 0;
	socklen_t len = sizeof(rcv);

	if (!mem_budget_on() || f->charge.on || framing == FRAMING_NONE ||
	    (framing == FRAMING_LENGTH && length < SHORT_BODY))
		return;
	full_sizes(f->cfg, f->dir, full_high(f), &z);
	if (full_total(&z) <= MEM_BUDGET_FLOOR)
		return;
	/* dst's SO_SNDBUF is client-sndbuf (set at accept) or what an earlier body left, less:
	 * once apply() sets the new size, SIOCOUTQ tells what its queue still holds. */
	f->sndbuf_set = z.snd ? (int)z.snd : 0;
	f->snd_queued = 0;
	f->rcvbuf_set = 0;
	/* A pooled connection keeps the receive buffer an earlier body grew. */
	if (z.rcv && f->src->fd >= 0 &&
	    getsockopt(f->src->fd, SOL_SOCKET, SO_RCVBUF, &rcv, &len) == 0)
		f->rcvbuf_set = rcv / SOCKBUF_KERNEL_FACTOR;
	/* The floor is every flow's; what it grows beyond comes out of what the budget has left. */
	sizes_for(f, MEM_BUDGET_FLOOR, &z);
	mem_budget_join(&f->charge,
			charge_of(f, z.high, z.snd,
				  z.rcv > (size_t)f->rcvbuf_set ? z.rcv : (size_t)f->rcvbuf_set));
	apply(f, fit(f, MEM_BUDGET_FLOOR,
		     f->earned > MEM_BUDGET_FLOOR ? f->earned : MEM_BUDGET_FLOOR));
}

void flow_budget_check(struct flow *f)
{
	uint64_t fair;

	if (!f->charge.on || !mem_budget_over())
		return;
	fair = mem_budget_fair_share();
	if (f->allow > fair)
		apply(f, (size_t)fair);
}

void flow_budget_after_pump(struct flow *f)
{
	struct flow_sizes z;
	size_t full, want, got;

	if (!f->charge.on)
		return;
	if (f->bytes_out - f->budget_out >= (uint64_t)GROW_PROOF * f->allow) {
		full_sizes(f->cfg, f->dir, full_high(f), &z);
		full = full_total(&z);
		want = f->allow * 2 < full ? f->allow * 2 : full;
		/* The charge at the level this pump left, before the budget's room is read. */
		charge(f);
		got = fit(f, f->allow, want);
		if (got > f->allow) {
			apply(f, got);
			return;
		}
		f->budget_out = f->bytes_out;
	}
	charge(f);
}

void flow_budget_end(struct flow *f)
{
	if (f->charge.on)
		f->earned = f->allow;
	mem_budget_leave(&f->charge);
	f->allow = 0;
	f->snd_queued = 0;
}

size_t flow_budget_low_water(const struct flow *f)
{
	const struct config *cfg = f->cfg;

	if (!f->use_splice)
		return f->budget_high / 4;
	return scaled(cfg->pipe_low_water, f->budget_high, cfg->pipe_high_water);
}

uint64_t flow_budget_sockmap_charge(const struct flow *f)
{
	struct flow_sizes z;

	if (!mem_budget_on())
		return 0;
	full_sizes(f->cfg, f->dir, full_high(f), &z);
	return SOCKBUF_KERNEL_FACTOR * ((uint64_t)z.snd + (uint64_t)z.rcv);
}

void flow_budget_sockmap_sockets(struct flow *f)
{
	struct flow_sizes z;
	int snd, rcv;

	if (!mem_budget_on())
		return;
	full_sizes(f->cfg, f->dir, full_high(f), &z);
	snd = (int)z.snd;
	rcv = (int)z.rcv;
	if (snd && f->dst->fd >= 0 && snd != f->sndbuf_set &&
	    setsockopt(f->dst->fd, SOL_SOCKET, SO_SNDBUF, &snd, sizeof(snd)) < 0)
		log_debug("SO_SNDBUF of fd %d: %m", f->dst->fd);
	if (rcv && f->src->fd >= 0 && rcv > f->rcvbuf_set)
		(void)raise_rcvbuf(f->src->fd, rcv);
}
