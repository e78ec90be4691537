/* SPDX-License-Identifier: GPL-2.0 */
/*
 * sockmap.h - bounded, lossless in-kernel forwarding of a TCP socket pair
 * through a BPF sockmap (bpf/kfwd.bpf.c).
 *
 * Non-blocking, single-threaded: nothing here sleeps.  The event loop
 *
 *   1. calls sockmap_init() once (root; mounts bpffs if needed, removes
 *	pins and attachments left by a crashed run, loads and pins);
 *   2. adds sockmap_event_fd() to its epoll set (EPOLLIN) and calls
 *	sockmap_handle_events() when it is readable;
 *   3. per connection pair, calls sockmap_flow_add*() after it parsed the
 *	heads, then sockmap_flow_pump() right away and again whenever
 *	- fd_a or fd_b reports any event it asked for,
 *	- sockmap_handle_events() names the flow,
 *	- the timeout it asked for expires;
 *	after each pump it arms exactly the events of struct sockmap_want
 *	with EPOLLET added (EPOLL_CTL_MOD; 0 means "none").  Use EPOLLET:
 *	a pump consumes readiness until EAGAIN, and level-triggered
 *	EPOLLHUP (not maskable) would spin the loop while the last bytes
 *	drain after both sides' FINs;
 *   4. when sockmap_flow_pump() returns SOCKMAP_DONE (both directions got
 *	EOF, every byte reached the other side's send queue and SHUT_WR was
 *	sent), or on error, calls sockmap_flow_del() and closes the fds.
 *
 * While a flow is in the map the daemon must neither read from nor write
 * to its sockets: every byte goes through this module.  Bytes the daemon
 * already read past the heads are handed over with sockmap_flow_add_ex().
 */
#ifndef KFWD_USER_SOCKMAP_H
#define KFWD_USER_SOCKMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SOCKMAP_CAP_DEFAULT (1024 * 1024) /* bytes in flight per direction */

enum sockmap_flow_flags {
	SOCKMAP_UNBOUNDED = 1, /* "sockmap-unbounded": never pause */
	SOCKMAP_CAP_UNACKED = 2, /* cap also counts dst's unacked bytes */
	/*
	 * One direction only, fd_b to fd_a (a response body): fd_a's bytes
	 * are left unread in its queue, never forwarded, and the flow is done
	 * when fd_b's direction is.
	 */
	SOCKMAP_B_TO_A_ONLY = 4,
	/* fd_b sends limit_b_to_a more bytes, then the direction is done
	 * (SHUT_WR on fd_a); bytes past them are never forwarded. */
	SOCKMAP_B_LIMIT = 8,
};

enum sockmap_dir {
	SOCKMAP_A_TO_B = 0,
	SOCKMAP_B_TO_A = 1,
};

enum sockmap_pump_result {
	SOCKMAP_RUNNING = 0,
	SOCKMAP_DONE = 1,
};

/* What the loop must wait for before the next sockmap_flow_pump(). */
struct sockmap_want {
	uint32_t events_a; /* EPOLL* mask for fd_a */
	uint32_t events_b; /* EPOLL* mask for fd_b */
	int timeout_ms; /* pump again after this; -1: no timer */
};

struct sockmap_flow_args {
	int fd_a;
	int fd_b;
	uint64_t cap_bytes; /* 0: SOCKMAP_CAP_DEFAULT */
	unsigned int flags; /* enum sockmap_flow_flags */
	const void *pending_a_to_b; /* bytes read from fd_a, not yet sent */
	size_t pending_a_to_b_len;
	const void *pending_b_to_a;
	size_t pending_b_to_a_len;
	uint64_t limit_b_to_a; /* SOCKMAP_B_LIMIT: fd_b's bytes after the pending ones */
	void *owner; /* returned by sockmap_flow_owner() */
	/*
	 * A source that keeps sending while the module drains it at the start
	 * (faster than kfwd reads, so the drain never finds it quiet) makes
	 * the add fail with EAGAIN before anything entered the map.  With
	 * spill set, the bytes drained so far (after the pending ones) are
	 * given back first, in order, per direction (enum sockmap_dir): the
	 * caller can go on without the sockmap and lose nothing.  A spill
	 * that returns -1 turns the failure into ENOMEM.
	 */
	int (*spill)(void *owner, int dir, const void *data, size_t len);
	/*
	 * Called from sockmap_handle_events() when the program reported
	 * something on this flow (a pause, a resume): pump it.  May be NULL.
	 */
	void (*on_event)(void *owner);
	/* max-memory: bytes the flow is charged while it lives (its caps, the socket buffers
	 * its owner sized for it); 0: not charged. */
	uint64_t mem_charge;
};

