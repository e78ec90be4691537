// SPDX-License-Identifier: GPL-2.0
/*
 * Moving the bytes of one direction: body framing (length, chunked, close-delimited), the
 * three-stage FIFO described in flow.h, and backpressure. When the bytes held reach the
 * high-water mark the flow pauses: its source loses EPOLLIN, so the kernel stops ACKing and the
 * sender's TCP window closes. It resumes once dst has taken the level below the low-water mark.
 */
#include <string.h>

#include "event.h"
#include "flow.h"
#include "log.h"
#include "loop.h"

void flow_init(struct flow *f, enum flow_dir dir, struct endpoint *src, struct endpoint *dst,
	       const struct config *cfg)
{
	memset(f, 0, sizeof(*f));
	f->dir = dir;
	f->src = src;
	f->dst = dst;
	f->cfg = cfg;
	f->pipe.rd = f->pipe.wr = -1;
	f->use_splice = cfg->data_path != DATA_PATH_COPY;
	flow_pace_init(f);
}

size_t flow_level(const struct flow *f)
{
	return buf_len(&f->out) + f->pipe_level + buf_len(&f->pending);
}

/* An open endpoint whose transport keeps its bytes in user space (TLS without kTLS). */
static bool copies_only(const struct endpoint *e)
{
	return e->fd >= 0 && !e->xprt->can_splice(e);
}

/*
 * A flow with such an endpoint moves every byte through user space, a TLS record (16 KiB) at
 * most per read: its bound is tls-copy-buffer-size, a few records, not the pipe's size.
 */
static bool tls_bound(const struct flow *f)
{
	return copies_only(f->src) || copies_only(f->dst);
}

size_t flow_high_water(const struct flow *f)
{
	if (tls_bound(f))
		return f->cfg->tls_copy_buffer_size;
	if (f->allow)
		return f->budget_high;
	return f->use_splice ? f->cfg->pipe_high_water : f->cfg->copy_buffer_size;
}

static size_t low_water(const struct flow *f)
{
	if (tls_bound(f))
		return f->cfg->tls_copy_buffer_size / 4;
	if (f->allow)
		return flow_budget_low_water(f);
	return f->use_splice ? f->cfg->pipe_low_water : f->cfg->copy_buffer_size / 4;
}

/* The buffer user bytes must go to now to stay in order. */
static struct buf *user_stage(struct flow *f)
{
	return (f->pipe_level > 0 || buf_len(&f->pending)) ? &f->pending : &f->out;
}

static void count_copied(struct flow *f, size_t n)
{
	f->bytes_copied += n;
	stats.bytes_copied[f->dir] += n;
}

int flow_push(struct flow *f, const char *data, size_t len)
{
	if (buf_append(user_stage(f), data, len) < 0)
		return -1;
	count_copied(f, len);
	return 0;
}

void flow_start_body(struct flow *f, enum body_framing framing, uint64_t length)
{
	f->framing = framing;
	f->remaining = length;
	f->active = true;
	f->body_done = framing == FRAMING_NONE || (framing == FRAMING_LENGTH && length == 0);
	f->bytes_out_at_start = f->bytes_out;
	chunk_scan_init(&f->chunk);
	f->last_progress_ms = now_ms();
	flow_budget_start(f, framing, length);
}

/* Tell the control plane (kfwdctl monitor) that this flow paused or resumed. */
static void flow_event(const struct flow *f, enum kev_type type)
{
	struct kev ev = { .type = type, .conn_id = f->conn_id, .dir = f->dir };

	if (!kev_listening())
		return;
	ev.level = flow_level(f);
	ev.pauses = f->pauses;
	kev_emit(&ev);
}

static void pause_flow(struct flow *f, size_t level)
{
	size_t low = low_water(f);

	if (f->paused)
		return;
	f->paused = true;
	f->pauses++;
	stats.pauses++;
	stats.paused_flows++;
	/* A pipe can run out of slots below its byte capacity; resume at half of that level. */
	f->resume_level = level / 2 < low ? level / 2 : low;
	log_debug("flow %p paused at %zu bytes", (void *)f, level);
	flow_event(f, KEV_FLOW_PAUSE);
}

static void resume_flow(struct flow *f)
{
	f->paused = false;
	f->resumes++;
	stats.resumes++;
	stats.paused_flows--;
	flow_event(f, KEV_FLOW_RESUME);
}

/* A paced flow reads when its timer brings it back (flow_pace.c), not on each arrival. */
bool flow_wants_read(const struct flow *f)
{
	return f->active && !f->body_done && !f->paused && !f->src->rd_eof && f->src->fd >= 0 &&
	       !timer_armed(&f->pace_timer);
}

