/* SPDX-License-Identifier: GPL-2.0 */
#ifndef KFWD_BUF_H
#define KFWD_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/*
 * A byte buffer whose live bytes are data[head, tail). Memory is allocated on first use and
 * released by buf_release() once empty, so idle connections hold no buffer memory. Released
 * buffers of the first size (4 KiB) go to a small shared pool (at most 256 KiB) for the next.
 */
struct buf {
	char *data;
	size_t size;
	size_t head;
	size_t tail;
};

static inline size_t buf_len(const struct buf *b)
{
	return b->tail - b->head;
}

static inline char *buf_start(const struct buf *b)
{
	return b->data + b->head;
}

static inline size_t buf_space(const struct buf *b)
{
	return b->size - b->tail;
}

/* Make at least @want bytes of tail room, growing the allocation to at most @limit bytes. */
int buf_reserve(struct buf *b, size_t want, size_t limit);
int buf_append(struct buf *b, const void *data, size_t len);
void buf_consume(struct buf *b, size_t len);
/* Free the memory if the buffer is empty. */
void buf_release(struct buf *b);
/* Free the memory if the buffer is empty and of the pooled size (cheap to take again). */
void buf_release_small(struct buf *b);
void buf_free(struct buf *b);
/* recv() into the tail room, at most @max bytes. Returns recv()'s result. */
ssize_t buf_recv(struct buf *b, int fd, size_t max);

#endif
