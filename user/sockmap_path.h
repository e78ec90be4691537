/* SPDX-License-Identifier: GPL-2.0 */
#ifndef KFWD_SOCKMAP_PATH_H
#define KFWD_SOCKMAP_PATH_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "http.h"
#include "sockmap.h"

struct session;

/*
 * The daemon's side of the BPF sockmap data path (user/sockmap.c does the BPF work): loaded at
 * start when the configuration asks for it (when it cannot be, kfwd says why once and tunnels
 * use splice), and the session's side of handing a tunnel or a response body over.
 */
void sockmap_path_init(const struct config *cfg);
void sockmap_path_fini(void);
/* A master of workers: pass each event of the ring to @route (the flow ids carry the worker). */
void sockmap_path_route_events(sockmap_event_cb route);
/* In a worker just forked: use the master's program and maps (flow ids tagged @tag), never load. */
void sockmap_path_share_after_fork(uint8_t tag);
/* NULL when the sockmap path is ready, else why not (for logs and kfwdctl status). */
const char *sockmap_path_reason(void);

/*
 * The session's side of the hand-over: a tunnel, or the rest of a response body, moved to the
 * sockmap module; from then on the daemon neither reads nor writes those sockets until the flow
 * is done (s->sockmap).
 */
enum sockmap_step_result {
	SOCKMAP_STEP_RUNNING, /* in the sockmap (or not handed over: splice goes on) */
	SOCKMAP_STEP_RESPONSE_DONE, /* the response body is delivered: the transaction ends */
	SOCKMAP_STEP_CLOSED, /* failed: the session is closed */
};

/* After a 101 or a CONNECT, when the route's data path asks for the sockmap. */
void sockmap_session_start_tunnel(struct session *s);
/* Should this response body go through the sockmap (route, request state, framing)? */
bool sockmap_session_wants_response(const struct session *s, enum body_framing framing,
				    uint64_t length);
/* Hand the rest of the response (head queued, body bytes read) to the sockmap. */
enum sockmap_step_result sockmap_session_start_response(struct session *s);
/* Pump the flow; set the epoll interest (s->sm_events_*) and the timer it asks for. */
enum sockmap_step_result sockmap_session_step(struct session *s);
/* The session timer fired while in the sockmap: idle check. */
void sockmap_session_timeout(struct session *s);
/* Take the flow's counters into the session's and leave the sockmap (session end). */
void sockmap_session_finish(struct session *s);

#endif
