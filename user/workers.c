// SPDX-License-Identifier: GPL-2.0
/*
 * `workers N`: one master process and N worker processes (the nginx/HAProxy model). Each worker
 * is a whole event loop with its own SO_REUSEPORT listener on every listen address and its own
 * sessions, counters, pools and configuration copy; the kernel spreads new connections over the
 * listeners. The master serves no connection: it owns the control socket, the metrics endpoint
 * and the signals, forks the workers (after privileges were dropped, so every listener of a
 * reuseport group belongs to the same user), restarts one that dies, and answers kfwdctl for
 * all of them: counters summed, connections listed and killed across workers, configuration
 * changes put in force in every worker before kfwdctl hears the answer.
 *
 * Master and worker talk over one SOCK_SEQPACKET socketpair per worker: the master asks, the
 * worker answers from its loop at once. The master waits for the answer (bounded by
 * WORKER_RPC_TIMEOUT_MS): it has no connection that could stall meanwhile. A configuration
 * text travels in a shared mapping (up to WORKER_TEXT_MAX), not through the socket. Two kinds
 * of message are never answered: the master passes each sockmap ring event to the worker whose
 * flow it names (it loaded the one program before forking and is the ring's only reader), and
 * while kfwdctl monitor listens each worker sends its connection events to the master.
 *
 * Connection ids stay unique: worker slot i (numbered i + 1 in `conn list`) counts from
 * (i + 1) << WORKER_ID_SHIFT, plus its restart generation << WORKER_GEN_SHIFT, so the ids of
 * slot i lie below those of slot i + 1 and a listing goes from the last slot to the first.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "accept.h"
#include "apply.h"
#include "ctl.h"
#include "ctl_show.h"
#include "event.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "resolve.h"
#include "sd_notify.h"
#include "session.h"
#include "sockmap_path.h"
#include "stats.h"
#include "workers.h"

#define WORKER_RPC_TIMEOUT_MS 2000
#define WORKER_START_TIMEOUT_MS 10000
/* A worker that dies within this long of its start is restarted after this long, so a worker
 * that cannot start (its port taken since) costs one fork a second, not a busy loop. */
#define WORKER_RESTART_DELAY_MS 1000
/* At the master's exit: how long workers still draining get before SIGKILL. */
#define WORKER_EXIT_GRACE_MS 2000
#define WORKER_EXIT_POLL_MS 10
#define WORKER_ID_SHIFT 48
#define WORKER_GEN_SHIFT 32
#define WORKER_GEN_MASK 0xffffu
#define WORKER_TEXT_MAX (1 << 20) /* config.c reads files up to 1 MiB */
#define WORKER_ERR_MAX 300
#define WORKER_NAMES_MAX 512 /* upstream name and server address */
#define WORKER_EVENT_BATCH 64 /* monitor events read per wake-up */

enum wmsg_type {
	W_READY = 1, /* worker -> master once its listeners are open; rc < 0: it exits */
	W_STATS, /* reply: the counters, arg = its open connections */
	W_CONNS, /* arg: ids below; reply: struct ctl_conn_record list */
	W_KILL, /* arg: connection id; rc: 0 or -ENOENT */
	W_CONFIG, /* arg: text length (in the shared mapping); reply on error: the reason */
	W_UPSTREAM, /* arg: bit 0 drain, bit 1 a server named; payload "NAME\0SERVER\0" */
	W_EVENT, /* master -> worker, no answer: arg is a sockmap flow id with news */
	W_SERVER, /* arg: server index, payload "UPSTREAM\0"; reply: struct wserver */
	W_MONITOR, /* master -> worker, no answer: arg 1: send W_KEV events, 0: stop */
	W_KEV, /* worker -> master, unasked: a struct wkev for kfwdctl monitor */
};

#define WKEV_TEXT_MAX 128

struct wserver {
	struct upstream_server_info info;
	bool up;
};

/* A struct kev on the wire: numbers and the texts it points at. */
struct wkev {
	uint32_t type;
	uint32_t status;
	uint32_t dir;
	uint32_t pad;
	uint64_t conn_id;
	uint64_t bytes_up;
	uint64_t bytes_down;
	uint64_t duration_ms;
	uint64_t level;
	uint64_t pauses;
	char client[WKEV_TEXT_MAX];
	char upstream[WKEV_TEXT_MAX];
};

