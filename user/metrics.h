/* SPDX-License-Identifier: GPL-2.0 */
#ifndef KFWD_METRICS_H
#define KFWD_METRICS_H

#include "config.h"

/* The counters in Prometheus text format, answered to any request on metrics-listen. */
int metrics_open(const struct config *cfg);
void metrics_close(void);
/* The metrics listening socket, -1 when none (for a binary upgrade). */
int metrics_listen_fd(void);
/* Render the exposition text into @out (also used by tests); returns its length. */
size_t metrics_render(char *out, size_t len);

#endif
