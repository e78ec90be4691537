// SPDX-License-Identifier: GPL-2.0
/*
 * C unit tests of the mechanisms the session is built from: the retry policy (pure), the
 * flow FIFO (user buffer, pipe, pending buffer) over real loopback TCP sockets, through a
 * transport that splices and one that cannot, and the control socket's configuration text
 * editing (pure).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <llhttp.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "config.h"
#include "config_edit.h"
#include "flow.h"
#include "pipe_pool.h"
#include "retry.h"
#include "unit.h"
#include "xprt.h"

#define FIFO_BODY (3 * 1024 * 1024) /* several pipe fills and pauses */
#define FIFO_POLL_MS 2000
#define SMALL_SOCKBUF 16384

void test_retry_policy(void)
{
	struct route r = {
		.retries = 2,
		.retry_on = RETRY_ON_CONNECT | RETRY_ON_5XX,
		.retry_backoff_ms = 100,
		.retry_backoff_max_ms = 1000,
	};
	struct retry_attempt a = { .method = HTTP_GET };

	CHECK(http_method_idempotent(HTTP_PUT) && !http_method_idempotent(HTTP_POST));
	CHECK(retry_allowed(&r, TRIGGER_CONNECT, &a));
	CHECK(retry_allowed(&r, TRIGGER_5XX, &a));
	CHECK(!retry_allowed(&r, TRIGGER_TIMEOUT, &a)); /* not in retry-on */
	CHECK(!retry_allowed(NULL, TRIGGER_CONNECT, &a));
	a.attempts = 2;
	CHECK(!retry_allowed(&r, TRIGGER_CONNECT, &a)); /* retries used up */
	a.attempts = 0;
	a.response_started = true;
	CHECK(!retry_allowed(&r, TRIGGER_CONNECT, &a));
	a.response_started = false;
	a.draining = true;
	CHECK(!retry_allowed(&r, TRIGGER_CONNECT, &a));
	a.draining = false;
	/* A POST may be retried only when it never left, unless the route says otherwise. */
	a.method = HTTP_POST;
	CHECK(retry_allowed(&r, TRIGGER_CONNECT, &a));
	CHECK(!retry_allowed(&r, TRIGGER_5XX, &a));
	r.retry_non_idempotent = true;
	CHECK(retry_allowed(&r, TRIGGER_5XX, &a));
	/* A body already forwarded cannot be sent again. */
	a.has_body = true;
	CHECK(!retry_allowed(&r, TRIGGER_5XX, &a));
	CHECK(retry_allowed(&r, TRIGGER_CONNECT, &a));

	CHECK(retry_backoff_ceiling(&r, 1) == 100);
	CHECK(retry_backoff_ceiling(&r, 2) == 200);
	CHECK(retry_backoff_ceiling(&r, 4) == 800);
	CHECK(retry_backoff_ceiling(&r, 5) == 1000); /* capped */
	CHECK(retry_backoff_ceiling(&r, 40) == 1000);
	CHECK(retry_backoff_pick(0, 12345) == 0);
	CHECK(retry_backoff_pick(100, 100) == 100 && retry_backoff_pick(100, 101) == 0);
}

/* A connected loopback TCP pair: *a writes, *b reads (both non-blocking). */
static int tcp_pair(int *a, int *b)
{
	struct sockaddr_in sin = { .sin_family = AF_INET,
				   .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sin);
	int l = socket(AF_INET, SOCK_STREAM, 0);

	*a = *b = -1;
	if (l < 0)
		return -1;
	if (bind(l, (struct sockaddr *)&sin, sizeof(sin)) < 0 || listen(l, 1) < 0 ||
	    getsockname(l, (struct sockaddr *)&sin, &len) < 0)
		goto fail;
	*a = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	if (*a < 0 || (connect(*a, (struct sockaddr *)&sin, len) < 0 && errno != EINPROGRESS))
		goto fail;
	*b = accept4(l, NULL, NULL, SOCK_NONBLOCK);
	if (*b < 0)
		goto fail;
	close(l);
	return 0;
fail:
	close(l);
	if (*a >= 0)
		close(*a);
	*a = -1;
	return -1;
}