struct wmsg {
	uint32_t type;
	uint32_t seq; /* an answer carries its question's */
	int32_t rc;
	uint32_t len; /* payload bytes after this header */
	uint64_t arg;
};

struct worker {
	struct loop_handler h; /* the master reads W_KEV events here */
	pid_t pid; /* 0: not running */
	int fd; /* the master's end of the socketpair */
	unsigned int gen; /* starts so far */
	uint64_t started_ms;
	struct timer restart;
};

static struct {
	unsigned int n; /* 0: no workers (workers 1) */
	bool stopping;
	uint32_t seq;
	char *text; /* MAP_SHARED: configuration text for W_CONFIG */
	int (*child_main)(void);
	/* in a worker */
	unsigned int self; /* slot + 1; 0 in the master */
	int fd;
	struct loop_handler h;
} wk = { .fd = -1 };
/* Apart from wk, so that its -1 fd does not put the table in the initialised data. */
static struct worker workers_tab[CONFIG_WORKERS_MAX];

/* Answers are built here: the records of W_CONNS are the largest. */
static uint64_t reply_buf[(CTL_CONN_RECORDS_MAX + WORKER_ERR_MAX) / sizeof(uint64_t)];

bool workers_child(void)
{
	return wk.self != 0;
}

bool workers_master(void)
{
	return wk.n && !wk.self;
}

static uint64_t first_id(unsigned int slot, unsigned int gen)
{
	return ((uint64_t)(slot + 1) << WORKER_ID_SHIFT) |
	       ((uint64_t)(gen & WORKER_GEN_MASK) << WORKER_GEN_SHIFT) | 1;
}

static int send_msg(int fd, const struct wmsg *m, const void *payload, int flags)
{
	struct iovec iov[2] = { { (void *)m, sizeof(*m) }, { (void *)payload, m->len } };
	struct msghdr mh = { .msg_iov = iov, .msg_iovlen = m->len ? 2 : 1 };

	return sendmsg(fd, &mh, flags | MSG_NOSIGNAL) < 0 ? -errno : 0;
}

/* A worker's monitor event, to the master's own sink (kfwdctl monitor, user/ctl.c). */
static void deliver_kev(const void *payload, size_t len)
{
	struct wkev w;
	struct kev k;

	if (len != sizeof(w) || !kev_listening())
		return;
	memcpy(&w, payload, sizeof(w));
	w.client[WKEV_TEXT_MAX - 1] = w.upstream[WKEV_TEXT_MAX - 1] = '\0';
	k = (struct kev){ .type = (enum kev_type)w.type,
			  .conn_id = w.conn_id,
			  .client = w.client,
			  .upstream = w.upstream,
			  .bytes_up = w.bytes_up,
			  .bytes_down = w.bytes_down,
			  .duration_ms = w.duration_ms,
			  .status = w.status,
			  .dir = (enum flow_dir)w.dir,
			  .level = w.level,
			  .pauses = w.pauses };
	if (k.type <= KEV_FLOW_RESUME && k.dir < DIR_COUNT)
		kev_emit(&k);
}

/*
 * Wait up to @timeout_ms for the message answering @seq (0: any) on @fd; earlier answers that
 * came too late are skipped. Returns the payload length, or -errno (-EPIPE: the worker is gone).
 */
static ssize_t recv_answer(int fd, uint32_t seq, struct wmsg *rh, void *buf, size_t size,
			   int timeout_ms)
{
	uint64_t deadline = now_ms() + (uint64_t)timeout_ms;

	for (;;) {
		struct iovec iov[2] = { { rh, sizeof(*rh) }, { buf, size } };
		struct msghdr mh = { .msg_iov = iov, .msg_iovlen = 2 };
		struct pollfd p = { .fd = fd, .events = POLLIN };
		uint64_t now = now_ms();
		ssize_t n;
		int r;

		if (now >= deadline)
			return -ETIMEDOUT;
		r = poll(&p, 1, (int)(deadline - now));
		if (r < 0 && errno != EINTR)
			return -errno;
		if (r <= 0)
			continue;
		n = recvmsg(fd, &mh, MSG_DONTWAIT);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EPIPE;
		if ((size_t)n >= sizeof(*rh) && rh->type == W_KEV)
			deliver_kev(buf, (size_t)n - sizeof(*rh));
		if ((size_t)n < sizeof(*rh) || rh->type == W_KEV || (seq && rh->seq != seq))
			continue;
		return n - (ssize_t)sizeof(*rh);
	}
}

