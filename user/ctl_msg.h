/* SPDX-License-Identifier: GPL-2.0 */
#ifndef KFWD_CTL_MSG_H
#define KFWD_CTL_MSG_H

/*
 * The control socket's answers (protocol: include/kfwd/ctl.h): one request as parsed, a
 * message builder that remembers when something did not fit instead of writing past the end,
 * acknowledgements, single answers and paged dumps. Answers are built in one datagram buffer
 * owned here and sent without blocking (ctl_socket.h).
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

#include <libmnl/libmnl.h>

#include "common_ctl.h"

/* One request of a datagram. */
struct ctl_req {
	const struct nlmsghdr *nlh;
	struct kctl_msg m;
	struct ucred cred;
	uint32_t portid;
};

/* Message builder. */
struct mb {
	struct nlmsghdr *nlh;
	size_t size;
	bool full;
};

static inline void put_u8(struct mb *b, uint16_t type, uint8_t v)
{
	if (!b->full && !mnl_attr_put_u8_check(b->nlh, b->size, type, v))
		b->full = true;
}

static inline void put_u32(struct mb *b, uint16_t type, uint32_t v)
{
	if (!b->full && !mnl_attr_put_u32_check(b->nlh, b->size, type, v))
		b->full = true;
}

static inline void put_u64(struct mb *b, uint16_t type, uint64_t v)
{
	if (!b->full && !mnl_attr_put_u64_check(b->nlh, b->size, type, v))
		b->full = true;
}

/* A string longer than the protocol's KFWD_CTL_STR_MAX is cut. */
void put_str(struct mb *b, uint16_t type, const char *s);

static inline struct nlattr *nest_start(struct mb *b, uint16_t type)
{
	struct nlattr *n;

	if (b->full)
		return NULL;
	n = mnl_attr_nest_start_check(b->nlh, b->size, type);
	if (!n)
		b->full = true;
	return n;
}

static inline void nest_end(struct mb *b, struct nlattr *n)
{
	if (n)
		mnl_attr_nest_end(b->nlh, n);
}

/* Start a message of @type in the datagram buffer (KFWD_A_VERSION first). */
void ctl_msg_start(struct mb *b, uint16_t type, uint16_t flags, uint32_t seq);
/* Send the message of @b to @portid: 0 or -errno as ctl_socket_send. */
int ctl_msg_send(const struct mb *b, uint32_t portid);
/* Send a NLMSG_DONE with sequence number @seq to @portid: the end of a stream. */
void ctl_msg_end_stream(uint32_t portid, uint32_t seq);

/* NLMSG_ERROR: an ACK (@error 0) or an error, with a message for humans; @off: the offset of
 * the attribute at fault in the request, or -1. */
void ctl_reply_ack(const struct ctl_req *r, int error, int off, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* One answer filled by @fill(@arg); an answer larger than a datagram is an EMSGSIZE error. */
void ctl_reply_single(const struct ctl_req *r, void (*fill)(struct mb *, const void *),
		      const void *arg);

/* The string attribute @type of the request, or NULL. */
static inline const char *ctl_str_attr(const struct ctl_req *r, unsigned int type)
{
	return r->m.tb[type] ? mnl_attr_get_str(r->m.tb[type]) : NULL;
}

/* The offset of attribute @type in the request (for the error's pointer), or -1. */
static inline int ctl_attr_off(const struct ctl_req *r, unsigned int type)
{
	return r->m.tb[type] ? (int)((const char *)r->m.tb[type] - (const char *)r->nlh) : -1;
}

/* A dump: pages of KFWD_CTL_DUMP_PAGE bytes of object messages, each page ended by
 * NLMSG_DONE carrying a cursor when there is more. */
struct ctl_dump {
	const struct ctl_req *r;
	size_t len; /* whole messages in the buffer */
	size_t sent; /* bytes of this page already sent */
};

/* Append one object message; flushes a full datagram first. False: larger than a datagram. */
bool ctl_dump_object(struct ctl_dump *d, void (*fill)(struct mb *, const void *), const void *arg);
bool ctl_dump_page_full(const struct ctl_dump *d);
/* End the page: @more with the @cursor to continue from; @interrupted: the list changed. */
void ctl_dump_done(struct ctl_dump *d, bool more, uint64_t cursor, bool interrupted);

#endif
