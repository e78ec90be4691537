/* SPDX-License-Identifier: GPL-2.0 */
#ifndef KFWD_XPRT_H
#define KFWD_XPRT_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct endpoint;

struct xprt_ops {
	const char *name;
	/* >0 bytes, 0 EOF, -1 errno (EAGAIN: wait; see e->xprt_want) */
	ssize_t (*recv)(struct endpoint *e, void *buf, size_t len);
	ssize_t (*send)(struct endpoint *e, const void *buf, size_t len, bool more);
	bool (*can_splice)(const struct endpoint *e);
	size_t (*pending)(const struct endpoint *e); /* readable without a syscall */
	int (*handshake)(struct endpoint *e); /* 1 done, 0 wait (xprt_want), -1 fail */
	int (*shutdown)(struct endpoint *e); /* close_notify / FIN: 1 done, 0 wait, -1 */
	void (*release)(struct endpoint *e); /* free transport state (fd closed by caller) */
};

#endif