/* One question to worker @w; the answer's header in @rh, its payload in @buf. */
static ssize_t call(struct worker *w, uint32_t type, uint64_t arg, const void *payload, size_t plen,
		    struct wmsg *rh, void *buf, size_t size)
{
	struct wmsg q = { .type = type, .seq = ++wk.seq, .len = (uint32_t)plen, .arg = arg };
	ssize_t n;
	int e;

	if (!w->pid || w->fd < 0)
		return -ESRCH;
	e = send_msg(w->fd, &q, payload, 0);
	n = e < 0 ? e : recv_answer(w->fd, q.seq, rh, buf, size, WORKER_RPC_TIMEOUT_MS);
	if (n < 0)
		log_warn("worker %u (pid %d) did not answer: %s",
			 (unsigned int)(w - workers_tab) + 1, (int)w->pid, strerror((int)-n));
	return n;
}

/* ------------------------------------------------------------------ the master's side */

static void add_stats(uint64_t v[KFWD_STAT_MAX + 1])
{
	uint64_t wv[KFWD_STAT_MAX + 1];
	struct wmsg rh;

	for (unsigned int i = 0; i < wk.n; i++) {
		if (call(&workers_tab[i], W_STATS, 0, NULL, 0, &rh, wv, sizeof(wv)) != sizeof(wv))
			continue;
		for (unsigned int j = KFWD_STAT_UNSPEC + 1; j <= KFWD_STAT_MAX; j++)
			v[j] += wv[j];
	}
}

static unsigned int peer_sessions(void)
{
	uint64_t wv[KFWD_STAT_MAX + 1];
	unsigned int sum = 0;
	struct wmsg rh;

	for (unsigned int i = 0; i < wk.n; i++)
		if (call(&workers_tab[i], W_STATS, 0, NULL, 0, &rh, wv, sizeof(wv)) >= 0)
			sum += (unsigned int)rh.arg;
	return sum;
}

static size_t peer_conns(uint64_t below, void *buf, size_t size)
{
	struct wmsg rh;

	for (unsigned int i = wk.n; i-- > 0;) {
		ssize_t n;

		if (first_id(i, 0) >= below)
			continue;
		n = call(&workers_tab[i], W_CONNS, below, NULL, 0, &rh, buf, size);
		if (n > 0)
			return (size_t)n;
	}
	return 0;
}

static int peer_conn_kill(uint64_t id)
{
	uint64_t slot = id >> WORKER_ID_SHIFT;
	struct wmsg rh;

	if (slot < 1 || slot > wk.n)
		return -ENOENT;
	if (call(&workers_tab[slot - 1], W_KILL, id, NULL, 0, &rh, reply_buf, sizeof(reply_buf)) <
	    0)
		return -ENOENT;
	return rh.rc;
}

static void peer_upstream_admin(const char *name, const char *server, bool drain)
{
	char names[WORKER_NAMES_MAX];
	int len = snprintf(names, sizeof(names), "%s%c%s", name, '\0', server ? server : "");
	struct wmsg rh;

	if (len < 0 || (size_t)len >= sizeof(names))
		return;
	for (unsigned int i = 0; i < wk.n; i++)
		(void)call(&workers_tab[i], W_UPSTREAM, (uint64_t)drain | (server ? 2 : 0), names,
			   (size_t)len + 1, &rh, reply_buf, sizeof(reply_buf));
}

static void peer_server_info(const char *name, size_t index, struct upstream_server_info *info,
			     bool *up)
{
	for (unsigned int i = 0; i < wk.n; i++) {
		struct wserver ws;
		struct wmsg rh;

		if (call(&workers_tab[i], W_SERVER, index, name, strlen(name) + 1, &rh, &ws,
			 sizeof(ws)) != sizeof(ws) ||
		    rh.rc < 0)
			continue;
		info->conns += ws.info.conns;
		info->failures += ws.info.failures;
		if (ws.info.down_ms > info->down_ms)
			info->down_ms = ws.info.down_ms;
		*up = *up && ws.up;
	}
}

