// SPDX-License-Identifier: GPL-2.0
/*
 * The control socket's read-only commands (ctl_show.h): status and stats as single answers,
 * connections, routes and upstreams as paged dumps, and the monitor's subscribers, fed by the
 * data path's event sink (event.h) while at least one listens, kept alive by heartbeats.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "config_edit.h"
#include "ctl_show.h"
#include "ctl_socket.h"
#include "event.h"
#include "flow.h"
#include "log.h"
#include "mem_budget.h"
#include "loop.h"
#include "metrics.h"
#include "route.h"
#include "session.h"
#include "sockmap_path.h"
#include "stats.h"
#include "upstream.h"

struct subscriber {
	uint32_t portid;
	uint32_t seq;
	uint64_t lost;
};

static void on_heartbeat(struct timer *t);

static struct {
	struct subscriber subs[KFWD_CTL_MAX_SUBSCRIBERS];
	unsigned int n;
	struct timer heartbeat;
} mon = { .heartbeat = { .on_expire = on_heartbeat } };

struct event {
	uint32_t type; /* enum kfwd_event_type */
	const struct kev *k; /* a connection or flow event of the data path */
	uint32_t generation;
	const char *what;
};

static uint64_t wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void fill_event(struct mb *b, const struct event *ev, uint64_t lost)
{
	struct nlattr *n = nest_start(b, KFWD_A_EVENT);

	put_u32(b, KFWD_EV_TYPE, ev->type);
	put_u64(b, KFWD_EV_TIME_MS, wall_ms());
	if (lost)
		put_u64(b, KFWD_EV_LOST, lost);
	if (ev->k) {
		const struct kev *k = ev->k;

		put_u64(b, KFWD_EV_CONN_ID, k->conn_id);
		if (k->client)
			put_str(b, KFWD_EV_CLIENT, k->client);
		if (k->type == KEV_CONN_CLOSE) {
			if (k->upstream && k->upstream[0])
				put_str(b, KFWD_EV_UPSTREAM, k->upstream);
			put_u64(b, KFWD_EV_BYTES_UP, k->bytes_up);
			put_u64(b, KFWD_EV_BYTES_DOWN, k->bytes_down);
			put_u64(b, KFWD_EV_DURATION_MS, k->duration_ms);
			put_u32(b, KFWD_EV_STATUS, k->status);
		}
		if (k->type == KEV_FLOW_PAUSE || k->type == KEV_FLOW_RESUME) {
			put_str(b, KFWD_EV_DIR, k->dir == DIR_REQUEST ? "request" : "response");
			put_u64(b, KFWD_EV_LEVEL, k->level);
			put_u64(b, KFWD_EV_PAUSES, k->pauses);
		}
	}
	if (ev->type == KFWD_EVENT_CONFIG) {
		put_u32(b, KFWD_EV_GENERATION, ev->generation);
		if (ev->what)
			put_str(b, KFWD_EV_WHAT, ev->what);
	}
	nest_end(b, n);
}

static void drop_subscriber(unsigned int i)
{
	log_debug("ctl: monitor at port id %u gone", mon.subs[i].portid);
	mon.subs[i] = mon.subs[--mon.n];
	if (!mon.n) {
		timer_cancel(&mon.heartbeat);
		kev_set_sink(NULL);
	}
}

static void broadcast(const struct event *ev)
{
	for (unsigned int i = 0; i < mon.n;) {
		struct subscriber *sub = &mon.subs[i];
		struct mb b;
		int e;

		ctl_msg_start(&b, KFWD_CMD_EVENT, 0, sub->seq);
		fill_event(&b, ev, sub->lost);
		e = ctl_msg_send(&b, sub->portid);
		if (e == -ECONNREFUSED) {
			drop_subscriber(i);
			continue;
		}
		if (e < 0) {
			sub->lost++;
			stats.ctl_events_lost++;
		} else {
			sub->lost = 0;
			stats.ctl_events++;
		}
		i++;
	}
}

/* The sink of event.h, registered while somebody monitors. */
static void on_kev(const struct kev *k)
{
	static const uint32_t types[] = {
		[KEV_CONN_OPEN] = KFWD_EVENT_OPEN,
		[KEV_CONN_CLOSE] = KFWD_EVENT_CLOSE,
		[KEV_FLOW_PAUSE] = KFWD_EVENT_PAUSE,
		[KEV_FLOW_RESUME] = KFWD_EVENT_RESUME,
	};
	struct event ev = { .type = types[k->type], .k = k };

	broadcast(&ev);
}

