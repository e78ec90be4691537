// SPDX-License-Identifier: GPL-2.0
/*
 * The control socket: kfwdctl's requests (include/kfwd/ctl.h), authenticated by the
 * credentials the kernel attaches to every datagram, answered without ever blocking the loop.
 *
 * Configuration changes (route add/del, set, reload) never touch a configuration in use: the
 * running configuration remembers the text it was parsed from; a change edits that text (a
 * route line appended or commented out, a directive set) and parses it again with the same
 * parser and checks as the file, so a runtime change is valid exactly when the same line in
 * the file would be. The result is swapped in; connections keep a reference to the one they
 * started with (config_get/config_put). Lines added at runtime follow a marker
 * (config_edit.h), so reload (the file again) drops them. The socket is ctl_socket.c, the
 * answers ctl_msg.c, the read-only commands and monitor ctl_show.c.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <libmnl/libmnl.h>

#include "apply.h"
#include "common_ctl.h"
#include "config_edit.h"
#include "ctl.h"
#include "ctl_msg.h"
#include "ctl_show.h"
#include "ctl_socket.h"
#include "log.h"
#include "loop.h"
#include "sd_notify.h"
#include "session.h"
#include "stats.h"
#include "upstream.h"

#define CTL_RECV_BATCH 64 /* datagrams per readiness event */
#define CTL_MSGS_PER_DATAGRAM 16 /* requests answered per datagram */
#define CTL_MAX_ROUTE_OPTIONS 32
#define CTL_MAX_SETTINGS 16 /* KEY VALUE pairs in one set */
/* Texts of a change: what it was (logs, monitor), the note and the error kfwdctl shows. */
#define CTL_WHAT_LEN 300
#define CTL_NOTE_LEN 512
#define CTL_ERR_LEN 600
#define CTL_LINE_MAX 4096 /* a route line added at runtime */
#define CTL_SET_TEXT_MAX 2048 /* the directive lines of one set */

static struct {
	struct ctl_run run;
	struct loop_handler h;
	char *const *extra_listens;
	size_t n_extra;
} ctl;

/* One datagram in: 4-byte aligned for the netlink structures. */
static uint32_t rxbuf[KFWD_CTL_RECV_MAX / 4];

const struct config *ctl_config(void)
{
	return ctl.run.cfg;
}

void ctl_draining(void)
{
	ctl.run.draining = true;
}

/* ------------------------------------------------------------------ helpers */

static struct session *find_session(uint64_t id)
{
	for (struct session *s = session_first(); s; s = s->next)
		if (s->id == id)
			return s;
	return NULL;
}

/* The running configuration and every other one still used by a connection. */
static struct upstream *find_upstream(const struct config *cfg, const char *name)
{
	for (size_t i = 0; i < cfg->n_upstreams; i++)
		if (!strcmp(cfg->upstreams[i].name, name))
			return &cfg->upstreams[i];
	return NULL;
}

static struct upstream_server *find_server(const struct upstream *u, const char *text)
{
	for (size_t i = 0; i < u->n_servers; i++)
		if (!strcmp(u->servers[i].text, text))
			return &u->servers[i];
	return NULL;
}

/* ------------------------------------------------------------------ swapping configurations */

/* The workers take the configuration now in force before kfwdctl hears it took: what failed
 * there is appended to @note (and logged by workers.c). */
static void peers_config_changed(const struct config *cfg, char *note, size_t notelen)
{
	char err[CTL_ERR_LEN];
	size_t used = strlen(note);

	if (!ctl.run.peers || ctl.run.peers->config_changed(cfg, err, sizeof(err)) == 0)
		return;
	snprintf(note + used, notelen - used, "%s%s", used ? "; " : "", err);
}

/*
 * Put @ncfg (its reference becomes the running one) in force: metrics and listening sockets
 * first, since they can fail; then nothing can. On failure nothing changed, @ncfg is
 * released and @err says why.
 */
