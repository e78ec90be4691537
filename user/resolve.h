/* SPDX-License-Identifier: GPL-2.0 */
#ifndef KFWD_RESOLVE_H
#define KFWD_RESOLVE_H

#include <stdint.h>

#include "config.h"

/* Name resolution without blocking the event loop: c-ares, its sockets in our epoll. */
struct resolve_req;

/* @status is 0 with an address, or an ares error code; @addr is NULL on failure. */
typedef void (*resolve_cb)(void *arg, int status, const struct sockaddr_any *addr);

int resolve_init(void);
void resolve_fini(void);
/*
 * Start a lookup; *@slot holds the request while it runs and is cleared before @cb runs (which
 * may happen before resolve_start() returns, for names in /etc/hosts). Returns -1 if the query
 * could not be started. resolve_cancel(@slot) guarantees @cb will not run.
 */
int resolve_start(struct resolve_req **slot, const char *host, uint16_t port, resolve_cb cb,
		  void *arg);
void resolve_cancel(struct resolve_req **slot);
const char *resolve_strerror(int status);

#endif
