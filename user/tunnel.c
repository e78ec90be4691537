// SPDX-License-Identifier: GPL-2.0
/*
 * Tunnels: after a 101 Switching Protocols or a CONNECT, both flows carry raw bytes, each
 * direction until its source's EOF (half-close propagated), through splice or the sockmap.
 */
#include <errno.h>
#include <sys/socket.h>

#include "log.h"
#include "session.h"
#include "sockmap_path.h"
#include "stats.h"
#include "tunnel.h"

/* After a 101 or a CONNECT: bytes flow both ways, each direction until its source's EOF. */
void tunnel_start(struct session *s)
{
	s->x->tunnel = true;
	s->x->final_response = true;
	s->x->response_started = true;
	s->close_after = true;
	s->x->upstream_reusable = false;
	buf_free(&s->x->req_head);
	flow_start_body(&s->x->req, FRAMING_CLOSE, 0);
	flow_start_body(&s->x->resp, FRAMING_CLOSE, 0);
	stats.tunnels++;
	timer_arm(&s->timer, s->cfg->tunnel_timeout_ms);
	sockmap_session_start_tunnel(s);
}

/*
 * Both directions move independently. When one direction's source ends and everything it sent
 * has gone out, the other side's write half is shut (half-close propagated); the session ends
 * when both directions have ended.
 */
void tunnel_step(struct session *s)
{
	struct flow *flows[2] = { &s->x->req, &s->x->resp };

	for (int i = 0; i < 2; i++) {
		struct flow *f = flows[i];

		if (!f->active)
			continue;
		if (flow_pump(f) != FLOW_OK) {
			log_debug("session %lu: tunnel closed by an error", (unsigned long)s->id);
			session_close(s);
			return;
		}
		if (flow_complete(f)) {
			if (f->dst->xprt->shutdown(f->dst) < 0 && errno != ENOTCONN) {
				session_close(s);
				return;
			}
			f->active = false;
		}
	}
	if (!s->x->req.active && !s->x->resp.active)
		session_close(s);
}