struct sockmap_dir_stats {
	uint64_t redirected; /* bytes forwarded in the kernel */
	uint64_t passed; /* bytes the program handed to user space */
	uint64_t user_read; /* bytes this module recv()d from the source */
	uint64_t user_written; /* bytes this module wrote to the destination */
	uint64_t inflight_max; /* largest in-kernel backlog seen by the program */
	uint32_t pause_count; /* includes the initial pause */
	uint32_t resume_count;
	uint32_t resume_rejects;
	uint32_t resume_early; /* of them: promised bytes not yet in dst */
	uint32_t errors;
	uint32_t overlaps; /* retransmits overlapping delivered bytes */
	uint64_t dup_bytes; /* their duplicated bytes, cut by the program */
	uint32_t gaps; /* must stay 0 */
	uint64_t past_end; /* SOCKMAP_B_LIMIT: bytes seen past the limit, dropped */
	bool paused; /* currently in pass-to-user-space mode */
	bool eof; /* source sent FIN */
	bool done; /* everything delivered, SHUT_WR sent */
	bool cut; /* SOCKMAP_B_LIMIT: the source ended before the limit */
};

struct sockmap_stats {
	struct sockmap_dir_stats dir[2]; /* enum sockmap_dir */
};

typedef void (*sockmap_event_cb)(void *ctx, uint64_t flow_id);

/* 0, or -1 with a reason in why: BPF, BTF, bpffs or sockmap unavailable. */
int sockmap_init(const char *pin_dir, char *why, size_t whylen);
/* Detach the program, unpin, free everything (flows still open are cut). */
void sockmap_shutdown(void);
bool sockmap_ready(void);
/* Where the loaded program and maps are pinned; NULL when not loaded. */
const char *sockmap_pin_dir(void);
/*
 * Remove the pins and leave the pin directory to a successor (binary upgrade): the program,
 * its attachment and the maps stay, held by this process's fds, until sockmap_shutdown().
 */
void sockmap_release_pins(void);
/* Can this process still use the maps through its fds? 0, or -1 with errno (EPERM). */
int sockmap_probe_access(void);

/*
 * Worker processes (user/workers.c) share the program, maps and pins a master loaded before it
 * forked them. In a worker just forked: ids of the flows it adds carry @tag (1..255: the worker)
 * in their top byte, so the master, the only reader of the event ring, knows whose an event is;
 * the attachment and the pins stay the master's at sockmap_shutdown().
 */
void sockmap_share_after_fork(uint8_t tag);
/* The worker that added flow @flow_id (its tag), 0 for none. */
static inline uint8_t sockmap_flow_tag(uint64_t flow_id)
{
	return (uint8_t)(flow_id >> 56);
}
/* Every flow may have news: the event ring overflowed (passed to cb of sockmap_handle_events). */
#define SOCKMAP_FLOW_ALL UINT64_MAX
/* An event the master passed on: the flow's on_event, or every flow's for SOCKMAP_FLOW_ALL. */
void sockmap_notify(uint64_t flow_id);

/* Epoll-able fd, readable when the program paused or resumed a flow. */
int sockmap_event_fd(void);
/* Drain the event ring; per event (a flow may come more than once) the
 * flow's on_event (sockmap_flow_args), then cb when not NULL.
 * Returns the number of events, -1 on error. */
int sockmap_handle_events(sockmap_event_cb cb, void *ctx);

/*
 * Put an established TCP pair in the map.  Everything fd_a/fd_b already
 * received is read first and forwarded by the module, after the pending
 * bytes of sockmap_flow_args (fd_a's only in a two-way flow; with
 * SOCKMAP_B_LIMIT fd_b's only up to the limit).  On failure (-1, errno)
 * the pair must be closed, queued bytes may have been consumed, except for
 * EAGAIN with sockmap_flow_args.spill set (see there).
 */
int sockmap_flow_add(int fd_a, int fd_b, uint64_t cap_bytes, uint64_t *flow_id);
int sockmap_flow_add_ex(const struct sockmap_flow_args *args, uint64_t *flow_id);
/*
 * Move bytes that the program passed to user space, request resume of the
 * in-kernel redirect, detect EOF and send SHUT_WR once everything before
 * the FIN reached the destination's send queue.  Never blocks.
 * SOCKMAP_RUNNING, SOCKMAP_DONE, or -1 with errno (flow is broken).
 */
int sockmap_flow_pump(uint64_t flow_id, struct sockmap_want *want);
int sockmap_flow_stats(uint64_t flow_id, struct sockmap_stats *st);
/* The owner given at add, NULL if flow_id is gone (events may name
 * flows deleted since). */
void *sockmap_flow_owner(uint64_t flow_id);
/* Bytes redirected in the kernel since sockmap_init() by direction (enum
 * sockmap_dir): flows deleted since and the live ones. */
void sockmap_bytes_redirected(uint64_t out[2]);
/* Remove both sockets from the map; bytes still queued in the kernel for
 * this flow are dropped, so call it after SOCKMAP_DONE or to abort. */
int sockmap_flow_del(uint64_t flow_id);

#endif /* KFWD_USER_SOCKMAP_H */
