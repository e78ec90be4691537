// SPDX-License-Identifier: GPL-2.0
/*
 * Pipe pool: creating a pipe and resizing it costs three syscalls and a page-array allocation,
 * so idle empty pipes are kept for the next body (like HAProxy's src/pipe.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "log.h"
#include "pipe_pool.h"
#include "stats.h"

static struct kpipe *pool;
static size_t pool_len, pool_cap;
static size_t pipe_size = 1 << 20;

static void close_pipe(struct kpipe *p)
{
	close(p->rd);
	close(p->wr);
	p->rd = p->wr = -1;
}

void pipe_pool_configure(size_t size, size_t max_pooled)
{
	struct kpipe *n;

	pipe_size = size;
	pipe_pool_flush();
	n = realloc(pool, max_pooled * sizeof(*pool));
	if (max_pooled && !n) {
		log_warn("pipe pool: out of memory, not pooling pipes");
		max_pooled = 0;
	} else {
		pool = n;
	}
	pool_cap = max_pooled;
}

int pipe_pool_get(struct kpipe *p)
{
	int fds[2];
	int got;

	while (pool_len) {
		*p = pool[--pool_len];
		stats.pipes_pooled--;
		if (p->requested == pipe_size) {
			stats.pipes_in_use++;
			return 0;
		}
		close_pipe(p); /* pipe-size changed at runtime */
	}
	if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0)
		return -1;
	got = fcntl(fds[1], F_SETPIPE_SZ, (int)pipe_size);
	if (got < 0) {
		int err = errno;

		close(fds[0]);
		close(fds[1]);
		errno = err;
		return -1;
	}
	p->rd = fds[0];
	p->wr = fds[1];
	p->size = (size_t)got;
	p->requested = pipe_size;
	stats.pipes_in_use++;
	return 0;
}

void pipe_pool_put(struct kpipe *p, bool empty)
{
	if (p->rd < 0)
		return;
	stats.pipes_in_use--;
	if (!empty || p->requested != pipe_size || pool_len == pool_cap) {
		close_pipe(p);
		return;
	}
	pool[pool_len++] = *p;
	stats.pipes_pooled++;
	p->rd = p->wr = -1;
}

void pipe_pool_flush(void)
{
	while (pool_len) {
		close_pipe(&pool[--pool_len]);
		stats.pipes_pooled--;
	}
}
