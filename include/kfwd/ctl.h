/* SPDX-License-Identifier: GPL-2.0 */
/*
 * kfwd control protocol: kfwdctl <-> kfwd over a NETLINK_USERSOCK socket.
 *
 * Transport
 *   AF_NETLINK, SOCK_RAW, NETLINK_USERSOCK. The daemon binds a port id (ctl-port-id: by
 *   default its own pid, so several instances never collide; or a fixed number) and publishes
 *   "portid=N pid=P\n" in a root-owned file (ctl-socket-file, default KFWD_CTL_FILE_DEFAULT);
 *   "portid=N pid=P uid=U\n" when it drops to a user (answers then carry uid U).
 *   The bind fails if the id is taken, and so does kfwd's start. Clients autobind (nl_pid 0) and send with
 *   sendmsg() to { AF_NETLINK, nl_pid = port id, nl_groups = 0 }. Both ends set SO_PASSCRED,
 *   so every datagram arrives with SCM_CREDENTIALS filled in by the kernel (pid, uid, gid of
 *   the sender; a process cannot claim credentials it does not have).
 *
 * Authentication (any local user can send to the daemon, and any user can bind its port id
 * while it is down)
 *   daemon: read-only commands (KFWD_CTL_CMD_READONLY) from uid 0 or from a member of
 *     ctl-group (real gid, or supplementary group of the sending process); every other
 *     command from uid 0 only. Anything else: NLMSG_ERROR -EPERM with a message.
 *   kfwdctl: accepts a datagram only from the daemon's port id with credentials uid 0 and,
 *     when the pid is known (from the file), that pid. Anything else is an impostor.
 *
 * Messages
 *   struct nlmsghdr, then attributes (struct nlattr TLVs, 4-byte aligned, no family header).
 *   nlmsg_type is a command (enum kfwd_ctl_cmd) or NLMSG_ERROR / NLMSG_DONE. Requests carry
 *   NLM_F_REQUEST (the daemon ignores anything without it, and never answers NLMSG_ERROR or
 *   NLMSG_DONE, so two peers cannot loop), a sequence number echoed in every answer, and
 *   KFWD_A_VERSION == KFWD_CTL_VERSION. Several messages may share one datagram.
 *
 *   Every attribute is validated (type and length; strings NUL-terminated, no embedded NUL,
 *   at most KFWD_CTL_STR_MAX bytes) before use; a TLV that runs past its container, bytes
 *   left over after the last TLV, a repeated single attribute or nesting deeper than
 *   KFWD_CTL_MAX_DEPTH reject the message. Attribute types this side does not know are
 *   skipped (forward compatibility); a different KFWD_A_VERSION is refused.
 *
 * Answers
 *   single object  (STATUS, STATS): one message of the request's type.
 *   dump           (CONN_LIST, ROUTE_LIST, UPSTREAM_LIST): messages of the request's type
 *                  with NLM_F_MULTI, one object each, several per datagram, then NLMSG_DONE
 *                  (payload: int 0, then attributes). A dump answers one page (about
 *                  KFWD_CTL_DUMP_PAGE bytes); when more remains, NLMSG_DONE carries
 *                  KFWD_A_CURSOR and the client asks again with that cursor. The daemon
 *                  never blocks on a slow reader: an answer that does not fit in the
 *                  client's receive buffer is dropped and counted. NLM_F_DUMP_INTR on
 *                  NLMSG_DONE: the configuration changed between pages (list again).
 *   action         (CONN_KILL, ROUTE_*, UPSTREAM_DRAIN/ENABLE, SET, RELOAD, MONITOR):
 *                  NLMSG_ERROR with error 0 (an ACK), always, NLM_F_ACK or not; it may carry
 *                  NLMSGERR_ATTR_MSG with a note (a warning, what changed).
 *   error          NLMSG_ERROR, error = -errno, NLM_F_CAPPED (only the request's header is
 *                  echoed), NLM_F_ACK_TLVS with NLMSGERR_ATTR_MSG (a sentence for humans)
 *                  and, for a bad attribute, NLMSGERR_ATTR_OFFS (its offset from the start of
 *                  the request's nlmsghdr).
 *
 *   errno: EPERM not allowed, EINVAL malformed or invalid value, EPROTO wrong version,
 *   EOPNOTSUPP unknown command, ENOENT no such connection/route/upstream/server,
 *   EBUSY draining or too many monitors, EMSGSIZE datagram too large, others from the
 *   operation (reload: the FILE:LINE message; listen: the bind error).
 *
 * Monitor
 *   KFWD_CMD_MONITOR (read-only) subscribes the sender's port id: after the ACK the daemon
 *   sends KFWD_CMD_EVENT messages (one KFWD_A_EVENT each, seq = the MONITOR request's) until
 *   a send fails with ECONNREFUSED (the subscriber is gone). At most KFWD_CTL_MAX_SUBSCRIBERS.
 *   Events that do not fit in the subscriber's receive buffer are dropped; the next event
 *   delivered carries KFWD_EV_LOST. A heartbeat every KFWD_CTL_HEARTBEAT_MS lets both sides
 *   notice that the other one is gone.
 */
