/* SPDX-License-Identifier: GPL-2.0 */
#ifndef KFWD_UPSTREAM_H
#define KFWD_UPSTREAM_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"

/*
 * A queued user of a connection slot, embedded in its owner (container_of): upstream.c links it
 * in the server's FIFO and calls wake() once a slot or a pooled connection may be had, after
 * taking it off the queue.
 */
struct upstream_waiter {
	struct upstream_waiter *next;
	struct server_state *server; /* NULL when not queued */
	void (*wake)(struct upstream_waiter *w);
};

/*
 * Upstream server choice: round-robin over servers that are neither drained by the operator nor
 * marked down by passive health checks; connection slots per server (upstream-max-conns), with
 * a FIFO of sessions waiting for one.
 */
/*
 * Point every server of @cfg at its runtime state (creating what is new), before @cfg is used:
 * health, drains, connection counts and waiters of servers it shares with earlier
 * configurations carry over. -1 when out of memory.
 */
int upstream_attach(struct config *cfg);
/* Exit: free the runtime table. */
void upstream_fini(void);

/* Round-robin; @avoid (the server a retry follows, or NULL) only when no other is up. */
struct upstream_server *upstream_pick(struct upstream *u, struct upstream_server *avoid);
/*
 * A connect to @srv failed (refused, unreachable, timed out): after upstream-max-fails in a row
 * it is skipped for upstream-down-time, unless it is its group's only server.
 */
void upstream_connect_failed(struct upstream_server *srv, const struct config *cfg);
/* Connected, but the request failed (reset, closed, no answer in time): counted, never down. */
void upstream_request_failed(struct upstream_server *srv);
/* Connected or answered: up, and its run of connect failures ends. */
void upstream_mark_ok(struct upstream_server *srv);
bool upstream_server_up(const struct upstream_server *srv);
/* kfwdctl upstream drain / enable. */
void upstream_set_drained(struct upstream_server *srv, bool drained);

struct upstream_server_info {
	bool drained;
	uint64_t down_ms; /* how much longer it is marked down */
	uint64_t failures;
	unsigned int conns; /* open: in use and pooled, under every configuration */
};
void upstream_server_info(const struct upstream_server *srv, struct upstream_server_info *info);

/* Connection accounting (in use + pooled); NULL servers (url-embedded) are not counted. */
bool upstream_slot_free(const struct upstream_server *srv, unsigned int max_conns);
void upstream_conn_opened(struct upstream_server *srv);
void upstream_conn_closed(struct upstream_server *srv);
/* A connection to @srv became idle in the pool: a waiting session may take it. */
void upstream_conn_idle(struct upstream_server *srv);

/* Queue @w at the end of @srv's FIFO; upstream_unwait() takes it off (no-op if not queued). */
void upstream_wait(struct upstream_server *srv, struct upstream_waiter *w);
void upstream_unwait(struct upstream_waiter *w);

#endif