static int swap_config(struct config *ncfg, const char *what, char *note, size_t notelen, char *err,
		       size_t errlen)
{
	const struct config *old = ctl.run.cfg;
	unsigned int on_old = 0;
	size_t used = 0;
	int rc;

	note[0] = '\0';
	rc = config_apply(ncfg, old, err, errlen);
	if (rc < 0) {
		config_put(ncfg);
		return rc;
	}
	for (struct session *s = session_first(); s; s = s->next)
		on_old += s->cfg != ncfg;
	if (on_old)
		used += (size_t)snprintf(note + used, notelen - used,
					 "%u open connection%s keep%s the previous configuration; ",
					 on_old, on_old == 1 ? "" : "s", on_old == 1 ? "s" : "");
	if (used < notelen &&
	    (ncfg->ctl_port_id != old->ctl_port_id || ncfg->ctl_off != old->ctl_off ||
	     strcmp(ncfg->ctl_socket_file, old->ctl_socket_file)))
		used += (size_t)snprintf(
			note + used, notelen - used,
			"ctl-port-id and ctl-socket-file changes take effect at restart; ");
	if (used < notelen &&
	    (ncfg->has_user != old->has_user || ncfg->run_uid != old->run_uid ||
	     ncfg->run_gid != old->run_gid || strcmp(ncfg->upgrade_socket, old->upgrade_socket)))
		used += (size_t)snprintf(note + used, notelen - used,
					 "user, group and upgrade-socket changes take effect at "
					 "restart (or binary upgrade); ");
	if (used >= 2 && used < notelen)
		note[used - 2] = '\0';
	ctl.run.cfg = ncfg;
	ctl.run.generation++;
	config_put(old);
	peers_config_changed(ncfg, note, notelen);
	log_info("configuration %u in force (%s)", ctl.run.generation, what);
	ctl_monitor_config(ctl.run.generation, what);
	return 0;
}

/* Parse @text as the running configuration's file would be, and swap it in. */
static int apply_text(const char *text, const char *what, char *note, size_t notelen, char *err,
		      size_t errlen)
{
	const struct config *cfg = ctl.run.cfg;
	char perr[CTL_ERR_LEN];
	struct config *ncfg;

	ncfg = config_load_text(cfg->path, text, ctl.extra_listens, ctl.n_extra, perr,
				sizeof(perr));
	if (!ncfg) {
		config_edit_explain_error(perr, cfg->path ? cfg->path : "<embedded>", text, err,
					  errlen);
		return -EINVAL;
	}
	return swap_config(ncfg, what, note, notelen, err, errlen);
}

/* ------------------------------------------------------------------ commands */

static void cmd_conn_kill(const struct ctl_req *r)
{
	struct session *s;
	uint64_t id;

	if (!r->m.tb[KFWD_A_CONN_ID]) {
		ctl_reply_ack(r, -EINVAL, -1, "conn kill needs a connection id");
		return;
	}
	id = mnl_attr_get_u64(r->m.tb[KFWD_A_CONN_ID]);
	s = find_session(id);
	if (!s && (!ctl.run.peers || ctl.run.peers->conn_kill(id) < 0)) {
		ctl_reply_ack(r, -ENOENT, ctl_attr_off(r, KFWD_A_CONN_ID), "no connection %lu",
			      (unsigned long)id);
		return;
	}
	log_info("kfwdctl (pid %d): killing connection %lu", (int)r->cred.pid, (unsigned long)id);
	if (s)
		session_kill(s);
	ctl_reply_ack(r, 0, -1, NULL);
}

static void finish_change(const struct ctl_req *r, int rc, const char *note, const char *err)
{
	if (rc < 0)
		ctl_reply_ack(r, rc, -1, "%s", err);
	else if (note[0])
		ctl_reply_ack(r, 0, -1, "%s", note);
	else
		ctl_reply_ack(r, 0, -1, NULL);
}

