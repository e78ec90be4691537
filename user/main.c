// SPDX-License-Identifier: GPL-2.0
/* kfwd: forwards HTTP/1.1 while body bytes stay in the kernel. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "access_log.h"
#include "accept.h"
#include "apply.h"
#include "config.h"
#include "ctl.h"
#include "log.h"
#include "log_sink.h"
#include "loop.h"
#include "metrics.h"
#include "pipe_pool.h"
#include "proto.h"
#include "privdrop.h"
#include "resolve.h"
#include "sd_notify.h"
#include "session.h"
#include "sockmap.h"
#include "sockmap_path.h"
#include "tls.h"
#include "upgrade.h"
#include "upstream.h"
#include "upstream_pool.h"
#include "workers.h"

#define MAX_LISTEN_ARGS 16
/* The master's drain outlasts its workers' (drain-timeout each) by this much. */
#define WORKERS_DRAIN_GRACE_MS 2000

static const char usage[] =
	"usage: kfwd [-c FILE] [-l ADDR:PORT]... [-x SOCKET] [-t] [-v]\n"
	"  -c FILE       configuration file (default: embedded, url-embedded route on 127.0.0.1:8080)\n"
	"  -l ADDR:PORT  listen address, replaces the config's listen lines (repeatable)\n"
	"  -x SOCKET     binary upgrade: take the listening sockets over from the kfwd running at\n"
	"                SOCKET (its upgrade-socket), which then drains and exits\n"
	"  -t            check the configuration and exit\n"
	"  -v            verbose: log level debug\n";

static struct loop_handler signal_handler;
static int signal_fd = -1;
static struct timer drain_timer;
static bool stopping;

static void on_drain_timeout(struct timer *t)
{
	log_warn("drain timeout: closing %u connections still open", session_count());
	loop_stop();
}

/* Stop accepting and let the connections finish, up to drain-timeout. */
static void drain(const char *why)
{
	stopping = true;
	/* A hand-over is no stop of the service: the new process serves on. */
	if (!upgrade_handed_over())
		sd_notify_stopping();
	if (workers_master())
		log_info("%s: every worker drains (up to %lu ms)", why,
			 (unsigned long)ctl_config()->drain_timeout_ms);
	else
		log_info("%s: no longer accepting; finishing %u connections (up to %lu ms)", why,
			 session_count(), (unsigned long)ctl_config()->drain_timeout_ms);
	ctl_draining();
	listeners_close();
	metrics_close();
	upgrade_close();
	drain_timer.on_expire = on_drain_timeout;
	if (workers_master()) {
		/* The workers drain; the loop stops when the last one exited. */
		timer_arm(&drain_timer, ctl_config()->drain_timeout_ms + WORKERS_DRAIN_GRACE_MS);
		workers_drain();
		return;
	}
	timer_arm(&drain_timer, ctl_config()->drain_timeout_ms);
	session_drain_all();
}

static void begin_shutdown(int sig)
{
	char why[32];

	if (stopping) {
		log_warn("second signal %d: exiting now", sig);
		workers_signal(sig);
		loop_stop();
		return;
	}
	snprintf(why, sizeof(why), "signal %d", sig);
	drain(why);
}

/*
 * A new kfwd took the listening sockets (user/upgrade.c): stop accepting, leave it the BPF pin
 * directory (our program and maps live on through our fds until we exit) and, with a fixed
 * ctl-port-id, the port id; then drain as for SIGTERM.
 */
static void hand_over(void)
{
	if (stopping)
		return;
	sockmap_release_pins();
	if (ctl_config()->ctl_port_id)
		ctl_close_socket();
	drain("binary upgrade");
}

static void on_signal(struct loop_handler *h, uint32_t events)
{
	struct signalfd_siginfo si;

	while (read(signal_fd, &si, sizeof(si)) == sizeof(si)) {
		switch (si.ssi_signo) {
		case SIGTERM:
		case SIGINT:
			begin_shutdown((int)si.ssi_signo);
			break;
		case SIGHUP:
			if (workers_child())
				log_warn("SIGHUP ignored by a worker: send it to the master");
			else
				ctl_reload_signal();
			break;
		case SIGUSR1:
			access_log_reopen(); /* logrotate moved the file */
			workers_signal(SIGUSR1);
			break;
		case SIGCHLD:
			workers_reap();
			break;
		default:
			break;
		}
	}
}

static int setup_signals(void)
{
	sigset_t set;

	/* Broken connections are reported by EPIPE, never by a signal. */
	if (signal(SIGPIPE, SIG_IGN) == SIG_ERR)
		return -1;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGCHLD); /* a worker died (user/workers.c) */
	if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
		return -1;
	signal_fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	if (signal_fd < 0)
		return -1;
	signal_handler.on_event = on_signal;
	return loop_add(signal_fd, EPOLLIN, &signal_handler);
}

static void raise_fd_limit(void)
{
	struct rlimit rl;

	/* Two sockets and two pipes (four fds) per connection: FDS_PER_CONNECTION. */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
			log_warn("RLIMIT_NOFILE: %m");
	}
}