void ctl_monitor_config(uint32_t generation, const char *what)
{
	struct event ev = { .type = KFWD_EVENT_CONFIG, .generation = generation, .what = what };

	if (mon.n)
		broadcast(&ev);
}

static void on_heartbeat(struct timer *t)
{
	struct event ev = { .type = KFWD_EVENT_HEARTBEAT };

	broadcast(&ev);
	if (mon.n)
		timer_arm(&mon.heartbeat, KFWD_CTL_HEARTBEAT_MS);
}

void ctl_monitor_add(const struct ctl_req *r)
{
	unsigned int i;

	for (i = 0; i < mon.n && mon.subs[i].portid != r->portid; i++)
		;
	if (i == mon.n) {
		if (mon.n == KFWD_CTL_MAX_SUBSCRIBERS) {
			ctl_reply_ack(r, -EBUSY, -1, "%d monitors already",
				      KFWD_CTL_MAX_SUBSCRIBERS);
			return;
		}
		mon.n++;
	}
	mon.subs[i] = (struct subscriber){ .portid = r->portid, .seq = r->nlh->nlmsg_seq };
	kev_set_sink(on_kev);
	if (!timer_armed(&mon.heartbeat))
		timer_arm(&mon.heartbeat, KFWD_CTL_HEARTBEAT_MS);
	log_debug("ctl: monitor at port id %u (pid %d)", r->portid, (int)r->cred.pid);
	ctl_reply_ack(r, 0, -1, NULL);
}

/* ------------------------------------------------------------------ commands */

/* One data path of the status: whether it can be used, whether it is the default, why not. */
static void put_datapath(struct mb *b, const char *name, bool available, bool is_default,
			 const char *reason)
{
	struct nlattr *dp = nest_start(b, KFWD_ST_DATAPATH);

	put_str(b, KFWD_DP_NAME, name);
	put_u8(b, KFWD_DP_AVAILABLE, available);
	put_u8(b, KFWD_DP_DEFAULT, is_default);
	if (reason)
		put_str(b, KFWD_DP_REASON, reason);
	nest_end(b, dp);
}

/* splice: can a pipe of pipe-size be had right now? Else why not, in @why. */
static bool splice_available(const struct config *cfg, char *why, size_t cap)
{
	bool ok = true;
	int fds[2];

	if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0) {
		snprintf(why, cap, "no pipe: %s", strerror(errno));
		return false;
	}
	if (fcntl(fds[1], F_SETPIPE_SZ, (int)cfg->pipe_size) < 0) {
		ok = false;
		snprintf(why, cap, "pipe of %zu bytes refused: %s", cfg->pipe_size,
			 strerror(errno));
	}
	close(fds[0]);
	close(fds[1]);
	return ok;
}

static void fill_status(struct mb *b, const void *arg)
{
	const struct ctl_run *run = arg;
	const struct config *cfg = run->cfg;
	struct nlattr *st = nest_start(b, KFWD_A_STATUS);
	char why[160];
	bool splice_ok = splice_available(cfg, why, sizeof(why));

	put_str(b, KFWD_ST_VERSION, KFWD_VERSION);
	put_u32(b, KFWD_ST_PID, (uint32_t)getpid());
	put_u64(b, KFWD_ST_UPTIME_MS, now_ms() - run->start_ms);
	put_u64(b, KFWD_ST_STARTED, (uint64_t)run->started);
	put_str(b, KFWD_ST_CONFIG_FILE, cfg->path ? cfg->path : "");
	put_u32(b, KFWD_ST_CONFIG_GEN, run->generation);
	put_u32(b, KFWD_ST_RUNTIME_CHANGES, config_edit_runtime_changes(cfg->source));
	for (size_t i = 0; i < cfg->n_listens; i++)
		put_str(b, KFWD_ST_LISTEN, cfg->listens[i].text);
	if (cfg->has_metrics)
		put_str(b, KFWD_ST_METRICS, cfg->metrics.text);
	put_datapath(b, "splice", splice_ok, cfg->data_path == DATA_PATH_SPLICE,
		     splice_ok ? NULL : why);
	put_datapath(b, "sockmap", !sockmap_path_reason(),
		     cfg->data_path == DATA_PATH_SOCKMAP ||
			     cfg->data_path == DATA_PATH_SOCKMAP_UNBOUNDED,
		     sockmap_path_reason());
	put_datapath(b, "copy", true, cfg->data_path == DATA_PATH_COPY,
		     cfg->data_path != DATA_PATH_COPY ?
			     "fallback when a pipe cannot be had or splice is refused" :
			     NULL);

	put_str(b, KFWD_ST_DATA_PATH, data_path_name(cfg->data_path));
	put_u64(b, KFWD_ST_PIPE_SIZE, cfg->pipe_size);
	put_u64(b, KFWD_ST_PIPE_HIGH, cfg->pipe_high_water);
	put_u64(b, KFWD_ST_PIPE_LOW, cfg->pipe_low_water);
	put_u64(b, KFWD_ST_COPY_BUF, cfg->copy_buffer_size);
	put_u32(b, KFWD_ST_MAX_CONNS, cfg->max_connections);
	put_str(b, KFWD_ST_LOG_LEVEL, klog_level_name(klog_level));
	put_u32(b, KFWD_ST_CONNECTIONS,
		session_count() + (run->peers ? run->peers->sessions() : 0));
	put_u8(b, KFWD_ST_DRAINING, run->draining);
	put_u32(b, KFWD_ST_CTL_PORT_ID, ctl_socket_portid());
	if (cfg->has_ctl_group)
		put_str(b, KFWD_ST_CTL_GROUP, cfg->ctl_group_name);
	put_u32(b, KFWD_ST_SUBSCRIBERS, mon.n);
	put_u64(b, KFWD_ST_MAX_MEMORY, mem_budget.budget);
	put_u64(b, KFWD_ST_MEMORY_HELD, mem_budget.held);
	put_u64(b, KFWD_ST_FAIR_SHARE, mem_budget_fair_share());
	nest_end(b, st);
}

