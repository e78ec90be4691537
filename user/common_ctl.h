/* SPDX-License-Identifier: GPL-2.0 */
#ifndef KFWD_COMMON_CTL_H
#define KFWD_COMMON_CTL_H

/*
 * Code shared by the daemon (user/ctl.c) and kfwdctl: the attribute policies of
 * include/kfwd/ctl.h and the one validating parser both sides use, the settable keys, and
 * the lookup of the process holding a netlink port id. No daemon state here: the fuzz target
 * links this file alone.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <linux/netlink.h>

#include "kfwd/ctl.h"

enum kctl_type {
	KCTL_NONE, /* not defined: skipped like an unknown attribute */
	KCTL_U8,
	KCTL_U32,
	KCTL_U64,
	KCTL_STR, /* NUL-terminated, no embedded NUL, at most KFWD_CTL_STR_MAX bytes */
	KCTL_NEST, /* attributes of policy set 'nest' */
	KCTL_KV, /* a KCTL_STR "key=value"; repeated ones form one JSON object */
};

struct kctl_set;

struct kctl_policy {
	const char *name;
	uint8_t type; /* enum kctl_type */
	bool multi; /* may appear more than once (tb[] keeps the first) */
	const struct kctl_set *nest;
};

/* Every set's highest type is below this: the size of a tb[] that fits any set. */
#define KCTL_SET_TYPES_MAX 128

struct kctl_set {
	const char *name;
	unsigned int max; /* highest type in attrs[]; below KCTL_SET_TYPES_MAX */
	const struct kctl_policy *attrs;
};

extern const struct kctl_set kctl_top; /* enum kfwd_attr */
extern const struct kctl_set kctl_status; /* enum kfwd_status_attr */
extern const struct kctl_set kctl_datapath; /* enum kfwd_datapath_attr */
extern const struct kctl_set kctl_stats; /* enum kfwd_stats_attr */
extern const struct kctl_set kctl_conn; /* enum kfwd_conn_attr */
extern const struct kctl_set kctl_flow; /* enum kfwd_flow_attr */
extern const struct kctl_set kctl_route; /* enum kfwd_route_attr */
extern const struct kctl_set kctl_upstream; /* enum kfwd_upstream_attr */
extern const struct kctl_set kctl_server; /* enum kfwd_server_attr */
extern const struct kctl_set kctl_event; /* enum kfwd_event_attr */
extern const struct kctl_set kctl_setting; /* enum kfwd_set_attr */
extern const struct kctl_set kctl_options; /* KFWD_A_OPTION list */
extern const struct kctl_set kctl_settings; /* KFWD_A_SETTING list */

/* What was wrong, for NLMSGERR_ATTR_MSG / OFFS. */
struct kctl_err {
	char msg[160];
	int off; /* offset of the offending bytes from the start of the message, -1 if none */
};

/*
 * Validate the attributes in [start, start + len) against @set: every TLV inside its
 * container, known types with the right type and length, nested sets recursively, no
 * repeated single attribute, nothing left over. Unknown types are skipped. @tb (may be NULL)
 * gets the first attribute of each known type, indexed by type, 0..set->max.
 * @msg_start: the nlmsghdr, for offsets in @err. Returns 0, or -1 with @err filled in.
 */
int kctl_parse_attrs(const void *msg_start, const void *start, size_t len,
		     const struct kctl_set *set, const struct nlattr **tb, struct kctl_err *err);
/* Parse a nested attribute that kctl_parse_attrs() already validated. */
void kctl_parse_nested(const struct nlattr *nest, const struct kctl_set *set,
		       const struct nlattr **tb);

/* One message, parsed and validated. */
struct kctl_msg {
	const struct nlmsghdr *nlh;
	const struct nlattr *tb[KFWD_A_MAX + 1]; /* commands and NLMSG_DONE */
	int error; /* NLMSG_ERROR, NLMSG_DONE: 0 or -errno */
	const struct nlmsghdr *orig; /* NLMSG_ERROR: the request's header */
	const char *ext_msg; /* NLMSG_ERROR: NLMSGERR_ATTR_MSG or NULL */
	int ext_off; /* NLMSG_ERROR: NLMSGERR_ATTR_OFFS or -1 */
};

enum kctl_parse_result {
	KCTL_PARSE_OK = 0,
	KCTL_PARSE_BAD = -1, /* malformed: @err says why */
	KCTL_PARSE_UNKNOWN = -2, /* a command type this side does not know */
};

/* @nlh must be whole (kctl_next_msg()). */
int kctl_msg_parse(const struct nlmsghdr *nlh, struct kctl_msg *m, struct kctl_err *err);

/*
 * Walk the messages of a datagram: returns the next whole message and advances, or NULL at
 * the end. NULL with err->msg[0] set: bytes are left that do not form a message.
 */
const struct nlmsghdr *kctl_next_msg(const void **pos, size_t *rem, struct kctl_err *err);

const char *kctl_cmd_name(unsigned int type);

/* Keys of "kfwdctl set": config directives, validated by the config parser. */
struct kctl_setting_key {
	const char *key;
	const char *help;
};
extern const struct kctl_setting_key kctl_setting_keys[];
extern const size_t kctl_n_setting_keys;
const struct kctl_setting_key *kctl_setting_find(const char *key);

/*
 * One word of a configuration line: printable ASCII, no space, no '#', 1..255 bytes. Route
 * and set arguments become configuration lines, so nothing else may pass.
 */
bool kctl_token_ok(const char *s);

/* The process holding a NETLINK_USERSOCK port id (/proc/net/netlink, /proc/PID/fd). */
struct kctl_holder {
	unsigned long inode;
	pid_t pid; /* 0: not found (other users' fds are not readable unless root) */
	uid_t uid;
	char comm[32];
};
/*
 * 1: bound (holder filled as far as possible; @hint, the pid expected, is looked at first),
 * 0: not bound, -1: cannot tell.
 */
int kctl_portid_holder(uint32_t portid, pid_t hint, struct kctl_holder *h);

struct ucred;

/*
 * One datagram from a netlink control socket, without blocking, with who sent it. Returns
 * recvmsg()'s result. *@from is zeroed (nl_pid 0) when the sender address is not a netlink
 * one; *@cred is the sender's SCM_CREDENTIALS, or NULL when it came without them (they point
 * into *@cbuf, which must outlive their use); *@truncated when @len was too small.
 */
struct kctl_cbuf {
	union {
		char buf[64]; /* CMSG_SPACE(sizeof(struct ucred)) is 32 */
		struct cmsghdr *align;
	};
};
ssize_t kctl_recv(int fd, void *buf, size_t len, struct sockaddr_nl *from, struct kctl_cbuf *cbuf,
		  const struct ucred **cred, bool *truncated);

#endif
