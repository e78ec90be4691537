// SPDX-License-Identifier: GPL-2.0
#include "log.h"
#include "loop.h"
#include "upstream.h"

bool upstream_server_up(const struct upstream_server *srv)
{
	return !srv->admin_down && srv->down_until_ms <= now_ms();
}

struct upstream_server *upstream_pick(struct upstream *u)
{
	for (size_t i = 0; i < u->n_servers; i++) {
		struct upstream_server *srv = &u->servers[u->next_server++ % u->n_servers];

		if (upstream_server_up(srv))
			return srv;
	}
	return NULL;
}

void upstream_mark_failed(struct upstream_server *srv, uint64_t down_ms)
{
	if (!srv)
		return;
	srv->failures++;
	if (down_ms && srv->down_until_ms <= now_ms())
		log_warn("upstream %s/%s marked down for %lu ms", srv->upstream->name, srv->text,
			 (unsigned long)down_ms);
	srv->down_until_ms = now_ms() + down_ms;
}

void upstream_mark_ok(struct upstream_server *srv)
{
	if (srv)
		srv->down_until_ms = 0;
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
	struct upstream_waiter *w = srv->waiters;

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
	srv->conns--;
	wake_first(srv);
	config_put(cfg); /* last: it may free srv */
}

void upstream_conn_idle(struct upstream_server *srv)
{
	if (srv)
		wake_first(srv);
}

void upstream_wait(struct upstream_server *srv, struct upstream_waiter *w)
{
	w->server = srv;
	w->next = NULL;
	if (srv->waiters_tail)
		srv->waiters_tail->next = w;
	else
		srv->waiters = w;
	srv->waiters_tail = w;
}

void upstream_unwait(struct upstream_waiter *w)
{
	struct upstream_server *srv = w->server;
	struct upstream_waiter **pp, *prev = NULL;

	if (!srv)
		return;
	for (pp = &srv->waiters; *pp; prev = *pp, pp = &(*pp)->next) {
		if (*pp != w)
			continue;
		*pp = w->next;
		if (srv->waiters_tail == w)
			srv->waiters_tail = prev;
		break;
	}
	w->server = NULL;
	w->next = NULL;
}