#ifndef KFWD_CTL_PROTO_H
#define KFWD_CTL_PROTO_H

#include <linux/netlink.h>

#include "kfwd/counters.h"

#define KFWD_CTL_VERSION 1
#define KFWD_CTL_NETLINK NETLINK_USERSOCK
#define KFWD_CTL_PORT_ID_MAX 0x7fffffffu /* larger ids are the kernel's autobind range */
#define KFWD_CTL_FILE_DEFAULT "/run/kfwd/ctl"
#define KFWD_CTL_MSG_MAX 16384 /* largest datagram either side sends */
#define KFWD_CTL_RECV_MAX 65536 /* largest datagram the daemon reads (else EMSGSIZE) */
#define KFWD_CTL_DUMP_PAGE 49152 /* bytes of dump answer per request */
#define KFWD_CTL_STR_MAX 1024 /* longest string attribute, NUL included */
#define KFWD_CTL_MAX_DEPTH 4 /* attribute nesting levels */
#define KFWD_CTL_MAX_SUBSCRIBERS 8
#define KFWD_CTL_HEARTBEAT_MS 5000

#ifndef KFWD_VERSION
#define KFWD_VERSION "0.1"
#endif

/* nlmsg_type of requests and answers (first value after the reserved NLMSG_* types) */
enum kfwd_ctl_cmd {
	KFWD_CMD_STATUS = 0x10, /* ro: -> KFWD_A_STATUS */
	KFWD_CMD_STATS, /* ro: -> KFWD_A_STATS */
	KFWD_CMD_CONN_LIST, /* ro, dump [KFWD_A_CURSOR] -> KFWD_A_CONN each */
	KFWD_CMD_CONN_KILL, /* rw: KFWD_A_CONN_ID */
	KFWD_CMD_ROUTE_LIST, /* ro, dump [KFWD_A_CURSOR] -> KFWD_A_ROUTE each */
	KFWD_CMD_ROUTE_ADD, /* rw: KFWD_A_PREFIX, KFWD_A_TARGET, [KFWD_A_OPTIONS] */
	KFWD_CMD_ROUTE_DEL, /* rw: KFWD_A_PREFIX, [KFWD_A_HOST] */
	KFWD_CMD_UPSTREAM_LIST, /* ro, dump [KFWD_A_CURSOR] -> KFWD_A_UPSTREAM_INFO each */
	KFWD_CMD_UPSTREAM_DRAIN, /* rw: KFWD_A_UPSTREAM, [KFWD_A_SERVER] */
	KFWD_CMD_UPSTREAM_ENABLE, /* rw: KFWD_A_UPSTREAM, [KFWD_A_SERVER] */
	KFWD_CMD_SET, /* rw: KFWD_A_SETTINGS */
	KFWD_CMD_RELOAD, /* rw: no attribute */
	KFWD_CMD_MONITOR, /* ro: subscribe to KFWD_CMD_EVENT */
	KFWD_CMD_EVENT, /* daemon -> subscriber: KFWD_A_EVENT */
	__KFWD_CMD_END,
};