static int peer_config_changed(const struct config *cfg, char *err, size_t errlen)
{
	size_t len = strlen(cfg->source), used = 0;
	int rc = 0;

	if (cfg->workers != wk.n)
		log_info("workers %u: takes effect at restart (%u running)", cfg->workers, wk.n);
	if (len > WORKER_TEXT_MAX) {
		snprintf(err, errlen, "workers: configuration larger than %d bytes not applied",
			 WORKER_TEXT_MAX);
		return -1;
	}
	memcpy(wk.text, cfg->source, len + 1);
	for (unsigned int i = 0; i < wk.n; i++) {
		char *why = (char *)reply_buf;
		struct wmsg rh;
		ssize_t n =
			call(&workers_tab[i], W_CONFIG, len, NULL, 0, &rh, why, WORKER_ERR_MAX - 1);

		if (n == -ESRCH || (n >= 0 && rh.rc == 0))
			continue; /* one restarting is forked with this configuration */
		why[n > 0 ? n : 0] = '\0';
		log_warn("worker %u (pid %d) kept its configuration: %s", i + 1,
			 (int)workers_tab[i].pid, n < 0 ? strerror((int)-n) : why);
		if (used < errlen)
			used += (size_t)snprintf(err + used, errlen - used,
						 "%sworker %u kept its configuration: %s",
						 rc ? "; " : "", i + 1,
						 n < 0 ? strerror((int)-n) : why);
		rc = -1;
	}
	return rc;
}

/* Tell worker @w whether kfwdctl monitor listens (no answer). */
static void tell_monitor(struct worker *w, bool on)
{
	struct wmsg m = { .type = W_MONITOR, .arg = on };

	if (w->pid && w->fd >= 0 && send_msg(w->fd, &m, NULL, MSG_DONTWAIT) < 0)
		log_warn("worker %u (pid %d): monitor %s not passed on: %m",
			 (unsigned int)(w - workers_tab) + 1, (int)w->pid, on ? "start" : "stop");
}

static void monitor_changed(bool on)
{
	for (unsigned int i = 0; i < wk.n; i++)
		tell_monitor(&workers_tab[i], on);
}

/* Between questions a worker's socket brings its monitor events (answers too late are dropped). */
static void on_worker(struct loop_handler *h, uint32_t events)
{
	struct worker *w = (struct worker *)h;

	for (int i = 0; i < WORKER_EVENT_BATCH && w->fd >= 0; i++) {
		struct wmsg rh;
		struct iovec iov[2] = { { &rh, sizeof(rh) }, { reply_buf, sizeof(reply_buf) } };
		struct msghdr mh = { .msg_iov = iov, .msg_iovlen = 2 };
		ssize_t n = recvmsg(w->fd, &mh, MSG_DONTWAIT);

		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		if (n <= 0) {
			loop_del(w->fd); /* gone: reaped with its SIGCHLD */
			return;
		}
		if ((size_t)n >= sizeof(rh) && rh.type == W_KEV)
			deliver_kev(reply_buf, (size_t)n - sizeof(rh));
	}
}

/* The sockmap event ring has one reader, the master: each event goes to the flow's worker. */
static void route_event(void *ctx, uint64_t flow_id)
{
	struct wmsg m = { .type = W_EVENT, .arg = flow_id };
	unsigned int tag = flow_id == SOCKMAP_FLOW_ALL ? 0 : sockmap_flow_tag(flow_id);

	for (unsigned int i = 0; i < wk.n; i++) {
		struct worker *w = &workers_tab[i];
		int e;

		if ((tag && tag != i + 1) || !w->pid || w->fd < 0)
			continue;
		e = send_msg(w->fd, &m, NULL, MSG_DONTWAIT);
		if (e < 0)
			log_warn("worker %u (pid %d): sockmap event lost: %s", i + 1, (int)w->pid,
				 strerror(-e));
	}
}

static const struct ctl_peers peers = {
	.config_changed = peer_config_changed,
	.conn_kill = peer_conn_kill,
	.upstream_admin = peer_upstream_admin,
	.sessions = peer_sessions,
	.conns = peer_conns,
	.server_info = peer_server_info,
};

