/* SPDX-License-Identifier: GPL-2.0 */
#ifndef KFWD_CTL_SHOW_H
#define KFWD_CTL_SHOW_H

/*
 * The control socket's read-only commands: status, stats, the connection, route and upstream
 * lists (paged dumps), and monitor (event subscribers fed by the data path's event sink, with
 * heartbeats). They read the control plane's state that ctl.c owns, passed as struct ctl_run.
 */
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "config.h"
#include "ctl_msg.h"
#include "ctl_peers.h"

/* What the commands read of the control plane (owned by ctl.c). */
struct ctl_run {
	const struct config *cfg; /* running: one reference held by ctl.c */
	uint64_t start_ms;
	time_t started;
	uint32_t generation; /* bumped by every configuration swapped in */
	bool draining;
	/* The worker processes this master answers for (user/workers.c), NULL without workers. */
	const struct ctl_peers *peers;
};

void ctl_show_status(const struct ctl_req *r, const struct ctl_run *run);
void ctl_show_stats(const struct ctl_req *r);
void ctl_show_conns(const struct ctl_req *r, const struct ctl_run *run);
/* In a worker: this process's connections with ids below @below, as ctl_peers.conns. */
size_t ctl_conn_records(uint64_t below, void *buf, size_t size);
void ctl_show_routes(const struct ctl_req *r, const struct ctl_run *run);
void ctl_show_upstreams(const struct ctl_req *r, const struct ctl_run *run);

/* Subscribe the sender of @r to events (again: its sequence number is updated). */
void ctl_monitor_add(const struct ctl_req *r);
/* A configuration event (@what changed; configuration @generation) to every monitor. */
void ctl_monitor_config(uint32_t generation, const char *what);
/* End every monitor's stream (NLMSG_DONE) and stop the event sink and heartbeats. */
void ctl_monitor_end(void);
/* In a worker just forked: the master's monitors are not ours; forget them. */
void ctl_monitor_forget(void);

#endif