static void fill_stats(struct mb *b, const void *arg)
{
	struct nlattr *n = nest_start(b, KFWD_A_STATS);
	uint64_t v[KFWD_STAT_MAX + 1];

	stats_snapshot(v);
	for (uint16_t type = KFWD_STAT_UNSPEC + 1; type <= KFWD_STAT_MAX; type++)
		put_u64(b, type, v[type]);
	nest_end(b, n);
}

static void fill_flow(struct mb *b, uint16_t type, const struct flow *f)
{
	struct nlattr *n = nest_start(b, type);

	put_str(b, KFWD_FLOW_PATH, f->use_splice && !f->splice_failed ? "splice" : "copy");
	put_u64(b, KFWD_FLOW_BYTES, f->bytes_out);
	put_u64(b, KFWD_FLOW_SPLICED, f->bytes_spliced);
	put_u64(b, KFWD_FLOW_COPIED, f->bytes_copied);
	put_u64(b, KFWD_FLOW_QUEUED, flow_level(f));
	put_u64(b, KFWD_FLOW_HIGH_WATER, flow_high_water(f));
	put_u8(b, KFWD_FLOW_PAUSED, f->paused);
	put_u64(b, KFWD_FLOW_PAUSES, f->pauses);
	put_u64(b, KFWD_FLOW_RESUMES, f->resumes);
	nest_end(b, n);
}

static void fill_conn(struct mb *b, const void *arg)
{
	const struct session *s = arg;
	struct nlattr *n = nest_start(b, KFWD_A_CONN);
	char text[INET6_ADDRSTRLEN + 16];
	struct conn_details details;
	struct flow idle;

	put_u64(b, KFWD_CONN_ID, s->id);
	session_peer_text(s, text, sizeof(text));
	put_str(b, KFWD_CONN_CLIENT, text);
	if (s->up_addr_text[0])
		put_str(b, KFWD_CONN_UPSTREAM, s->up_addr_text);
	if (s->route)
		put_str(b, KFWD_CONN_ROUTE, s->route->prefix);
	put_str(b, KFWD_CONN_STATE, session_state_name(s->state));
	put_u64(b, KFWD_CONN_AGE_MS, now_ms() - s->created_ms);
	put_u64(b, KFWD_CONN_REQUESTS, s->requests);
	put_u32(b, KFWD_CONN_LAST_STATUS, (uint32_t)(s->last_status > 0 ? s->last_status : 0));
	fill_flow(b, KFWD_CONN_REQ, session_flow_view(s, DIR_REQUEST, &idle));
	fill_flow(b, KFWD_CONN_RESP, session_flow_view(s, DIR_RESPONSE, &idle));
	put_str(b, KFWD_CONN_PROTO, s->proto->name);
	session_describe(s, &details);
	for (unsigned int i = 0; i < details.n; i++)
		put_str(b, KFWD_CONN_DETAIL, details.item[i]);
	nest_end(b, n);
}