static void cmd_route_add(const struct ctl_req *r)
{
	const char *prefix = ctl_str_attr(r, KFWD_A_PREFIX),
		   *target = ctl_str_attr(r, KFWD_A_TARGET);
	char line[CTL_LINE_MAX], what[CTL_WHAT_LEN], note[CTL_NOTE_LEN], err[CTL_ERR_LEN];
	const struct nlattr *opt;
	struct config_edit e = { 0 };
	size_t used;
	char *text;
	int n = 0, rc;

	if (!prefix || !target) {
		ctl_reply_ack(r, -EINVAL, -1, "route add needs a prefix and a target");
		return;
	}
	if (!kctl_token_ok(prefix) || prefix[0] != '/') {
		ctl_reply_ack(r, -EINVAL, ctl_attr_off(r, KFWD_A_PREFIX),
			      "bad prefix: one word starting with '/', printable, no '#'");
		return;
	}
	if (!kctl_token_ok(target)) {
		ctl_reply_ack(r, -EINVAL, ctl_attr_off(r, KFWD_A_TARGET),
			      "bad target: one printable word");
		return;
	}
	used = (size_t)snprintf(line, sizeof(line), "route %s %s", prefix, target);
	if (r->m.tb[KFWD_A_OPTIONS]) {
		mnl_attr_for_each_nested(opt, r->m.tb[KFWD_A_OPTIONS])
		{
			const char *o;

			if (mnl_attr_get_type(opt) != KFWD_A_OPTION)
				continue;
			o = mnl_attr_get_str(opt);
			if (!kctl_token_ok(o)) {
				ctl_reply_ack(r, -EINVAL,
					      (int)((const char *)opt - (const char *)r->nlh),
					      "bad route option: one printable word, no '#'");
				return;
			}
			if (++n > CTL_MAX_ROUTE_OPTIONS || used + strlen(o) + 2 >= sizeof(line)) {
				ctl_reply_ack(r, -EINVAL, -1, "too many route options");
				return;
			}
			used += (size_t)snprintf(line + used, sizeof(line) - used, " %s", o);
		}
	}
	snprintf(line + used, sizeof(line) - used, "\n");
	e.append = line;
	text = config_edit_text(ctl.run.cfg->source, &e);
	if (!text) {
		ctl_reply_ack(r, -ENOMEM, -1, "out of memory");
		return;
	}
	snprintf(what, sizeof(what), "route add %s %s", prefix, target);
	rc = apply_text(text, what, note, sizeof(note), err, sizeof(err));
	free(text);
	finish_change(r, rc, note, err);
}

static void cmd_route_del(const struct ctl_req *r)
{
	const char *prefix = ctl_str_attr(r, KFWD_A_PREFIX), *host = ctl_str_attr(r, KFWD_A_HOST);
	const struct config *cfg = ctl.run.cfg;
	const struct route *found = NULL;
	char what[CTL_WHAT_LEN], note[CTL_NOTE_LEN], err[CTL_ERR_LEN], line[CTL_LINE_MAX];
	struct config_edit e = { 0 };
	unsigned int matches = 0;
	char *text;
	int rc;

	if (!prefix) {
		ctl_reply_ack(r, -EINVAL, -1, "route del needs a prefix");
		return;
	}
	for (size_t i = 0; i < cfg->n_routes; i++) {
		const struct route *rt = &cfg->routes[i];

		if (strcmp(rt->prefix, prefix))
			continue;
		if (host && strcmp(host, rt->host ? rt->host : ""))
			continue;
		matches++;
		found = rt;
	}
	if (!matches) {
		ctl_reply_ack(r, -ENOENT, ctl_attr_off(r, KFWD_A_PREFIX), "no route %s%s%s", prefix,
			      host ? " with host=" : "", host ? host : "");
		return;
	}
	if (matches > 1) {
		ctl_reply_ack(
			r, -EINVAL, ctl_attr_off(r, KFWD_A_PREFIX),
			"%u routes have prefix %s: say which with host=NAME (host= for the one without)",
			matches, prefix);
		return;
	}
	if (!config_edit_line(cfg->source, found->line, line, sizeof(line)) ||
	    !config_edit_first_word_is(line, strlen(line), "route")) {
		ctl_reply_ack(r, -EIO, -1, "route %s: its line %d is not in the configuration text",
			      prefix, found->line);
		return;
	}
	e.del_line = found->line;
	text = config_edit_text(cfg->source, &e);
	if (!text) {
		ctl_reply_ack(r, -ENOMEM, -1, "out of memory");
		return;
	}
	snprintf(what, sizeof(what), "route del %s", prefix);
	rc = apply_text(text, what, note, sizeof(note), err, sizeof(err));
	free(text);
	finish_change(r, rc, note, err);
}