static unsigned char pattern(size_t i)
{
	return (unsigned char)(i * 7 + i / 4099);
}

struct fifo_run {
	int src_w, dst_r; /* the test's ends */
	struct endpoint src, dst; /* the flow's ends */
	struct flow f;
	size_t written, read, bad;
};

/* Write what the source socket takes, pump, read what the destination got; check order. */
static void fifo_round(struct fifo_run *r, const char *head, size_t head_len)
{
	unsigned char buf[65536];
	ssize_t n;

	while (r->written < FIFO_BODY) {
		size_t want = FIFO_BODY - r->written < sizeof(buf) ? FIFO_BODY - r->written :
								     sizeof(buf);

		for (size_t i = 0; i < want; i++)
			buf[i] = pattern(r->written + i);
		n = send(r->src_w, buf, want, MSG_NOSIGNAL);
		if (n <= 0)
			break;
		r->written += (size_t)n;
	}
	r->src.readable = true;
	r->dst.writable = true;
	CHECK(flow_pump(&r->f) == FLOW_OK);
	while ((n = recv(r->dst_r, buf, sizeof(buf), 0)) > 0) {
		for (ssize_t i = 0; i < n; i++, r->read++) {
			unsigned char want = r->read < head_len ? (unsigned char)head[r->read] :
								  pattern(r->read - head_len);

			r->bad += buf[i] != want;
		}
	}
}

static bool never_splice(const struct endpoint *e)
{
	return false;
}

/*
 * max-memory during a FIFO run: once the allowance has grown past the fair share of two flows,
 * another charge takes the budget over, so the flow must shrink to that share; the bytes it
 * already holds stay in order.
 */
struct budget_probe {
	struct mem_charge other;
	size_t grown; /* the allowance before the squeeze */
	size_t squeezed; /* after */
};

static void budget_round(struct budget_probe *b, struct fifo_run *r)
{
	if (!b || b->other.on || r->read < FIFO_BODY * 2 / 3)
		return;
	b->grown = r->f.allow;
	mem_budget_join(&b->other, mem_budget.budget);
	CHECK(mem_budget_over());
	flow_budget_check(&r->f);
	b->squeezed = r->f.allow;
}

