/* SPDX-License-Identifier: GPL-2.0 */
#ifndef KFWD_UPGRADE_H
#define KFWD_UPGRADE_H

#include <stdbool.h>

#include "config.h"

/*
 * Seamless binary upgrade: a new kfwd started with -x PATH takes the listening sockets (listen
 * and metrics-listen) of the running one over the unix socket PATH (upgrade-socket), with
 * SCM_RIGHTS, while the old one stops accepting and drains its connections.
 *
 * The protocol, one SOCK_SEQPACKET message each:
 *   new -> old  "KFWD-UPGRADE 1"
 *   old -> new  "LISTENERS N" with the N listening fds
 *   new -> old  "READY"         (the new one has set up every listener)
 *   old -> new  "RELEASED"      (the old one stopped accepting, gave up its BPF pins and, with a
 *                                fixed ctl-port-id, its control socket)
 */

/* ---- the running kfwd */

/*
 * Listen on @cfg's upgrade-socket (nothing when off). @on_handover runs when a new kfwd is
 * READY: it must stop accepting; then the old one answers RELEASED.
 */
int upgrade_listen(const struct config *cfg, void (*on_handover)(void));
void upgrade_close(void);
/* A new kfwd took our listening sockets (we drain; the service goes on). */
bool upgrade_handed_over(void);

/* ---- the new kfwd (-x) */

/* Connect to @path and receive the listening sockets; -1 (logged) if there is no kfwd there. */
int upgrade_takeover(const char *path, const struct config *cfg);
/* A received listening socket bound to @addr, now ours; -1 if none. */
int upgrade_take_listener(const struct sockaddr_any *addr);
/* Every listener is set up: the old kfwd stops accepting. -1 (logged) if it did not confirm. */
int upgrade_ready(void);
/* Close the received sockets no listen line took, and the connection to the old kfwd. */
void upgrade_takeover_done(void);

#endif
