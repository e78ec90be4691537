/* SPDX-License-Identifier: GPL-2.0 */
#ifndef KFWD_FLOW_H
#define KFWD_FLOW_H

#include <stdbool.h>
#include <stdint.h>

#include "buf.h"
#include "chunked.h"
#include "config.h"
#include "endpoint.h"
#include "http.h"
#include "mem_budget.h"
#include "pipe_pool.h"
#include "stats.h"

/*
 * One direction of a session: bytes from src go to dst in order, never more than the high-water
 * mark held at once. The bytes held form one FIFO in three parts, drained in this order:
 *
 *   out      user-space bytes (heads, chunk size lines, bytes read with a head, copy path)
 *   pipe     spliced body bytes, never in user space
 *   pending  user-space bytes that arrived while the pipe held bytes
 *
 * User bytes go to 'out' while the pipe is empty and to 'pending' otherwise; nothing is spliced
 * into the pipe while 'pending' holds bytes; when the pipe empties, 'pending' becomes 'out'.
 * So no byte is ever reordered, and no write into the pipe can be partial.
 */
struct flow {
	enum flow_dir dir;
	uint64_t conn_id; /* the owner's connection id, for events */
	struct endpoint *src;
	struct endpoint *dst;
	const struct config *cfg;

	struct buf out;
	struct kpipe pipe; /* rd == -1 when none */
	size_t pipe_level;
	struct buf pending;
	bool use_splice; /* body bytes are spliced (else copied) */
	bool splice_failed; /* splice from src failed (EINVAL...): copy from now on */

	/* Framing of the body being moved */
	bool active; /* a message body is being moved */
	bool body_done; /* every body byte has been taken from src */
	enum body_framing framing;
	uint64_t remaining; /* FRAMING_LENGTH */
	struct chunk_scan chunk;

	/* Backpressure */
	bool paused; /* src EPOLLIN is off because too many bytes are held */
	size_t resume_level;
	uint64_t pauses;
	uint64_t resumes;

	/*
	 * max-memory (mem_budget.h): a long body's allowance covers its high-water mark and the
	 * socket buffers kfwd sizes for it (dst's SO_SNDBUF, src's SO_RCVBUF, as the kernel
	 * doubles them). It starts at MEM_BUDGET_FLOOR (or where the connection's last body
	 * ended) and doubles each time dst has taken twice the allowance (flow_budget.c).
	 */
	struct mem_charge charge;
	size_t allow; /* 0: not budgeted, the configured marks apply */
	size_t budget_high; /* the high-water mark the allowance leaves */
	int sndbuf_set; /* SO_SNDBUF this flow gave dst, 0: not sized */
	int rcvbuf_set; /* SO_RCVBUF src has now, 0: not sized */
	uint64_t snd_queued; /* after SO_SNDBUF shrank: what dst's queue still holds (SIOCOUTQ) */
	uint64_t budget_out; /* bytes_out at the last grant */
	size_t earned; /* the allowance the last body ended with: the next one on this
			* connection starts there (its client has shown it reads) */

	/* Pacing (flow_pace.c): a steady, slow dst is served on a timer grid, not on EPOLLOUT. */
	struct timer pace_timer; /* armed: the flow waits for it instead of EPOLLOUT */
	uint64_t pace_ms; /* when dst's rate was last measured, 0: not yet */
	uint64_t pace_out; /* bytes_out then */
	uint64_t pace_rate; /* what dst took per ms, last measured; 0: unknown or stalled */

	/* Counters */
	uint64_t bytes_spliced;
	uint64_t bytes_copied;
	uint64_t bytes_out; /* delivered to dst */
	uint64_t bytes_out_at_start; /* bytes_out at flow_start_body(): a head pushed just
				      * before it has not gone out yet */
	uint64_t last_progress_ms;
};

