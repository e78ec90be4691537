/* SPDX-License-Identifier: GPL-2.0 */
#ifndef KFWD_METRICS_H
#define KFWD_METRICS_H

#include <stdbool.h>
#include "config.h"

/* The counters in Prometheus text format, answered to any request on metrics-listen. */
int metrics_open(const struct config *cfg);
void metrics_close(void);
/* The metrics listening socket, -1 when none (for a binary upgrade). */
int metrics_listen_fd(void);
/* accept.c: the metrics listener stops or resumes accepting (fd limit). */
void metrics_listen_enable(bool on);
/* Render the exposition text into @out (also used by tests); returns its length. */
size_t metrics_render(char *out, size_t len);

#endif