/* @server of @u, or all its servers when NULL. */
static void set_drained(const struct upstream *u, const char *server, bool drain)
{
	/* The state is shared by every configuration naming the server (upstream.c). */
	for (size_t i = 0; i < u->n_servers; i++)
		if (!server || !strcmp(u->servers[i].text, server))
			upstream_set_drained(&u->servers[i], drain);
}

static void cmd_upstream_admin(const struct ctl_req *r, bool drain)
{
	const char *name = ctl_str_attr(r, KFWD_A_UPSTREAM),
		   *server = ctl_str_attr(r, KFWD_A_SERVER);
	struct upstream *u;
	char what[CTL_WHAT_LEN];

	if (!name) {
		ctl_reply_ack(r, -EINVAL, -1, "upstream %s needs an upstream name",
			      drain ? "drain" : "enable");
		return;
	}
	u = find_upstream(ctl.run.cfg, name);
	if (!u) {
		ctl_reply_ack(r, -ENOENT, ctl_attr_off(r, KFWD_A_UPSTREAM), "no upstream %s", name);
		return;
	}
	if (server && !find_server(u, server)) {
		ctl_reply_ack(r, -ENOENT, ctl_attr_off(r, KFWD_A_SERVER),
			      "upstream %s has no server %s", name, server);
		return;
	}
	set_drained(u, server, drain);
	if (ctl.run.peers)
		ctl.run.peers->upstream_admin(name, server, drain);
	snprintf(what, sizeof(what), "upstream %s %s%s%s", drain ? "drain" : "enable", name,
		 server ? " " : "", server ? server : "");
	log_info("kfwdctl (pid %d): %s", (int)r->cred.pid, what);
	ctl_monitor_config(ctl.run.generation, what);
	ctl_reply_ack(r, 0, -1, NULL);
}

static void cmd_set(const struct ctl_req *r)
{
	const char *keys[CTL_MAX_SETTINGS];
	char append[CTL_SET_TEXT_MAX], what[CTL_ERR_LEN], note[CTL_NOTE_LEN], err[CTL_ERR_LEN];
	const struct nlattr *item;
	struct config_edit e = { 0 };
	size_t used = 0, wused = 0;
	char *text;
	int rc;

	if (!r->m.tb[KFWD_A_SETTINGS]) {
		ctl_reply_ack(r, -EINVAL, -1, "set needs KEY VALUE");
		return;
	}
	wused = (size_t)snprintf(what, sizeof(what), "set");
	mnl_attr_for_each_nested(item, r->m.tb[KFWD_A_SETTINGS])
	{
		const struct nlattr *tb[KFWD_SET_MAX + 1];
		int off = (int)((const char *)item - (const char *)r->nlh);
		const char *key, *value;

		if (mnl_attr_get_type(item) != KFWD_A_SETTING)
			continue;
		kctl_parse_nested(item, &kctl_setting, tb);
		if (!tb[KFWD_SET_KEY] || !tb[KFWD_SET_VALUE]) {
			ctl_reply_ack(r, -EINVAL, off, "a setting needs a key and a value");
			return;
		}
		key = mnl_attr_get_str(tb[KFWD_SET_KEY]);
		value = mnl_attr_get_str(tb[KFWD_SET_VALUE]);
		if (!kctl_setting_find(key)) {
			ctl_reply_ack(r, -EINVAL, off,
				      "'%s' cannot be set at runtime (see kfwdctl help)", key);
			return;
		}
		if (!kctl_token_ok(value)) {
			ctl_reply_ack(r, -EINVAL, off, "%s: bad value (one printable word, no '#')",
				      key);
			return;
		}
		if (e.n_drop == sizeof(keys) / sizeof(keys[0]) ||
		    used + strlen(key) + strlen(value) + 3 >= sizeof(append)) {
			ctl_reply_ack(r, -EINVAL, off, "too many settings at once");
			return;
		}
		keys[e.n_drop++] = key;
		used += (size_t)snprintf(append + used, sizeof(append) - used, "%s %s\n", key,
					 value);
		if (wused < sizeof(what))
			wused += (size_t)snprintf(what + wused, sizeof(what) - wused, " %s %s", key,
						  value);
	}
	if (!e.n_drop) {
		ctl_reply_ack(r, -EINVAL, -1, "set needs KEY VALUE");
		return;
	}
	e.drop_keys = keys;
	e.append = append;
	text = config_edit_text(ctl.run.cfg->source, &e);
	if (!text) {
		ctl_reply_ack(r, -ENOMEM, -1, "out of memory");
		return;
	}
	rc = apply_text(text, what, note, sizeof(note), err, sizeof(err));
	free(text);
	finish_change(r, rc, note, err);
}

