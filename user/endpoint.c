// SPDX-License-Identifier: GPL-2.0
/* Reading an endpoint into a buffer through its transport (endpoint.h, xprt.h). */
#include "endpoint.h"

ssize_t endpoint_recv_buf(struct endpoint *e, struct buf *b, size_t max)
{
	size_t room = buf_space(b);
	ssize_t n;

	if (room > max)
		room = max;
	n = e->xprt->recv(e, b->data + b->tail, room);
	if (n > 0)
		b->tail += (size_t)n;
	return n;
}