/* A worker (user/workers.c), forked with a fresh loop and its listeners open: serve, clean up. */
static int worker_main(void)
{
	int rc;

	if (loop_add(signal_fd, EPOLLIN, &signal_handler) < 0)
		return 1;
	rc = loop_run() < 0 ? 1 : 0;
	while (session_first())
		session_kill(session_first());
	/* The access log's buffered lines; the rest goes with the process (workers.c). */
	access_log_close();
	listeners_close();
	upstream_pool_flush();
	pipe_pool_flush();
	return rc;
}

/* Long: options, then the start-up sequence in order with its unwinding labels in one place. */
int main(int argc, char **argv)
{
	char *listen_args[MAX_LISTEN_ARGS];
	size_t n_listen = 0;
	const char *config_path = NULL, *takeover = NULL;
	bool check_only = false, verbose = false;
	struct config *cfg;
	char err[512];
	int opt, rc = 1;

	while ((opt = getopt(argc, argv, "c:l:x:tvh")) != -1) {
		switch (opt) {
		case 'c':
			config_path = optarg;
			break;
		case 'l':
			if (n_listen == MAX_LISTEN_ARGS) {
				fprintf(stderr, "kfwd: at most %d -l options\n", MAX_LISTEN_ARGS);
				return 1;
			}
			listen_args[n_listen++] = optarg;
			break;
		case 'x':
			takeover = optarg;
			break;
		case 't':
			check_only = true;
			break;
		case 'v':
			verbose = true;
			break;
		case 'h':
			fputs(usage, stdout);
			return 0;
		default:
			fputs(usage, stderr);
			return 1;
		}
	}
	if (optind != argc) {
		fputs(usage, stderr);
		return 1;
	}

	/* First: the default max-connections follows the limit kfwd runs with. */
	raise_fd_limit();
	cfg = config_load(config_path, listen_args, n_listen, err, sizeof(err));
	if (!cfg) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	/* The protocols are known above the configuration parser (proto.c). */
	if (proto_check_config(cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s\n", err);
		config_free(cfg);
		return 1;
	}
	/* -t: certificates, keys and cipher lists are checked by building the contexts (at start
	 * and reload config_apply builds the ones it serves with). */
	if (check_only && config_wants_tls(cfg)) {
		struct tls_set *tls;

		if (tls_init() < 0) {
			config_free(cfg);
			return 1;
		}
		tls = tls_set_build(cfg, err, sizeof(err));
		if (!tls) {
			fprintf(stderr, "%s\n", err);
			config_free(cfg);
			return 1;
		}
		tls_set_put(tls);
	}
	if (check_only) {
		fprintf(stderr, "%s: configuration ok\n", config_path ? config_path : "<embedded>");
		config_free(cfg);
		return 0;
	}
	klog_level = verbose ? KLOG_DEBUG : cfg->log_level;
	log_sink_open(cfg->log_syslog);

	sd_notify_init();
	if (loop_init() < 0)
		goto out_cfg;
	if (setup_signals() < 0) {
		log_err("signals: %m");
		goto out_loop;
	}
	if (resolve_init() < 0)
		goto out_loop;
	if (takeover && upgrade_takeover(takeover, cfg) < 0)
		goto out_resolve;
	/* Listeners, metrics, the hand-over of a binary upgrade, server state, sockmap, access
	 * log, pools: as at reload (apply.c). From the hand-over on the old kfwd no longer
	 * accepts: what follows must not fail for reasons the old one could have avoided (the
	 * same configuration started it). */
	/* With workers each worker listens, the master keeps the metrics endpoint. */
	config_apply_sockets(cfg->workers == 1, true);
	if (config_apply(cfg, NULL, err, sizeof(err)) < 0) {
		log_err("%s", err);
		goto out_resolve;
	}
	if (ctl_open(cfg, listen_args, n_listen) < 0)
		goto out_sockets;
	if (upgrade_listen(cfg, hand_over) < 0)
		goto out_ctl;
	if (privdrop_apply(cfg) < 0)
		goto out_ctl;
	if (cfg->workers > 1 && workers_start(cfg, worker_main) < 0)
		goto out_ctl;
	log_info("kfwd running: data path %s, pipe-size %zu, watermarks %zu/%zu",
		 data_path_name(cfg->data_path), cfg->pipe_size, cfg->pipe_high_water,
		 cfg->pipe_low_water);
	sd_notify_ready();

	rc = loop_run() < 0 ? 1 : 0;

	while (session_first())
		session_kill(session_first());
	log_info("kfwd stopped");
out_ctl:
	workers_fini();
	upgrade_close();
	ctl_close();
out_sockets:
	access_log_close();
	sockmap_path_fini();
	metrics_close();
	listeners_close();
out_resolve:
	upgrade_takeover_done();
	upstream_pool_flush();
	upstream_fini();
	pipe_pool_flush();
	resolve_fini();
out_loop:
	if (signal_fd >= 0)
		close(signal_fd);
	loop_fini();
out_cfg:
	sd_notify_fini();
	config_put(cfg);
	log_sink_close();
	return rc;
}
