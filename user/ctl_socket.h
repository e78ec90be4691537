/* SPDX-License-Identifier: GPL-2.0 */
#ifndef KFWD_CTL_SOCKET_H
#define KFWD_CTL_SOCKET_H

/*
 * The control socket itself: the NETLINK_USERSOCK socket bound to its port id, the file that
 * publishes the port id to kfwdctl, sending without blocking, and who may do what.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "config.h"
#include "loop.h"

/*
 * Open the socket for @cfg (ctl-port-id, ctl-socket-file, user), add it to the loop with @h
 * and publish its port id. -1 (logged) when the port id is taken or the file cannot be
 * written: nothing is left open.
 */
int ctl_socket_open(const struct config *cfg, struct loop_handler *h);
/* Out of the loop and closed; the file removed if it still names this process. */
void ctl_socket_close(void);
/* In a worker just forked: close this copy of the master's socket, keep its file. */
void ctl_socket_forget(void);
/* The socket, -1 when closed. */
int ctl_socket_fd(void);
/* The port id kfwd answers from (0 when closed). */
uint32_t ctl_socket_portid(void);
/* Send one datagram to @portid without blocking: 0 or -errno (-ECONNREFUSED: reader gone). */
int ctl_socket_send(uint32_t portid, const void *buf, size_t len);
/* May the sender @cr run @cmd under @cfg? 0, or -EPERM with @why filled in. */
int ctl_check_permission(const struct config *cfg, const struct ucred *cr, unsigned int cmd,
			 char *why, size_t len);

#endif
