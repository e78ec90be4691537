/* SPDX-License-Identifier: GPL-2.0 */
#ifndef KFWD_METRICS_H
#define KFWD_METRICS_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "kfwd/ctl.h"

/* The counters in Prometheus text format, answered to any request on metrics-listen. */
int metrics_open(const struct config *cfg);
void metrics_close(void);
/* Every counter of kfwd/counters.h now, indexed by enum kfwd_stats_attr. */
void stats_snapshot(uint64_t v[KFWD_STAT_MAX + 1]);
/* Every snapshot adds @add's counters (a master adds its workers'); NULL: only this process. */
void stats_snapshot_add(void (*add)(uint64_t v[KFWD_STAT_MAX + 1]));
/* The metrics listening socket, -1 when none (for a binary upgrade). */
int metrics_listen_fd(void);
/* The metrics listener stops or resumes accepting (fd limit; registered with accept.c). */
void metrics_listen_enable(bool on);
/* Render the exposition text into @out (also used by tests); returns its length. */
size_t metrics_render(char *out, size_t len);

#endif
