// SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause)
/*
 * kfwd sockmap data path: bounded, lossless in-kernel TCP forwarding.
 *
 * Build: clang -target bpf -g -O2 -D__TARGET_ARCH_x86 \
 *	-Ivmlinux/$(arch) -Iinclude -c bpf/kfwd.bpf.c -o build/kfwd.bpf.o
 *
 * One stream verdict program, attached to kfwd_socks as BPF_SK_SKB_VERDICT
 * (no stream parser), runs for every skb a forwarded socket receives.  See
 * include/kfwd/sockmap.h for the protocol with user space.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "kfwd/sockmap.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Socket cookie -> socket.  No BTF for key/value: sockhash rejects it. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, KFWD_MAX_SOCKS);
	__uint(key_size, sizeof(__u64));
	__uint(value_size, sizeof(__u64));
} kfwd_socks SEC(".maps");

/* Source socket cookie -> per-direction state and counters. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, KFWD_MAX_SOCKS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, struct kfwd_dir);
} kfwd_dirs SEC(".maps");

/* Source socket cookie -> resume request from user space. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, KFWD_MAX_SOCKS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, struct kfwd_ctl);
} kfwd_ctl SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, KFWD_EVENTS_BYTES);
} kfwd_events SEC(".maps");

/* Events lost because the ring was full: user space then pumps every flow. */
__u64 kfwd_events_lost;

extern void *bpf_cast_to_kern_ctx(void *obj) __ksym;

static __always_inline void notify(struct kfwd_dir *d, __u32 type)
{
	struct kfwd_event ev = {
		.flow_id = d->flow_id,
		.src_cookie = d->src_cookie,
		.position = d->next_pos,
		.type = type,
		.pause_count = d->pause_count,
	};

	if (bpf_ringbuf_output(&kfwd_events, &ev, sizeof(ev), 0))
		__sync_fetch_and_add(&kfwd_events_lost, 1);
}

/* A resume request that cannot be met: one event per request, not per skb. */
static __always_inline void reject(struct kfwd_dir *d, const struct kfwd_ctl *c)
{
	d->resume_rejects++;
	if (d->reject_seq == c->seq)
		return;
	d->reject_seq = c->seq;
	notify(d, KFWD_EV_RESUME_REJECTED);
}

/*
 * Sample the destination: bytes that entered its send queue (write_seq)
 * and bytes its peer acked, both relative to dst_base.  Read without the
 * destination's lock, bytes_acked before snd_una, so the result never
 * exceeds the truth: the cap errs on the safe side.
 */
static __always_inline int dst_sample(struct kfwd_dir *d, __u64 *written, __u64 *acked)
{
	__u64 key = d->dst_cookie;
	struct bpf_sock *sk;
	struct tcp_sock *tp;
	__u64 bytes_acked;
	__u32 una, wseq;

	sk = bpf_map_lookup_elem(&kfwd_socks, &key);
	if (!sk)
		return -1;
	tp = bpf_skc_to_tcp_sock(sk);
	if (!tp) {
		bpf_sk_release(sk);
		return -1;
	}
	bytes_acked = BPF_CORE_READ(tp, bytes_acked);
	asm volatile("" ::: "memory");
	una = BPF_CORE_READ(tp, snd_una);
	wseq = BPF_CORE_READ(tp, write_seq);
	bpf_sk_release(sk);

	*written = bytes_acked + (__u32)(wseq - una) - d->dst_base;
	*acked = bytes_acked;
	return 0;
}

/* src's first data sequence number: rcv_nxt - bytes_received (both count
 * the FIN).  Read once, with src locked (the verdict runs under its lock). */
static __always_inline int src_seq0(__u64 cookie, __u32 *seq0)
{
	struct bpf_sock *sk;
	struct tcp_sock *tp;
	__u64 received;
	__u32 nxt;

	sk = bpf_map_lookup_elem(&kfwd_socks, &cookie);
	if (!sk)
		return -1;
	tp = bpf_skc_to_tcp_sock(sk);
	if (!tp) {
		bpf_sk_release(sk);
		return -1;
	}
	nxt = BPF_CORE_READ(tp, rcv_nxt);
	received = BPF_CORE_READ(tp, bytes_received);
	bpf_sk_release(sk);
	*seq0 = nxt - (__u32)received;
	return 0;
}

/*
 * Remove @n duplicated leading bytes.  sk_skb_adjust_room() shrinks at most
 * 0xfff bytes per call; an skb is at most 64 KiB without BIG TCP.
 */
static __always_inline long trim_front(struct __sk_buff *skb, __u32 n)
{
	long err;
	int i;

	for (i = 0; i < 64 && n; i++) {
		__u32 step = n > 0xfff ? 0xfff : n;

		err = bpf_skb_adjust_room(skb, -(__s32)step, 0, 0);
		if (err)
			return err;
		n -= step;
	}
	return n ? -7 /* -E2BIG */ : 0;
}

