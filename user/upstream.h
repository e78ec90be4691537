/* SPDX-License-Identifier: GPL-2.0 */
#ifndef KFWD_UPSTREAM_H
#define KFWD_UPSTREAM_H

#include <stdbool.h>

#include "config.h"

struct session;

/*
 * Upstream server choice: round-robin over servers that are neither drained by the operator nor
 * marked down by passive health checks; connection slots per server (upstream-max-conns), with
 * a FIFO of sessions waiting for one.
 */
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

/* Connection accounting (in use + pooled); NULL servers (url-embedded) are not counted. */
bool upstream_slot_free(const struct upstream_server *srv, unsigned int max_conns);
void upstream_conn_opened(struct upstream_server *srv);
void upstream_conn_closed(struct upstream_server *srv);
/* A connection to @srv became idle in the pool: a waiting session may take it. */
void upstream_conn_idle(struct upstream_server *srv);

void upstream_wait(struct upstream_server *srv, struct session *s);
void upstream_unwait(struct session *s);

/* session.c: a queued session may now connect (or take a pooled connection). */
void session_slot_available(struct session *s);

#endif
