/* SPDX-License-Identifier: GPL-2.0 */
#ifndef KFWD_RTSP_FRAME_H
#define KFWD_RTSP_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include "rtsp_parse.h"

#define RTSP_FRAME_MAGIC '$'
#define RTSP_FRAME_HDR_LEN 4 /* '$', channel, 16-bit big-endian payload length */

enum rtsp_frame_event_kind {
	RTSP_EV_NEED_MORE, /* nothing consumed: give more bytes (a head or frame header is cut) */
	RTSP_EV_HEAD, /* an RTSP message head of len bytes: fr->head describes it */
	RTSP_EV_BODY, /* len body bytes of that message */
	RTSP_EV_FRAME, /* an interleaved frame header: channel, len payload bytes follow */
	RTSP_EV_PAYLOAD, /* len payload bytes of that frame */
	RTSP_EV_ERROR, /* garbage at a message boundary, or a bad head: see fr->error */
};

struct rtsp_frame_event {
	enum rtsp_frame_event_kind kind;
	uint8_t channel; /* RTSP_EV_FRAME */
	uint32_t len; /* bytes consumed by this event (RTSP_EV_FRAME: the payload length) */
};

enum rtsp_frame_state {
	RTSP_FR_BOUNDARY, /* between messages and frames */
	RTSP_FR_HEAD, /* inside a message head */
	RTSP_FR_BODY, /* inside a message body */
	RTSP_FR_PAYLOAD, /* inside a frame's payload */
	RTSP_FR_ERROR,
};

enum rtsp_frame_error {
	RTSP_FRAME_OK,
	RTSP_FRAME_GARBAGE, /* a boundary byte starts neither '$' nor a message */
	RTSP_FRAME_BAD_HEAD, /* see head.error */
};

/*
 * The framer of one direction of an RTSP TCP connection. It never allocates and never keeps
 * bytes: the caller keeps a buffer of the bytes not yet consumed and calls rtsp_frame_step()
 * with its start; a head or a frame header is only consumed once it is whole in that buffer,
 * body and payload bytes as they come. A caller that moves body or payload bytes without
 * showing them (splice, sockmap, MSG_TRUNC discard) asks rtsp_frame_pending() how many it may
 * move and reports them with rtsp_frame_moved().
 */
struct rtsp_framer {
	enum rtsp_frame_state state;
	enum rtsp_frame_error error;
	uint64_t remaining; /* body or payload bytes left */
	size_t max_line, max_head;
	uint64_t max_body;
	struct rtsp_head head; /* the current (or last) message head */
};

void rtsp_framer_init(struct rtsp_framer *fr, size_t max_line, size_t max_head, uint64_t max_body);
/*
 * One event for the bytes @buf[0..@len) that start at the framer's position in the stream.
 * Returns the bytes consumed (ev->len, 0 for RTSP_EV_NEED_MORE and RTSP_EV_ERROR). After
 * RTSP_EV_HEAD, fr->head's spans are relative to @buf (the head's first byte) and stay valid
 * until the next step; @buf is writable for rtsp_head_feed() only. Feeding the same stream in
 * any split gives the same events, except that body and payload byte runs are cut where the
 * buffer ends.
 */
size_t rtsp_frame_step(struct rtsp_framer *fr, uint8_t *buf, size_t len,
		       struct rtsp_frame_event *ev);
/* Body or payload bytes the caller may move now without showing them to the framer. */
uint64_t rtsp_frame_pending(const struct rtsp_framer *fr);
/* @n (at most rtsp_frame_pending()) body or payload bytes were moved past the framer. */
void rtsp_frame_moved(struct rtsp_framer *fr, uint64_t n);
/*
 * The payload of the RTP packet @p (@n bytes, an interleaved frame's payload): bytes
 * [*@off, *@end) past the CSRC list and the header extension, before the padding
 * (RFC 3550 §5.1). 0, or -1 when it is not a well-formed RTP version 2 packet.
 */
int rtsp_rtp_payload(const uint8_t *p, size_t n, size_t *off, size_t *end);

#endif