/* Re-read the file; on any error the running configuration stays. */
static int do_reload(char *note, size_t notelen, char *err, size_t errlen)
{
	const struct config *cfg = ctl.run.cfg;
	struct config *ncfg;
	unsigned int dropped = config_edit_runtime_changes(cfg->source);
	int rc;

	note[0] = '\0';
	if (!cfg->path) {
		snprintf(err, errlen,
			 "kfwd runs the embedded configuration (no -c FILE): nothing to reload");
		return -EINVAL;
	}
	sd_notify_reloading();
	ncfg = config_load(cfg->path, ctl.extra_listens, ctl.n_extra, err, errlen);
	/* systemd waits for READY=1 after RELOADING=1, whether the reload took or not. */
	rc = ncfg ? swap_config(ncfg, "reload", note, notelen, err, errlen) : -EINVAL;
	sd_notify_ready();
	if (rc == 0 && dropped) {
		size_t used = strlen(note);

		snprintf(note + used, notelen - used, "%s%u runtime change%s dropped",
			 used ? "; " : "", dropped, dropped == 1 ? "" : "s");
	}
	return rc;
}

static void cmd_reload(const struct ctl_req *r)
{
	char note[CTL_NOTE_LEN], err[CTL_ERR_LEN];
	int rc;

	log_info("kfwdctl (pid %d): reload", (int)r->cred.pid);
	rc = do_reload(note, sizeof(note), err, sizeof(err));
	if (rc < 0)
		log_warn("reload failed, configuration unchanged: %s", err);
	finish_change(r, rc, note, err);
}

void ctl_reload_signal(void)
{
	char note[CTL_NOTE_LEN], err[CTL_ERR_LEN];

	if (ctl.run.draining || !ctl.run.cfg)
		return;
	if (do_reload(note, sizeof(note), err, sizeof(err)) < 0)
		log_warn("SIGHUP: reload failed, configuration unchanged: %s", err);
	else if (note[0])
		log_info("SIGHUP: reloaded (%s)", note);
	else
		log_info("SIGHUP: reloaded");
}

/* ------------------------------------------------------------------ requests */

/* A validated request @r to the function of its command @cmd, which answers it. */
static void dispatch(struct ctl_req *r, unsigned int cmd)
{
	switch (cmd) {
	case KFWD_CMD_STATUS:
		ctl_show_status(r, &ctl.run);
		break;
	case KFWD_CMD_STATS:
		ctl_show_stats(r);
		break;
	case KFWD_CMD_CONN_LIST:
		ctl_show_conns(r, &ctl.run);
		break;
	case KFWD_CMD_CONN_KILL:
		cmd_conn_kill(r);
		break;
	case KFWD_CMD_ROUTE_LIST:
		ctl_show_routes(r, &ctl.run);
		break;
	case KFWD_CMD_ROUTE_ADD:
		cmd_route_add(r);
		break;
	case KFWD_CMD_ROUTE_DEL:
		cmd_route_del(r);
		break;
	case KFWD_CMD_UPSTREAM_LIST:
		ctl_show_upstreams(r, &ctl.run);
		break;
	case KFWD_CMD_UPSTREAM_DRAIN:
		cmd_upstream_admin(r, true);
		break;
	case KFWD_CMD_UPSTREAM_ENABLE:
		cmd_upstream_admin(r, false);
		break;
	case KFWD_CMD_SET:
		cmd_set(r);
		break;
	case KFWD_CMD_RELOAD:
		cmd_reload(r);
		break;
	case KFWD_CMD_MONITOR:
		ctl_monitor_add(r);
		break;
	default:
		ctl_reply_ack(r, -EOPNOTSUPP, -1, "unknown command %u", cmd);
		break;
	}
}