/* ------------------------------------------------------------------ the worker's side */

static void answer(const struct wmsg *q, int rc, uint64_t arg, const void *payload, size_t len)
{
	struct wmsg a = {
		.type = q->type, .seq = q->seq, .rc = rc, .len = (uint32_t)len, .arg = arg
	};
	int e = send_msg(wk.fd, &a, payload, MSG_DONTWAIT);

	if (e < 0)
		log_warn("answer to the master lost: %s", strerror(-e));
}

/* The worker's event sink while a monitor listens: each event to the master, never waiting. */
static void forward_kev(const struct kev *k)
{
	struct wkev w = { .type = k->type,
			  .status = k->status,
			  .dir = k->dir,
			  .conn_id = k->conn_id,
			  .bytes_up = k->bytes_up,
			  .bytes_down = k->bytes_down,
			  .duration_ms = k->duration_ms,
			  .level = k->level,
			  .pauses = k->pauses };
	struct wmsg m = { .type = W_KEV, .len = sizeof(w) };

	snprintf(w.client, sizeof(w.client), "%s", k->client ? k->client : "");
	snprintf(w.upstream, sizeof(w.upstream), "%s", k->upstream ? k->upstream : "");
	if (send_msg(wk.fd, &m, &w, MSG_DONTWAIT) < 0)
		stats.ctl_events_lost++;
}

static void answer_server(const struct wmsg *q, const char *name, size_t len)
{
	struct wserver ws = { 0 };
	int rc = len && !name[len - 1] ? ctl_server_info(name, q->arg, &ws.info, &ws.up) : -EINVAL;

	answer(q, rc, 0, &ws, sizeof(ws));
}

static void answer_upstream(const struct wmsg *q, const char *names, size_t len)
{
	const char *server;

	if (!len || names[len - 1]) {
		answer(q, -EINVAL, 0, NULL, 0);
		return;
	}
	server = names + strlen(names) + 1;
	if (server >= names + len)
		server = NULL;
	answer(q, ctl_upstream_admin(names, (q->arg & 2) ? server : NULL, q->arg & 1), 0, NULL, 0);
}

static void answer_question(const struct wmsg *q, const char *payload, size_t len)
{
	uint64_t v[KFWD_STAT_MAX + 1];
	char err[WORKER_ERR_MAX];
	size_t n;
	int rc;

	switch (q->type) {
	case W_STATS:
		stats_snapshot(v);
		answer(q, 0, session_count(), v, sizeof(v));
		break;
	case W_CONNS:
		n = ctl_conn_records(q->arg, reply_buf, CTL_CONN_RECORDS_MAX);
		answer(q, 0, 0, reply_buf, n);
		break;
	case W_KILL:
		answer(q, ctl_conn_kill(q->arg), 0, NULL, 0);
		break;
	case W_CONFIG:
		err[0] = '\0';
		rc = q->arg <= WORKER_TEXT_MAX && !wk.text[q->arg] ?
			     ctl_apply_text(wk.text, err, sizeof(err)) :
			     -EINVAL;
		answer(q, rc, 0, err, rc < 0 ? strlen(err) : 0);
		break;
	case W_UPSTREAM:
		answer_upstream(q, payload, len);
		break;
	case W_SERVER:
		answer_server(q, payload, len);
		break;
	case W_MONITOR:
		kev_set_sink(q->arg ? forward_kev : NULL);
		break;
	case W_EVENT:
		log_debug("sockmap event from the master: flow %#018lx", (unsigned long)q->arg);
		sockmap_notify(q->arg);
		break;
	default:
		answer(q, -EOPNOTSUPP, 0, NULL, 0);
		break;
	}
}

static void on_master(struct loop_handler *h, uint32_t events)
{
	char payload[WORKER_NAMES_MAX];
	struct wmsg q;
	struct iovec iov[2] = { { &q, sizeof(q) }, { payload, sizeof(payload) } };
	struct msghdr mh = { .msg_iov = iov, .msg_iovlen = 2 };
	ssize_t n = recvmsg(wk.fd, &mh, MSG_DONTWAIT);

	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		/* The master is gone: drain as for its SIGTERM (PR_SET_PDEATHSIG sends one too). */
		log_warn("the master is gone: draining");
		loop_del(wk.fd);
		kill(getpid(), SIGTERM);
		return;
	}
	if ((size_t)n < sizeof(q))
		return;
	answer_question(&q, payload, (size_t)n - sizeof(q));
}

