// SPDX-License-Identifier: GPL-2.0
/* Growable byte buffers: heads, chunk lines and copied body bytes in user space. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "buf.h"

/*
 * Empty buffers of the first size are kept for reuse, up to a cap: every request reads its
 * head, builds the forwarded heads and queues small bodies in buffers of this size, and would
 * otherwise malloc and free several of them (glibc then trims and regrows its heap top under
 * that churn). The cap bounds what the pool holds when the load goes away; the static array
 * keeps the pooled buffers reachable, so leak checkers do not count them at exit.
 */
#define BUF_FIRST_SIZE 4096
#define BUF_POOL_MAX 64

static char *pool[BUF_POOL_MAX];
static unsigned int pool_len;

static char *first_alloc(void)
{
	if (pool_len)
		return pool[--pool_len];
	return malloc(BUF_FIRST_SIZE);
}

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
	newsize = b->size ? b->size : BUF_FIRST_SIZE;
	while (newsize < live + want)
		newsize *= 2;
	if (newsize > limit)
		newsize = limit;
	p = !b->data && newsize == BUF_FIRST_SIZE ? first_alloc() : realloc(b->data, newsize);
	if (!p)
		return -1;
	b->data = p;
	b->size = newsize;
	return 0;
}

int buf_append(struct buf *b, const void *data, size_t len)
{
	/* An empty buffer's data is NULL, and memcpy() with a NULL pointer is undefined even for
	 * 0 bytes (UBSan reports it). */
	if (len == 0)
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

void buf_release_small(struct buf *b)
{
	if (buf_len(b) == 0 && b->size == BUF_FIRST_SIZE)
		buf_free(b);
}

void buf_free(struct buf *b)
{
	if (b->data && b->size == BUF_FIRST_SIZE && pool_len < BUF_POOL_MAX)
		pool[pool_len++] = b->data;
	else
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
