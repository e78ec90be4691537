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
 * started with (config_get/config_put). Lines added at runtime follow RUNTIME_MARKER, so
 * reload (the file again) drops them.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <libmnl/libmnl.h>

#include "apply.h"
#include "common_ctl.h"
#include "ctl.h"
#include "event.h"
#include "flow.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "route.h"
#include "sd_notify.h"
#include "session.h"
#include "sockmap_path.h"
#include "stats.h"
#include "upstream.h"

#define RUNTIME_MARKER "# ---- kfwdctl: runtime changes below, dropped on reload ----"
#define CTL_RECV_BATCH 64 /* datagrams per readiness event */
#define CTL_MSGS_PER_DATAGRAM 16 /* requests answered per datagram */
#define CTL_RCVBUF (1 << 20)
#define CTL_MAX_ROUTE_OPTIONS 32

struct subscriber {
	uint32_t portid;
	uint32_t seq;
	uint64_t lost;
};

static struct {
	int fd;
	struct loop_handler h;
	const struct config *cfg; /* running: one reference held here */
	char *const *extra_listens;
	size_t n_extra;
	uint32_t portid;
	bool published;
	char file[sizeof(((struct config *)0)->ctl_socket_file)];
	uint64_t start_ms;
	time_t started;
	uint32_t generation;
	bool draining;
	struct subscriber subs[KFWD_CTL_MAX_SUBSCRIBERS];
	struct timer heartbeat;
} ctl = { .fd = -1 };

static unsigned int ctl_n_subscribers;

/* One datagram in, answers out: 4-byte aligned for the netlink structures. */
static uint32_t rxbuf[KFWD_CTL_RECV_MAX / 4];
static uint32_t txbuf[KFWD_CTL_MSG_MAX / 4];

struct req {
	const struct nlmsghdr *nlh;
	struct kctl_msg m;
	struct ucred cred;
	uint32_t portid;
};

const struct config *ctl_config(void)
{
	return ctl.cfg;
}

void ctl_draining(void)
{
	ctl.draining = true;
}

/* ------------------------------------------------------------------ sending */

