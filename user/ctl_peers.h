/* SPDX-License-Identifier: GPL-2.0 */
#ifndef KFWD_CTL_PEERS_H
#define KFWD_CTL_PEERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "upstream.h"

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

#endif
