/* SPDX-License-Identifier: GPL-2.0 */
#ifndef KFWD_PRIVDROP_H
#define KFWD_PRIVDROP_H

#include "config.h"

/*
 * `user`/`group`: become @cfg's user and group, keeping only the capabilities kfwd uses at run
 * time, with no way back (bounding set cut, PR_SET_NO_NEW_PRIVS). Called once, after every
 * privileged start-up step. Without `user` it does nothing. Returns -1 (logged) on failure:
 * kfwd must not run with more privileges than it was told to keep.
 */
int privdrop_apply(const struct config *cfg);

#endif
