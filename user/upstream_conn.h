/* SPDX-License-Identifier: GPL-2.0 */
#ifndef KFWD_UPSTREAM_CONN_H
#define KFWD_UPSTREAM_CONN_H

#include <stdbool.h>

#include "retry.h"

struct session;

/* The route's upstream: pick a server and connect (or take a pooled connection). */
void upstream_conn_choose_server(struct session *s);
/* A destination the request names (url-embedded, CONNECT): resolve if needed, check allow/deny
 * against the address, connect. */
void upstream_conn_to_destination(struct session *s);
/* Connect to s->up_addr; @allow_pool: an idle pooled connection to it may serve. */
void upstream_conn_open(struct session *s, bool allow_pool);
/* The timer fired in S_RESOLVING, S_QUEUED, S_BACKOFF or S_CONNECTING. */
void upstream_conn_timeout(struct session *s);

/* May the request be sent again after @trigger (the route's retry policy)? */
bool upstream_conn_can_retry(const struct session *s, enum retry_trigger trigger);
/* Drop the upstream connection and try again after the backoff. */
void upstream_conn_schedule_retry(struct session *s);
/* A failure before any final response byte: retry if allowed, else answer @status (or close
 * once a response started). */
void upstream_conn_retry_or_fail(struct session *s, enum retry_trigger trigger, int status);

#endif
