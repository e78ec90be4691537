// SPDX-License-Identifier: GPL-2.0
/* Control protocol pieces shared by kfwd and kfwdctl: policies, the parser, settable keys. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <libmnl/libmnl.h>

#include "common_ctl.h"
#include "util.h"

#define SET(sname, arr)                                                \
	{                                                              \
		.name = sname, .max = ARRAY_LEN(arr) - 1, .attrs = arr \
	}

/* ---- policies */

static const struct kctl_policy flow_attrs[] = {
	[KFWD_FLOW_PATH] = { .name = "path", .type = KCTL_STR },
	[KFWD_FLOW_BYTES] = { .name = "bytes", .type = KCTL_U64 },
	[KFWD_FLOW_SPLICED] = { .name = "spliced", .type = KCTL_U64 },
	[KFWD_FLOW_COPIED] = { .name = "copied", .type = KCTL_U64 },
	[KFWD_FLOW_QUEUED] = { .name = "queued", .type = KCTL_U64 },
	[KFWD_FLOW_HIGH_WATER] = { .name = "high-water", .type = KCTL_U64 },
	[KFWD_FLOW_PAUSED] = { .name = "paused", .type = KCTL_U8 },
	[KFWD_FLOW_PAUSES] = { .name = "pauses", .type = KCTL_U64 },
	[KFWD_FLOW_RESUMES] = { .name = "resumes", .type = KCTL_U64 },
};
const struct kctl_set kctl_flow = SET("flow", flow_attrs);

static const struct kctl_policy conn_attrs[] = {
	[KFWD_CONN_ID] = { .name = "id", .type = KCTL_U64 },
	[KFWD_CONN_CLIENT] = { .name = "client", .type = KCTL_STR },
	[KFWD_CONN_UPSTREAM] = { .name = "upstream", .type = KCTL_STR },
	[KFWD_CONN_ROUTE] = { .name = "route", .type = KCTL_STR },
	[KFWD_CONN_STATE] = { .name = "state", .type = KCTL_STR },
	[KFWD_CONN_AGE_MS] = { .name = "age-ms", .type = KCTL_U64 },
	[KFWD_CONN_REQUESTS] = { .name = "requests", .type = KCTL_U64 },
	[KFWD_CONN_LAST_STATUS] = { .name = "last-status", .type = KCTL_U32 },
	[KFWD_CONN_REQ] = { .name = "request", .type = KCTL_NEST, .nest = &kctl_flow },
	[KFWD_CONN_RESP] = { .name = "response", .type = KCTL_NEST, .nest = &kctl_flow },
	[KFWD_CONN_PROTO] = { .name = "protocol", .type = KCTL_STR },
	[KFWD_CONN_DETAIL] = { .name = "details", .type = KCTL_KV, .multi = true },
};
const struct kctl_set kctl_conn = SET("conn", conn_attrs);

static const struct kctl_policy datapath_attrs[] = {
	[KFWD_DP_NAME] = { .name = "name", .type = KCTL_STR },
	[KFWD_DP_AVAILABLE] = { .name = "available", .type = KCTL_U8 },
	[KFWD_DP_DEFAULT] = { .name = "default", .type = KCTL_U8 },
	[KFWD_DP_REASON] = { .name = "reason", .type = KCTL_STR },
};
const struct kctl_set kctl_datapath = SET("datapath", datapath_attrs);