SEC("sk_skb")
int kfwd_verdict(struct __sk_buff *skb)
{
	__u64 cookie = bpf_get_socket_cookie(skb);
	__u64 written, acked, inflight, key, pos, want, dup;
	struct sk_buff *kskb;
	struct kfwd_dir *d;
	struct kfwd_ctl *c;
	bool sampled = false;
	__u32 len = skb->len;
	__u32 seq;
	long ret;

	d = bpf_map_lookup_elem(&kfwd_dirs, &cookie);
	if (!d)
		return SK_PASS; /* not ours: leave it to user space */

	/*
	 * A pure FIN reaches the verdict as a zero-length skb.  Redirected,
	 * the destination's psock backlog gets 0 from skb_send_sock(), takes
	 * it as a hard error, reports EPIPE on the destination socket and
	 * stops transmitting.  It carries no data and tcp_fin() already
	 * recorded the shutdown, so drop it.
	 */
	if (!len)
		return SK_DROP;

	/*
	 * tcp_read_skb() hands over whole skbs and ignores copied_seq, but
	 * tcp_data_queue() queues a retransmit that overlaps rcv_nxt
	 * (seq < rcv_nxt < end_seq) untrimmed, relying on the reader's
	 * offset.  Track the stream position here and cut the overlap, or
	 * the overlapping bytes are forwarded twice.
	 */
	kskb = bpf_cast_to_kern_ctx(skb);
	seq = ((struct tcp_skb_cb *)kskb->cb)->seq;
	if (!d->seq0_set) {
		if (src_seq0(cookie, &d->seq0) < 0) {
			d->errors++;
			goto pass;
		}
		d->seq0_set = 1;
		/* 64-bit position from the 32-bit offset, near rx_base */
		d->next_pos = d->rx_base + (__s32)((__u32)(seq - d->seq0) - (__u32)d->rx_base);
	}
	pos = d->next_pos + (__s32)(seq - (__u32)(d->seq0 + d->next_pos));
	if (pos < d->next_pos) {
		dup = d->next_pos - pos;
		d->overlaps++;
		if (dup >= len) {
			d->dup_bytes += len;
			return SK_DROP;
		}
		ret = trim_front(skb, dup);
		if (ret) {
			d->errors++;
			d->trim_err = ret;
			d->trim_len = len;
			d->trim_dup = dup;
			return SK_DROP;
		}
		d->dup_bytes += dup;
		len -= dup;
		pos += dup;
	} else if (pos > d->next_pos) {
		d->gaps++;
	}
	d->next_pos = pos + len;

	if ((d->flags & KFWD_F_LIMIT) && pos + len > d->end_pos) {
		/*
		 * The body ends inside or before this skb: redirecting it
		 * would forward bytes that are not the body's.  User space
		 * reads up to end_pos and leaves the rest.
		 */
		d->past_end += pos >= d->end_pos ? len : pos + len - d->end_pos;
		if (d->state == KFWD_PASS)
			goto pass;
		goto pause;
	}

	if (d->state == KFWD_PASS) {
		c = bpf_map_lookup_elem(&kfwd_ctl, &cookie);
		if (!c || c->pause_gen != d->pause_count)
			goto pass;
		want = d->rx_base + d->redirected + c->user_read;
		if (pos != want) {
			/* bytes before this skb are still in the kernel */
			reject(d, c);
			goto pass;
		}
		/*
		 * User space may promise bytes it is still writing: redirect
		 * only once every byte before this skb is in dst's send queue,
		 * or this skb could overtake them.  The sample never exceeds
		 * the truth, so a race rejects, never reorders.
		 */
		if (dst_sample(d, &written, &acked) < 0) {
			d->errors++;
			goto pass;
		}
		sampled = true;
		if (written != d->redirected + c->user_written) {
			d->resume_early++;
			reject(d, c);
			goto pass;
		}
		d->user_written = c->user_written;
		d->resume_count++;
		d->state = KFWD_REDIRECT;
	}

	if (d->flags & KFWD_F_UNBOUNDED)
		goto redirect;

	if (!sampled && dst_sample(d, &written, &acked) < 0) {
		d->errors++;
		goto pause;
	}
	d->dst_written = written;
	d->dst_acked = acked;
	if (d->flags & KFWD_F_CAP_UNACKED)
		written = acked - d->dst_base;
	inflight = d->redirected + d->user_written - written;
	if ((__s64)inflight < 0)
		inflight = 0;
	if (inflight > d->inflight_max)
		d->inflight_max = inflight;
	if (inflight >= d->cap)
		goto pause;

redirect:
	key = d->dst_cookie;
	ret = bpf_sk_redirect_hash(skb, &kfwd_socks, &key, 0);
	if (ret != SK_PASS) {
		/* dst gone from the map: hand the bytes to user space */
		d->errors++;
		d->pause_count++;
		d->state = KFWD_PASS;
		d->passed += len;
		notify(d, KFWD_EV_REDIRECT_FAILED);
		return SK_PASS;
	}
	d->redirected += len;
	/* nothing else wakes user space when a body ends in the kernel */
	if ((d->flags & KFWD_F_LIMIT) && d->next_pos == d->end_pos)
		notify(d, KFWD_EV_BODY_END);
	return SK_PASS;

pause:
	d->pause_count++;
	asm volatile("" ::: "memory");
	d->state = KFWD_PASS;
	d->passed += len;
	notify(d, KFWD_EV_PAUSE);
	return SK_PASS;

pass:
	d->passed += len;
	return SK_PASS;
}
