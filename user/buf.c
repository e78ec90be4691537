// SPDX-License-Identifier: GPL-2.0
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "buf.h"

int buf_reserve(struct buf *b, size_t want, size_t limit)
{
	size_t live = buf_len(b);
	size_t newsize;
	char *p;

	if (buf_space(b) >= want)
		return 0;
	/* Slide the live bytes to the front before growing. */
	if (b->head > 0) {
		memmove(b->data, b->data + b->head, live);
		b->head = 0;
		b->tail = live;
		if (buf_space(b) >= want)
			return 0;
	}
	if (live + want > limit) {
		errno = ENOBUFS;
		return -1;
	}
	newsize = b->size ? b->size : 4096;
	while (newsize < live + want)
		newsize *= 2;
	if (newsize > limit)
		newsize = limit;
	p = realloc(b->data, newsize);
	if (!p)
		return -1;
	b->data = p;
	b->size = newsize;
	return 0;
}

int buf_append(struct buf *b, const void *data, size_t len)
{
	/* Empty buffers may be NULL: memcpy() must not see them, even for 0 bytes (UBSan). */
	if (!len)
		return 0;
	if (buf_reserve(b, len, (size_t)-1) < 0)
		return -1;
	memcpy(b->data + b->tail, data, len);
	b->tail += len;
	return 0;
}

void buf_consume(struct buf *b, size_t len)
{
	b->head += len;
	if (b->head == b->tail)
		b->head = b->tail = 0;
}

void buf_release(struct buf *b)
{
	if (buf_len(b) == 0)
		buf_free(b);
}

void buf_free(struct buf *b)
{
	free(b->data);
	b->data = NULL;
	b->size = b->head = b->tail = 0;
}

ssize_t buf_recv(struct buf *b, int fd, size_t max)
{
	size_t room = buf_space(b);
	ssize_t n;

	if (room > max)
		room = max;
	n = recv(fd, b->data + b->tail, room, 0);
	if (n > 0)
		b->tail += (size_t)n;
	return n;
}
