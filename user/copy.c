// SPDX-License-Identifier: GPL-2.0
/*
 * The copy data path: the transport's recv() into a bounded user buffer, send() from it. Used for heads, for
 * bytes read together with a head, for chunk size lines, and as the fallback when a pipe cannot
 * be had, splice does not apply or the transport cannot splice (TLS). Bounded by the same high-water mark as the pipe.
 */
#include <errno.h>
#include <sys/socket.h>

#include "flow.h"
#include "log.h"

#define COPY_CHUNK (256 * 1024)

enum fill_result copy_fill(struct flow *f, struct buf *into, size_t want, size_t *moved)
{
	ssize_t n;

	if (want > COPY_CHUNK)
		want = COPY_CHUNK;
	if (buf_reserve(into, want, (size_t)-1) < 0)
		return FILL_ERROR;
	n = endpoint_recv_buf(f->src, into, want);
	if (n > 0) {
		*moved = (size_t)n;
		return FILL_BYTES;
	}
	if (n == 0)
		return FILL_EOF;
	if (errno == EAGAIN || errno == EINTR)
		return FILL_AGAIN;
	log_debug("recv from fd %d: %m", f->src->fd);
	return FILL_ERROR;
}

/* Returns 1 when @from is empty, 0 when dst would block, -1 on a dst error. */
int copy_drain(struct flow *f, struct buf *from)
{
	/* A head followed by spliced body bytes: one segment for both (MSG_MORE). */
	bool more = from == &f->out && f->pipe_level > 0;

	while (buf_len(from) > 0) {
		ssize_t n = f->dst->xprt->send(f->dst, buf_start(from), buf_len(from), more);

		if (n > 0) {
			buf_consume(from, (size_t)n);
			f->bytes_out += (uint64_t)n;
			continue;
		}
		if (n < 0 && errno == EAGAIN) {
			f->dst->writable = false;
			return 0;
		}
		if (n < 0 && errno == EINTR)
			continue;
		log_debug("send to fd %d: %m", f->dst->fd);
		return -1;
	}
	/* A large buffer stays allocated while the body moves (flow_finish frees it): a copy-path
	 * transfer would otherwise mmap and munmap 256 KiB on every round. A small one (a head)
	 * goes back to the pool now, so a connection awaiting its response holds none. */
	buf_release_small(from);
	return 1;
}