bool flow_wants_write(const struct flow *f)
{
	return flow_level(f) > 0 && !f->dst->writable && !timer_armed(&f->pace_timer);
}

/* Returns 1 when everything held went to dst, 0 if dst would block, -1 on a dst error. */
static int drain(struct flow *f)
{
	int r;

	if (f->dst->fd < 0)
		return flow_level(f) ? -1 : 1;
	for (;;) {
		r = copy_drain(f, &f->out);
		if (r == 0)
			flow_pace_blocked(f);
		if (r <= 0)
			return r;
		if (f->pipe_level) {
			r = splice_drain(f);
			if (r == 0)
				flow_pace_blocked(f);
			if (r <= 0)
				return r;
		}
		if (!buf_len(&f->pending))
			return 1;
		/* The pipe is empty: bytes that queued behind it go next. */
		struct buf tmp = f->out;

		f->out = f->pending;
		f->pending = tmp;
	}
}

static bool body_complete(const struct flow *f)
{
	switch (f->framing) {
	case FRAMING_NONE:
		return true;
	case FRAMING_LENGTH:
		return f->remaining == 0;
	case FRAMING_CHUNKED:
		return f->chunk.state == CHUNK_DONE;
	case FRAMING_CLOSE:
		return false;
	}
	return false;
}

/*
 * Body bytes already read into src->in (with a head, or chunk framing) go first. Returns 1 when
 * bytes moved, or FLOW_SRC_ERROR: a chunked framing error ends the message at once (the bytes
 * before the bad one are not forwarded either), and bytes that can never move are an error too,
 * since no event would ever bring the flow back to them.
 */
static int take_buffered(struct flow *f, size_t room)
{
	struct buf *in = &f->src->in;
	size_t avail = buf_len(in), n;

	if (avail > room)
		avail = room;
	switch (f->framing) {
	case FRAMING_LENGTH:
		n = avail < f->remaining ? avail : (size_t)f->remaining;
		break;
	case FRAMING_CHUNKED: {
		struct chunk_scan probe = f->chunk;

		n = chunk_scan(&probe, buf_start(in), avail);
		if (probe.state == CHUNK_ERROR) {
			log_debug("bad chunked framing");
			return FLOW_SRC_ERROR;
		}
		break;
	}
	default:
		n = avail;
		break;
	}
	if (n == 0) {
		log_debug("%zu buffered bytes cannot move", avail);
		return FLOW_SRC_ERROR;
	}
	if (flow_push(f, buf_start(in), n) < 0)
		return FLOW_SRC_ERROR;
	if (f->framing == FRAMING_LENGTH)
		f->remaining -= n;
	else if (f->framing == FRAMING_CHUNKED)
		chunk_scan(&f->chunk, buf_start(in), n);
	buf_consume(in, n);
	buf_release(in);
	f->body_done = body_complete(f);
	return 1;
}

/*
 * Bodies (or chunks) known to be shorter than this are copied: below a few KiB, recv() and
 * send() cost less than two splice() calls through a pipe, and the bytes can leave with the
 * head in one send (HAProxy forwards such data without splicing too).
 */
#define SPLICE_MIN_BYTES 4096

/* What is left of the body (or of its current chunk), when the framing says. */
static uint64_t body_left(const struct flow *f)
{
	if (f->framing == FRAMING_LENGTH)
		return f->remaining;
	if (f->framing == FRAMING_CHUNKED)
		return f->chunk.remaining;
	return UINT64_MAX;
}

/*
 * One step of src -> FIFO. Returns 1 on progress, 0 when nothing more can move now, or a
 * negative flow_status.
 */