/* A KFWD_A_CONN nest a worker built (ctl_conn_records), copied as it is. */
static void fill_raw(struct mb *b, const void *arg)
{
	const struct nlattr *a = arg;

	if (b->full || b->nlh->nlmsg_len + MNL_ALIGN(a->nla_len) > b->size) {
		b->full = true;
		return;
	}
	memcpy(mnl_nlmsg_get_payload_tail(b->nlh), a, a->nla_len);
	b->nlh->nlmsg_len += MNL_ALIGN(a->nla_len);
}

/* The workers' connections with ids below @cursor, after this process's own. */
static void conn_list_peers(struct ctl_dump *d, const struct ctl_peers *peers, uint64_t cursor)
{
	static uint64_t rec[CTL_CONN_RECORDS_MAX / sizeof(uint64_t)];
	size_t n;

	while ((n = peers->conns(cursor, rec, sizeof(rec))) > 0) {
		for (size_t off = 0; off < n;) {
			const struct ctl_conn_record *cr = (const void *)((char *)rec + off);

			if (ctl_dump_page_full(d)) {
				ctl_dump_done(d, true, cr->id + 1, false);
				return;
			}
			(void)ctl_dump_object(d, fill_raw, cr + 1);
			cursor = cr->id;
			off += CTL_CONN_RECORD_SIZE(cr->len);
		}
	}
	ctl_dump_done(d, false, 0, false);
}

size_t ctl_conn_records(uint64_t below, void *buf, size_t size)
{
	size_t used = 0;

	for (struct session *s = session_first(); s; s = s->next) {
		struct ctl_conn_record *cr = (void *)((char *)buf + used);
		const struct nlattr *nest;
		struct mb b;

		if (s->id >= below)
			continue;
		ctl_msg_start(&b, KFWD_CMD_CONN_LIST, 0, 0);
		nest = mnl_nlmsg_get_payload_tail(b.nlh); /* fill_conn's nest starts here */
		fill_conn(&b, s);
		if (b.full)
			continue;
		if (used + CTL_CONN_RECORD_SIZE(nest->nla_len) > size)
			break;
		cr->id = s->id;
		cr->len = nest->nla_len;
		memcpy(cr + 1, nest, nest->nla_len);
		used += CTL_CONN_RECORD_SIZE(nest->nla_len);
	}
	return used;
}

void ctl_show_conns(const struct ctl_req *r, const struct ctl_run *run)
{
	const struct nlattr *c = r->m.tb[KFWD_A_CURSOR];
	uint64_t cursor = c ? mnl_attr_get_u64(c) : UINT64_MAX;
	struct ctl_dump d = { .r = r };

	/* Newest first (ids descending); the cursor is "ids below this". */
	for (struct session *s = session_first(); s; s = s->next) {
		if (s->id >= cursor)
			continue;
		if (ctl_dump_page_full(&d)) {
			ctl_dump_done(&d, true, s->id + 1, false);
			return;
		}
		if (!ctl_dump_object(&d, fill_conn, s))
			log_warn("ctl: connection %lu does not fit in a message",
				 (unsigned long)s->id);
	}
	if (run->peers) {
		conn_list_peers(&d, run->peers, cursor);
		return;
	}
	ctl_dump_done(&d, false, 0, false);
}

struct route_item {
	const struct config *cfg;
	const struct route *r;
	uint32_t index;
};

static void fill_route(struct mb *b, const void *arg)
{
	const struct route_item *it = arg;
	const struct route *r = it->r;
	struct nlattr *n = nest_start(b, KFWD_A_ROUTE);
	char line[1024], origin[300];
	int nbase = config_edit_base_lines(it->cfg->source);

	put_u32(b, KFWD_ROUTE_INDEX, it->index);
	put_str(b, KFWD_ROUTE_PREFIX, r->prefix);
	put_str(b, KFWD_ROUTE_TARGET,
		r->kind == ROUTE_UPSTREAM     ? r->upstream->name :
		r->kind == ROUTE_URL_EMBEDDED ? "url-embedded" :
						"rtsp-gateway");
	if (r->host)
		put_str(b, KFWD_ROUTE_HOST, r->host);
	if (r->methods) {
		char methods[512];

		route_allow_header(r, methods, sizeof(methods));
		put_str(b, KFWD_ROUTE_METHODS, methods);
	}
	/* The options exactly as written: the words after PREFIX and TARGET on its line. */
	if (config_edit_line(it->cfg->source, r->line, line, sizeof(line))) {
		char opts[1024];

		config_edit_route_options(line, opts, sizeof(opts));
		if (opts[0])
			put_str(b, KFWD_ROUTE_OPTIONS, opts);
	}
	if (r->line > nbase)
		snprintf(origin, sizeof(origin), "kfwdctl");
	else
		snprintf(origin, sizeof(origin), "%s:%d",
			 it->cfg->path ? it->cfg->path : "<embedded>", r->line);
	put_str(b, KFWD_ROUTE_ORIGIN, origin);
	nest_end(b, n);
}