static const struct kctl_policy status_attrs[] = {
	[KFWD_ST_VERSION] = { .name = "version", .type = KCTL_STR },
	[KFWD_ST_PID] = { .name = "pid", .type = KCTL_U32 },
	[KFWD_ST_UPTIME_MS] = { .name = "uptime-ms", .type = KCTL_U64 },
	[KFWD_ST_STARTED] = { .name = "started", .type = KCTL_U64 },
	[KFWD_ST_CONFIG_FILE] = { .name = "config-file", .type = KCTL_STR },
	[KFWD_ST_CONFIG_GEN] = { .name = "config-generation", .type = KCTL_U32 },
	[KFWD_ST_RUNTIME_CHANGES] = { .name = "runtime-changes", .type = KCTL_U32 },
	[KFWD_ST_LISTEN] = { .name = "listen", .type = KCTL_STR, .multi = true },
	[KFWD_ST_METRICS] = { .name = "metrics", .type = KCTL_STR },
	[KFWD_ST_DATAPATH] = { .name = "data-paths",
			       .type = KCTL_NEST,
			       .multi = true,
			       .nest = &kctl_datapath },
	[KFWD_ST_DATA_PATH] = { .name = "data-path", .type = KCTL_STR },
	[KFWD_ST_PIPE_SIZE] = { .name = "pipe-size", .type = KCTL_U64 },
	[KFWD_ST_PIPE_HIGH] = { .name = "pipe-high-water", .type = KCTL_U64 },
	[KFWD_ST_PIPE_LOW] = { .name = "pipe-low-water", .type = KCTL_U64 },
	[KFWD_ST_COPY_BUF] = { .name = "copy-buffer-size", .type = KCTL_U64 },
	[KFWD_ST_MAX_CONNS] = { .name = "max-connections", .type = KCTL_U32 },
	[KFWD_ST_LOG_LEVEL] = { .name = "log-level", .type = KCTL_STR },
	[KFWD_ST_CONNECTIONS] = { .name = "connections", .type = KCTL_U32 },
	[KFWD_ST_DRAINING] = { .name = "draining", .type = KCTL_U8 },
	[KFWD_ST_CTL_PORT_ID] = { .name = "ctl-port-id", .type = KCTL_U32 },
	[KFWD_ST_CTL_GROUP] = { .name = "ctl-group", .type = KCTL_STR },
	[KFWD_ST_SUBSCRIBERS] = { .name = "monitors", .type = KCTL_U32 },
	[KFWD_ST_MAX_MEMORY] = { .name = "max-memory", .type = KCTL_U64 },
	[KFWD_ST_MEMORY_HELD] = { .name = "memory-held", .type = KCTL_U64 },
	[KFWD_ST_FAIR_SHARE] = { .name = "fair-share", .type = KCTL_U64 },
};
const struct kctl_set kctl_status = SET("status", status_attrs);