/* Tell the master whether this worker serves; it waits for this before going on. */
static void report_ready(int rc)
{
	struct wmsg m = { .type = W_READY, .rc = rc };

	(void)send_msg(wk.fd, &m, NULL, 0);
}

/* In the child just forked: drop the master's part, open our listeners, serve; never returns. */
static void __attribute__((noreturn)) become_worker(unsigned int slot, pid_t master)
{
	const struct config *cfg = ctl_config();
	char name[KLOG_NAME_MAX];

	wk.self = slot + 1;
	snprintf(name, sizeof(name), "kfwd worker %u", wk.self);
	klog_set_name(name);
	/* A master killed with SIGKILL must not leave workers serving on. */
	if (prctl(PR_SET_PDEATHSIG, SIGTERM) < 0 || getppid() != master)
		_exit(1);
	for (unsigned int i = 0; i < wk.n; i++)
		if (workers_tab[i].fd >= 0)
			close(workers_tab[i].fd);
	wk.n = 0;
	if (loop_reset_after_fork() < 0)
		_exit(1);
	kev_on_sink_change(NULL);
	ctl_forget_after_fork();
	metrics_close();
	sockmap_path_share_after_fork((uint8_t)wk.self);
	stats_snapshot_add(NULL);
	sd_notify_fini();
	resolve_fini();
	memset(&stats, 0, sizeof(stats)); /* the master's stay the master's */
	session_set_worker(wk.self, first_id(slot, workers_tab[slot].gen));
	config_apply_sockets(true, false);
	listen_set_reuseport(true);
	if (resolve_init() < 0 || listeners_open(cfg) < 0) {
		report_ready(-1);
		_exit(1);
	}
	wk.h.on_event = on_master;
	if (loop_add(wk.fd, EPOLLIN, &wk.h) < 0) {
		report_ready(-1);
		_exit(1);
	}
	report_ready(0);
	log_info("serving");
	/* _exit: the master's objects copied at fork are not this process's to free. */
	_exit(wk.child_main());
}

/* ------------------------------------------------------------------ starting and reaping */

static int spawn(unsigned int slot)
{
	struct worker *w = &workers_tab[slot];
	struct timeval tmo = { .tv_sec = WORKER_RPC_TIMEOUT_MS / 1000 };
	pid_t master = getpid();
	struct wmsg rh;
	int sv[2];
	ssize_t n;

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
		log_err("worker %u: socketpair: %m", slot + 1);
		return -1;
	}
	/* A worker whose queue is full must not block the master for ever. */
	if (setsockopt(sv[0], SOL_SOCKET, SO_SNDTIMEO, &tmo, sizeof(tmo)) < 0)
		log_warn("worker %u: SO_SNDTIMEO: %m", slot + 1);
	w->pid = fork();
	if (w->pid < 0) {
		log_err("worker %u: fork: %m", slot + 1);
		w->pid = 0;
		close(sv[0]);
		close(sv[1]);
		return -1;
	}
	if (w->pid == 0) {
		close(sv[0]);
		wk.fd = sv[1];
		become_worker(slot, master);
	}
	close(sv[1]);
	w->fd = sv[0];
	w->gen++;
	w->started_ms = now_ms();
	n = recv_answer(w->fd, 0, &rh, reply_buf, sizeof(reply_buf), WORKER_START_TIMEOUT_MS);
	if (n < 0 || rh.type != W_READY || rh.rc < 0) {
		log_err("worker %u (pid %d) did not start (see the log above)", slot + 1,
			(int)w->pid);
		return -1; /* reaped with its SIGCHLD, or by workers_fini() */
	}
	w->h.on_event = on_worker;
	if (loop_add(w->fd, EPOLLIN, &w->h) < 0)
		log_warn("worker %u: its monitor events will not be read", slot + 1);
	if (kev_listening())
		tell_monitor(w, true);
	log_info("worker %u started, pid %d", slot + 1, (int)w->pid);
	return 0;
}