static int send_to(uint32_t portid, const void *buf, size_t len)
{
	struct sockaddr_nl to = { .nl_family = AF_NETLINK, .nl_pid = portid };
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
	struct msghdr mh = {
		.msg_name = &to, .msg_namelen = sizeof(to), .msg_iov = &iov, .msg_iovlen = 1
	};

	if (ctl.fd < 0)
		return -EBADF;
	/* Never blocks: a reader whose buffer is full loses this answer (EAGAIN), a reader
	 * that is gone is reported with ECONNREFUSED. */
	if (sendmsg(ctl.fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
		return -errno;
	return 0;
}

static void send_reply(const struct req *r, const void *buf, size_t len)
{
	int e = send_to(r->portid, buf, len);

	if (e < 0) {
		stats.ctl_dropped++;
		log_debug("ctl: answer to port id %u dropped: %s", r->portid, strerror(-e));
	}
}

/* Message builder: remembers when something did not fit instead of writing past the end. */
struct mb {
	struct nlmsghdr *nlh;
	size_t size;
	bool full;
};

static void mb_start(struct mb *b, void *buf, size_t size, uint16_t type, uint16_t flags,
		     uint32_t seq)
{
	b->nlh = mnl_nlmsg_put_header(buf);
	b->nlh->nlmsg_type = type;
	b->nlh->nlmsg_flags = flags;
	b->nlh->nlmsg_seq = seq;
	b->nlh->nlmsg_pid = ctl.portid;
	b->size = size;
	b->full = false;
	if (!mnl_attr_put_u32_check(b->nlh, size, KFWD_A_VERSION, KFWD_CTL_VERSION))
		b->full = true;
}

static void put_u8(struct mb *b, uint16_t type, uint8_t v)
{
	if (!b->full && !mnl_attr_put_u8_check(b->nlh, b->size, type, v))
		b->full = true;
}

static void put_u32(struct mb *b, uint16_t type, uint32_t v)
{
	if (!b->full && !mnl_attr_put_u32_check(b->nlh, b->size, type, v))
		b->full = true;
}

static void put_u64(struct mb *b, uint16_t type, uint64_t v)
{
	if (!b->full && !mnl_attr_put_u64_check(b->nlh, b->size, type, v))
		b->full = true;
}

static void put_str(struct mb *b, uint16_t type, const char *s)
{
	char cut[KFWD_CTL_STR_MAX];

	if (strlen(s) >= sizeof(cut)) {
		memcpy(cut, s, sizeof(cut) - 1);
		cut[sizeof(cut) - 1] = '\0';
		s = cut;
	}
	if (!b->full && !mnl_attr_put_strz_check(b->nlh, b->size, type, s))
		b->full = true;
}

static struct nlattr *nest_start(struct mb *b, uint16_t type)
{
	struct nlattr *n;

	if (b->full)
		return NULL;
	n = mnl_attr_nest_start_check(b->nlh, b->size, type);
	if (!n)
		b->full = true;
	return n;
}

static void nest_end(struct mb *b, struct nlattr *n)
{
	if (n)
		mnl_attr_nest_end(b->nlh, n);
}

/* NLMSG_ERROR: an ACK (@error 0) or an error, with a message for humans. */
static void reply_ack(const struct req *r, int error, int off, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void reply_ack(const struct req *r, int error, int off, const char *fmt, ...)
{
	char msg[KFWD_CTL_STR_MAX - 24];
	struct nlmsgerr *e;
	struct mb b;

	msg[0] = '\0';
	if (fmt) {
		va_list ap;

		va_start(ap, fmt);
		vsnprintf(msg, sizeof(msg), fmt, ap);
		va_end(ap);
	}
	b.nlh = mnl_nlmsg_put_header(txbuf);
	b.nlh->nlmsg_type = NLMSG_ERROR;
	b.nlh->nlmsg_flags = NLM_F_CAPPED | (msg[0] || off >= 0 ? NLM_F_ACK_TLVS : 0);
	b.nlh->nlmsg_seq = r->nlh->nlmsg_seq;
	b.nlh->nlmsg_pid = ctl.portid;
	b.size = sizeof(txbuf);
	b.full = false;
	e = mnl_nlmsg_put_extra_header(b.nlh, sizeof(*e));
	e->error = error;
	memcpy(&e->msg, r->nlh, sizeof(e->msg));
	if (msg[0])
		put_str(&b, NLMSGERR_ATTR_MSG, msg);
	if (off >= 0)
		put_u32(&b, NLMSGERR_ATTR_OFFS, (uint32_t)off);
	send_reply(r, txbuf, b.nlh->nlmsg_len);
}

/* ------------------------------------------------------------------ dumps */

struct dump {
	const struct req *r;
	size_t len; /* whole messages in txbuf */
	size_t sent; /* bytes of this page already sent */
};

static void dump_flush(struct dump *d)
{
	if (!d->len)
		return;
	send_reply(d->r, txbuf, d->len);
	d->sent += d->len;
	d->len = 0;
}

/* Append one object message; flushes a full datagram first. False: larger than a datagram. */
static bool dump_object(struct dump *d, void (*fill)(struct mb *, const void *), const void *arg)
{
	for (int attempt = 0; attempt < 2; attempt++) {
		struct mb b;

		if (sizeof(txbuf) - d->len < 512)
			dump_flush(d);
		mb_start(&b, (char *)txbuf + d->len, sizeof(txbuf) - d->len, d->r->nlh->nlmsg_type,
			 NLM_F_MULTI, d->r->nlh->nlmsg_seq);
		fill(&b, arg);
		if (!b.full) {
			d->len += b.nlh->nlmsg_len;
			return true;
		}
		if (!d->len)
			break;
		dump_flush(d);
	}
	return false;
}

static bool dump_page_full(const struct dump *d)
{
	return d->sent + d->len >= KFWD_CTL_DUMP_PAGE;
}

static void dump_done(struct dump *d, bool more, uint64_t cursor, bool interrupted)
{
	struct mb b;
	int *zero;

	if (sizeof(txbuf) - d->len < 512)
		dump_flush(d);
	mb_start(&b, (char *)txbuf + d->len, sizeof(txbuf) - d->len, NLMSG_DONE,
		 NLM_F_MULTI | (interrupted ? NLM_F_DUMP_INTR : 0), d->r->nlh->nlmsg_seq);
	/* The int of NLMSG_DONE comes first: rebuild after the header. */
	b.nlh->nlmsg_len = NLMSG_HDRLEN;
	zero = mnl_nlmsg_put_extra_header(b.nlh, sizeof(int));
	*zero = 0;
	put_u32(&b, KFWD_A_VERSION, KFWD_CTL_VERSION);
	if (more)
		put_u64(&b, KFWD_A_CURSOR, cursor);
	d->len += b.nlh->nlmsg_len;
	dump_flush(d);
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

static bool creds_in_group(const struct ucred *cr, gid_t gid)
{
	char path[64], line[1024];
	bool uid_ok = false, member = false;
	FILE *f;

	if (cr->gid == gid)
		return true;
	/* Supplementary groups are not in SCM_CREDENTIALS: ask /proc, and only believe it if the
	 * process there still has the sender's uid (a pid can be reused). */
	snprintf(path, sizeof(path), "/proc/%d/status", (int)cr->pid);
	f = fopen(path, "re");
	if (!f)
		return false;
	while (fgets(line, sizeof(line), f)) {
		unsigned long v;

		if (sscanf(line, "Uid: %lu", &v) == 1) {
			uid_ok = v == cr->uid;
		} else if (!strncmp(line, "Groups:", 7)) {
			char *p = line + 7, *end;

			for (;;) {
				v = strtoul(p, &end, 10);
				if (end == p)
					break;
				if (v == gid)
					member = true;
				p = end;
			}
		}
	}
	fclose(f);
	return uid_ok && member;
}

/* 0, or -EPERM with @why filled in. */
static int check_permission(const struct ucred *cr, unsigned int cmd, char *why, size_t len)
{
	const struct config *cfg = ctl.cfg;

	if (cr->uid == 0)
		return 0;
	if (!KFWD_CTL_CMD_READONLY(cmd)) {
		snprintf(
			why, len,
			"permission denied: '%s' changes kfwd and is for uid 0 only (sender uid %u)",
			kctl_cmd_name(cmd), (unsigned int)cr->uid);
		return -EPERM;
	}
	if (cfg->has_ctl_group && creds_in_group(cr, cfg->ctl_group))
		return 0;
	if (cfg->has_ctl_group)
		snprintf(why, len,
			 "permission denied: '%s' is for uid 0 and group %s (sender uid %u gid %u)",
			 kctl_cmd_name(cmd), cfg->ctl_group_name, (unsigned int)cr->uid,
			 (unsigned int)cr->gid);
	else
		snprintf(
			why, len,
			"permission denied: '%s' is for uid 0 (no ctl-group configured; sender uid %u)",
			kctl_cmd_name(cmd), (unsigned int)cr->uid);
	return -EPERM;
}

/* ------------------------------------------------------------------ events */

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
	log_debug("ctl: monitor at port id %u gone", ctl.subs[i].portid);
	ctl.subs[i] = ctl.subs[--ctl_n_subscribers];
	if (!ctl_n_subscribers) {
		timer_cancel(&ctl.heartbeat);
		kev_set_sink(NULL);
	}
}

static void broadcast(const struct event *ev)
{
	for (unsigned int i = 0; i < ctl_n_subscribers;) {
		struct subscriber *sub = &ctl.subs[i];
		struct mb b;
		int e;

		mb_start(&b, txbuf, sizeof(txbuf), KFWD_CMD_EVENT, 0, sub->seq);
		fill_event(&b, ev, sub->lost);
		e = send_to(sub->portid, txbuf, b.nlh->nlmsg_len);
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

static void event_config(const char *what)
{
	struct event ev = { .type = KFWD_EVENT_CONFIG, .generation = ctl.generation, .what = what };

	if (ctl_n_subscribers)
		broadcast(&ev);
}

static void on_heartbeat(struct timer *t)
{
	struct event ev = { .type = KFWD_EVENT_HEARTBEAT };

	broadcast(&ev);
	if (ctl_n_subscribers)
		timer_arm(&ctl.heartbeat, KFWD_CTL_HEARTBEAT_MS);
}

/* ------------------------------------------------------------------ configuration text */

static const char *runtime_start(const char *text)
{
	const char *m;

	if (!strncmp(text, RUNTIME_MARKER "\n", strlen(RUNTIME_MARKER) + 1))
		return text + strlen(RUNTIME_MARKER) + 1;
	m = strstr(text, "\n" RUNTIME_MARKER "\n");
	return m ? m + strlen(RUNTIME_MARKER) + 2 : NULL;
}

/* Lines that come from the file (the marker included). */
static int base_lines(const char *text)
{
	const char *rt = runtime_start(text), *end = rt ? rt : text + strlen(text);
	int n = 0;

	for (const char *p = text; p < end; p++)
		n += *p == '\n';
	if (!rt && end > text && end[-1] != '\n')
		n++;
	return n;
}

static bool next_line(const char **p, const char **line, size_t *len)
{
	const char *nl;

	if (!**p)
		return false;
	nl = strchr(*p, '\n');
	*line = *p;
	*len = nl ? (size_t)(nl - *p) : strlen(*p);
	*p = nl ? nl + 1 : *p + *len;
	return true;
}

/* The first word of a line equals @word. */
static bool line_starts_with(const char *line, size_t len, const char *word)
{
	size_t i = 0, wl = strlen(word);

	while (i < len && (line[i] == ' ' || line[i] == '\t'))
		i++;
	return len - i >= wl && !strncmp(line + i, word, wl) &&
	       (i + wl == len || line[i + wl] == ' ' || line[i + wl] == '\t' ||
		line[i + wl] == '\r');
}

struct edit {
	int del_line; /* route del: from the file: commented out; runtime: dropped */
	const char *const *drop_keys; /* set: earlier runtime lines of these directives go */
	size_t n_drop;
	const char *append; /* lines added at the end of the runtime part */
};

static char *edit_text(const char *text, const struct edit *e)
{
	const char *rt = runtime_start(text), *p = text, *line;
	char *out = NULL;
	size_t outlen = 0, len;
	FILE *f = open_memstream(&out, &outlen);
	int no = 0;

	if (!f)
		return NULL;
	while (next_line(&p, &line, &len)) {
		bool runtime = rt && line >= rt, drop = false;

		no++;
		if (no == e->del_line) {
			if (!runtime)
				fprintf(f, "# deleted by kfwdctl: %.*s\n", (int)len, line);
			continue;
		}
		for (size_t i = 0; runtime && i < e->n_drop && !drop; i++)
			drop = line_starts_with(line, len, e->drop_keys[i]);
		if (!drop)
			fprintf(f, "%.*s\n", (int)len, line);
	}
	if (!rt)
		fputs(RUNTIME_MARKER "\n", f);
	if (e->append)
		fputs(e->append, f);
	if (ferror(f)) {
		fclose(f);
		free(out);
		return NULL;
	}
	if (fclose(f) != 0) {
		free(out);
		return NULL;
	}
	return out;
}

/* The line @no of @text (1-based) into @out; false if there is none. */
static bool text_line(const char *text, int no, char *out, size_t outlen)
{
	const char *p = text, *line;
	size_t len;

	for (int i = 1; next_line(&p, &line, &len); i++) {
		if (i == no) {
			snprintf(out, outlen, "%.*s", (int)len, line);
			return true;
		}
	}
	return false;
}

/* Parser errors on lines added at runtime name "kfwdctl" instead of a line of the file. */
static void explain_error(const char *err, const struct config *cfg, const char *text, char *out,
			  size_t outlen)
{
	const char *name = cfg->path ? cfg->path : "<embedded>";
	size_t n = strlen(name);
	char *end;
	long line;

	if (strncmp(err, name, n) || err[n] != ':') {
		snprintf(out, outlen, "%s", err);
		return;
	}
	line = strtol(err + n + 1, &end, 10);
	if (end[0] != ':' || line <= base_lines(text)) {
		snprintf(out, outlen, "%s", err);
		return;
	}
	snprintf(out, outlen, "%s", end[1] == ' ' ? end + 2 : end + 1);
}

static unsigned int runtime_changes(const char *text)
{
	const char *rt = runtime_start(text), *line;
	unsigned int n = 0;
	size_t len;

	if (!rt)
		return 0;
	while (next_line(&rt, &line, &len))
		n += len > 0 && line[0] != '#';
	return n;
}

/* ------------------------------------------------------------------ swapping configurations */

/*
 * Put @ncfg (its reference becomes the running one) in force: metrics and listening sockets
 * first, since they can fail; then nothing can. On failure nothing changed, @ncfg is
 * released and @err says why.
 */
static int swap_config(struct config *ncfg, const char *what, char *note, size_t notelen, char *err,
		       size_t errlen)
{
	const struct config *old = ctl.cfg;
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
	ctl.cfg = ncfg;
	ctl.generation++;
	config_put(old);
	log_info("configuration %u in force (%s)", ctl.generation, what);
	event_config(what);
	return 0;
}

/* Parse @text as the running configuration's file would be, and swap it in. */
static int apply_text(const char *text, const char *what, char *note, size_t notelen, char *err,
		      size_t errlen)
{
	const struct config *cfg = ctl.cfg;
	char perr[512];
	struct config *ncfg;

	ncfg = config_load_text(cfg->path, text, ctl.extra_listens, ctl.n_extra, perr,
				sizeof(perr));
	if (!ncfg) {
		explain_error(perr, cfg, text, err, errlen);
		return -EINVAL;
	}
	return swap_config(ncfg, what, note, notelen, err, errlen);
}

/* ------------------------------------------------------------------ commands */

static void cmd_status_fill(struct mb *b)
{
	const struct config *cfg = ctl.cfg;
	struct nlattr *st = nest_start(b, KFWD_A_STATUS), *dp;
	char why[160];
	bool splice_ok = true;
	int fds[2];

	put_str(b, KFWD_ST_VERSION, KFWD_VERSION);
	put_u32(b, KFWD_ST_PID, (uint32_t)getpid());
	put_u64(b, KFWD_ST_UPTIME_MS, now_ms() - ctl.start_ms);
	put_u64(b, KFWD_ST_STARTED, (uint64_t)ctl.started);
	put_str(b, KFWD_ST_CONFIG_FILE, cfg->path ? cfg->path : "");
	put_u32(b, KFWD_ST_CONFIG_GEN, ctl.generation);
	put_u32(b, KFWD_ST_RUNTIME_CHANGES, runtime_changes(cfg->source));
	for (size_t i = 0; i < cfg->n_listens; i++)
		put_str(b, KFWD_ST_LISTEN, cfg->listens[i].text);
	if (cfg->has_metrics)
		put_str(b, KFWD_ST_METRICS, cfg->metrics.text);

	/* splice: can a pipe of pipe-size be had right now? */
	why[0] = '\0';
	if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0) {
		splice_ok = false;
		snprintf(why, sizeof(why), "no pipe: %s", strerror(errno));
	} else {
		if (fcntl(fds[1], F_SETPIPE_SZ, (int)cfg->pipe_size) < 0) {
			splice_ok = false;
			snprintf(why, sizeof(why), "pipe of %zu bytes refused: %s", cfg->pipe_size,
				 strerror(errno));
		}
		close(fds[0]);
		close(fds[1]);
	}
	dp = nest_start(b, KFWD_ST_DATAPATH);
	put_str(b, KFWD_DP_NAME, "splice");
	put_u8(b, KFWD_DP_AVAILABLE, splice_ok);
	put_u8(b, KFWD_DP_DEFAULT, cfg->data_path == DATA_PATH_SPLICE);
	if (why[0])
		put_str(b, KFWD_DP_REASON, why);
	nest_end(b, dp);

	dp = nest_start(b, KFWD_ST_DATAPATH);
	put_str(b, KFWD_DP_NAME, "sockmap");
	put_u8(b, KFWD_DP_AVAILABLE, !sockmap_path_reason());
	put_u8(b, KFWD_DP_DEFAULT,
	       cfg->data_path == DATA_PATH_SOCKMAP ||
		       cfg->data_path == DATA_PATH_SOCKMAP_UNBOUNDED);
	if (sockmap_path_reason())
		put_str(b, KFWD_DP_REASON, sockmap_path_reason());
	nest_end(b, dp);

	dp = nest_start(b, KFWD_ST_DATAPATH);
	put_str(b, KFWD_DP_NAME, "copy");
	put_u8(b, KFWD_DP_AVAILABLE, 1);
	put_u8(b, KFWD_DP_DEFAULT, cfg->data_path == DATA_PATH_COPY);
	if (cfg->data_path != DATA_PATH_COPY)
		put_str(b, KFWD_DP_REASON,
			"fallback when a pipe cannot be had or splice is refused");
	nest_end(b, dp);

	put_str(b, KFWD_ST_DATA_PATH, data_path_name(cfg->data_path));
	put_u64(b, KFWD_ST_PIPE_SIZE, cfg->pipe_size);
	put_u64(b, KFWD_ST_PIPE_HIGH, cfg->pipe_high_water);
	put_u64(b, KFWD_ST_PIPE_LOW, cfg->pipe_low_water);
	put_u64(b, KFWD_ST_COPY_BUF, cfg->copy_buffer_size);
	put_u32(b, KFWD_ST_MAX_CONNS, cfg->max_connections);
	put_str(b, KFWD_ST_LOG_LEVEL, klog_level_name(klog_level));
	put_u32(b, KFWD_ST_CONNECTIONS, session_count());
	put_u8(b, KFWD_ST_DRAINING, ctl.draining);
	put_u32(b, KFWD_ST_CTL_PORT_ID, ctl.portid);
	if (cfg->has_ctl_group)
		put_str(b, KFWD_ST_CTL_GROUP, cfg->ctl_group_name);
	put_u32(b, KFWD_ST_SUBSCRIBERS, ctl_n_subscribers);
	nest_end(b, st);
}

static void cmd_stats_fill(struct mb *b)
{
	struct nlattr *n = nest_start(b, KFWD_A_STATS);
	uint64_t v[KFWD_STAT_MAX + 1];

	stats_snapshot(v);
	for (uint16_t type = KFWD_STAT_UNSPEC + 1; type <= KFWD_STAT_MAX; type++)
		put_u64(b, type, v[type]);
	nest_end(b, n);
}

static void reply_single(const struct req *r, void (*fill)(struct mb *))
{
	struct mb b;

	mb_start(&b, txbuf, sizeof(txbuf), r->nlh->nlmsg_type, 0, r->nlh->nlmsg_seq);
	fill(&b);
	if (b.full) {
		reply_ack(r, -EMSGSIZE, -1, "answer larger than %d bytes", KFWD_CTL_MSG_MAX);
		return;
	}
	send_reply(r, txbuf, b.nlh->nlmsg_len);
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
	fill_flow(b, KFWD_CONN_REQ, &s->req);
	fill_flow(b, KFWD_CONN_RESP, &s->resp);
	put_str(b, KFWD_CONN_PROTO, s->proto->name);
	session_describe(s, &details);
	for (unsigned int i = 0; i < details.n; i++)
		put_str(b, KFWD_CONN_DETAIL, details.item[i]);
	nest_end(b, n);
}

static void cmd_conn_list(const struct req *r)
{
	const struct nlattr *c = r->m.tb[KFWD_A_CURSOR];
	uint64_t cursor = c ? mnl_attr_get_u64(c) : UINT64_MAX;
	struct dump d = { .r = r };

	/* Newest first (ids descending); the cursor is "ids below this". */
	for (struct session *s = session_first(); s; s = s->next) {
		if (s->id >= cursor)
			continue;
		if (dump_page_full(&d)) {
			dump_done(&d, true, s->id + 1, false);
			return;
		}
		if (!dump_object(&d, fill_conn, s))
			log_warn("ctl: connection %lu does not fit in a message",
				 (unsigned long)s->id);
	}
	dump_done(&d, false, 0, false);
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
	int nbase = base_lines(it->cfg->source);

	put_u32(b, KFWD_ROUTE_INDEX, it->index);
	put_str(b, KFWD_ROUTE_PREFIX, r->prefix);
	put_str(b, KFWD_ROUTE_TARGET,
		r->kind == ROUTE_URL_EMBEDDED ? "url-embedded" : r->upstream->name);
	if (r->host)
		put_str(b, KFWD_ROUTE_HOST, r->host);
	if (r->methods) {
		char methods[512];

		route_allow_header(r, methods, sizeof(methods));
		put_str(b, KFWD_ROUTE_METHODS, methods);
	}
	/* The options exactly as written: the words after PREFIX and TARGET on its line. */
	if (text_line(it->cfg->source, r->line, line, sizeof(line))) {
		char *save = NULL, *w;
		char opts[1024];
		size_t used = 0;
		int word = 0;

		opts[0] = '\0';
		for (w = strtok_r(line, " \t\r", &save); w; w = strtok_r(NULL, " \t\r", &save)) {
			if (w[0] == '#')
				break;
			if (++word <= 3 || used >= sizeof(opts))
				continue;
			used += (size_t)snprintf(opts + used, sizeof(opts) - used, "%s%s",
						 used ? " " : "", w);
		}
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

static bool cursor_start(const struct req *r, uint32_t *index)
{
	const struct nlattr *c = r->m.tb[KFWD_A_CURSOR];
	uint64_t v;

	*index = 0;
	if (!c)
		return false;
	v = mnl_attr_get_u64(c);
	*index = (uint32_t)v;
	return (uint32_t)(v >> 32) != ctl.generation;
}

static void cmd_route_list(const struct req *r)
{
	const struct config *cfg = ctl.cfg;
	struct dump d = { .r = r };
	uint32_t i;
	bool changed = cursor_start(r, &i);

	for (; i < cfg->n_routes; i++) {
		struct route_item it = { cfg, &cfg->routes[i], i };

		if (dump_page_full(&d)) {
			dump_done(&d, true, (uint64_t)ctl.generation << 32 | i, changed);
			return;
		}
		if (!dump_object(&d, fill_route, &it))
			log_warn("ctl: route %s does not fit in a message", cfg->routes[i].prefix);
	}
	dump_done(&d, false, 0, changed);
}

static void fill_upstream(struct mb *b, const void *arg)
{
	const struct upstream *u = arg;
	struct nlattr *n = nest_start(b, KFWD_A_UPSTREAM_INFO);

	put_str(b, KFWD_UP_NAME, u->name);
	for (size_t i = 0; i < u->n_servers; i++) {
		const struct upstream_server *srv = &u->servers[i];
		struct nlattr *sn = nest_start(b, KFWD_UP_SERVER);
		struct upstream_server_info info;

		upstream_server_info(srv, &info);
		put_str(b, KFWD_SRV_ADDR, srv->text);
		put_str(b, KFWD_SRV_STATE,
			info.drained		? "drained" :
			upstream_server_up(srv) ? "up" :
						  "down");
		put_u8(b, KFWD_SRV_DRAINED, info.drained);
		put_u64(b, KFWD_SRV_DOWN_MS, info.down_ms);
		put_u64(b, KFWD_SRV_FAILURES, info.failures);
		put_u32(b, KFWD_SRV_CONNS, info.conns);
		nest_end(b, sn);
	}
	nest_end(b, n);
}

static void cmd_upstream_list(const struct req *r)
{
	const struct config *cfg = ctl.cfg;
	struct dump d = { .r = r };
	uint32_t i;
	bool changed = cursor_start(r, &i);

	for (; i < cfg->n_upstreams; i++) {
		if (dump_page_full(&d)) {
			dump_done(&d, true, (uint64_t)ctl.generation << 32 | i, changed);
			return;
		}
		if (!dump_object(&d, fill_upstream, &cfg->upstreams[i])) {
			reply_ack(r, -EMSGSIZE, -1, "upstream %s has too many servers to list",
				  cfg->upstreams[i].name);
			return;
		}
	}
	dump_done(&d, false, 0, changed);
}

static const char *str_attr(const struct req *r, unsigned int type)
{
	return r->m.tb[type] ? mnl_attr_get_str(r->m.tb[type]) : NULL;
}

static int attr_off(const struct req *r, unsigned int type)
{
	return r->m.tb[type] ? (int)((const char *)r->m.tb[type] - (const char *)r->nlh) : -1;
}

static void cmd_conn_kill(const struct req *r)
{
	struct session *s;
	uint64_t id;

	if (!r->m.tb[KFWD_A_CONN_ID]) {
		reply_ack(r, -EINVAL, -1, "conn kill needs a connection id");
		return;
	}
	id = mnl_attr_get_u64(r->m.tb[KFWD_A_CONN_ID]);
	s = find_session(id);
	if (!s) {
		reply_ack(r, -ENOENT, attr_off(r, KFWD_A_CONN_ID), "no connection %lu",
			  (unsigned long)id);
		return;
	}
	log_info("kfwdctl (pid %d): killing connection %lu", (int)r->cred.pid, (unsigned long)id);
	session_kill(s);
	reply_ack(r, 0, -1, NULL);
}

static void finish_change(const struct req *r, int rc, const char *note, const char *err)
{
	if (rc < 0)
		reply_ack(r, rc, -1, "%s", err);
	else if (note[0])
		reply_ack(r, 0, -1, "%s", note);
	else
		reply_ack(r, 0, -1, NULL);
}

static void cmd_route_add(const struct req *r)
{
	const char *prefix = str_attr(r, KFWD_A_PREFIX), *target = str_attr(r, KFWD_A_TARGET);
	char line[4096], what[300], note[512], err[600];
	const struct nlattr *opt;
	struct edit e = { 0 };
	size_t used;
	char *text;
	int n = 0, rc;

	if (!prefix || !target) {
		reply_ack(r, -EINVAL, -1, "route add needs a prefix and a target");
		return;
	}
	if (!kctl_token_ok(prefix) || prefix[0] != '/') {
		reply_ack(r, -EINVAL, attr_off(r, KFWD_A_PREFIX),
			  "bad prefix: one word starting with '/', printable, no '#'");
		return;
	}
	if (!kctl_token_ok(target)) {
		reply_ack(r, -EINVAL, attr_off(r, KFWD_A_TARGET), "bad target: one printable word");
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
				reply_ack(r, -EINVAL,
					  (int)((const char *)opt - (const char *)r->nlh),
					  "bad route option: one printable word, no '#'");
				return;
			}
			if (++n > CTL_MAX_ROUTE_OPTIONS || used + strlen(o) + 2 >= sizeof(line)) {
				reply_ack(r, -EINVAL, -1, "too many route options");
				return;
			}
			used += (size_t)snprintf(line + used, sizeof(line) - used, " %s", o);
		}
	}
	snprintf(line + used, sizeof(line) - used, "\n");
	e.append = line;
	text = edit_text(ctl.cfg->source, &e);
	if (!text) {
		reply_ack(r, -ENOMEM, -1, "out of memory");
		return;
	}
	snprintf(what, sizeof(what), "route add %s %s", prefix, target);
	rc = apply_text(text, what, note, sizeof(note), err, sizeof(err));
	free(text);
	finish_change(r, rc, note, err);
}

static void cmd_route_del(const struct req *r)
{
	const char *prefix = str_attr(r, KFWD_A_PREFIX), *host = str_attr(r, KFWD_A_HOST);
	const struct config *cfg = ctl.cfg;
	const struct route *found = NULL;
	char what[300], note[512], err[600], line[1024];
	struct edit e = { 0 };
	unsigned int matches = 0;
	char *text;
	int rc;

	if (!prefix) {
		reply_ack(r, -EINVAL, -1, "route del needs a prefix");
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
		reply_ack(r, -ENOENT, attr_off(r, KFWD_A_PREFIX), "no route %s%s%s", prefix,
			  host ? " with host=" : "", host ? host : "");
		return;
	}
	if (matches > 1) {
		reply_ack(
			r, -EINVAL, attr_off(r, KFWD_A_PREFIX),
			"%u routes have prefix %s: say which with host=NAME (host= for the one without)",
			matches, prefix);
		return;
	}
	if (!text_line(cfg->source, found->line, line, sizeof(line)) ||
	    !line_starts_with(line, strlen(line), "route")) {
		reply_ack(r, -EIO, -1, "route %s: its line %d is not in the configuration text",
			  prefix, found->line);
		return;
	}
	e.del_line = found->line;
	text = edit_text(cfg->source, &e);
	if (!text) {
		reply_ack(r, -ENOMEM, -1, "out of memory");
		return;
	}
	snprintf(what, sizeof(what), "route del %s", prefix);
	rc = apply_text(text, what, note, sizeof(note), err, sizeof(err));
	free(text);
	finish_change(r, rc, note, err);
}

static void cmd_upstream_admin(const struct req *r, bool drain)
{
	const char *name = str_attr(r, KFWD_A_UPSTREAM), *server = str_attr(r, KFWD_A_SERVER);
	struct upstream *u;
	char what[300];

	if (!name) {
		reply_ack(r, -EINVAL, -1, "upstream %s needs an upstream name",
			  drain ? "drain" : "enable");
		return;
	}
	u = find_upstream(ctl.cfg, name);
	if (!u) {
		reply_ack(r, -ENOENT, attr_off(r, KFWD_A_UPSTREAM), "no upstream %s", name);
		return;
	}
	if (server && !find_server(u, server)) {
		reply_ack(r, -ENOENT, attr_off(r, KFWD_A_SERVER), "upstream %s has no server %s",
			  name, server);
		return;
	}
	/* The state is shared by every configuration naming the server (upstream.c). */
	for (size_t i = 0; i < u->n_servers; i++)
		if (!server || !strcmp(u->servers[i].text, server))
			upstream_set_drained(&u->servers[i], drain);
	snprintf(what, sizeof(what), "upstream %s %s%s%s", drain ? "drain" : "enable", name,
		 server ? " " : "", server ? server : "");
	log_info("kfwdctl (pid %d): %s", (int)r->cred.pid, what);
	event_config(what);
	reply_ack(r, 0, -1, NULL);
}

static void cmd_set(const struct req *r)
{
	const char *keys[16];
	char append[2048], what[600], note[512], err[600];
	const struct nlattr *item;
	struct edit e = { 0 };
	size_t used = 0, wused = 0;
	char *text;
	int rc;

	if (!r->m.tb[KFWD_A_SETTINGS]) {
		reply_ack(r, -EINVAL, -1, "set needs KEY VALUE");
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
			reply_ack(r, -EINVAL, off, "a setting needs a key and a value");
			return;
		}
		key = mnl_attr_get_str(tb[KFWD_SET_KEY]);
		value = mnl_attr_get_str(tb[KFWD_SET_VALUE]);
		if (!kctl_setting_find(key)) {
			reply_ack(r, -EINVAL, off,
				  "'%s' cannot be set at runtime (see kfwdctl help)", key);
			return;
		}
		if (!kctl_token_ok(value)) {
			reply_ack(r, -EINVAL, off, "%s: bad value (one printable word, no '#')",
				  key);
			return;
		}
		if (e.n_drop == sizeof(keys) / sizeof(keys[0]) ||
		    used + strlen(key) + strlen(value) + 3 >= sizeof(append)) {
			reply_ack(r, -EINVAL, off, "too many settings at once");
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
		reply_ack(r, -EINVAL, -1, "set needs KEY VALUE");
		return;
	}
	e.drop_keys = keys;
	e.append = append;
	text = edit_text(ctl.cfg->source, &e);
	if (!text) {
		reply_ack(r, -ENOMEM, -1, "out of memory");
		return;
	}
	rc = apply_text(text, what, note, sizeof(note), err, sizeof(err));
	free(text);
	finish_change(r, rc, note, err);
}

/* Re-read the file; on any error the running configuration stays. */
static int do_reload(char *note, size_t notelen, char *err, size_t errlen)
{
	const struct config *cfg = ctl.cfg;
	struct config *ncfg;
	unsigned int dropped = runtime_changes(cfg->source);
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

static void cmd_reload(const struct req *r)
{
	char note[512], err[600];
	int rc;

	log_info("kfwdctl (pid %d): reload", (int)r->cred.pid);
	rc = do_reload(note, sizeof(note), err, sizeof(err));
	if (rc < 0)
		log_warn("reload failed, configuration unchanged: %s", err);
	finish_change(r, rc, note, err);
}

void ctl_reload_signal(void)
{
	char note[512], err[600];

	if (ctl.draining || !ctl.cfg)
		return;
	if (do_reload(note, sizeof(note), err, sizeof(err)) < 0)
		log_warn("SIGHUP: reload failed, configuration unchanged: %s", err);
	else if (note[0])
		log_info("SIGHUP: reloaded (%s)", note);
	else
		log_info("SIGHUP: reloaded");
}

static void cmd_monitor(const struct req *r)
{
	unsigned int i;

	for (i = 0; i < ctl_n_subscribers && ctl.subs[i].portid != r->portid; i++)
		;
	if (i == ctl_n_subscribers) {
		if (ctl_n_subscribers == KFWD_CTL_MAX_SUBSCRIBERS) {
			reply_ack(r, -EBUSY, -1, "%d monitors already", KFWD_CTL_MAX_SUBSCRIBERS);
			return;
		}
		ctl_n_subscribers++;
	}
	ctl.subs[i] = (struct subscriber){ .portid = r->portid, .seq = r->nlh->nlmsg_seq };
	kev_set_sink(on_kev);
	if (!timer_armed(&ctl.heartbeat))
		timer_arm(&ctl.heartbeat, KFWD_CTL_HEARTBEAT_MS);
	log_debug("ctl: monitor at port id %u (pid %d)", r->portid, (int)r->cred.pid);
	reply_ack(r, 0, -1, NULL);
}

/* ------------------------------------------------------------------ requests */

/* Long: the validation pipeline of one request, every step an early exit counted as it fails. */
static void handle_msg(const struct nlmsghdr *nlh, const struct ucred *cred, uint32_t portid)
{
	struct req r = { .nlh = nlh, .portid = portid };
	unsigned int cmd = nlh->nlmsg_type;
	struct kctl_err err;
	char why[256];
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
		reply_ack(&r, -EPERM, -1, "no credentials with the request");
		return;
	}
	r.cred = *cred;
	if (cmd < KFWD_CTL_CMD_MIN || cmd > KFWD_CTL_CMD_MAX || cmd == KFWD_CMD_EVENT) {
		stats.ctl_malformed++;
		reply_ack(&r, -EOPNOTSUPP, -1, "unknown command %u", cmd);
		return;
	}
	if (check_permission(cred, cmd, why, sizeof(why)) < 0) {
		stats.ctl_denied++;
		log_info("ctl: %s from pid %d uid %u refused", kctl_cmd_name(cmd), (int)cred->pid,
			 (unsigned int)cred->uid);
		reply_ack(&r, -EPERM, -1, "%s", why);
		return;
	}
	rc = kctl_msg_parse(nlh, &r.m, &err);
	if (rc != KCTL_PARSE_OK) {
		stats.ctl_malformed++;
		reply_ack(&r, -EINVAL, err.off, "malformed request: %s", err.msg);
		return;
	}
	if (!r.m.tb[KFWD_A_VERSION]) {
		stats.ctl_malformed++;
		reply_ack(&r, -EPROTO, -1, "request without KFWD_A_VERSION");
		return;
	}
	version = mnl_attr_get_u32(r.m.tb[KFWD_A_VERSION]);
	if (version != KFWD_CTL_VERSION) {
		reply_ack(&r, -EPROTO, attr_off(&r, KFWD_A_VERSION),
			  "protocol version %u; this kfwd speaks version %d", version,
			  KFWD_CTL_VERSION);
		return;
	}
	if (ctl.draining && !KFWD_CTL_CMD_READONLY(cmd) && cmd != KFWD_CMD_CONN_KILL) {
		reply_ack(&r, -EBUSY, -1, "kfwd is shutting down: no configuration changes");
		return;
	}
	switch (cmd) {
	case KFWD_CMD_STATUS:
		reply_single(&r, cmd_status_fill);
		break;
	case KFWD_CMD_STATS:
		reply_single(&r, cmd_stats_fill);
		break;
	case KFWD_CMD_CONN_LIST:
		cmd_conn_list(&r);
		break;
	case KFWD_CMD_CONN_KILL:
		cmd_conn_kill(&r);
		break;
	case KFWD_CMD_ROUTE_LIST:
		cmd_route_list(&r);
		break;
	case KFWD_CMD_ROUTE_ADD:
		cmd_route_add(&r);
		break;
	case KFWD_CMD_ROUTE_DEL:
		cmd_route_del(&r);
		break;
	case KFWD_CMD_UPSTREAM_LIST:
		cmd_upstream_list(&r);
		break;
	case KFWD_CMD_UPSTREAM_DRAIN:
		cmd_upstream_admin(&r, true);
		break;
	case KFWD_CMD_UPSTREAM_ENABLE:
		cmd_upstream_admin(&r, false);
		break;
	case KFWD_CMD_SET:
		cmd_set(&r);
		break;
	case KFWD_CMD_RELOAD:
		cmd_reload(&r);
		break;
	case KFWD_CMD_MONITOR:
		cmd_monitor(&r);
		break;
	default:
		reply_ack(&r, -EOPNOTSUPP, -1, "unknown command %u", cmd);
		break;
	}
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
			struct req r = { .nlh = (const void *)rxbuf, .portid = portid };

			reply_ack(&r, -EMSGSIZE, -1, "datagram larger than %d bytes",
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

		n = kctl_recv(ctl.fd, rxbuf, sizeof(rxbuf), &from, &cbuf, &cred, &truncated);
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

/* ------------------------------------------------------------------ socket and file */

/* @consequence: what kfwd does about it, to end the message. */
static void report_holder(int level, uint32_t portid, const char *consequence)
{
	struct kctl_holder h;
	int r = kctl_portid_holder(portid, 0, &h);

	if (r > 0 && h.pid)
		klog(level,
		     "ctl: netlink port id %u is held by pid %d (%s, uid %d): another kfwd, or a "
		     "process squatting it; %s",
		     portid, (int)h.pid, h.comm, (int)h.uid, consequence);
	else
		klog(level,
		     "ctl: netlink port id %u is held by another socket (inode %lu): another kfwd, "
		     "or a process squatting it; %s",
		     portid, r > 0 ? h.inode : 0UL, consequence);
}

/*
 * Bind the control socket to @portid. The default (kfwd's pid) can be taken by any local user
 * beforehand: then the kernel assigns a free id, which the published file names. An id set
 * with ctl-port-id is what the operator asked for: taken, kfwd does not start.
 */
static int bind_portid(int fd, uint32_t portid, bool fixed, uint32_t *bound)
{
	struct sockaddr_nl addr = { .nl_family = AF_NETLINK, .nl_pid = portid };
	socklen_t alen = sizeof(addr);

	if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		if (errno != EADDRINUSE) {
			log_err("ctl: bind netlink port id %u: %m", portid);
			return -1;
		}
		if (fixed) {
			report_holder(KLOG_ERR, portid,
				      "refusing to start (set ctl-port-id to use another)");
			return -1;
		}
		report_holder(KLOG_WARN, portid, "using a port id the kernel assigns instead");
		addr.nl_pid = 0;
		if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
			log_err("ctl: bind netlink port id (kernel-assigned): %m");
			return -1;
		}
		portid = 0;
	}
	if (getsockname(fd, (struct sockaddr *)&addr, &alen) < 0 ||
	    (portid && addr.nl_pid != portid) || !addr.nl_pid) {
		log_err("ctl: netlink port id %u not bound as asked", portid);
		return -1;
	}
	*bound = addr.nl_pid;
	return 0;
}

/* @uid: the one kfwd answers with (after `user`), for kfwdctl's check of the answers. */
static int publish_file(const char *path, uint32_t portid, uid_t uid)
{
	char dir[sizeof(ctl.file)], tmp[sizeof(ctl.file) + 16];
	char *slash;
	struct stat st;
	int fd, n;

	snprintf(dir, sizeof(dir), "%s", path);
	slash = strrchr(dir, '/');
	if (!slash || slash == dir) {
		log_err("ctl: ctl-socket-file %s: want an absolute path inside a directory", path);
		return -1;
	}
	*slash = '\0';
	if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
		log_err("ctl: mkdir %s: %m", dir);
		return -1;
	}
	if (lstat(dir, &st) < 0) {
		log_err("ctl: %s: %m", dir);
		return -1;
	}
	/* kfwdctl trusts what is written here: nobody else may be able to replace it. */
	if (!S_ISDIR(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 022)) {
		log_err("ctl: %s must be a directory owned by uid %u and writable by nobody else",
			dir, (unsigned int)geteuid());
		return -1;
	}
	snprintf(tmp, sizeof(tmp), "%s.%d.tmp", path, (int)getpid());
	if (unlink(tmp) < 0 && errno != ENOENT) {
		log_err("ctl: unlink %s: %m", tmp);
		return -1;
	}
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (fd < 0) {
		log_err("ctl: create %s: %m", tmp);
		return -1;
	}
	n = uid ? dprintf(fd, "portid=%u pid=%d uid=%u\n", portid, (int)getpid(),
			  (unsigned int)uid) :
		  dprintf(fd, "portid=%u pid=%d\n", portid, (int)getpid());
	if (n < 0 || fchmod(fd, 0644) < 0) {
		log_err("ctl: write %s: %m", tmp);
		close(fd);
		unlink(tmp);
		return -1;
	}
	if (close(fd) < 0 || rename(tmp, path) < 0) {
		log_err("ctl: publish %s: %m", path);
		unlink(tmp);
		return -1;
	}
	return 0;
}

/* Remove the file only if it still names this process (another kfwd may have taken over). */
static void unpublish_file(void)
{
	char buf[128];
	unsigned int portid;
	int pid, fd;
	ssize_t n;

	if (!ctl.published)
		return;
	ctl.published = false;
	fd = open(ctl.file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return;
	buf[n] = '\0';
	/* After `user` the root-owned directory is not ours to change: the file stays, and
	 * kfwdctl calls it stale once this pid is gone. */
	if (sscanf(buf, "portid=%u pid=%d", &portid, &pid) == 2 && pid == (int)getpid() &&
	    unlink(ctl.file) < 0 && errno != EACCES)
		log_warn("ctl: unlink %s: %m", ctl.file);
}

int ctl_open(const struct config *cfg, char *const *extra_listens, size_t n_extra)
{
	int one = 1, rcvbuf = CTL_RCVBUF;
	uint32_t portid;

	ctl.cfg = config_get(cfg);
	ctl.extra_listens = extra_listens;
	ctl.n_extra = n_extra;
	ctl.start_ms = now_ms();
	ctl.started = time(NULL);
	ctl.heartbeat.on_expire = on_heartbeat;
	if (cfg->ctl_off) {
		log_info("control socket off (ctl-port-id off)");
		return 0;
	}
	portid = cfg->ctl_port_id ? cfg->ctl_port_id : (uint32_t)getpid();
	ctl.fd = socket(AF_NETLINK, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, KFWD_CTL_NETLINK);
	if (ctl.fd < 0) {
		log_err("ctl: netlink socket: %m");
		goto fail;
	}
	if (setsockopt(ctl.fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)) < 0) {
		log_err("ctl: SO_PASSCRED: %m");
		goto fail;
	}
	if (setsockopt(ctl.fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf)) < 0 &&
	    setsockopt(ctl.fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf)) < 0)
		log_warn("ctl: SO_RCVBUF: %m");
	if (bind_portid(ctl.fd, portid, cfg->ctl_port_id != 0, &ctl.portid) < 0)
		goto fail;
	ctl.h.on_event = on_ctl_event;
	if (loop_add(ctl.fd, EPOLLIN, &ctl.h) < 0)
		goto fail;
	snprintf(ctl.file, sizeof(ctl.file), "%s", cfg->ctl_socket_file);
	if (publish_file(ctl.file, ctl.portid, cfg->has_user ? cfg->run_uid : 0) < 0) {
		loop_del(ctl.fd);
		goto fail;
	}
	ctl.published = true;
	log_info("control socket: netlink port id %u, published in %s", ctl.portid, ctl.file);
	return 0;
fail:
	if (ctl.fd >= 0)
		close(ctl.fd);
	ctl.fd = -1;
	ctl.portid = 0;
	config_put(ctl.cfg);
	ctl.cfg = NULL;
	return -1;
}

void ctl_close_socket(void)
{
	/* Monitors learn that the stream ended (NLMSG_DONE) instead of waiting for heartbeats. */
	for (unsigned int i = 0; i < ctl_n_subscribers; i++) {
		struct mb b;
		int *zero;

		mb_start(&b, txbuf, sizeof(txbuf), NLMSG_DONE, NLM_F_MULTI, ctl.subs[i].seq);
		b.nlh->nlmsg_len = NLMSG_HDRLEN;
		zero = mnl_nlmsg_put_extra_header(b.nlh, sizeof(int));
		*zero = 0;
		put_u32(&b, KFWD_A_VERSION, KFWD_CTL_VERSION);
		(void)send_to(ctl.subs[i].portid, txbuf, b.nlh->nlmsg_len);
	}
	ctl_n_subscribers = 0;
	kev_set_sink(NULL);
	timer_cancel(&ctl.heartbeat);
	if (ctl.fd >= 0) {
		loop_del(ctl.fd);
		close(ctl.fd);
		ctl.fd = -1;
	}
	unpublish_file();
}

void ctl_close(void)
{
	ctl_close_socket();
	if (ctl.cfg)
		config_put(ctl.cfg);
	ctl.cfg = NULL;
}
