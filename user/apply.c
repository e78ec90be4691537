// SPDX-License-Identifier: GPL-2.0
/* Putting a configuration in force, the same steps at start-up and at reload (see apply.h). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "accept.h"
#include "access_log.h"
#include "apply.h"
#include "log.h"
#include "log_sink.h"
#include "mem_budget.h"
#include "metrics.h"
#include "pipe_pool.h"
#include "proto.h"
#include "sockmap_path.h"
#include "tls.h"
#include "upgrade.h"
#include "upstream.h"
#include "upstream_pool.h"

/* Which sockets this process owns: all of them, or a master's metrics / a worker's listeners. */
static bool own_listeners = true, own_metrics = true;

void config_apply_sockets(bool listeners, bool metrics)
{
	own_listeners = listeners;
	own_metrics = metrics;
}

static bool metrics_differ(const struct config *a, const struct config *b)
{
	if (a->has_metrics != b->has_metrics)
		return true;
	return a->has_metrics && strcmp(a->metrics.text, b->metrics.text);
}

/* Reopen @old's metrics endpoint after a failed swap; logged, since nobody else can say it. */
static void metrics_restore(const struct config *old)
{
	metrics_close();
	if (metrics_open(old) < 0)
		log_err("metrics endpoint %s could not be reopened", old->metrics.text);
}

static void close_sockets(void)
{
	metrics_close();
	listeners_close();
}

/* The sockets: what can fail. All or nothing. */
static int open_sockets(const struct config *ncfg, const struct config *old, char *err,
			size_t errlen)
{
	bool metrics_changed = own_metrics && (!old || metrics_differ(old, ncfg));

	if (!old && own_listeners && listeners_open(ncfg) < 0) {
		snprintf(err, errlen, "cannot listen (see the log)");
		return -EADDRNOTAVAIL;
	}
	if (metrics_changed) {
		if (old)
			metrics_close();
		if (metrics_open(ncfg) < 0) {
			snprintf(err, errlen, "metrics-listen %s: cannot listen (see the log)",
				 ncfg->metrics.text);
			if (old)
				metrics_restore(old);
			else
				listeners_close();
			return -EADDRNOTAVAIL;
		}
	}
	if (old && own_listeners && listeners_update(ncfg, err, errlen) < 0) {
		if (metrics_changed)
			metrics_restore(old);
		return -EADDRNOTAVAIL;
	}
	return 0;
}

int config_apply(struct config *ncfg, const struct config *old, char *err, size_t errlen)
{
	struct tls_set *tls = NULL;
	int rc;

	if (proto_check_config(ncfg, err, errlen) < 0)
		return -EINVAL;
	/* The TLS contexts first: certificates that do not load leave the old ones serving. */
	if (config_wants_tls(ncfg)) {
		if (tls_init() < 0) {
			snprintf(err, errlen, "OpenSSL could not be initialised");
			return -EIO;
		}
		tls = tls_set_build(ncfg, err, errlen);
		if (!tls)
			return -EINVAL;
	}
	if (upstream_attach(ncfg) < 0) {
		tls_set_put(tls);
		snprintf(err, errlen, "out of memory for the upstream servers' state");
		return -ENOMEM;
	}
	rc = open_sockets(ncfg, old, err, errlen);
	if (rc < 0) {
		tls_set_put(tls);
		return rc;
	}
	/* Connections accepted from now on use the new contexts; open ones keep theirs. */
	tls_install(tls);
	/* Start-up by binary upgrade (-x): the old kfwd stops accepting and gives up its BPF pins
	 * and a fixed ctl-port-id once our sockets are set up; what follows needs them. Without
	 * -x this does nothing. */
	if (!old && upgrade_ready() < 0) {
		snprintf(err, errlen, "upgrade: the old kfwd did not hand over (see the log)");
		close_sockets();
		return -EIO;
	}
	if (!old)
		upgrade_takeover_done();
	/* A data-path or route mode that now asks for sockmap loads it (no-op otherwise). */
	sockmap_path_init(ncfg);
	/* Like nginx: an access log that cannot be opened at start is a configuration error; at
	 * reload its lines are dropped and counted (access_log_configure logs why). */
	if (access_log_configure(ncfg) < 0 && !old) {
		snprintf(err, errlen, "access-log: cannot be opened (see the log)");
		sockmap_path_fini();
		close_sockets();
		return -EIO;
	}
	/* At start-up main.c opened the log sink before anything could log. */
	if (old && strcmp(ncfg->log_syslog, old->log_syslog))
		log_sink_open(ncfg->log_syslog);
	if (!old || ncfg->pipe_size != old->pipe_size)
		pipe_pool_configure(ncfg->pipe_size, PIPE_POOL_MAX);
	/* Flows keep what they were granted; new grants and fair shares follow the new budget. */
	mem_budget_configure(ncfg->max_memory);
	if (!old || ncfg->upstream_max_idle != old->upstream_max_idle ||
	    ncfg->upstream_idle_timeout_ms != old->upstream_idle_timeout_ms)
		upstream_pool_configure(ncfg->upstream_max_idle, ncfg->upstream_idle_timeout_ms);
	/* At start-up main.c has set the level already (-v overrides the configuration). */
	if (old && ncfg->log_level != old->log_level)
		klog_level = ncfg->log_level;
	return 0;
}
