// SPDX-License-Identifier: GPL-2.0
/*
 * Upstream servers at run time: round-robin choice, passive health, connection slots and the
 * FIFO of waiters for a slot. That state lives in a table owned here, keyed by upstream name and
 * server address as written in the configuration, so a new configuration naming the same server
 * finds its health, drain, open connections and waiters (struct upstream_server.state points
 * into it). Entries are few (one per server ever configured) and live until upstream_fini().
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "loop.h"
#include "upstream.h"

struct server_state {
	struct server_state *next; /* the table: a list, servers are few */
	char upstream[CONFIG_NAME_MAX];
	char addr[sizeof(((struct upstream_server *)0)->text)];
	uint64_t down_until_ms; /* passive health: skipped until then */
	uint64_t failures;
	unsigned int consecutive_fails; /* connect failures since the last success */
	bool admin_down; /* kfwdctl upstream drain */
	unsigned int conns; /* open connections under any configuration: in use and pooled */
	struct upstream_waiter *waiters; /* queued for a connection slot (FIFO) */
	struct upstream_waiter *waiters_tail;
};

static struct server_state *table;

static struct server_state *state_find(const char *upstream, const char *addr)
{
	for (struct server_state *st = table; st; st = st->next)
		if (!strcmp(st->upstream, upstream) && !strcmp(st->addr, addr))
			return st;
	return NULL;
}

int upstream_attach(struct config *cfg)
{
	for (size_t i = 0; i < cfg->n_upstreams; i++) {
		struct upstream *u = &cfg->upstreams[i];

		for (size_t j = 0; j < u->n_servers; j++) {
			struct upstream_server *srv = &u->servers[j];
			struct server_state *st = state_find(u->name, srv->text);

			if (!st) {
				st = calloc(1, sizeof(*st));
				if (!st)
					return -1;
				snprintf(st->upstream, sizeof(st->upstream), "%s", u->name);
				snprintf(st->addr, sizeof(st->addr), "%s", srv->text);
				st->next = table;
				table = st;
			}
			srv->state = st;
		}
	}
	return 0;
}

void upstream_fini(void)
{
	while (table) {
		struct server_state *st = table;

		table = st->next;
		free(st);
	}
}

bool upstream_server_up(const struct upstream_server *srv)
{
	return !srv->state->admin_down && srv->state->down_until_ms <= now_ms();
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
	struct server_state *st;

	if (!srv)
		return;
	st = srv->state;
	st->failures++;
	st->consecutive_fails++;
	/* A group's only server stays up (as in nginx): marking it down would turn one failure
	 * into upstream-down-time of 502 for everyone, even once it is back. */
	if (srv->upstream->n_servers < 2 || !cfg->upstream_max_fails || !down_ms ||
	    st->consecutive_fails < cfg->upstream_max_fails)
		return;
	if (st->down_until_ms <= now_ms())
		log_warn("upstream %s/%s marked down for %lu ms after %u connect failures",
			 srv->upstream->name, srv->text, (unsigned long)down_ms,
			 st->consecutive_fails);
	st->down_until_ms = now_ms() + down_ms;
}

void upstream_request_failed(struct upstream_server *srv)
{
	if (srv)
		srv->state->failures++;
}

void upstream_mark_ok(struct upstream_server *srv)
{
	if (!srv)
		return;
	srv->state->down_until_ms = 0;
	srv->state->consecutive_fails = 0;
}

void upstream_set_drained(struct upstream_server *srv, bool drained)
{
	srv->state->admin_down = drained;
}

void upstream_server_info(const struct upstream_server *srv, struct upstream_server_info *info)
{
	const struct server_state *st = srv->state;
	uint64_t now = now_ms();

	info->drained = st->admin_down;
	info->down_ms = st->down_until_ms > now ? st->down_until_ms - now : 0;
	info->failures = st->failures;
	info->conns = st->conns;
}

bool upstream_slot_free(const struct upstream_server *srv, unsigned int max_conns)
{
	return !srv || !max_conns || srv->state->conns < max_conns;
}

/* An open connection holds a reference on its server's configuration, which holds @srv. */
static const struct config *server_config(const struct upstream_server *srv)
{
	return srv->upstream ? srv->upstream->cfg : NULL;
}

void upstream_conn_opened(struct upstream_server *srv)
{
	if (!srv)
		return;
	srv->state->conns++;
	config_get(server_config(srv));
}

static void wake_first(struct server_state *st)
{
	struct upstream_waiter *w = st->waiters;

	if (!w)
		return;
	upstream_unwait(w);
	w->wake(w);
}

void upstream_conn_closed(struct upstream_server *srv)
{
	const struct config *cfg;

	if (!srv)
		return;
	cfg = server_config(srv);
	srv->state->conns--;
	wake_first(srv->state);
	config_put(cfg); /* last: it may free srv */
}

void upstream_conn_idle(struct upstream_server *srv)
{
	if (srv)
		wake_first(srv->state);
}

void upstream_wait(struct upstream_server *srv, struct upstream_waiter *w)
{
	struct server_state *st = srv->state;

	w->server = st;
	w->next = NULL;
	if (st->waiters_tail)
		st->waiters_tail->next = w;
	else
		st->waiters = w;
	st->waiters_tail = w;
}

void upstream_unwait(struct upstream_waiter *w)
{
	struct server_state *st = w->server;
	struct upstream_waiter **pp, *prev = NULL;

	if (!st)
		return;
	for (pp = &st->waiters; *pp; prev = *pp, pp = &(*pp)->next) {
		if (*pp != w)
			continue;
		*pp = w->next;
		if (st->waiters_tail == w)
			st->waiters_tail = prev;
		break;
	}
	w->server = NULL;
	w->next = NULL;
}
