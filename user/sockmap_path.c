// SPDX-License-Identifier: GPL-2.0
#include <stdio.h>
#include <sys/epoll.h>

#include "log.h"
#include "loop.h"
#include "sockmap.h"
#include "sockmap_path.h"

static char reason[256] = "not enabled: no data-path or route mode asks for sockmap";
static struct loop_handler event_handler;
static bool event_registered;

static void on_ring_event(struct loop_handler *h, uint32_t events)
{
	/* Each flow's owner hears of its events through sockmap_flow_args.on_event. */
	if (sockmap_handle_events(NULL, NULL) < 0)
		log_warn("sockmap: reading the event ring failed");
}

void sockmap_path_init(const struct config *cfg)
{
	int fd;

	if (sockmap_ready() || !config_wants_sockmap(cfg))
		return;
	if (sockmap_init(cfg->bpf_pin_dir, reason, sizeof(reason)) < 0) {
		log_warn("sockmap data path unavailable (%s): tunnels use splice", reason);
		return;
	}
	fd = sockmap_event_fd();
	event_handler.on_event = on_ring_event;
	if (fd < 0 || loop_add(fd, EPOLLIN, &event_handler) < 0) {
		snprintf(reason, sizeof(reason), "event ring not pollable");
		log_warn("sockmap data path unavailable (%s): tunnels use splice", reason);
		sockmap_shutdown();
		return;
	}
	event_registered = true;
	reason[0] = '\0';
	log_info("sockmap data path ready, pinned under %s", cfg->bpf_pin_dir);
}

void sockmap_path_fini(void)
{
	if (!sockmap_ready())
		return;
	if (event_registered)
		loop_del(sockmap_event_fd());
	event_registered = false;
	sockmap_shutdown();
}

const char *sockmap_path_reason(void)
{
	return sockmap_ready() ? NULL : reason;
}
