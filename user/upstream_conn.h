/* SPDX-License-Identifier: GPL-2.0 */
#ifndef KFWD_UPSTREAM_CONN_H
#define KFWD_UPSTREAM_CONN_H

#include <stdbool.h>

#include "retry.h"

struct session;
struct tls_client;
struct upstream_server;

/* The route's upstream: pick a server and connect (or take a pooled connection). */
void upstream_conn_choose_server(struct session *s);
/* A destination the request names (url-embedded, CONNECT): resolve if needed, check allow/deny
 * against the address, connect. */
void upstream_conn_to_destination(struct session *s);
/* Connect to s->up_addr; @allow_pool: an idle pooled connection to it may serve. */
void upstream_conn_open(struct session *s, bool allow_pool);
/*
 * The TLS side of this session's upstream connection to @srv: 1 for a TLS origin, with its
 * settings in *@tc (NULL when the current configuration has none for it) and the host name to
 * send and verify in @host (the server as written without its port, or the URL's host); 0 for
 * a plain origin; -1 when the server's host cannot be had.
 */
int upstream_conn_tls_target(const struct session *s, const struct upstream_server *srv,
			     struct tls_client **tc, char *host, size_t len);
/* The timer fired in S_RESOLVING, S_QUEUED, S_BACKOFF or S_CONNECTING. */
void upstream_conn_timeout(struct session *s);

/* May the request be sent again after @trigger (the route's retry policy)? */
bool upstream_conn_can_retry(const struct session *s, enum retry_trigger trigger);
/* Drop the upstream connection and try again after the backoff. */
void upstream_conn_schedule_retry(struct session *s);
/* A failure before any final response byte: retry if allowed, else answer @status (or close
 * once a response started). */
void upstream_conn_retry_or_fail(struct session *s, enum retry_trigger trigger, int status);
/* No retry: answer @status, or cut the connection once a response went out. */
void upstream_conn_give_up(struct session *s, int status);

#endif
