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

/*
 * Worker processes (user/workers.c): the master's control socket answers for them. A master
 * registers how to reach them; each worker applies what the master sends with the calls below.
 */
struct ctl_peers {
	/* @cfg is in force here: put it in force in every worker; -1 with @err if one failed. */
	int (*config_changed)(const struct config *cfg, char *err, size_t errlen);
	/* 0 if a worker had connection @id and killed it, else -ENOENT. */
	int (*conn_kill)(uint64_t id);
	void (*upstream_admin)(const char *name, const char *server, bool drain);
	unsigned int (*sessions)(void); /* open connections of all workers */
	/* Records of the workers' connections with ids below @below, ids descending, as many as
	 * fit in @size bytes (at least one if there is one); 0 when there are none. */
	size_t (*conns)(uint64_t below, void *buf, size_t size);
	/* Add the workers' view of server @index of upstream @name: connections and failures
	 * summed, down (*@up false) if down in any worker, for the longest. */
	void (*server_info)(const char *name, size_t index, struct upstream_server_info *info,
			    bool *up);
};

/* One connection in ctl_peers.conns and ctl_conn_records: its KFWD_A_CONN nest follows,
 * padded to 8 bytes; the next record starts CTL_CONN_RECORD_SIZE(len) later. */
struct ctl_conn_record {
	uint64_t id;
	uint32_t len; /* of the nest */
	uint32_t pad;
};

#define CTL_CONN_RECORD_SIZE(len) \
	(sizeof(struct ctl_conn_record) + (((size_t)(len) + 7) & ~(size_t)7))

/* Room for the records of one round trip to a worker. */
#define CTL_CONN_RECORDS_MAX (64 * 1024)

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
/* In a worker: this process's connections with ids below @below, as ctl_peers.conns. */
size_t ctl_conn_records(uint64_t below, void *buf, size_t size);

#endif
