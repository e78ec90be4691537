/* SPDX-License-Identifier: GPL-2.0 */
#ifndef KFWD_PIPE_POOL_H
#define KFWD_PIPE_POOL_H

#include <stdbool.h>
#include <stddef.h>

struct kpipe {
	int rd;
	int wr;
	size_t size; /* capacity the kernel granted (F_SETPIPE_SZ rounds up) */
	size_t requested; /* pipe-size in force when it was made */
};

/* Pipes handed out from now on have @size bytes of capacity; at most @max_pooled are kept idle. */
/* Empty pipes kept for reuse (apply.c): 2 fds each. */
#define PIPE_POOL_MAX 64

void pipe_pool_configure(size_t size, size_t max_pooled);
/* Returns 0 with a pipe, or -1 with errno (EMFILE, ENFILE, EPERM: pipe limits reached). */
int pipe_pool_get(struct kpipe *p);
/* Only an empty pipe goes back to the pool; a pipe still holding bytes is closed. */
void pipe_pool_put(struct kpipe *p, bool empty);
void pipe_pool_flush(void);

#endif
