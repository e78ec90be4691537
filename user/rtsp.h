/* SPDX-License-Identifier: GPL-2.0 */
#ifndef KFWD_RTSP_H
#define KFWD_RTSP_H

#include "session.h"

/* `listen ADDR:PORT rtsp`: RTSP/1.0 clients forwarded to RTSP servers (user/rtsp.c). */
extern const struct proto_ops rtsp_ops;

#endif