/* Where a list continues; true when the configuration changed since the page before. */
static bool cursor_start(const struct ctl_req *r, const struct ctl_run *run, uint32_t *index)
{
	const struct nlattr *c = r->m.tb[KFWD_A_CURSOR];
	uint64_t v;

	*index = 0;
	if (!c)
		return false;
	v = mnl_attr_get_u64(c);
	*index = (uint32_t)v;
	return (uint32_t)(v >> 32) != run->generation;
}

void ctl_show_routes(const struct ctl_req *r, const struct ctl_run *run)
{
	const struct config *cfg = run->cfg;
	struct ctl_dump d = { .r = r };
	uint32_t i;
	bool changed = cursor_start(r, run, &i);

	for (; i < cfg->n_routes; i++) {
		struct route_item it = { cfg, &cfg->routes[i], i };

		if (ctl_dump_page_full(&d)) {
			ctl_dump_done(&d, true, (uint64_t)run->generation << 32 | i, changed);
			return;
		}
		if (!ctl_dump_object(&d, fill_route, &it))
			log_warn("ctl: route %s does not fit in a message", cfg->routes[i].prefix);
	}
	ctl_dump_done(&d, false, 0, changed);
}

struct upstream_item {
	const struct upstream *u;
	const struct ctl_peers *peers;
};

static void fill_upstream(struct mb *b, const void *arg)
{
	const struct upstream_item *it = arg;
	const struct upstream *u = it->u;
	struct nlattr *n = nest_start(b, KFWD_A_UPSTREAM_INFO);

	put_str(b, KFWD_UP_NAME, u->name);
	for (size_t i = 0; i < u->n_servers; i++) {
		const struct upstream_server *srv = &u->servers[i];
		struct nlattr *sn = nest_start(b, KFWD_UP_SERVER);
		struct upstream_server_info info;
		bool up = upstream_server_up(srv);

		upstream_server_info(srv, &info);
		if (it->peers)
			it->peers->server_info(u->name, i, &info, &up);
		put_str(b, KFWD_SRV_ADDR, srv->text);
		put_str(b, KFWD_SRV_STATE, info.drained ? "drained" : up ? "up" : "down");
		put_u8(b, KFWD_SRV_DRAINED, info.drained);
		put_u64(b, KFWD_SRV_DOWN_MS, info.down_ms);
		put_u64(b, KFWD_SRV_FAILURES, info.failures);
		put_u32(b, KFWD_SRV_CONNS, info.conns);
		nest_end(b, sn);
	}
	nest_end(b, n);
}

void ctl_show_upstreams(const struct ctl_req *r, const struct ctl_run *run)
{
	const struct config *cfg = run->cfg;
	struct ctl_dump d = { .r = r };
	uint32_t i;
	bool changed = cursor_start(r, run, &i);

	for (; i < cfg->n_upstreams; i++) {
		if (ctl_dump_page_full(&d)) {
			ctl_dump_done(&d, true, (uint64_t)run->generation << 32 | i, changed);
			return;
		}
		struct upstream_item it = { .u = &cfg->upstreams[i], .peers = run->peers };

		if (!ctl_dump_object(&d, fill_upstream, &it)) {
			ctl_reply_ack(r, -EMSGSIZE, -1, "upstream %s has too many servers to list",
				      cfg->upstreams[i].name);
			return;
		}
	}
	ctl_dump_done(&d, false, 0, changed);
}

void ctl_show_status(const struct ctl_req *r, const struct ctl_run *run)
{
	ctl_reply_single(r, fill_status, run);
}

void ctl_show_stats(const struct ctl_req *r)
{
	ctl_reply_single(r, fill_stats, NULL);
}

void ctl_monitor_end(void)
{
	/* Monitors learn that the stream ended (NLMSG_DONE) instead of waiting for heartbeats. */
	for (unsigned int i = 0; i < mon.n; i++)
		ctl_msg_end_stream(mon.subs[i].portid, mon.subs[i].seq);
	mon.n = 0;
	kev_set_sink(NULL);
	timer_cancel(&mon.heartbeat);
}

void ctl_monitor_forget(void)
{
	/* The subscribers are the master's: it keeps answering them. */
	mon.n = 0;
	kev_set_sink(NULL);
	timer_cancel(&mon.heartbeat);
}
