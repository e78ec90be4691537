// SPDX-License-Identifier: GPL-2.0
#include "log.h"
#include "loop.h"
#include "session.h"
#include "upstream.h"

bool upstream_server_up(const struct upstream_server *srv)
{
	return !srv->admin_down && srv->down_until_ms <= now_ms();
}

struct upstream_server *upstream_pick(struct upstream *u, struct upstream_server *avoid)
{
	for (size_t i = 0; i < u->n_servers; i++) {
		struct upstream_server *srv = &u->servers[u->next_server++ % u->n_servers];

		if (srv != avoid && upstream_server_up(srv))
			return srv;
	}
	return avoid && upstream_server_up(avoid) ? avoid : NULL;
}

void upstream_connect_failed(struct upstream_server *srv, const struct config *cfg)
{
	uint64_t down_ms = cfg->upstream_down_time_ms;

	if (!srv)
		return;
	srv->failures++;
	srv->consecutive_fails++;
	/* A group's only server stays up (as in nginx): marking it down would turn one failure
	 * into upstream-down-time of 502 for everyone, even once it is back. */
	if (srv->upstream->n_servers < 2 || !cfg->upstream_max_fails || !down_ms ||
	    srv->consecutive_fails < cfg->upstream_max_fails)
		return;
	if (srv->down_until_ms <= now_ms())
		log_warn("upstream %s/%s marked down for %lu ms after %u connect failures",
			 srv->upstream->name, srv->text, (unsigned long)down_ms,
			 srv->consecutive_fails);
	srv->down_until_ms = now_ms() + down_ms;
}

void upstream_request_failed(struct upstream_server *srv)
{
	if (srv)
		srv->failures++;
}

void upstream_mark_ok(struct upstream_server *srv)
{
	if (!srv)
		return;
	srv->down_until_ms = 0;
	srv->consecutive_fails = 0;
}

bool upstream_slot_free(const struct upstream_server *srv, unsigned int max_conns)
{
	return !srv || !max_conns || srv->conns < max_conns;
}

/* An open connection holds a reference on its server's configuration (kfwdctl swaps them). */
static const struct config *server_config(const struct upstream_server *srv)
{
	return srv->upstream ? srv->upstream->cfg : NULL;
}

void upstream_conn_opened(struct upstream_server *srv)
{
	if (!srv)
		return;
	srv->conns++;
	config_get(server_config(srv));
}

static void wake_first(struct upstream_server *srv)
{
	struct session *s = srv->waiters;

	if (!s)
		return;
	upstream_unwait(s);
	session_slot_available(s);
}

void upstream_conn_closed(struct upstream_server *srv)
{
	const struct config *cfg;

	if (!srv)
		return;
	cfg = server_config(srv);
	srv->conns--;
	wake_first(srv);
	config_put(cfg); /* last: it may free srv */
}

void upstream_conn_idle(struct upstream_server *srv)
{
	if (srv)
		wake_first(srv);
}

void upstream_wait(struct upstream_server *srv, struct session *s)
{
	s->wait_server = srv;
	s->wait_next = NULL;
	if (srv->waiters_tail)
		srv->waiters_tail->wait_next = s;
	else
		srv->waiters = s;
	srv->waiters_tail = s;
}

void upstream_unwait(struct session *s)
{
	struct upstream_server *srv = s->wait_server;
	struct session **pp, *prev = NULL;

	if (!srv)
		return;
	for (pp = &srv->waiters; *pp; prev = *pp, pp = &(*pp)->wait_next) {
		if (*pp != s)
			continue;
		*pp = s->wait_next;
		if (srv->waiters_tail == s)
			srv->waiters_tail = prev;
		break;
	}
	s->wait_server = NULL;
	s->wait_next = NULL;
}
