/* SPDX-License-Identifier: GPL-2.0 */
#ifndef KFWD_PROTO_H
#define KFWD_PROTO_H

#include <stddef.h>

#include "config.h"
#include "session.h"

/*
 * The protocols a listener may speak (listen ADDR:PORT [PROTO]). Adding one: a file with its
 * struct proto_ops and a line in proto.c's table.
 */
const struct proto_ops *proto_find(const char *name);
/* Every listen line names a known protocol; else -1 and "FILE:LINE: ..." in @err. */
int proto_check_config(const struct config *cfg, char *err, size_t errlen);

#endif
