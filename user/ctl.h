/* SPDX-License-Identifier: GPL-2.0 */
#ifndef KFWD_CTL_H
#define KFWD_CTL_H

/*
 * The control socket (protocol: include/kfwd/ctl.h): a NETLINK_USERSOCK socket in the event
 * loop answering kfwdctl, the owner of the running configuration (route add/del, set and
 * reload swap in a new one; connections keep the one they started with), and the source of
 * monitor events.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "ctl_peers.h"
#include "upstream.h"

/*
 * Take a reference on @cfg as the running configuration and, unless ctl-port-id is off, bind
 * the control socket and publish it in ctl-socket-file. @extra_listens (-l) are applied again
 * on reload. Returns -1 (after logging why) if the port id is taken or the file cannot be
 * written: kfwd must not run unmanageable, or beside a squatter.
 */
int ctl_open(const struct config *cfg, char *const *extra_listens, size_t n_extra);
/* Close the socket, end monitor streams, remove the file if it is still ours, drop the ref. */
void ctl_close(void);
/* Close the control socket (monitors get NLMSG_DONE) and unpublish it; the running configuration
 * stays: a binary upgrade hands a fixed ctl-port-id to the new kfwd. */
void ctl_close_socket(void);
/* The configuration new connections get. */
const struct config *ctl_config(void);
/* SIGTERM: no more configuration changes. */
void ctl_draining(void);
/* SIGHUP: reload like "kfwdctl reload", the result goes to the log. */
void ctl_reload_signal(void);

void ctl_set_peers(const struct ctl_peers *p);
/* In a worker just forked: close the copy of the master's socket, forget its monitors. */
void ctl_forget_after_fork(void);
/* In a worker: put the master's configuration @text in force (as a kfwdctl change would). */
int ctl_apply_text(const char *text, char *err, size_t errlen);
/* In a worker: the master's "upstream drain/enable" (-ENOENT: no such upstream). */
int ctl_upstream_admin(const char *name, const char *server, bool drain);
/* In a worker: server @index of upstream @name as this worker sees it; -ENOENT if none. */
int ctl_server_info(const char *name, size_t index, struct upstream_server_info *info, bool *up);
/* In a worker: kill connection @id; -ENOENT if it has none. */
int ctl_conn_kill(uint64_t id);

#endif
