/* SPDX-License-Identifier: GPL-2.0 */
#ifndef KFWD_ACCEPT_H
#define KFWD_ACCEPT_H

#include "config.h"

/* Open every listen address of @cfg; returns -1 (and closes what it opened) on failure. */
int listeners_open(const struct config *cfg);
/* Stop accepting (drain); the sockets close. */
void listeners_close(void);
/*
 * A new configuration (kfwdctl): sockets whose address stays are kept, new addresses are
 * opened, the others closed; new connections get @cfg. On failure nothing changed and @err
 * says why.
 */
int listeners_update(const struct config *cfg, char *err, size_t errlen);
/* The listening sockets open now, at most @max, for a binary upgrade; returns how many. */
size_t listeners_fds(int *out, size_t max);
/* Open a listening TCP socket (also used by the metrics endpoint); during a binary upgrade,
 * the running kfwd's socket for that address. */
int listen_socket(const struct sockaddr_any *addr, const char *text);

#endif