/* Through @x on both ends; the body goes through the pipe exactly when @spliced. */
static void flow_fifo_over(const struct xprt_ops *x, bool spliced, struct budget_probe *b)
{
	static const char head[] = "HTTP/1.1 200 OK\r\nContent-Length: 3145728\r\n\r\n";
	const size_t head_len = sizeof(head) - 1;
	char err[256];
	struct config *cfg = config_load_text(NULL,
					      "listen 127.0.0.1:1\nroute /http/ url-embedded\n"
					      "pipe-size 64k\npipe-high-water 64k\n"
					      "pipe-low-water 32k\n",
					      NULL, 0, err, sizeof(err));
	struct fifo_run r = { .src_w = -1, .dst_r = -1 };
	int src_r = -1, dst_w = -1;

	CHECK(cfg != NULL);
	if (!cfg)
		return;
	pipe_pool_configure(cfg->pipe_size, 4);
	if (tcp_pair(&r.src_w, &src_r) < 0 || tcp_pair(&dst_w, &r.dst_r) < 0) {
		CHECK(!"loopback TCP pairs");
		goto out;
	}
	/* Small kernel buffers on the way out, so the FIFO fills and pauses. */
	(void)setsockopt(dst_w, SOL_SOCKET, SO_SNDBUF, &(int){ SMALL_SOCKBUF }, sizeof(int));
	(void)setsockopt(r.dst_r, SOL_SOCKET, SO_RCVBUF, &(int){ SMALL_SOCKBUF }, sizeof(int));
	r.src.fd = src_r;
	r.dst.fd = dst_w;
	r.src.xprt = r.dst.xprt = x;
	flow_init(&r.f, DIR_RESPONSE, &r.src, &r.dst, cfg);
	/* A head in the user stage, then a Content-Length body through the pipe: the bytes
	 * must come out in order, with the level never above the high-water mark. */
	CHECK(flow_push(&r.f, head, head_len) == 0);
	flow_start_body(&r.f, FRAMING_LENGTH, FIFO_BODY);
	for (int i = 0; i < 100000 && r.read < head_len + FIFO_BODY; i++) {
		struct pollfd p = { .fd = r.dst_r, .events = POLLIN };

		fifo_round(&r, head, head_len);
		budget_round(b, &r);
		CHECK(flow_level(&r.f) <= flow_high_water(&r.f) || (b && b->squeezed));
		/* Growing alone, the flow never takes the sum past the budget. */
		CHECK(!b || b->other.on || mem_budget.held <= mem_budget.budget);
		if (r.read < head_len + FIFO_BODY)
			(void)poll(&p, 1, FIFO_POLL_MS);
	}
	CHECK(r.read == head_len + FIFO_BODY);
	CHECK(r.bad == 0);
	CHECK(flow_complete(&r.f));
	CHECK((r.f.bytes_spliced > 0) == spliced);
	CHECK(spliced || r.f.bytes_copied >= FIFO_BODY); /* else the bounded copy path */
	CHECK(r.f.pauses > 0 && r.f.resumes == r.f.pauses);
	flow_finish(&r.f);
out:
	for (size_t i = 0; i < 4; i++) {
		int fd = (int[]){ r.src_w, src_r, dst_w, r.dst_r }[i];

		if (fd >= 0)
			close(fd);
	}
	pipe_pool_flush();
	config_free(cfg);
}

void test_flow_fifo(void)
{
	struct xprt_ops no_splice = xprt_raw;

	flow_fifo_over(&xprt_raw, true, NULL);
	/* A transport that cannot splice (TLS) gets the copy path, same bytes, same bounds. */
	no_splice.can_splice = never_splice;
	flow_fifo_over(&no_splice, false, NULL);
}

void test_flow_budget(void)
{
	struct budget_probe b = { 0 };
	struct mem_charge small = { 0 };
	const size_t budget = 1 << 20;

	mem_budget_configure(budget);
	flow_fifo_over(&xprt_raw, true, &b);
	/* grew from the floor while dst drained, then squeezed to the fair share of two */
	CHECK(b.grown > MEM_BUDGET_FLOOR);
	CHECK(b.grown > budget / 2);
	CHECK(b.squeezed == budget / 2);
	CHECK(mem_budget.flows == 1 && mem_budget.held == b.other.bytes);
	mem_budget_leave(&b.other);
	CHECK(mem_budget.flows == 0 && mem_budget.held == 0);
	/* A grant adds no more than what the budget has left, and never takes anything away. */
	mem_budget_join(&b.other, budget - 4096);
	CHECK(mem_budget_grant(MEM_BUDGET_FLOOR, 4 * MEM_BUDGET_FLOOR) == MEM_BUDGET_FLOOR + 4096);
	CHECK(mem_budget_grant(MEM_BUDGET_FLOOR, MEM_BUDGET_FLOOR + 100) == MEM_BUDGET_FLOOR + 100);
	mem_budget_update(&b.other, budget + 1);
	CHECK(mem_budget_free() == 0);
	CHECK(mem_budget_grant(MEM_BUDGET_FLOOR, 4 * MEM_BUDGET_FLOOR) == MEM_BUDGET_FLOOR);
	CHECK(mem_budget_grant(2 * MEM_BUDGET_FLOOR, MEM_BUDGET_FLOOR) == 2 * MEM_BUDGET_FLOOR);
	mem_budget_leave(&b.other);
	/* A flow below its share refused room: those above theirs shrink once less than the
	 * floor is left, and stop when a flow ends. */
	mem_budget_join(&b.other, budget - 100 * 1024);
	mem_budget_join(&small, MEM_BUDGET_FLOOR);
	CHECK(!mem_budget_over());
	CHECK(mem_budget_grant(MEM_BUDGET_FLOOR, 2 * MEM_BUDGET_FLOOR) ==
	      MEM_BUDGET_FLOOR + 36 * 1024);
	CHECK(mem_budget_over());
	mem_budget_leave(&small);
	CHECK(!mem_budget_over());
	mem_budget_leave(&b.other);
	mem_budget_configure(0);
}