static void on_restart(struct timer *t)
{
	struct worker *w = (struct worker *)((char *)t - offsetof(struct worker, restart));

	if (!wk.stopping && !w->pid)
		(void)spawn((unsigned int)(w - workers_tab));
}

int workers_start(const struct config *cfg, int (*child_main)(void))
{
	wk.text = mmap(NULL, WORKER_TEXT_MAX + 1, PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (wk.text == MAP_FAILED) {
		wk.text = NULL;
		log_err("workers: shared mapping: %m");
		return -1;
	}
	wk.child_main = child_main;
	wk.n = cfg->workers;
	for (unsigned int i = 0; i < wk.n; i++) {
		workers_tab[i].fd = -1;
		workers_tab[i].restart.on_expire = on_restart;
	}
	for (unsigned int i = 0; i < wk.n; i++)
		if (spawn(i) < 0)
			return -1;
	stats_snapshot_add(add_stats);
	ctl_set_peers(&peers);
	sockmap_path_route_events(route_event);
	kev_on_sink_change(monitor_changed);
	log_info("%u workers serving", wk.n);
	return 0;
}

static struct worker *find_pid(pid_t pid)
{
	for (unsigned int i = 0; i < wk.n; i++)
		if (workers_tab[i].pid == pid)
			return &workers_tab[i];
	return NULL;
}

static bool any_running(void)
{
	for (unsigned int i = 0; i < wk.n; i++)
		if (workers_tab[i].pid)
			return true;
	return false;
}

static void reaped(struct worker *w, int status)
{
	unsigned int slot = (unsigned int)(w - workers_tab);
	bool quick = now_ms() - w->started_ms < WORKER_RESTART_DELAY_MS;

	if (w->fd >= 0)
		close(w->fd);
	w->fd = -1;
	w->pid = 0;
	if (wk.stopping) {
		if (!any_running())
			loop_stop();
		return;
	}
	if (WIFSIGNALED(status))
		log_err("worker %u killed by signal %d: restarting it", slot + 1, WTERMSIG(status));
	else
		log_err("worker %u exited with status %d: restarting it", slot + 1,
			WEXITSTATUS(status));
	if (quick)
		timer_arm(&w->restart, WORKER_RESTART_DELAY_MS);
	else
		(void)spawn(slot);
}

void workers_reap(void)
{
	pid_t pid;
	int status;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		struct worker *w = find_pid(pid);

		if (w)
			reaped(w, status);
	}
}

void workers_drain(void)
{
	wk.stopping = true;
	for (unsigned int i = 0; i < wk.n; i++) {
		timer_cancel(&workers_tab[i].restart);
		if (workers_tab[i].pid && kill(workers_tab[i].pid, SIGTERM) < 0)
			log_warn("worker %u: SIGTERM: %m", i + 1);
	}
	if (!any_running())
		loop_stop();
}

void workers_signal(int sig)
{
	for (unsigned int i = 0; i < wk.n; i++)
		if (workers_tab[i].pid && kill(workers_tab[i].pid, sig) < 0)
			log_warn("worker %u: signal %d: %m", i + 1, sig);
}

void workers_fini(void)
{
	uint64_t deadline = now_ms() + WORKER_EXIT_GRACE_MS;

	if (!workers_master())
		return;
	ctl_set_peers(NULL);
	stats_snapshot_add(NULL);
	sockmap_path_route_events(NULL);
	kev_on_sink_change(NULL);
	workers_drain();
	while (any_running()) {
		pid_t pid;
		int status;

		if (now_ms() >= deadline) {
			log_warn("workers still running %d ms after the drain: killing them",
				 WORKER_EXIT_GRACE_MS);
			workers_signal(SIGKILL);
			deadline = UINT64_MAX;
		}
		pid = waitpid(-1, &status, deadline == UINT64_MAX ? 0 : WNOHANG);
		if (pid > 0 && find_pid(pid))
			reaped(find_pid(pid), status);
		else if (pid == 0)
			usleep(WORKER_EXIT_POLL_MS * 1000);
		else if (pid < 0 && errno == ECHILD)
			break;
	}
	munmap(wk.text, WORKER_TEXT_MAX + 1);
	wk.text = NULL;
	wk.n = 0;
}