/* The validation pipeline of one request, every step an early exit counted as it fails. */
static void handle_msg(const struct nlmsghdr *nlh, const struct ucred *cred, uint32_t portid)
{
	struct ctl_req r = { .nlh = nlh, .portid = portid };
	unsigned int cmd = nlh->nlmsg_type;
	struct kctl_err err;
	char why[CTL_NOTE_LEN];
	uint32_t version;
	int rc;

	/* Never answer an answer: two peers must not bounce errors forever. */
	if (cmd == NLMSG_NOOP || cmd == NLMSG_ERROR || cmd == NLMSG_DONE || cmd == NLMSG_OVERRUN ||
	    !(nlh->nlmsg_flags & NLM_F_REQUEST)) {
		stats.ctl_malformed += cmd != NLMSG_NOOP;
		return;
	}
	stats.ctl_requests++;
	if (!cred) {
		stats.ctl_denied++;
		ctl_reply_ack(&r, -EPERM, -1, "no credentials with the request");
		return;
	}
	r.cred = *cred;
	if (cmd < KFWD_CTL_CMD_MIN || cmd > KFWD_CTL_CMD_MAX || cmd == KFWD_CMD_EVENT) {
		stats.ctl_malformed++;
		ctl_reply_ack(&r, -EOPNOTSUPP, -1, "unknown command %u", cmd);
		return;
	}
	if (ctl_check_permission(ctl.run.cfg, cred, cmd, why, sizeof(why)) < 0) {
		stats.ctl_denied++;
		log_info("ctl: %s from pid %d uid %u refused", kctl_cmd_name(cmd), (int)cred->pid,
			 (unsigned int)cred->uid);
		ctl_reply_ack(&r, -EPERM, -1, "%s", why);
		return;
	}
	rc = kctl_msg_parse(nlh, &r.m, &err);
	if (rc != KCTL_PARSE_OK) {
		stats.ctl_malformed++;
		ctl_reply_ack(&r, -EINVAL, err.off, "malformed request: %s", err.msg);
		return;
	}
	if (!r.m.tb[KFWD_A_VERSION]) {
		stats.ctl_malformed++;
		ctl_reply_ack(&r, -EPROTO, -1, "request without KFWD_A_VERSION");
		return;
	}
	version = mnl_attr_get_u32(r.m.tb[KFWD_A_VERSION]);
	if (version != KFWD_CTL_VERSION) {
		ctl_reply_ack(&r, -EPROTO, ctl_attr_off(&r, KFWD_A_VERSION),
			      "protocol version %u; this kfwd speaks version %d", version,
			      KFWD_CTL_VERSION);
		return;
	}
	if (ctl.run.draining && !KFWD_CTL_CMD_READONLY(cmd) && cmd != KFWD_CMD_CONN_KILL) {
		ctl_reply_ack(&r, -EBUSY, -1, "kfwd is shutting down: no configuration changes");
		return;
	}
	dispatch(&r, cmd);
}

