// SPDX-License-Identifier: GPL-2.0
/*
 * libFuzzer target for user/rtsp_rewrite.c: a parsed head rewritten both ways must parse again
 * (same kind, same CSeq, Content-Length as asked), outputs stay within their bounds, and the
 * bytes after the head go through the SDP rewriter, which maps and maps back to the original.
 */
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rtsp_parse.h"
#include "rtsp_rewrite.h"

#define MAX_LINE 2048
#define MAX_HEAD 8192
#define MAX_BODY 65536
#define OUT_MAX (4 * MAX_HEAD)

static const struct rtsp_url_map map = {
	.client = "rtsp://router:8554/cam1",
	.client_len = sizeof("rtsp://router:8554/cam1") - 1,
	.upstream = "rtsp://192.168.1.20/stream1",
	.upstream_len = sizeof("rtsp://192.168.1.20/stream1") - 1,
};

/* Equal but for letter case (the rewriter matches scheme and authority case-insensitively). */
static bool same_but_case(const char *a, const char *b, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (tolower((unsigned char)a[i]) != tolower((unsigned char)b[i]))
			return false;
	return true;
}

static bool has_client_url(const char *s, size_t len)
{
	for (size_t i = 0; i + map.client_len <= len; i++)
		if (same_but_case(s + i, map.client, map.client_len))
			return true;
	return false;
}

static void rewrite(const char *head, const struct rtsp_head *h, enum rtsp_dir dir, size_t cap)
{
	static char out[OUT_MAX];
	struct rtsp_rewrite rw = {
		.map = &map,
		.dir = dir,
		.via = dir == RTSP_TO_UPSTREAM ? "kfwd" : NULL,
		.filter_transport = dir == RTSP_TO_UPSTREAM,
		.content_length = h->content_length ? (int64_t)h->content_length + 3 : -1,
	};
	struct rtsp_head again;
	size_t out_len = 0;
	enum rtsp_rw_result r = rtsp_rewrite_head(head, h, &rw, out, cap, &out_len);
	char *copy;

	/* Via and Content-Length may add two headers past the parser's limit. */
	if (r != RTSP_RW_OK || h->http.n_headers + 2 > HTTP_MAX_HEADERS)
		return;
	if (out_len > cap)
		abort();
	copy = malloc(out_len);
	if (!copy)
		return;
	memcpy(copy, out, out_len);
	rtsp_head_init(&again);
	/* The rewritten head is a head; only a longer URL may now exceed the line limit. */
	if (rtsp_head_feed(&again, copy, out_len, 4 * MAX_LINE, OUT_MAX, UINT64_MAX) !=
	    RTSP_PARSE_DONE)
		abort();
	if (again.head_len != out_len || again.is_request != h->is_request ||
	    again.has_cseq != h->has_cseq || again.cseq != h->cseq ||
	    (rw.content_length >= 0 && again.content_length != (uint64_t)rw.content_length))
		abort();
	free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char sdp[2 * MAX_BODY], back[2 * MAX_BODY];
	struct rtsp_head h;
	char *copy = malloc(size ? size : 1);
	size_t sdp_len, back_len, cap;

	if (!copy)
		return 0;
	memcpy(copy, data, size);
	rtsp_head_init(&h);
	if (rtsp_head_feed(&h, copy, size, MAX_LINE, MAX_HEAD, MAX_BODY) == RTSP_PARSE_DONE) {
		cap = size ? (size_t)data[size - 1] * 4 : 0;
		rewrite(copy, &h, RTSP_TO_UPSTREAM, OUT_MAX);
		rewrite(copy, &h, RTSP_TO_CLIENT, OUT_MAX);
		rewrite(copy, &h, RTSP_TO_CLIENT, cap < OUT_MAX ? cap : OUT_MAX);
		/* The rest as an SDP body: upstream→client→upstream gives the original when no
		 * client URL was in it to begin with. */
		if (rtsp_rewrite_sdp(copy + h.head_len, size - h.head_len, &map, RTSP_TO_CLIENT,
				     sdp, sizeof(sdp), &sdp_len) == RTSP_RW_OK &&
		    !has_client_url(copy + h.head_len, size - h.head_len) &&
		    rtsp_rewrite_sdp(sdp, sdp_len, &map, RTSP_TO_UPSTREAM, back, sizeof(back),
				     &back_len) == RTSP_RW_OK &&
		    (back_len != size - h.head_len ||
		     !same_but_case(back, copy + h.head_len, back_len)))
			abort();
	}
	free(copy);
	return 0;
}
