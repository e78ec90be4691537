// SPDX-License-Identifier: GPL-2.0
/*
 * The RTSP stream framer (RFC 2326 §10.12): splits one direction of an RTSP TCP connection into
 * message heads, message bodies, interleaved frame headers and frame payloads. A '$' is a frame
 * only at a message boundary: a body (exactly Content-Length bytes, none without it) may start
 * with '$'. Owns no memory beyond its struct.
 */
#include <string.h>

#include "rtsp_frame.h"

void rtsp_framer_init(struct rtsp_framer *fr, size_t max_line, size_t max_head, uint64_t max_body)
{
	memset(fr, 0, sizeof(*fr));
	fr->max_line = max_line;
	fr->max_head = max_head;
	fr->max_body = max_body;
	fr->state = RTSP_FR_BOUNDARY;
}

uint64_t rtsp_frame_pending(const struct rtsp_framer *fr)
{
	return fr->state == RTSP_FR_BODY || fr->state == RTSP_FR_PAYLOAD ? fr->remaining : 0;
}

void rtsp_frame_moved(struct rtsp_framer *fr, uint64_t n)
{
	if (n > rtsp_frame_pending(fr))
		n = rtsp_frame_pending(fr);
	fr->remaining -= n;
	if (fr->remaining == 0 && (fr->state == RTSP_FR_BODY || fr->state == RTSP_FR_PAYLOAD))
		fr->state = RTSP_FR_BOUNDARY;
}

/* A message starts with a method (an upper-case token) or "RTSP/": both a capital letter. */
static bool starts_message(uint8_t c)
{
	return c >= 'A' && c <= 'Z';
}

static size_t emit(struct rtsp_frame_event *ev, enum rtsp_frame_event_kind kind, uint32_t len)
{
	ev->kind = kind;
	ev->len = len;
	return kind == RTSP_EV_NEED_MORE || kind == RTSP_EV_ERROR ? 0 : len;
}

static size_t run(struct rtsp_framer *fr, size_t len, struct rtsp_frame_event *ev,
		  enum rtsp_frame_event_kind kind)
{
	uint64_t n = len < fr->remaining ? len : fr->remaining;

	if (n > UINT32_MAX) /* ev->len is 32 bits; the rest comes with the next step */
		n = UINT32_MAX;
	if (n == 0)
		return emit(ev, RTSP_EV_NEED_MORE, 0);
	rtsp_frame_moved(fr, n);
	return emit(ev, kind, (uint32_t)n);
}

static size_t head(struct rtsp_framer *fr, uint8_t *buf, size_t len, struct rtsp_frame_event *ev)
{
	switch (rtsp_head_feed(&fr->head, (char *)buf, len, fr->max_line, fr->max_head,
			       fr->max_body)) {
	case RTSP_PARSE_MORE:
		return emit(ev, RTSP_EV_NEED_MORE, 0);
	case RTSP_PARSE_ERROR:
		fr->state = RTSP_FR_ERROR;
		fr->error = RTSP_FRAME_BAD_HEAD;
		return emit(ev, RTSP_EV_ERROR, 0);
	case RTSP_PARSE_DONE:
		break;
	}
	fr->remaining = fr->head.content_length;
	fr->state = fr->remaining ? RTSP_FR_BODY : RTSP_FR_BOUNDARY;
	return emit(ev, RTSP_EV_HEAD, (uint32_t)fr->head.head_len);
}

size_t rtsp_frame_step(struct rtsp_framer *fr, uint8_t *buf, size_t len,
		       struct rtsp_frame_event *ev)
{
	ev->channel = 0;
	switch (fr->state) {
	case RTSP_FR_ERROR:
		return emit(ev, RTSP_EV_ERROR, 0);
	case RTSP_FR_BODY:
		return run(fr, len, ev, RTSP_EV_BODY);
	case RTSP_FR_PAYLOAD:
		return run(fr, len, ev, RTSP_EV_PAYLOAD);
	case RTSP_FR_HEAD:
		return head(fr, buf, len, ev);
	case RTSP_FR_BOUNDARY:
		break;
	}
	if (len == 0)
		return emit(ev, RTSP_EV_NEED_MORE, 0);
	if (buf[0] == RTSP_FRAME_MAGIC) {
		if (len < RTSP_FRAME_HDR_LEN)
			return emit(ev, RTSP_EV_NEED_MORE, 0);
		ev->channel = buf[1];
		fr->remaining = (uint32_t)buf[2] << 8 | buf[3];
		if (fr->remaining)
			fr->state = RTSP_FR_PAYLOAD;
		emit(ev, RTSP_EV_FRAME, (uint32_t)fr->remaining);
		return RTSP_FRAME_HDR_LEN;
	}
	if (!starts_message(buf[0])) {
		fr->state = RTSP_FR_ERROR;
		fr->error = RTSP_FRAME_GARBAGE;
		return emit(ev, RTSP_EV_ERROR, 0);
	}
	rtsp_head_init(&fr->head);
	fr->state = RTSP_FR_HEAD;
	return head(fr, buf, len, ev);
}

#define RTP_HDR_LEN 12
#define RTP_VERSION 2

/*
 * See rtsp_frame.h.
 */
int rtsp_rtp_payload(const uint8_t *p, size_t n, size_t *off, size_t *end)
{
	size_t o, e = n;

	if (n < RTP_HDR_LEN || p[0] >> 6 != RTP_VERSION)
		return -1;
	o = RTP_HDR_LEN + 4 * (size_t)(p[0] & 0x0f);
	if (p[0] & 0x10) {
		if (o + 4 > n)
			return -1;
		o += 4 + 4 * (size_t)((p[o + 2] << 8) | p[o + 3]);
	}
	if (p[0] & 0x20) {
		if (!p[n - 1] || p[n - 1] > n)
			return -1;
		e -= p[n - 1];
	}
	if (o > e)
		return -1;
	*off = o;
	*end = e;
	return 0;
}
