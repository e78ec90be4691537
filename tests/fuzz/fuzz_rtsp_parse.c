// SPDX-License-Identifier: GPL-2.0
/*
 * libFuzzer target for user/rtsp_parse.c (and the challenge and URL parsers that read its
 * output): a head fed whole and in two pieces must give the same verdict, spans stay inside the
 * head, and nothing reads outside the input.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rtsp_auth.h"
#include "rtsp_parse.h"
#include "rtsp_url.h"

#define MAX_LINE 2048
#define MAX_HEAD 8192
#define MAX_BODY 65536

static void check_span(const struct rtsp_head *h, struct http_span s)
{
	if (s.len && (size_t)s.off + s.len > h->head_len)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct rtsp_head whole, split;
	enum rtsp_parse_status a, b;
	size_t cut = size ? data[0] % (size + 1) : 0;
	char *copy;

	/* An exact-size copy, so ASan sees any read past the buffered bytes. */
	copy = malloc(size ? size : 1);
	if (!copy)
		return 0;
	memcpy(copy, data, size);
	rtsp_head_init(&whole);
	a = rtsp_head_feed(&whole, copy, size, MAX_LINE, MAX_HEAD, MAX_BODY);
	rtsp_head_init(&split);
	b = rtsp_head_feed(&split, copy, cut, MAX_LINE, MAX_HEAD, MAX_BODY);
	if (b == RTSP_PARSE_MORE)
		b = rtsp_head_feed(&split, copy, size, MAX_LINE, MAX_HEAD, MAX_BODY);
	/* A head complete in the first piece is complete whole; otherwise both agree. */
	if (b == RTSP_PARSE_DONE && a == RTSP_PARSE_DONE && split.head_len != whole.head_len)
		abort();
	if (a != b && !(a == RTSP_PARSE_ERROR && b == RTSP_PARSE_DONE && split.head_len <= cut))
		abort();
	if (a == RTSP_PARSE_DONE) {
		struct rtsp_challenge c;
		struct rtsp_url u;
		char out[1024];

		if (whole.head_len > size || whole.content_length > MAX_BODY)
			abort();
		if (whole.is_request != !rtsp_is_response(copy, size))
			abort();
		check_span(&whole, whole.version);
		check_span(&whole, whole.reason);
		check_span(&whole, whole.session_id);
		check_span(&whole, whole.transport);
		check_span(&whole, whole.rtp_info);
		check_span(&whole, whole.www_authenticate);
		for (unsigned int i = 0; i < whole.http.n_headers; i++) {
			check_span(&whole, whole.http.headers[i].name);
			check_span(&whole, whole.http.headers[i].value);
		}
		if (rtsp_auth_choose(&whole, copy, &c) == 0 &&
		    rtsp_auth_authorization(&c, "user", "pa\"ss", "DESCRIBE", "rtsp://h/x", 1,
					    "0a4f113b", out, sizeof(out)) >= (int)sizeof(out))
			abort();
		if (whole.is_request &&
		    rtsp_url_parse(copy + whole.http.url.off, whole.http.url.len, &u) == 0 &&
		    rtsp_url_format(&u, out, sizeof(out)) >= (int)sizeof(out))
			abort();
	}
	free(copy);
	return 0;
}