static void handle_datagram(size_t len, bool truncated, uint32_t portid, const struct ucred *cred)
{
	const void *pos = rxbuf;
	size_t rem = len;
	struct kctl_err err;
	const struct nlmsghdr *nlh;
	int handled = 0;

	if (truncated) {
		stats.ctl_malformed++;
		if (len >= NLMSG_HDRLEN &&
		    !(((const struct nlmsghdr *)rxbuf)->nlmsg_type < NLMSG_MIN_TYPE)) {
			struct ctl_req r = { .nlh = (const void *)rxbuf, .portid = portid };

			ctl_reply_ack(&r, -EMSGSIZE, -1, "datagram larger than %d bytes",
				      KFWD_CTL_RECV_MAX);
		}
		return;
	}
	while ((nlh = kctl_next_msg(&pos, &rem, &err))) {
		if (handled++ == CTL_MSGS_PER_DATAGRAM) {
			stats.ctl_malformed++;
			return;
		}
		handle_msg(nlh, cred, portid);
	}
	if (err.msg[0]) {
		stats.ctl_malformed++;
		log_debug("ctl: from port id %u: %s", portid, err.msg);
	}
}

static void on_ctl_event(struct loop_handler *h, uint32_t events)
{
	for (int i = 0; i < CTL_RECV_BATCH; i++) {
		struct kctl_cbuf cbuf;
		struct sockaddr_nl from;
		const struct ucred *cred;
		bool truncated;
		ssize_t n;

		n = kctl_recv(ctl_socket_fd(), rxbuf, sizeof(rxbuf), &from, &cbuf, &cred,
			      &truncated);
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				return;
			if (errno == ENOBUFS) {
				stats.ctl_malformed++;
				continue;
			}
			log_warn("ctl: recvmsg: %m");
			return;
		}
		if (from.nl_pid == 0) {
			stats.ctl_malformed++;
			continue;
		}
		handle_datagram((size_t)n, truncated, from.nl_pid, cred);
	}
}

/* ------------------------------------------------------------------ opening and closing */

int ctl_open(const struct config *cfg, char *const *extra_listens, size_t n_extra)
{
	ctl.run.cfg = config_get(cfg);
	ctl.extra_listens = extra_listens;
	ctl.n_extra = n_extra;
	ctl.run.start_ms = now_ms();
	ctl.run.started = time(NULL);
	if (cfg->ctl_off) {
		log_info("control socket off (ctl-port-id off)");
		return 0;
	}
	ctl.h.on_event = on_ctl_event;
	if (ctl_socket_open(cfg, &ctl.h) < 0) {
		config_put(ctl.run.cfg);
		ctl.run.cfg = NULL;
		return -1;
	}
	return 0;
}

void ctl_close_socket(void)
{
	ctl_monitor_end();
	ctl_socket_close();
}

void ctl_close(void)
{
	ctl_close_socket();
	if (ctl.run.cfg)
		config_put(ctl.run.cfg);
	ctl.run.cfg = NULL;
}

/* ------------------------------------------------------------------ workers (workers.c) */

void ctl_set_peers(const struct ctl_peers *p)
{
	ctl.run.peers = p;
}

void ctl_forget_after_fork(void)
{
	/* The socket, the file and the monitors stay the parent's: just drop our copies. */
	ctl_socket_forget();
	ctl_monitor_forget();
	ctl.run.peers = NULL;
}

int ctl_apply_text(const char *text, char *err, size_t errlen)
{
	char note[CTL_NOTE_LEN];

	return apply_text(text, "from the master", note, sizeof(note), err, errlen);
}

int ctl_upstream_admin(const char *name, const char *server, bool drain)
{
	struct upstream *u = find_upstream(ctl.run.cfg, name);

	if (!u)
		return -ENOENT;
	set_drained(u, server, drain);
	return 0;
}

int ctl_server_info(const char *name, size_t index, struct upstream_server_info *info, bool *up)
{
	const struct upstream *u = find_upstream(ctl.run.cfg, name);

	if (!u || index >= u->n_servers)
		return -ENOENT;
	upstream_server_info(&u->servers[index], info);
	*up = upstream_server_up(&u->servers[index]);
	return 0;
}

int ctl_conn_kill(uint64_t id)
{
	struct session *s = find_session(id);

	if (!s)
		return -ENOENT;
	session_kill(s);
	return 0;
}
