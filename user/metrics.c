// SPDX-License-Identifier: GPL-2.0
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "accept.h"
#include "log.h"
#include "loop.h"
#include "mem_budget.h"
#include "metrics.h"
#include "sockmap.h"
#include "stats.h"
#include "tls.h"
#include "upstream_pool.h"

/* Room for every counter of kfwd/counters.h with its HELP and TYPE lines (about 10 KB with the
 * RTSP and max-memory counters); a longer text would be cut off. */
#define METRICS_TEXT_MAX 32768
/* Connections accepted per wake-up: a connection flood must not hold the loop. */
#define METRICS_ACCEPT_BATCH 16

struct metrics_conn {
	struct loop_handler h;
	int fd;
};

static struct loop_handler listen_handler;
static int listen_fd = -1;

struct writer {
	char *p;
	size_t len, used;
};

static void emit(struct writer *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void emit(struct writer *w, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (w->used >= w->len)
		return;
	va_start(ap, fmt);
	n = vsnprintf(w->p + w->used, w->len - w->used, fmt, ap);
	va_end(ap);
	if (n > 0)
		w->used += (size_t)n < w->len - w->used ? (size_t)n : w->len - w->used - 1;
}

enum counter_kind { COUNTER, GAUGE };

struct counter_def {
	const char *name; /* "base" or "base.label-value" */
	const char *label; /* the label's name, NULL for a plain counter */
	const char *help;
	enum counter_kind kind;
};

static const struct counter_def counter_defs[KFWD_STAT_MAX + 1] = {
#define COUNTER_DEF(id, wire, lab, k, text, value) \
	[KFWD_STAT_##id] = { .name = wire, .label = lab, .help = text, .kind = k },
	KFWD_COUNTERS(COUNTER_DEF)
#undef COUNTER_DEF
};

/* The other processes' counters (user/workers.c), NULL when this process is all of kfwd. */
static void (*snapshot_extra)(uint64_t v[KFWD_STAT_MAX + 1]);

void stats_snapshot_add(void (*add)(uint64_t v[KFWD_STAT_MAX + 1]))
{
	snapshot_extra = add;
}

void stats_snapshot(uint64_t v[KFWD_STAT_MAX + 1])
{
	uint64_t sockmap_bytes[2]; /* enum sockmap_dir: fd_a is always the client */

	sockmap_bytes_redirected(sockmap_bytes);
	v[KFWD_STAT_UNSPEC] = 0;
#define COUNTER_VALUE(id, wire, lab, k, text, value) v[KFWD_STAT_##id] = (value);
	KFWD_COUNTERS(COUNTER_VALUE)
#undef COUNTER_VALUE
	if (snapshot_extra)
		snapshot_extra(v);
}

/* Length of the family name: @name up to its '.', or all of it. */
static int family_len(const char *name)
{
	const char *dot = strchr(name, '.');

	return dot ? (int)(dot - name) : (int)strlen(name);
}

size_t metrics_render(char *out, size_t len)
{
	struct writer w = { out, len, 0 };
	uint64_t v[KFWD_STAT_MAX + 1];
	const char *family = "";
	int flen = 0;

	stats_snapshot(v);
	for (unsigned int i = KFWD_STAT_UNSPEC + 1; i <= KFWD_STAT_MAX; i++) {
		const struct counter_def *d = &counter_defs[i];
		int n = family_len(d->name);

		/* HELP and TYPE once per family: its members are adjacent in the table. */
		if (n != flen || strncmp(d->name, family, (size_t)n)) {
			family = d->name;
			flen = n;
			emit(&w, "# HELP kfwd_%.*s %s\n# TYPE kfwd_%.*s %s\n", n, d->name, d->help,
			     n, d->name, d->kind == GAUGE ? "gauge" : "counter");
		}
		if (d->label)
			emit(&w, "kfwd_%.*s{%s=\"%s\"} %lu\n", n, d->name, d->label,
			     d->name + n + 1, (unsigned long)v[i]);
		else
			emit(&w, "kfwd_%s %lu\n", d->name, (unsigned long)v[i]);
	}
	return w.used;
}

static void close_conn(struct metrics_conn *c)
{
	loop_del(c->fd);
	close(c->fd);
	c->fd = -1;
	loop_defer_free(c, free);
}

static void on_conn_event(struct loop_handler *h, uint32_t events)
{
	struct metrics_conn *c = (struct metrics_conn *)h;
	char body[METRICS_TEXT_MAX], head[256], sink[4096];
	size_t blen;
	ssize_t n;
	int hlen;

	if (c->fd < 0)
		return;
	/* The request itself does not matter: whatever was asked, the answer is the metrics. */
	n = recv(c->fd, sink, sizeof(sink), 0);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		close_conn(c); /* closed or failed before asking */
		return;
	}
	blen = metrics_render(body, sizeof(body));
	hlen = snprintf(head, sizeof(head),
			"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
			"Content-Length: %zu\r\nConnection: close\r\n\r\n",
			blen);
	/* Both fit in a fresh socket's send buffer (about 10 KB of text); a client that cannot
	 * take them is dropped. */
	if (send(c->fd, head, (size_t)hlen, MSG_NOSIGNAL) == hlen)
		(void)!send(c->fd, body, blen, MSG_NOSIGNAL);
	shutdown(c->fd, SHUT_WR);
	close_conn(c);
}

void metrics_listen_enable(bool on)
{
	if (listen_fd >= 0)
		(void)loop_mod(listen_fd, on ? EPOLLIN : 0, &listen_handler);
}

static void on_metrics_accept(struct loop_handler *h, uint32_t events)
{
	for (int i = 0; i < METRICS_ACCEPT_BATCH; i++) {
		int fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		struct metrics_conn *c;

		if (fd < 0) {
			if (accept_out_of_fds(errno))
				accept_fd_limit(errno);
			return;
		}
		c = calloc(1, sizeof(*c));
		if (!c) {
			close(fd);
			continue;
		}
		c->fd = fd;
		c->h.on_event = on_conn_event;
		if (loop_add(fd, EPOLLIN | EPOLLRDHUP, &c->h) < 0) {
			close(fd);
			free(c);
		}
	}
}

int metrics_open(const struct config *cfg)
{
	if (!cfg->has_metrics)
		return 0;
	listen_fd = listen_socket(&cfg->metrics.addr, cfg->metrics.text);
	if (listen_fd < 0) {
		log_listen_line(cfg, &cfg->metrics);
		return -1;
	}
	listen_handler.on_event = on_metrics_accept;
	accept_pause_with(metrics_listen_enable);
	if (loop_add(listen_fd, EPOLLIN, &listen_handler) < 0) {
		close(listen_fd);
		listen_fd = -1;
		return -1;
	}
	log_info("metrics on %s", cfg->metrics.text);
	return 0;
}

int metrics_listen_fd(void)
{
	return listen_fd;
}

void metrics_close(void)
{
	if (listen_fd < 0)
		return;
	loop_del(listen_fd);
	close(listen_fd);
	listen_fd = -1;
}
