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
/* errno of a failed accept() that means the process or system is out of descriptors/memory. */
bool accept_out_of_fds(int err);
/* accept() failed with @err (accept_out_of_fds): pause every listener for a while. */
void accept_fd_limit(int err);
/* @enable(false/true) pauses and resumes another listener with ours (the metrics one). */
void accept_pause_with(void (*enable)(bool on));
/* A descriptor was closed: paused listeners resume now. */
void accept_fd_freed(void);
/* Log FILE:LINE of the listen line (or -l option) whose socket could not be opened. */
void log_listen_line(const struct config *cfg, const struct listen_addr *a);
/* Open a listening TCP socket (also used by the metrics endpoint); during a binary upgrade,
 * the running kfwd's socket for that address. */
int listen_socket(const struct sockaddr_any *addr, const char *text);
/* listen_socket() asks @take first for a socket already bound to the address (a binary
 * upgrade hands them over; upgrade.c registers it). */
void listen_set_inherited(int (*take)(const struct sockaddr_any *addr));
/* From now on listen_socket() sets SO_REUSEPORT: each worker process binds its own socket to
 * every listen address and the kernel spreads new connections over them (user/workers.c). */
void listen_set_reuseport(bool on);

#endif