#define KFWD_CTL_CMD_MIN KFWD_CMD_STATUS
#define KFWD_CTL_CMD_MAX (__KFWD_CMD_END - 1)
#define KFWD_CTL_CMD_READONLY(c)                                                         \
	((c) == KFWD_CMD_STATUS || (c) == KFWD_CMD_STATS || (c) == KFWD_CMD_CONN_LIST || \
	 (c) == KFWD_CMD_ROUTE_LIST || (c) == KFWD_CMD_UPSTREAM_LIST || (c) == KFWD_CMD_MONITOR)

/* Top-level attributes, one namespace for every message */
enum kfwd_attr {
	KFWD_A_UNSPEC,
	KFWD_A_VERSION, /* u32: KFWD_CTL_VERSION, in every request and answer */
	KFWD_A_CURSOR, /* u64: dump resume point (request) / next page (NLMSG_DONE) */
	KFWD_A_CONN_ID, /* u64: conn kill */
	KFWD_A_PREFIX, /* string: route add/del: path prefix, starts with '/' */
	KFWD_A_TARGET, /* string: route add: upstream name or "url-embedded" */
	KFWD_A_OPTIONS, /* nested: route add: KFWD_A_OPTION strings, config syntax */
	KFWD_A_OPTION, /* string: one route option ("strip-prefix", "host=a.example") */
	KFWD_A_HOST, /* string: route del: the host= of the route meant */
	KFWD_A_UPSTREAM, /* string: upstream drain/enable: upstream name */
	KFWD_A_SERVER, /* string: upstream drain/enable: ADDR:PORT as in the config */
	KFWD_A_SETTINGS, /* nested: set: KFWD_A_SETTING, applied together */
	KFWD_A_SETTING, /* nested: KFWD_SET_* */
	KFWD_A_STATUS, /* nested: KFWD_ST_* */
	KFWD_A_STATS, /* nested: KFWD_STAT_* */
	KFWD_A_CONN, /* nested: KFWD_CONN_* */
	KFWD_A_ROUTE, /* nested: KFWD_ROUTE_* */
	KFWD_A_UPSTREAM_INFO, /* nested: KFWD_UP_* */
	KFWD_A_EVENT, /* nested: KFWD_EV_* */
	__KFWD_A_MAX,
};
#define KFWD_A_MAX (__KFWD_A_MAX - 1)

enum kfwd_set_attr {
	KFWD_SET_UNSPEC,
	KFWD_SET_KEY, /* string: a key of kctl_settings[] (common_ctl.h) */
	KFWD_SET_VALUE, /* string: config syntax ("64k", "debug") */
	__KFWD_SET_MAX,
};
#define KFWD_SET_MAX (__KFWD_SET_MAX - 1)

