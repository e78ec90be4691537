/* SPDX-License-Identifier: GPL-2.0 */
#ifndef KFWD_RTSP_GATEWAY_H
#define KFWD_RTSP_GATEWAY_H

#include <stddef.h>

#include "session.h"

/* The HTTP->RTSP gateway's protocol operations: a session switches to them at its request. */
extern const struct proto_ops rtsp_gateway_ops;

/*
 * A GET or HEAD on a `rtsp-gateway` route (@r): @target is the request-target's path and query.
 * The session's protocol becomes the gateway's, which plays the RTSP URL named after the
 * route's prefix and answers the client with its MPEG-TS (or an error).
 */
void rtsp_gateway_start(struct session *s, const struct route *r, const char *target, size_t len);

#endif
