/* SPDX-License-Identifier: GPL-2.0 */
#ifndef KFWD_APPLY_H
#define KFWD_APPLY_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"

/*
 * Put @ncfg in force: at start-up (@old NULL: open its listeners and metrics endpoint) and at
 * reload (@old running: move listeners and metrics over, keeping what did not change). The
 * steps that can fail come first; on failure nothing changed (a reload rolls the metrics
 * endpoint back), @err says why and -errno is returned. At start-up a binary upgrade's
 * hand-over completes here, once the sockets are set up. Then the server runtime state is
 * attached, the sockmap path is loaded if asked for, the access log and the log sink are
 * (re)opened, and the pools and log level follow.
 * References are the caller's.
 */
int config_apply(struct config *ncfg, const struct config *old, char *err, size_t errlen);
/* Which sockets config_apply() opens and moves in this process (default both): with workers
 * the master owns the metrics endpoint and each worker its listeners (user/workers.c). */
void config_apply_sockets(bool listeners, bool metrics);

#endif