/* Configuration text editing: the runtime marker, deletions, set's replacements, options. */
void test_config_edit(void)
{
	static const char file[] = "listen 127.0.0.1:80\n"
				   "route /a up1 retries=2 # note\n"
				   "route /b up2";
	const char *set_keys[] = { "log-level" };
	struct config_edit add = { .append = "route /c up3 host=x\n" };
	struct config_edit del = { .del_line = 2 };
	struct config_edit set = { .drop_keys = set_keys,
				   .n_drop = 1,
				   .append = "log-level debug\n" };
	char *t1, *t2, *t3, *t4, line[64], out[128];

	/* A text without the marker: every line is the file's, no runtime changes. */
	CHECK(!config_edit_runtime_start(file));
	CHECK(config_edit_base_lines(file) == 3);
	CHECK(config_edit_runtime_changes(file) == 0);
	CHECK(config_edit_line(file, 3, line, sizeof(line)) && !strcmp(line, "route /b up2"));
	CHECK(!config_edit_line(file, 4, line, sizeof(line)));

	/* route add: the marker, then the line; the file's last line gains its newline. */
	t1 = config_edit_text(file, &add);
	CHECK(t1 && !strcmp(t1, "listen 127.0.0.1:80\nroute /a up1 retries=2 # note\n"
				"route /b up2\n" CONFIG_EDIT_MARKER "\nroute /c up3 host=x\n"));
	CHECK(t1 && config_edit_base_lines(t1) == 4 && config_edit_runtime_changes(t1) == 1);
	CHECK(t1 && !strcmp(config_edit_runtime_start(t1), "route /c up3 host=x\n"));

	/* route del of a line of the file comments it out (the line numbers stay). */
	t2 = t1 ? config_edit_text(t1, &del) : NULL;
	CHECK(t2 && config_edit_line(t2, 2, out, sizeof(out)) &&
	      !strcmp(out, CONFIG_EDIT_DELETED "route /a up1 retries=2 # note"));
	CHECK(t2 && config_edit_base_lines(t2) == 4);

	/* route del of a runtime line drops it. */
	del.del_line = 5;
	t3 = t2 ? config_edit_text(t2, &del) : NULL;
	CHECK(t3 && config_edit_runtime_changes(t3) == 0 && !strstr(t3, "/c up3"));

	/* set twice: the second replaces the first among the runtime lines only. */
	t4 = t3 ? config_edit_text(t3, &set) : NULL;
	free(t3);
	t3 = t4 ? config_edit_text(t4, &set) : NULL;
	CHECK(t3 && config_edit_runtime_changes(t3) == 1);
	CHECK(t3 && strstr(t3, "log-level debug\n") &&
	      !strstr(strstr(t3, "log-level") + 1, "log-level"));
	free(t1);
	free(t2);
	free(t3);
	free(t4);

	CHECK(config_edit_first_word_is("  log-level info", 16, "log-level"));
	CHECK(!config_edit_first_word_is("log-levels info", 15, "log-level"));
	CHECK(config_edit_first_word_is("\tlog-level\r", 11, "log-level"));

	config_edit_route_options("route /a up1 retries=2  timeout=5 # note", out, sizeof(out));
	CHECK(!strcmp(out, "retries=2 timeout=5"));
	config_edit_route_options("route /a up1", out, sizeof(out));
	CHECK(!strcmp(out, ""));
	config_edit_route_options(
		"route /cam cams strip-prefix auth=cam:s3cret on-slow=drop-frames", out,
		sizeof(out));
	CHECK(!strcmp(out, "strip-prefix auth=*** on-slow=drop-frames"));

	/* Errors on runtime lines lose the file's name and line; others are kept. */
	t1 = config_edit_text(file, &add);
	config_edit_explain_error("/etc/kfwd.conf:5: unknown upstream up3", "/etc/kfwd.conf", t1,
				  out, sizeof(out));
	CHECK(!strcmp(out, "unknown upstream up3"));
	config_edit_explain_error("/etc/kfwd.conf:2: bad", "/etc/kfwd.conf", t1, out, sizeof(out));
	CHECK(!strcmp(out, "/etc/kfwd.conf:2: bad"));
	config_edit_explain_error("other: bad", "/etc/kfwd.conf", t1, out, sizeof(out));
	CHECK(!strcmp(out, "other: bad"));
	free(t1);
}

