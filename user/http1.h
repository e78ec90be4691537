/* SPDX-License-Identifier: GPL-2.0 */
#ifndef KFWD_HTTP1_H
#define KFWD_HTTP1_H

#include "session.h"

/* HTTP/1.1 forwarding: `listen ADDR:PORT [http]`. */
extern const struct proto_ops http1_ops;

#endif