enum flow_status {
	FLOW_OK = 0,
	FLOW_SRC_ERROR = -1, /* src failed or ended inside a framed body, or bad chunk syntax */
	FLOW_DST_ERROR = -2, /* dst refused bytes (reset, broken pipe) */
};

void flow_init(struct flow *f, enum flow_dir dir, struct endpoint *src, struct endpoint *dst,
	       const struct config *cfg);
/* Queue user-space bytes (a head) for dst. */
int flow_push(struct flow *f, const char *data, size_t len);
/* Start moving a body of the given framing; @length for FRAMING_LENGTH. */
void flow_start_body(struct flow *f, enum body_framing framing, uint64_t length);
/* Move everything that can move now in both stages. */
enum flow_status flow_pump(struct flow *f);
/*
 * For a protocol that reads src itself and queues what it forwards with flow_push() (RTSP,
 * whose framing decides every byte): flow_hold_full() is true, and pauses the flow, once the
 * bytes held reach the high-water mark (the caller stops reading src); flow_flush() moves what
 * is held to dst and resumes the flow below the low-water mark, as flow_pump() without a fill.
 */
bool flow_hold_full(struct flow *f);
enum flow_status flow_flush(struct flow *f);
/* Drop everything held and release the pipe (closed, since it may hold bytes). */
void flow_reset(struct flow *f);
/* Message finished and drained: return the pipe to the pool and free buffers. */
void flow_finish(struct flow *f);

size_t flow_level(const struct flow *f);
size_t flow_high_water(const struct flow *f);
bool flow_wants_read(const struct flow *f);
bool flow_wants_write(const struct flow *f);
/* flow_budget.c: the allowance of a long body under max-memory (see struct flow). */
void flow_budget_start(struct flow *f, enum body_framing framing, uint64_t length);
/* Before a pump: shrink toward the fair share when the budget is exceeded. */
void flow_budget_check(struct flow *f);
/* After a pump: grow when dst took enough, and charge the level. */
void flow_budget_after_pump(struct flow *f);
void flow_budget_end(struct flow *f);
/* What a sockmap flow is charged for the response flow's sockets under max-memory (0 when off):
 * their configured sizes, which flow_budget_sockmap_sockets() gives them back once the flow is
 * in the sockmap (no flow of kfwd's grows them there; given before the hand-over, the larger
 * window let the source outrun the hand-over's drain). */
uint64_t flow_budget_sockmap_charge(const struct flow *f);
void flow_budget_sockmap_sockets(struct flow *f);
size_t flow_budget_low_water(const struct flow *f);
/* SO_RCVBUF for a new upstream socket: the receive buffer's share of MEM_BUDGET_FLOOR under
 * max-memory (it grows with its flow, see struct flow), else upstream-rcvbuf. */
int flow_upstream_rcvbuf(const struct config *cfg);

/* flow_pace.c: dst refused bytes (EAGAIN); pace the flow or leave it to EPOLLOUT. */
void flow_pace_init(struct flow *f);
void flow_pace_blocked(struct flow *f);
void flow_pace_cancel(struct flow *f);

static inline bool flow_drained(const struct flow *f)
{
	return flow_level(f) == 0;
}

static inline bool flow_complete(const struct flow *f)
{
	return f->body_done && flow_drained(f);
}

/* splice.c: socket -> pipe and pipe -> socket */
enum fill_result {
	FILL_BYTES, /* n > 0 bytes moved */
	FILL_EOF,
	FILL_AGAIN, /* source has nothing now */
	FILL_FULL, /* destination stage is full (pipe slots) */
	FILL_ERROR,
	FILL_UNSUPPORTED, /* splice not possible on this fd: use copy */
};
enum fill_result splice_fill(struct flow *f, size_t want, size_t *moved);
int splice_drain(struct flow *f);

/* copy.c: socket -> user buffer and user buffer -> socket */
enum fill_result copy_fill(struct flow *f, struct buf *into, size_t want, size_t *moved);
int copy_drain(struct flow *f, struct buf *from);

#endif