/* Drain what @fd holds now; the bytes read. */
static size_t drain_socket(int fd)
{
	char buf[65536];
	size_t total = 0;
	ssize_t n;

	while ((n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT)) > 0)
		total += (size_t)n;
	return total;
}

/*
 * A protocol that fills a flow itself (RTSP): flow_hold_full() pauses it at the high-water
 * mark, flow_flush() delivers in order and resumes it under the low-water mark.
 */
void test_flow_hold(void)
{
	char err[256], chunk[4096];
	struct config *cfg = config_load_text(NULL,
					      "listen 127.0.0.1:1\nroute /http/ url-embedded\n"
					      "copy-buffer-size 64k\n",
					      NULL, 0, err, sizeof(err));
	struct endpoint src = { .fd = -1 }, dst = { .fd = -1 };
	struct flow f;
	int w = -1, r = -1;
	size_t pushed = 0, got = 0;

	CHECK(cfg != NULL);
	if (!cfg || tcp_pair(&w, &r) < 0) {
		CHECK(!"loopback TCP pair");
		goto out;
	}
	(void)setsockopt(w, SOL_SOCKET, SO_SNDBUF, &(int){ SMALL_SOCKBUF }, sizeof(int));
	dst.fd = w;
	dst.xprt = src.xprt = &xprt_raw;
	flow_init(&f, DIR_RESPONSE, &src, &dst, cfg);
	memset(chunk, 'x', sizeof(chunk));
	/* Nobody reads: the flow fills to its high-water mark and pauses there. */
	while (!flow_hold_full(&f) && pushed < (4u << 20)) {
		CHECK(flow_push(&f, chunk, sizeof(chunk)) == 0);
		pushed += sizeof(chunk);
		dst.writable = true;
		CHECK(flow_flush(&f) == FLOW_OK);
	}
	CHECK(f.paused && f.pauses == 1);
	CHECK(flow_level(&f) >= flow_high_water(&f));
	/* The reader drains: the flow delivers everything and resumes. */
	for (int i = 0; i < 1000 && got < pushed; i++) {
		struct pollfd p = { .fd = r, .events = POLLIN };

		(void)poll(&p, 1, FIFO_POLL_MS);
		got += drain_socket(r);
		dst.writable = true;
		CHECK(flow_flush(&f) == FLOW_OK);
	}
	CHECK(got == pushed);
	CHECK(!f.paused && f.resumes == 1 && flow_level(&f) == 0);
	flow_finish(&f);
out:
	if (w >= 0)
		close(w);
	if (r >= 0)
		close(r);
	config_free(cfg);
}
