/* SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause) */
/*
 * Map values shared by bpf/kfwd.bpf.c and user/sockmap.c.
 *
 * The BPF side includes this after vmlinux.h, user space after
 * <linux/types.h>; only __u32/__u64 and plain enums are used so the layout
 * is identical in both.  Every map is keyed by the socket cookie
 * (SO_COOKIE) of the *source* socket of one direction of a flow.
 *
 * Protocol between the verdict program and user space (one direction):
 *
 *   KFWD_REDIRECT: every skb of the source is redirected to the destination
 *	socket (bpf_sk_redirect_hash) and counted in @redirected, as long as
 *	the bytes redirected but not yet in the destination's TCP send queue
 *	(or not yet acked, KFWD_F_CAP_UNACKED) stay below @cap.
 *   Over the cap the program flips to KFWD_PASS, bumps @pause_count and
 *	sends a KFWD_EV_PAUSE event on the ring buffer.
 *   KFWD_PASS: every skb is returned SK_PASS and counted in @passed; it
 *	lands in the source's psock ingress queue, charged to the source's
 *	receive buffer, so the source's TCP window closes.  User space
 *	recv()s it, waits until the destination took every redirected byte,
 *	writes it, and asks to resume by writing kfwd_ctl with
 *	@pause_gen == @pause_count, @user_read == bytes it will have
 *	recv()d from the source since the flow was added and @user_written
 *	== bytes it will have written to the destination by then (a promise:
 *	it may still be reading and writing the last of them).  The program
 *	resumes redirecting only at an skb that starts exactly at stream
 *	position @rx_base + @redirected + @user_read (TCP sequence of the
 *	skb minus the source's initial sequence: nothing after the promise
 *	was passed) when the destination's send queue has taken exactly
 *	@redirected + @user_written bytes since the flow was added (every
 *	byte before the skb is there, so it cannot be overtaken); otherwise
 *	it passes the skb and sends KFWD_EV_RESUME_REJECTED.
 *
 * A direction starts in KFWD_PASS with @pause_count 1, so bytes the daemon
 * had buffered or that were queued before the socket entered the map are
 * written by user space first; user space writes its first resume request
 * when it adds the flow, promising those bytes.
 *
 * KFWD_F_LIMIT (a response body with a Content-Length): the direction
 * carries the source's bytes up to stream position @end_pos and not one
 * more.  An skb that reaches past it is never redirected: the program
 * passes it (pausing the direction), user space reads up to @end_pos and
 * leaves the rest, which an upstream should never have sent.
 */
#ifndef KFWD_SOCKMAP_H
#define KFWD_SOCKMAP_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#define KFWD_PIN_DIR_DEFAULT "/sys/fs/bpf/kfwd"
#define KFWD_MAX_SOCKS 65536
#define KFWD_EVENTS_BYTES (256 * 1024)

enum kfwd_state {
	KFWD_REDIRECT = 0,
	KFWD_PASS = 1,
};

enum kfwd_dir_flags {
	KFWD_F_UNBOUNDED = 1, /* always redirect, no cap (sockmap-unbounded) */
	KFWD_F_CAP_UNACKED = 2, /* cap counts the dst's unacked bytes too */
	KFWD_F_LIMIT = 4, /* forward src bytes only up to end_pos */
};

enum kfwd_event_type {
	KFWD_EV_PAUSE = 1,
	KFWD_EV_RESUME_REJECTED = 2,
	KFWD_EV_REDIRECT_FAILED = 3,
	KFWD_EV_BODY_END = 4, /* KFWD_F_LIMIT: last body byte redirected */
};

/* kfwd_dirs value: written by user space only before the source socket is
 * in kfwd_socks; afterwards only by the verdict program. */
struct kfwd_dir {
	__u64 flow_id;
	__u64 src_cookie;
	__u64 dst_cookie;
	__u64 cap; /* max bytes in flight in the kernel */
	__u64 rx_base; /* src bytes consumed (received - inq) at add */
	__u64 dst_base; /* dst bytes_acked + unacked when added */
	__u64 redirected; /* bytes redirected by the program */
	__u64 passed; /* bytes returned SK_PASS (to user space) */
	__u64 user_written; /* bytes user space wrote to dst (at resume) */
	__u64 dst_written; /* last sample: bytes in/through dst's sndq */
	__u64 dst_acked; /* last sample: bytes acked by dst's peer */
	__u64 inflight_max; /* high-water mark of in-kernel bytes */
	__u64 next_pos; /* stream position the next skb must start at */
	__u64 dup_bytes; /* retransmitted overlap trimmed or dropped */
	__u64 end_pos; /* KFWD_F_LIMIT: stream position the body ends at */
	__u64 past_end; /* KFWD_F_LIMIT: bytes seen past end_pos */
	__u32 seq0; /* src's first data sequence number */
	__u32 seq0_set;
	enum kfwd_state state;
	__u32 flags; /* enum kfwd_dir_flags */
	__u32 pause_count;
	__u32 resume_count;
	__u32 resume_rejects;
	__u32 errors; /* peer lookup / redirect failures */
	__u32 overlaps; /* skbs that started before next_pos */
	__u32 gaps; /* skbs that started after next_pos: bug */
	__s32 trim_err; /* last failed trim: helper error */
	__u32 trim_len; /* last failed trim: skb length */
	__u32 trim_dup; /* last failed trim: bytes to cut */
	__u32 resume_early; /* rejects: promised bytes not yet in dst */
	__u32 reject_seq; /* kfwd_ctl.seq last rejected (one event each) */
	__u32 pad;
};

/* kfwd_ctl value: written by user space only (resume request). */
struct kfwd_ctl {
	__u64 user_read; /* bytes user space recv()d from src, promised */
	__u64 user_written; /* bytes user space wrote to dst, promised */
	__u32 pause_gen; /* kfwd_dir.pause_count being resumed */
	__u32 seq; /* bumped on every write */
};

struct kfwd_event {
	__u64 flow_id;
	__u64 src_cookie;
	__u64 position; /* redirected + passed */
	__u32 type; /* enum kfwd_event_type */
	__u32 pause_count;
};

#endif /* KFWD_SOCKMAP_H */