enum kfwd_status_attr {
	KFWD_ST_UNSPEC,
	KFWD_ST_VERSION, /* string: daemon version */
	KFWD_ST_PID, /* u32 */
	KFWD_ST_UPTIME_MS, /* u64 */
	KFWD_ST_STARTED, /* u64: unix time of start, seconds */
	KFWD_ST_CONFIG_FILE, /* string: "" for the embedded configuration */
	KFWD_ST_CONFIG_GEN, /* u32: configurations swapped in since start (0: the first) */
	KFWD_ST_RUNTIME_CHANGES, /* u32: directives changed by kfwdctl since the last load */
	KFWD_ST_LISTEN, /* string, repeated: listening addresses */
	KFWD_ST_METRICS, /* string: metrics-listen, absent when off */
	KFWD_ST_DATAPATH, /* nested, repeated: KFWD_DP_* */
	KFWD_ST_DATA_PATH, /* string: configured data-path */
	KFWD_ST_PIPE_SIZE, /* u64 */
	KFWD_ST_PIPE_HIGH, /* u64 */
	KFWD_ST_PIPE_LOW, /* u64 */
	KFWD_ST_COPY_BUF, /* u64 */
	KFWD_ST_MAX_CONNS, /* u32 */
	KFWD_ST_LOG_LEVEL, /* string */
	KFWD_ST_CONNECTIONS, /* u32: open client connections */
	KFWD_ST_DRAINING, /* u8: 1 after SIGTERM */
	KFWD_ST_CTL_PORT_ID, /* u32 */
	KFWD_ST_CTL_GROUP, /* string: absent = root only */
	KFWD_ST_SUBSCRIBERS, /* u32: monitors */
	KFWD_ST_MAX_MEMORY, /* u64: max-memory, 0: off */
	KFWD_ST_MEMORY_HELD, /* u64: bytes charged to the budget now */
	KFWD_ST_FAIR_SHARE, /* u64: max-memory / charged flows, at least the floor */
	__KFWD_ST_MAX,
};
#define KFWD_ST_MAX (__KFWD_ST_MAX - 1)

enum kfwd_datapath_attr {
	KFWD_DP_UNSPEC,
	KFWD_DP_NAME, /* string: "splice", "sockmap", "copy" */
	KFWD_DP_AVAILABLE, /* u8 */
	KFWD_DP_DEFAULT, /* u8: the configured data-path */
	KFWD_DP_REASON, /* string: why not available (or a note) */
	__KFWD_DP_MAX,
};
#define KFWD_DP_MAX (__KFWD_DP_MAX - 1)

/* Counters: generated from KFWD_COUNTERS (kfwd/counters.h), in its order. All u64. */
enum kfwd_stats_attr {
	KFWD_STAT_UNSPEC,
#define KFWD_STAT_ENUM(id, name, label, kind, help, value) KFWD_STAT_##id,
	KFWD_COUNTERS(KFWD_STAT_ENUM)
#undef KFWD_STAT_ENUM
		__KFWD_STAT_MAX,
};
#define KFWD_STAT_MAX (__KFWD_STAT_MAX - 1)

enum kfwd_conn_attr {
	KFWD_CONN_UNSPEC,
	KFWD_CONN_ID, /* u64 */
	KFWD_CONN_CLIENT, /* string: ADDR:PORT */
	KFWD_CONN_UPSTREAM, /* string: ADDR:PORT or host:port, absent before routing */
	KFWD_CONN_ROUTE, /* string: the route's prefix, absent before routing */
	KFWD_CONN_STATE, /* string: session state */
	KFWD_CONN_AGE_MS, /* u64 */
	KFWD_CONN_REQUESTS, /* u64: requests on this connection */
	KFWD_CONN_LAST_STATUS, /* u32: last response status, 0 before any */
	KFWD_CONN_REQ, /* nested KFWD_FLOW_*: client -> upstream */
	KFWD_CONN_RESP, /* nested KFWD_FLOW_*: upstream -> client */
	KFWD_CONN_PROTO, /* string: the listener's protocol (http, rtsp...) */
	KFWD_CONN_DETAIL, /* string "key=value", repeated: protocol and transport details */
	__KFWD_CONN_MAX,
};
#define KFWD_CONN_MAX (__KFWD_CONN_MAX - 1)

enum kfwd_flow_attr {
	KFWD_FLOW_UNSPEC,
	KFWD_FLOW_PATH, /* string: "splice" or "copy" */
	KFWD_FLOW_BYTES, /* u64: delivered to the destination */
	KFWD_FLOW_SPLICED, /* u64: moved socket -> pipe by splice */
	KFWD_FLOW_COPIED, /* u64: passed through user space */
	KFWD_FLOW_QUEUED, /* u64: held now (buffers + pipe) */
	KFWD_FLOW_HIGH_WATER, /* u64: the pause threshold in force */
	KFWD_FLOW_PAUSED, /* u8 */
	KFWD_FLOW_PAUSES, /* u64 */
	KFWD_FLOW_RESUMES, /* u64 */
	__KFWD_FLOW_MAX,
};
#define KFWD_FLOW_MAX (__KFWD_FLOW_MAX - 1)

