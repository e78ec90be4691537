// SPDX-License-Identifier: GPL-2.0
/*
 * The control socket's answers (ctl_msg.h): the datagram buffer they are built in, the
 * message builder, acknowledgements with a message for humans, single answers and paged
 * dumps, all sent without blocking (an answer a reader has no room for is counted and
 * dropped).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "ctl_msg.h"
#include "ctl_socket.h"
#include "log.h"
#include "stats.h"

/* Room a dump keeps for one more object (or its NLMSG_DONE) before it flushes. */
#define DUMP_RESERVE 512

/* Answers out: 4-byte aligned for the netlink structures. */
static uint32_t txbuf[KFWD_CTL_MSG_MAX / 4];

static void send_reply(const struct ctl_req *r, const void *buf, size_t len)
{
	int e = ctl_socket_send(r->portid, buf, len);

	if (e < 0) {
		stats.ctl_dropped++;
		log_debug("ctl: answer to port id %u dropped: %s", r->portid, strerror(-e));
	}
}

static void mb_start(struct mb *b, void *buf, size_t size, uint16_t type, uint16_t flags,
		     uint32_t seq)
{
	b->nlh = mnl_nlmsg_put_header(buf);
	b->nlh->nlmsg_type = type;
	b->nlh->nlmsg_flags = flags;
	b->nlh->nlmsg_seq = seq;
	b->nlh->nlmsg_pid = ctl_socket_portid();
	b->size = size;
	b->full = false;
	if (!mnl_attr_put_u32_check(b->nlh, size, KFWD_A_VERSION, KFWD_CTL_VERSION))
		b->full = true;
}

/* NLMSG_DONE at @buf: its int comes first, then the version. */
static void mb_done(struct mb *b, void *buf, size_t size, uint16_t flags, uint32_t seq)
{
	int *zero;

	mb_start(b, buf, size, NLMSG_DONE, flags, seq);
	b->nlh->nlmsg_len = NLMSG_HDRLEN;
	zero = mnl_nlmsg_put_extra_header(b->nlh, sizeof(int));
	*zero = 0;
	put_u32(b, KFWD_A_VERSION, KFWD_CTL_VERSION);
}

void put_str(struct mb *b, uint16_t type, const char *s)
{
	char cut[KFWD_CTL_STR_MAX];

	if (strlen(s) >= sizeof(cut)) {
		memcpy(cut, s, sizeof(cut) - 1);
		cut[sizeof(cut) - 1] = '\0';
		s = cut;
	}
	if (!b->full && !mnl_attr_put_strz_check(b->nlh, b->size, type, s))
		b->full = true;
}

void ctl_msg_start(struct mb *b, uint16_t type, uint16_t flags, uint32_t seq)
{
	mb_start(b, txbuf, sizeof(txbuf), type, flags, seq);
}

int ctl_msg_send(const struct mb *b, uint32_t portid)
{
	return ctl_socket_send(portid, b->nlh, b->nlh->nlmsg_len);
}

void ctl_msg_end_stream(uint32_t portid, uint32_t seq)
{
	struct mb b;

	mb_done(&b, txbuf, sizeof(txbuf), NLM_F_MULTI, seq);
	(void)ctl_msg_send(&b, portid);
}

/* The ack's message for humans, cut a little under the protocol's string limit. */
#define ACK_MSG_MAX (KFWD_CTL_STR_MAX - 24)

void ctl_reply_ack(const struct ctl_req *r, int error, int off, const char *fmt, ...)
{
	char msg[ACK_MSG_MAX];
	struct nlmsgerr *e;
	struct mb b;

	msg[0] = '\0';
	if (fmt) {
		va_list ap;

		va_start(ap, fmt);
		vsnprintf(msg, sizeof(msg), fmt, ap);
		va_end(ap);
	}
	b.nlh = mnl_nlmsg_put_header(txbuf);
	b.nlh->nlmsg_type = NLMSG_ERROR;
	b.nlh->nlmsg_flags = NLM_F_CAPPED | (msg[0] || off >= 0 ? NLM_F_ACK_TLVS : 0);
	b.nlh->nlmsg_seq = r->nlh->nlmsg_seq;
	b.nlh->nlmsg_pid = ctl_socket_portid();
	b.size = sizeof(txbuf);
	b.full = false;
	e = mnl_nlmsg_put_extra_header(b.nlh, sizeof(*e));
	e->error = error;
	memcpy(&e->msg, r->nlh, sizeof(e->msg));
	if (msg[0])
		put_str(&b, NLMSGERR_ATTR_MSG, msg);
	if (off >= 0)
		put_u32(&b, NLMSGERR_ATTR_OFFS, (uint32_t)off);
	send_reply(r, txbuf, b.nlh->nlmsg_len);
}

void ctl_reply_single(const struct ctl_req *r, void (*fill)(struct mb *, const void *),
		      const void *arg)
{
	struct mb b;

	ctl_msg_start(&b, r->nlh->nlmsg_type, 0, r->nlh->nlmsg_seq);
	fill(&b, arg);
	if (b.full) {
		ctl_reply_ack(r, -EMSGSIZE, -1, "answer larger than %d bytes", KFWD_CTL_MSG_MAX);
		return;
	}
	send_reply(r, txbuf, b.nlh->nlmsg_len);
}

/* ------------------------------------------------------------------ dumps */

static void dump_flush(struct ctl_dump *d)
{
	if (!d->len)
		return;
	send_reply(d->r, txbuf, d->len);
	d->sent += d->len;
	d->len = 0;
}

bool ctl_dump_object(struct ctl_dump *d, void (*fill)(struct mb *, const void *), const void *arg)
{
	for (int attempt = 0; attempt < 2; attempt++) {
		struct mb b;

		if (sizeof(txbuf) - d->len < DUMP_RESERVE)
			dump_flush(d);
		mb_start(&b, (char *)txbuf + d->len, sizeof(txbuf) - d->len, d->r->nlh->nlmsg_type,
			 NLM_F_MULTI, d->r->nlh->nlmsg_seq);
		fill(&b, arg);
		if (!b.full) {
			d->len += b.nlh->nlmsg_len;
			return true;
		}
		if (!d->len)
			break;
		dump_flush(d);
	}
	return false;
}

bool ctl_dump_page_full(const struct ctl_dump *d)
{
	return d->sent + d->len >= KFWD_CTL_DUMP_PAGE;
}

void ctl_dump_done(struct ctl_dump *d, bool more, uint64_t cursor, bool interrupted)
{
	struct mb b;

	if (sizeof(txbuf) - d->len < DUMP_RESERVE)
		dump_flush(d);
	mb_done(&b, (char *)txbuf + d->len, sizeof(txbuf) - d->len,
		NLM_F_MULTI | (interrupted ? NLM_F_DUMP_INTR : 0), d->r->nlh->nlmsg_seq);
	if (more)
		put_u64(&b, KFWD_A_CURSOR, cursor);
	d->len += b.nlh->nlmsg_len;
	dump_flush(d);
}
