/* SPDX-License-Identifier: GPL-2.0 */
#ifndef KFWD_TUNNEL_H
#define KFWD_TUNNEL_H

struct session;

/* The exchange becomes a tunnel: both flows raw until EOF (sockmap when the route says so). */
void tunnel_start(struct session *s);
/* Pump both directions; shut each write side when its source ended; close when both did. */
void tunnel_step(struct session *s);

#endif
