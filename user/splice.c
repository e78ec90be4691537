// SPDX-License-Identifier: GPL-2.0
/*
 * The splice data path: body bytes go socket -> pipe -> socket and never enter user space.
 * The pipe's fill is capped by the flow (high-water mark), not by the pipe's slot count.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>

#include "flow.h"
#include "log.h"

enum fill_result splice_fill(struct flow *f, size_t want, size_t *moved)
{
	ssize_t n;
	int inq;

	if (f->pipe.rd < 0) {
		if (pipe_pool_get(&f->pipe) < 0) {
			log_debug("no pipe (%m): copying this body");
			stats.pipe_fallbacks++;
			return FILL_UNSUPPORTED;
		}
		f->pipe_level = 0;
	}
	n = splice(f->src->fd, NULL, f->pipe.wr, NULL, want, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
	if (n > 0) {
		*moved = (size_t)n;
		f->pipe_level += (size_t)n;
		f->bytes_spliced += (uint64_t)n;
		stats.bytes_spliced[f->dir] += (uint64_t)n;
		return FILL_BYTES;
	}
	if (n == 0)
		return FILL_EOF;
	switch (errno) {
	case EAGAIN:
		/*
		 * EAGAIN means "socket empty" or "pipe out of slots" (each skb fragment takes a slot,
		 * so a pipe can fill before its byte capacity). Only the socket can tell.
		 */
		if (f->pipe_level > 0 && ioctl(f->src->fd, SIOCINQ, &inq) == 0 && inq > 0)
			return FILL_FULL;
		return FILL_AGAIN;
	case EINTR:
		return FILL_AGAIN;
	case EINVAL:
	case ENOSYS:
	case EOPNOTSUPP:
		return FILL_UNSUPPORTED;
	default:
		log_debug("splice from fd %d: %m", f->src->fd);
		return FILL_ERROR;
	}
}

/* Returns 1 when the pipe is empty, 0 when dst would block, -1 on a dst error. */
int splice_drain(struct flow *f)
{
	while (f->pipe_level > 0) {
		ssize_t n = splice(f->pipe.rd, NULL, f->dst->fd, NULL, f->pipe_level,
				   SPLICE_F_MOVE | SPLICE_F_NONBLOCK);

		if (n > 0) {
			f->pipe_level -= (size_t)n;
			f->bytes_out += (uint64_t)n;
			continue;
		}
		if (n < 0 && errno == EAGAIN) {
			f->dst->writable = false;
			return 0;
		}
		if (n < 0 && errno == EINTR)
			continue;
		log_debug("splice to fd %d: %s", f->dst->fd, n ? "error" : "wrote nothing");
		return -1;
	}
	return 1;
}