static const struct kctl_policy stats_attrs[] = {
#define STAT_POLICY(id, wire, label, kind, help, value) \
	[KFWD_STAT_##id] = { .name = wire, .type = KCTL_U64 },
	KFWD_COUNTERS(STAT_POLICY)
#undef STAT_POLICY
};

const struct kctl_set kctl_stats = SET("stats", stats_attrs);
/* The largest set, and growing with every counter: kfwdctl's tb[] must hold it. */
_Static_assert(ARRAY_LEN(stats_attrs) <= KCTL_SET_TYPES_MAX, "raise KCTL_SET_TYPES_MAX");

static const struct kctl_policy route_attrs[] = {
	[KFWD_ROUTE_INDEX] = { .name = "index", .type = KCTL_U32 },
	[KFWD_ROUTE_PREFIX] = { .name = "prefix", .type = KCTL_STR },
	[KFWD_ROUTE_TARGET] = { .name = "target", .type = KCTL_STR },
	[KFWD_ROUTE_HOST] = { .name = "host", .type = KCTL_STR },
	[KFWD_ROUTE_METHODS] = { .name = "methods", .type = KCTL_STR },
	[KFWD_ROUTE_OPTIONS] = { .name = "options", .type = KCTL_STR },
	[KFWD_ROUTE_ORIGIN] = { .name = "origin", .type = KCTL_STR },
};
const struct kctl_set kctl_route = SET("route", route_attrs);

static const struct kctl_policy server_attrs[] = {
	[KFWD_SRV_ADDR] = { .name = "addr", .type = KCTL_STR },
	[KFWD_SRV_STATE] = { .name = "state", .type = KCTL_STR },
	[KFWD_SRV_DRAINED] = { .name = "drained", .type = KCTL_U8 },
	[KFWD_SRV_DOWN_MS] = { .name = "down-ms", .type = KCTL_U64 },
	[KFWD_SRV_FAILURES] = { .name = "failures", .type = KCTL_U64 },
	[KFWD_SRV_CONNS] = { .name = "conns", .type = KCTL_U32 },
};
const struct kctl_set kctl_server = SET("server", server_attrs);

static const struct kctl_policy upstream_attrs[] = {
	[KFWD_UP_NAME] = { .name = "name", .type = KCTL_STR },
	[KFWD_UP_SERVER] = { .name = "servers",
			     .type = KCTL_NEST,
			     .multi = true,
			     .nest = &kctl_server },
};
const struct kctl_set kctl_upstream = SET("upstream", upstream_attrs);

static const struct kctl_policy event_attrs[] = {
	[KFWD_EV_TYPE] = { .name = "type", .type = KCTL_U32 },
	[KFWD_EV_TIME_MS] = { .name = "time-ms", .type = KCTL_U64 },
	[KFWD_EV_CONN_ID] = { .name = "conn", .type = KCTL_U64 },
	[KFWD_EV_CLIENT] = { .name = "client", .type = KCTL_STR },
	[KFWD_EV_UPSTREAM] = { .name = "upstream", .type = KCTL_STR },
	[KFWD_EV_DIR] = { .name = "dir", .type = KCTL_STR },
	[KFWD_EV_LEVEL] = { .name = "level", .type = KCTL_U64 },
	[KFWD_EV_PAUSES] = { .name = "pauses", .type = KCTL_U64 },
	[KFWD_EV_BYTES_UP] = { .name = "bytes-up", .type = KCTL_U64 },
	[KFWD_EV_BYTES_DOWN] = { .name = "bytes-down", .type = KCTL_U64 },
	[KFWD_EV_DURATION_MS] = { .name = "duration-ms", .type = KCTL_U64 },
	[KFWD_EV_STATUS] = { .name = "status", .type = KCTL_U32 },
	[KFWD_EV_GENERATION] = { .name = "generation", .type = KCTL_U32 },
	[KFWD_EV_WHAT] = { .name = "what", .type = KCTL_STR },
	[KFWD_EV_LOST] = { .name = "lost", .type = KCTL_U64 },
};
const struct kctl_set kctl_event = SET("event", event_attrs);

static const struct kctl_policy setting_attrs[] = {
	[KFWD_SET_KEY] = { .name = "key", .type = KCTL_STR },
	[KFWD_SET_VALUE] = { .name = "value", .type = KCTL_STR },
};
const struct kctl_set kctl_setting = SET("setting", setting_attrs);

static const struct kctl_policy options_attrs[] = {
	[KFWD_A_OPTION] = { .name = "option", .type = KCTL_STR, .multi = true },
};
const struct kctl_set kctl_options = SET("options", options_attrs);

static const struct kctl_policy settings_attrs[] = {
	[KFWD_A_SETTING] = { .name = "setting",
			     .type = KCTL_NEST,
			     .multi = true,
			     .nest = &kctl_setting },
};
const struct kctl_set kctl_settings = SET("settings", settings_attrs);

static const struct kctl_policy top_attrs[] = {
	[KFWD_A_VERSION] = { .name = "version", .type = KCTL_U32 },
	[KFWD_A_CURSOR] = { .name = "cursor", .type = KCTL_U64 },
	[KFWD_A_CONN_ID] = { .name = "conn-id", .type = KCTL_U64 },
	[KFWD_A_PREFIX] = { .name = "prefix", .type = KCTL_STR },
	[KFWD_A_TARGET] = { .name = "target", .type = KCTL_STR },
	[KFWD_A_OPTIONS] = { .name = "options", .type = KCTL_NEST, .nest = &kctl_options },
	[KFWD_A_OPTION] = { .name = "option", .type = KCTL_STR },
	[KFWD_A_HOST] = { .name = "host", .type = KCTL_STR },
	[KFWD_A_UPSTREAM] = { .name = "upstream", .type = KCTL_STR },
	[KFWD_A_SERVER] = { .name = "server", .type = KCTL_STR },
	[KFWD_A_SETTINGS] = { .name = "settings", .type = KCTL_NEST, .nest = &kctl_settings },
	[KFWD_A_SETTING] = { .name = "setting", .type = KCTL_NEST, .nest = &kctl_setting },
	[KFWD_A_STATUS] = { .name = "status", .type = KCTL_NEST, .nest = &kctl_status },
	[KFWD_A_STATS] = { .name = "stats", .type = KCTL_NEST, .nest = &kctl_stats },
	[KFWD_A_CONN] = { .name = "conn", .type = KCTL_NEST, .nest = &kctl_conn },
	[KFWD_A_ROUTE] = { .name = "route", .type = KCTL_NEST, .nest = &kctl_route },
	[KFWD_A_UPSTREAM_INFO] = { .name = "upstream-info",
				   .type = KCTL_NEST,
				   .nest = &kctl_upstream },
	[KFWD_A_EVENT] = { .name = "event", .type = KCTL_NEST, .nest = &kctl_event },
};
const struct kctl_set kctl_top = SET("top", top_attrs);

/* Extended ACK attributes of NLMSG_ERROR (only the ones kfwd sends are checked). */
static const struct kctl_policy ext_attrs[] = {
	[NLMSGERR_ATTR_MSG] = { .name = "msg", .type = KCTL_STR },
	[NLMSGERR_ATTR_OFFS] = { .name = "offset", .type = KCTL_U32 },
};
static const struct kctl_set kctl_ext = SET("ext-ack", ext_attrs);

/* The attribute types of one level already seen, as a bitmap (the counters alone pass 64). */
#define KCTL_SEEN_WORDS 2
#define KCTL_SEEN_BITS (KCTL_SEEN_WORDS * 64)
_Static_assert(KFWD_A_MAX < KCTL_SEEN_BITS && KFWD_STAT_MAX < KCTL_SEEN_BITS &&
		       KFWD_ST_MAX < KCTL_SEEN_BITS && KFWD_EV_MAX < KCTL_SEEN_BITS,
	       "attribute sets are tracked in a KCTL_SEEN_BITS-bit map");

/* ---- parser */

static int bad(struct kctl_err *err, const void *msg_start, const void *at, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int bad(struct kctl_err *err, const void *msg_start, const void *at, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
	err->off = at ? (int)((const char *)at - (const char *)msg_start) : -1;
	return -1;
}

static int check_attr(const void *msg_start, const struct nlattr *a, const struct kctl_set *set,
		      const struct kctl_policy *pol, struct kctl_err *err, int depth)
{
	size_t plen = a->nla_len - sizeof(*a);
	const char *payload = (const char *)a + sizeof(*a);
	size_t want;

	switch (pol->type) {
	case KCTL_U8:
		want = 1;
		break;
	case KCTL_U32:
		want = 4;
		break;
	case KCTL_U64:
		want = 8;
		break;
	case KCTL_STR:
	case KCTL_KV:
		if (plen == 0 || plen > KFWD_CTL_STR_MAX)
			return bad(err, msg_start, a, "%s/%s: string of %zu bytes (1..%d)",
				   set->name, pol->name, plen, KFWD_CTL_STR_MAX);
		if (payload[plen - 1] != '\0' || strlen(payload) != plen - 1)
			return bad(err, msg_start, a,
				   "%s/%s: string not NUL-terminated or with a NUL inside",
				   set->name, pol->name);
		return 0;
	case KCTL_NEST:
		if (depth + 1 >= KFWD_CTL_MAX_DEPTH)
			return bad(err, msg_start, a, "%s/%s: nested too deep", set->name,
				   pol->name);
		return 1; /* the caller recurses */
	default:
		return 0;
	}
	if (plen != want)
		return bad(err, msg_start, a, "%s/%s: %zu bytes, expected %zu", set->name,
			   pol->name, plen, want);
	return 0;
}

static int parse_level(const void *msg_start, const void *start, size_t len,
		       const struct kctl_set *set, const struct nlattr **tb, struct kctl_err *err,
		       int depth)
{
	const char *p = start;
	size_t rem = len;
	uint64_t seen[KCTL_SEEN_WORDS] = { 0 };

	if (tb)
		memset(tb, 0, (set->max + 1) * sizeof(*tb));
	while (rem > 0) {
		const struct nlattr *a = (const void *)p;
		const struct kctl_policy *pol = NULL;
		unsigned int type;
		size_t step;
		int r;

		if (rem < sizeof(*a))
			return bad(err, msg_start, p,
				   "%s: %zu bytes left over after the last attribute", set->name,
				   rem);
		if (a->nla_len < sizeof(*a) || a->nla_len > rem)
			return bad(
				err, msg_start, p,
				"%s: attribute type %u with length %u (%zu bytes left in its container)",
				set->name, a->nla_type & NLA_TYPE_MASK, a->nla_len, rem);
		type = a->nla_type & NLA_TYPE_MASK;
		if (type <= set->max && set->attrs[type].type != KCTL_NONE)
			pol = &set->attrs[type];
		if (pol) {
			if (!pol->multi && (seen[type / 64] & (1ULL << (type % 64))))
				return bad(err, msg_start, p, "%s/%s: given more than once",
					   set->name, pol->name);
			seen[type / 64] |= 1ULL << (type % 64);
			r = check_attr(msg_start, a, set, pol, err, depth);
			if (r < 0)
				return -1;
			if (r > 0 && parse_level(msg_start, mnl_attr_get_payload(a),
						 mnl_attr_get_payload_len(a), pol->nest, NULL, err,
						 depth + 1) < 0)
				return -1;
			if (tb && !tb[type])
				tb[type] = a;
		}
		step = MNL_ALIGN(a->nla_len);
		if (step >= rem)
			break;
		p += step;
		rem -= step;
	}
	return 0;
}

int kctl_parse_attrs(const void *msg_start, const void *start, size_t len,
		     const struct kctl_set *set, const struct nlattr **tb, struct kctl_err *err)
{
	err->msg[0] = '\0';
	err->off = -1;
	return parse_level(msg_start, start, len, set, tb, err, 0);
}

void kctl_parse_nested(const struct nlattr *nest, const struct kctl_set *set,
		       const struct nlattr **tb)
{
	struct kctl_err err;

	/* Already validated as part of its message: this cannot fail, only fill tb. */
	if (kctl_parse_attrs(nest, mnl_attr_get_payload(nest), mnl_attr_get_payload_len(nest), set,
			     tb, &err) < 0)
		memset(tb, 0, (set->max + 1) * sizeof(*tb));
}

int kctl_msg_parse(const struct nlmsghdr *nlh, struct kctl_msg *m, struct kctl_err *err)
{
	const char *payload = (const char *)nlh + NLMSG_HDRLEN;
	size_t plen = nlh->nlmsg_len - NLMSG_HDRLEN;
	const struct nlattr *ext[NLMSGERR_ATTR_OFFS + 1];

	memset(m, 0, sizeof(*m));
	m->nlh = nlh;
	m->ext_off = -1;
	err->msg[0] = '\0';
	err->off = -1;

	switch (nlh->nlmsg_type) {
	case NLMSG_NOOP:
		return KCTL_PARSE_OK;
	case NLMSG_ERROR: {
		const struct nlmsgerr *e = (const void *)payload;
		size_t tlv_off;

		if (plen < sizeof(*e))
			return bad(err, nlh, payload, "NLMSG_ERROR of %zu bytes", plen);
		if (e->error > 0 || e->error < -4095)
			return bad(err, nlh, payload, "NLMSG_ERROR with error %d", e->error);
		m->error = e->error;
		m->orig = &e->msg;
		if (!(nlh->nlmsg_flags & NLM_F_ACK_TLVS))
			return KCTL_PARSE_OK;
		tlv_off = sizeof(*e);
		if (!(nlh->nlmsg_flags & NLM_F_CAPPED)) {
			/* The whole request follows the header copy. */
			if (e->msg.nlmsg_len < NLMSG_HDRLEN ||
			    e->msg.nlmsg_len - NLMSG_HDRLEN > plen - sizeof(*e))
				return bad(err, nlh, payload, "NLMSG_ERROR echoing %u bytes",
					   e->msg.nlmsg_len);
			tlv_off += NLMSG_ALIGN(e->msg.nlmsg_len - NLMSG_HDRLEN);
			if (tlv_off > plen)
				tlv_off = plen;
		}
		if (kctl_parse_attrs(nlh, payload + tlv_off, plen - tlv_off, &kctl_ext, ext, err) <
		    0)
			return KCTL_PARSE_BAD;
		if (ext[NLMSGERR_ATTR_MSG])
			m->ext_msg = mnl_attr_get_str(ext[NLMSGERR_ATTR_MSG]);
		if (ext[NLMSGERR_ATTR_OFFS])
			m->ext_off = (int)mnl_attr_get_u32(ext[NLMSGERR_ATTR_OFFS]);
		return KCTL_PARSE_OK;
	}
	case NLMSG_DONE: {
		int e;

		if (plen < sizeof(int))
			return bad(err, nlh, payload, "NLMSG_DONE of %zu bytes", plen);
		memcpy(&e, payload, sizeof(e));
		if (e > 0 || e < -4095)
			return bad(err, nlh, payload, "NLMSG_DONE with error %d", e);
		m->error = e;
		if (kctl_parse_attrs(nlh, payload + sizeof(int), plen - sizeof(int), &kctl_top,
				     m->tb, err) < 0)
			return KCTL_PARSE_BAD;
		return KCTL_PARSE_OK;
	}
	default:
		break;
	}
	if (nlh->nlmsg_type < NLMSG_MIN_TYPE)
		return bad(err, nlh, NULL, "reserved message type %u", nlh->nlmsg_type);
	if (nlh->nlmsg_type > KFWD_CTL_CMD_MAX) {
		bad(err, nlh, NULL, "unknown command %u", nlh->nlmsg_type);
		return KCTL_PARSE_UNKNOWN;
	}
	if (kctl_parse_attrs(nlh, payload, plen, &kctl_top, m->tb, err) < 0)
		return KCTL_PARSE_BAD;
	return KCTL_PARSE_OK;
}

const struct nlmsghdr *kctl_next_msg(const void **pos, size_t *rem, struct kctl_err *err)
{
	const struct nlmsghdr *nlh = *pos;
	size_t len, step;

	err->msg[0] = '\0';
	err->off = -1;
	if (*rem == 0)
		return NULL;
	/* Not mnl_nlmsg_ok(): it compares (int)nlmsg_len, so 0xffffffff passes as -1. */
	len = *rem >= sizeof(*nlh) ? nlh->nlmsg_len : 0;
	if (*rem < sizeof(*nlh) || len < sizeof(*nlh) || len > *rem) {
		snprintf(err->msg, sizeof(err->msg),
			 "%zu bytes that do not form a netlink message (length %zu)", *rem, len);
		return NULL;
	}
	step = (len + NLMSG_ALIGNTO - 1) & ~(size_t)(NLMSG_ALIGNTO - 1);
	if (step >= *rem) {
		*rem = 0;
	} else {
		*pos = (const char *)*pos + step;
		*rem -= step;
	}
	return nlh;
}

const char *kctl_cmd_name(unsigned int type)
{
	static const char *const names[] = {
		[KFWD_CMD_STATUS - KFWD_CTL_CMD_MIN] = "status",
		[KFWD_CMD_STATS - KFWD_CTL_CMD_MIN] = "stats",
		[KFWD_CMD_CONN_LIST - KFWD_CTL_CMD_MIN] = "conn list",
		[KFWD_CMD_CONN_KILL - KFWD_CTL_CMD_MIN] = "conn kill",
		[KFWD_CMD_ROUTE_LIST - KFWD_CTL_CMD_MIN] = "route list",
		[KFWD_CMD_ROUTE_ADD - KFWD_CTL_CMD_MIN] = "route add",
		[KFWD_CMD_ROUTE_DEL - KFWD_CTL_CMD_MIN] = "route del",
		[KFWD_CMD_UPSTREAM_LIST - KFWD_CTL_CMD_MIN] = "upstream list",
		[KFWD_CMD_UPSTREAM_DRAIN - KFWD_CTL_CMD_MIN] = "upstream drain",
		[KFWD_CMD_UPSTREAM_ENABLE - KFWD_CTL_CMD_MIN] = "upstream enable",
		[KFWD_CMD_SET - KFWD_CTL_CMD_MIN] = "set",
		[KFWD_CMD_RELOAD - KFWD_CTL_CMD_MIN] = "reload",
		[KFWD_CMD_MONITOR - KFWD_CTL_CMD_MIN] = "monitor",
		[KFWD_CMD_EVENT - KFWD_CTL_CMD_MIN] = "event",
	};

	if (type < KFWD_CTL_CMD_MIN || type > KFWD_CTL_CMD_MAX)
		return "?";
	return names[type - KFWD_CTL_CMD_MIN];
}

/* ---- set keys */

const struct kctl_setting_key kctl_setting_keys[] = {
	{ "pipe-size", "BYTES   pipe capacity per flow (pipes made from now on)" },
	{ "pipe-high-water", "BYTES   bytes held per flow at which it pauses" },
	{ "pipe-low-water", "BYTES   level at which a paused flow resumes" },
	{ "copy-buffer-size", "BYTES   the copy path's bound per flow" },
	{ "log-level", "error|warn|info|debug" },
	{ "max-connections", "N       client connections" },
	{ "data-path", "splice|copy|sockmap|... as in the config file" },
};
const size_t kctl_n_setting_keys = ARRAY_LEN(kctl_setting_keys);

const struct kctl_setting_key *kctl_setting_find(const char *key)
{
	for (size_t i = 0; i < kctl_n_setting_keys; i++)
		if (!strcmp(kctl_setting_keys[i].key, key))
			return &kctl_setting_keys[i];
	return NULL;
}

bool kctl_token_ok(const char *s)
{
	size_t n = 0;

	for (; s[n]; n++)
		if (s[n] <= ' ' || s[n] > '~' || s[n] == '#')
			return false;
	return n > 0 && n < 256;
}

/* ---- who holds a port id */

static int find_inode(uint32_t portid, unsigned long *inode)
{
	char line[512];
	FILE *f = fopen("/proc/net/netlink", "re");
	int found = 0;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		unsigned int proto;
		unsigned long pid, ino;

		/* sk Eth Pid Groups Rmem Wmem Dump Locks Drops Inode */
		if (sscanf(line, "%*s %u %lu %*s %*s %*s %*s %*s %*s %lu", &proto, &pid, &ino) != 3)
			continue;
		if (proto == KFWD_CTL_NETLINK && pid == portid) {
			*inode = ino;
			found = 1;
			break;
		}
	}
	fclose(f);
	return found;
}

static bool pid_has_inode(const char *pid, const char *want)
{
	char path[300], link[64];
	struct dirent *de;
	bool found = false;
	DIR *d;

	snprintf(path, sizeof(path), "/proc/%s/fd", pid);
	d = opendir(path);
	if (!d)
		return false;
	while (!found && (de = readdir(d))) {
		char fdpath[600];
		ssize_t n;

		if (de->d_name[0] == '.')
			continue;
		snprintf(fdpath, sizeof(fdpath), "%s/%s", path, de->d_name);
		n = readlink(fdpath, link, sizeof(link) - 1);
		if (n <= 0)
			continue;
		link[n] = '\0';
		found = !strcmp(link, want);
	}
	closedir(d);
	return found;
}

static void fill_process(struct kctl_holder *h)
{
	char path[64], line[256];
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/comm", (int)h->pid);
	f = fopen(path, "re");
	if (f) {
		if (fgets(h->comm, sizeof(h->comm), f))
			h->comm[strcspn(h->comm, "\n")] = '\0';
		fclose(f);
	}
	snprintf(path, sizeof(path), "/proc/%d/status", (int)h->pid);
	f = fopen(path, "re");
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		unsigned long uid;

		if (sscanf(line, "Uid: %lu", &uid) == 1) {
			h->uid = (uid_t)uid;
			break;
		}
	}
	fclose(f);
}