enum kfwd_route_attr {
	KFWD_ROUTE_UNSPEC,
	KFWD_ROUTE_INDEX, /* u32: position in the configuration (match order on ties) */
	KFWD_ROUTE_PREFIX, /* string */
	KFWD_ROUTE_TARGET, /* string: upstream name or "url-embedded" */
	KFWD_ROUTE_HOST, /* string: host= (absent: any) */
	KFWD_ROUTE_METHODS, /* string: methods= (absent: all) */
	KFWD_ROUTE_OPTIONS, /* string: every option as written */
	KFWD_ROUTE_ORIGIN, /* string: "FILE:LINE" or "kfwdctl" */
	__KFWD_ROUTE_MAX,
};
#define KFWD_ROUTE_MAX (__KFWD_ROUTE_MAX - 1)

enum kfwd_upstream_attr {
	KFWD_UP_UNSPEC,
	KFWD_UP_NAME, /* string */
	KFWD_UP_SERVER, /* nested, repeated: KFWD_SRV_* */
	__KFWD_UP_MAX,
};
#define KFWD_UP_MAX (__KFWD_UP_MAX - 1)

enum kfwd_server_attr {
	KFWD_SRV_UNSPEC,
	KFWD_SRV_ADDR, /* string: as in the config */
	KFWD_SRV_STATE, /* string: "up", "down" (passive health), "drained" (kfwdctl) */
	KFWD_SRV_DRAINED, /* u8 */
	KFWD_SRV_DOWN_MS, /* u64: how much longer it is marked down */
	KFWD_SRV_FAILURES, /* u64 */
	KFWD_SRV_CONNS, /* u32: open connections (in use + pooled) */
	__KFWD_SRV_MAX,
};
#define KFWD_SRV_MAX (__KFWD_SRV_MAX - 1)

enum kfwd_event_type {
	KFWD_EVENT_OPEN = 1, /* client connection accepted */
	KFWD_EVENT_CLOSE, /* client connection closed */
	KFWD_EVENT_PAUSE, /* a flow reached its high-water mark: source EPOLLIN off */
	KFWD_EVENT_RESUME, /* a flow went below its low-water mark */
	KFWD_EVENT_CONFIG, /* a new configuration is in force */
	KFWD_EVENT_HEARTBEAT,
	__KFWD_EVENT_END,
};

enum kfwd_event_attr {
	KFWD_EV_UNSPEC,
	KFWD_EV_TYPE, /* u32: enum kfwd_event_type */
	KFWD_EV_TIME_MS, /* u64: unix time, milliseconds */
	KFWD_EV_CONN_ID, /* u64 */
	KFWD_EV_CLIENT, /* string: open, close */
	KFWD_EV_UPSTREAM, /* string: close */
	KFWD_EV_DIR, /* string: pause, resume: "request" or "response" */
	KFWD_EV_LEVEL, /* u64: pause, resume: bytes held by the flow */
	KFWD_EV_PAUSES, /* u64: pause, resume: the flow's pause count */
	KFWD_EV_BYTES_UP, /* u64: close: bytes client -> upstream */
	KFWD_EV_BYTES_DOWN, /* u64: close: bytes upstream -> client */
	KFWD_EV_DURATION_MS, /* u64: close */
	KFWD_EV_STATUS, /* u32: close: last response status */
	KFWD_EV_GENERATION, /* u32: config */
	KFWD_EV_WHAT, /* string: config: what changed */
	KFWD_EV_LOST, /* u64: events dropped for this subscriber before this one */
	__KFWD_EV_MAX,
};
#define KFWD_EV_MAX (__KFWD_EV_MAX - 1)

#endif
