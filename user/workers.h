/* SPDX-License-Identifier: GPL-2.0 */
#ifndef KFWD_WORKERS_H
#define KFWD_WORKERS_H

/*
 * `workers N` (N > 1): a master and N worker processes, each worker an event loop with its own
 * SO_REUSEPORT listeners and sessions (the model and the protocol: user/workers.c).
 */
#include <stdbool.h>

#include "config.h"

/*
 * In the master, once its sockets are open and privileges dropped: fork @cfg->workers workers
 * and wait until each listens. A worker sets itself up and runs @child_main (its event loop
 * and the cleanup after it), then exits with what it returned: it never returns here. -1 if a
 * worker could not start (logged); workers_fini() then stops the others.
 */
int workers_start(const struct config *cfg, int (*child_main)(void));
/* This process is the master of workers (not one of them, not a single kfwd). */
bool workers_master(void);
/* This process is a worker. */
bool workers_child(void);
/* SIGCHLD in the master: reap, log, and restart a worker that died (unless draining). */
void workers_reap(void);
/* SIGTERM in the master: every worker drains; the loop stops once the last one exited. */
void workers_drain(void);
/* Forward @sig (SIGUSR1: reopen the access log) to every worker. */
void workers_signal(int sig);
/* At the master's exit: drain what still runs, SIGKILL it after a grace period, reap it. */
void workers_fini(void);

#endif
