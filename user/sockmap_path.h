/* SPDX-License-Identifier: GPL-2.0 */
#ifndef KFWD_SOCKMAP_PATH_H
#define KFWD_SOCKMAP_PATH_H

#include "config.h"

/*
 * The daemon's side of the BPF sockmap data path (user/sockmap.c does the BPF work): loaded at
 * start when the configuration asks for it; when it cannot be, kfwd says why once and tunnels
 * use splice.
 */
void sockmap_path_init(const struct config *cfg);
void sockmap_path_fini(void);
/* NULL when the sockmap path is ready, else why not (for logs and kfwdctl status). */
const char *sockmap_path_reason(void);

#endif
