/* SPDX-License-Identifier: GPL-2.0 */
#ifndef KFWD_ACCEPT_H
#define KFWD_ACCEPT_H

#include "config.h"

/* Open every listen address of @cfg; returns -1 (and closes what it opened) on failure. */
int listeners_open(const struct config *cfg);
/* Stop accepting (drain); the sockets close. */
void listeners_close(void);
/* Open a listening TCP socket (also used by the metrics endpoint). */
int listen_socket(const struct sockaddr_any *addr, const char *text);

#endif
