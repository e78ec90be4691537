// SPDX-License-Identifier: GPL-2.0
/*
 * libFuzzer target for user/rtsp_frame.c: a stream fed whole and fed at pseudo-random splits
 * (some payload bytes moved past the framer, as splice would) must give the same events, with
 * body and payload runs merged, and consume every byte exactly once.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rtsp_frame.h"

#define MAX_LINE 1024
#define MAX_HEAD 4096
#define MAX_BODY 65536
#define MAX_EVENTS 4096

struct trace {
	size_t n;
	uint8_t kind[MAX_EVENTS];
	uint8_t channel[MAX_EVENTS];
	uint32_t len[MAX_EVENTS];
	size_t consumed;
	bool error;
};

static void add(struct trace *t, enum rtsp_frame_event_kind kind, uint8_t channel, uint32_t len)
{
	if (t->n && (kind == RTSP_EV_BODY || kind == RTSP_EV_PAYLOAD) &&
	    t->kind[t->n - 1] == kind) {
		t->len[t->n - 1] += len;
		return;
	}
	if (t->n == MAX_EVENTS)
		return;
	t->kind[t->n] = (uint8_t)kind;
	t->channel[t->n] = channel;
	t->len[t->n] = len;
	t->n++;
}

static uint32_t next_rand(uint32_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 17;
	*s ^= *s << 5;
	return *s;
}

/* @seed 0: everything at once; else pieces of 1..64 bytes and payloads moved unseen. */
static void run(uint8_t *data, size_t size, uint32_t seed, struct trace *t)
{
	struct rtsp_framer fr;
	size_t pos = 0, have = 0;

	memset(t, 0, sizeof(*t));
	rtsp_framer_init(&fr, MAX_LINE, MAX_HEAD, MAX_BODY);
	while (have < size && !t->error) {
		have = seed ? have + 1 + next_rand(&seed) % 64 : size;
		if (have > size)
			have = size;
		for (;;) {
			struct rtsp_frame_event ev;
			size_t used;

			if (seed && rtsp_frame_pending(&fr) && pos < have && next_rand(&seed) & 1) {
				uint64_t n = rtsp_frame_pending(&fr);
				enum rtsp_frame_event_kind k =
					fr.state == RTSP_FR_BODY ? RTSP_EV_BODY : RTSP_EV_PAYLOAD;

				if (n > have - pos)
					n = have - pos;
				rtsp_frame_moved(&fr, n);
				add(t, k, 0, (uint32_t)n);
				pos += n;
				continue;
			}
			used = rtsp_frame_step(&fr, data + pos, have - pos, &ev);
			if (ev.kind == RTSP_EV_NEED_MORE)
				break;
			if (ev.kind == RTSP_EV_ERROR) {
				t->error = true;
				break;
			}
			if (used == 0 || used > have - pos)
				abort();
			if (ev.kind == RTSP_EV_HEAD &&
			    (fr.head.head_len != used || fr.head.content_length > MAX_BODY))
				abort();
			add(t, ev.kind, ev.kind == RTSP_EV_FRAME ? ev.channel : 0, ev.len);
			pos += used;
		}
	}
	t->consumed = pos;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct trace whole, split;
	uint32_t seed = 2166136261u;
	uint8_t *copy = malloc(size ? size : 1);

	if (!copy)
		return 0;
	memcpy(copy, data, size);
	for (size_t i = 0; i < size && i < 16; i++)
		seed = (seed ^ data[i]) * 16777619u;
	seed |= 1;
	run(copy, size, 0, &whole);
	run(copy, size, seed, &split);
	/* Without an error every byte is consumed except a cut head or frame header at the end. */
	if (whole.n != split.n || whole.error != split.error || whole.consumed != split.consumed ||
	    memcmp(whole.kind, split.kind, whole.n) ||
	    memcmp(whole.channel, split.channel, whole.n) ||
	    memcmp(whole.len, split.len, whole.n * sizeof(whole.len[0])))
		abort();
	free(copy);
	return 0;
}