int kctl_portid_holder(uint32_t portid, pid_t hint, struct kctl_holder *h)
{
	char want[64], pid[16];
	struct dirent *de;
	DIR *proc;
	int r;

	memset(h, 0, sizeof(*h));
	h->uid = (uid_t)-1;
	r = find_inode(portid, &h->inode);
	if (r <= 0)
		return r;
	snprintf(want, sizeof(want), "socket:[%lu]", h->inode);
	snprintf(pid, sizeof(pid), "%d", (int)hint);
	if (hint > 0 && pid_has_inode(pid, want)) {
		h->pid = hint;
		fill_process(h);
		return 1;
	}
	proc = opendir("/proc");
	if (!proc)
		return 1;
	while ((de = readdir(proc))) {
		if (!isdigit((unsigned char)de->d_name[0]))
			continue;
		if (pid_has_inode(de->d_name, want)) {
			h->pid = (pid_t)atoi(de->d_name);
			fill_process(h);
			break;
		}
	}
	closedir(proc);
	return 1;
}

_Static_assert(sizeof(((struct kctl_cbuf *)0)->buf) >= CMSG_SPACE(sizeof(struct ucred)),
	       "kctl_cbuf too small for SCM_CREDENTIALS");

ssize_t kctl_recv(int fd, void *buf, size_t len, struct sockaddr_nl *from, struct kctl_cbuf *cbuf,
		  const struct ucred **cred, bool *truncated)
{
	struct iovec iov = { .iov_base = buf, .iov_len = len };
	struct msghdr mh = { .msg_name = from,
			     .msg_namelen = sizeof(*from),
			     .msg_iov = &iov,
			     .msg_iovlen = 1,
			     .msg_control = cbuf->buf,
			     .msg_controllen = sizeof(cbuf->buf) };
	struct cmsghdr *cm;
	ssize_t n;

	*cred = NULL;
	*truncated = false;
	n = recvmsg(fd, &mh, MSG_DONTWAIT);
	if (n < 0)
		return n;
	if (mh.msg_namelen < sizeof(*from) || from->nl_family != AF_NETLINK)
		memset(from, 0, sizeof(*from));
	for (cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm))
		if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_CREDENTIALS &&
		    cm->cmsg_len >= CMSG_LEN(sizeof(struct ucred)))
			*cred = (const struct ucred *)CMSG_DATA(cm);
	*truncated = mh.msg_flags & MSG_TRUNC;
	return n;
}