static int fill_step(struct flow *f)
{
	size_t level = flow_level(f), high = flow_high_water(f), room, moved = 0;
	enum fill_result r;
	uint64_t want;

	if (level >= high) {
		pause_flow(f, level);
		return 0;
	}
	room = high - level;
	if (buf_len(&f->src->in))
		return take_buffered(f, room);
	if (f->src->rd_eof) {
		if (f->framing == FRAMING_CLOSE) {
			f->body_done = true;
			return 1;
		}
		log_debug("peer closed inside a framed body");
		return FLOW_SRC_ERROR;
	}
	if (!endpoint_readable(f->src))
		return 0;

	want = room;
	if (f->framing == FRAMING_LENGTH && want > f->remaining)
		want = f->remaining;
	if (f->framing == FRAMING_CHUNKED) {
		if (!chunk_in_data(&f->chunk)) {
			/* Size lines and trailers are parsed in user space. */
			r = copy_fill(f, &f->src->in, room < 65536 ? room : 65536, &moved);
			goto done;
		}
		if (want > f->chunk.remaining)
			want = f->chunk.remaining;
	}
	/* The transports decide too: TLS records cannot be spliced. */
	if (f->use_splice && !f->splice_failed && !buf_len(&f->pending) &&
	    body_left(f) >= SPLICE_MIN_BYTES && endpoint_can_splice(f->src) &&
	    endpoint_can_splice(f->dst)) {
		r = splice_fill(f, (size_t)want, &moved);
		if (r == FILL_UNSUPPORTED) {
			/* No pipe, or a socket splice refuses: copy the rest of this body. */
			f->splice_failed = true;
			r = copy_fill(f, user_stage(f), (size_t)want, &moved);
			if (r == FILL_BYTES)
				count_copied(f, moved);
		}
	} else {
		r = copy_fill(f, user_stage(f), (size_t)want, &moved);
		if (r == FILL_BYTES)
			count_copied(f, moved);
	}
	if (r == FILL_BYTES) {
		if (f->framing == FRAMING_LENGTH)
			f->remaining -= moved;
		else if (f->framing == FRAMING_CHUNKED)
			chunk_data_moved(&f->chunk, moved);
		f->body_done = body_complete(f);
	}
done:
	switch (r) {
	case FILL_BYTES:
		f->last_progress_ms = now_ms();
		return 1;
	case FILL_EOF:
		f->src->rd_eof = true;
		return 1;
	case FILL_AGAIN:
		f->src->readable = false;
		return 0;
	case FILL_FULL:
		pause_flow(f, flow_level(f));
		return 0;
	case FILL_ERROR:
	case FILL_UNSUPPORTED:
		break;
	}
	return FLOW_SRC_ERROR;
}

/*
 * Bounded so one fast transfer cannot starve the other connections: level-triggered epoll
 * brings us back while either side is still ready.
 */
#define PUMP_BUDGET 32

/*
 * Fill work that no epoll event will bring us back for: bytes already in src->in, or an EOF
 * read but not yet acted on (EPOLLIN is off once rd_eof is set). The budget must not end
 * the pump there, or the flow waits for its idle timeout with the client never told.
 */
static bool fill_pending(const struct flow *f)
{
	return f->active && !f->body_done && !f->paused && (buf_len(&f->src->in) || f->src->rd_eof);
}

enum flow_status flow_pump(struct flow *f)
{
	enum flow_status st = FLOW_OK;

	flow_budget_check(f);
	for (int round = 0; round < PUMP_BUDGET || fill_pending(f); round++) {
		bool progress = false;

		/* Fill first: a head and the body bytes read with it leave in one send. */
		if (f->active && !f->body_done && !f->paused) {
			int moved = fill_step(f);

			if (moved < 0) {
				st = (enum flow_status)moved;
				break;
			}
			if (moved > 0)
				progress = true;
		}
		if (flow_level(f) > 0 && f->dst->writable) {
			uint64_t before = f->bytes_out;

			if (drain(f) < 0) {
				st = FLOW_DST_ERROR;
				break;
			}
			if (f->bytes_out != before) {
				f->last_progress_ms = now_ms();
				progress = true;
			}
		}
		if (f->paused && flow_level(f) <= f->resume_level) {
			resume_flow(f);
			progress = true;
		}
		if (!progress)
			break;
	}
	flow_budget_after_pump(f);
	return st;
}

bool flow_hold_full(struct flow *f)
{
	size_t level = flow_level(f);

	if (level < flow_high_water(f))
		return false;
	pause_flow(f, level);
	return true;
}

enum flow_status flow_flush(struct flow *f)
{
	flow_budget_check(f);
	if (flow_level(f) > 0 && f->dst->writable) {
		uint64_t before = f->bytes_out;

		if (drain(f) < 0)
			return FLOW_DST_ERROR;
		if (f->bytes_out != before)
			f->last_progress_ms = now_ms();
	}
	if (f->paused && flow_level(f) <= f->resume_level)
		resume_flow(f);
	flow_budget_after_pump(f);
	return FLOW_OK;
}

static void release(struct flow *f, bool empty)
{
	flow_pace_cancel(f);
	flow_budget_end(f);
	if (f->paused) {
		f->paused = false;
		stats.paused_flows--;
	}
	if (f->pipe.rd >= 0)
		pipe_pool_put(&f->pipe, empty);
	f->pipe.rd = f->pipe.wr = -1;
	f->pipe_level = 0;
	buf_free(&f->out);
	buf_free(&f->pending);
}

void flow_reset(struct flow *f)
{
	release(f, false);
	f->active = false;
	f->body_done = false;
}

void flow_finish(struct flow *f)
{
	release(f, f->pipe_level == 0);
	f->active = false;
	f->body_done = false;
	f->splice_failed = false;
	f->use_splice = f->cfg->data_path != DATA_PATH_COPY;
}
