// SPDX-License-Identifier: GPL-2.0
/*
 * C unit tests for what the HTTP->RTSP gateway adds to the RTSP modules: reference resolution
 * of SDP controls (rtsp_url_resolve, over uri.c whose RFC 3986 §5.4 examples unit_uri.c has) and
 * the RTP payload of interleaved frames (rtsp_rtp_payload). unit_main.c calls unit_rtsp_client().
 */
#include <stdint.h>
#include <string.h>

#include "rtsp_frame.h"
#include "rtsp_url.h"
#include "unit.h"

static void test_resolve(void)
{
	char out[RTSP_URL_RESOLVE_MAX];

	/* The gateway's cases: a Content-Base with a trailing slash, a query, an empty path. */
	CHECK(unit_resolves("rtsp://h:554/live/ch1/", "trackID=0",
			    "rtsp://h:554/live/ch1/trackID=0"));
	CHECK(unit_resolves("rtsp://h/live/ch1?tok=1", "trackID=0", "rtsp://h/live/trackID=0"));
	CHECK(unit_resolves("rtsp://h", "t", "rtsp://h/t"));
	CHECK(unit_resolves("rtsp://[::1]:8554/a/", "../b", "rtsp://[::1]:8554/b"));
	CHECK(rtsp_url_resolve("rtsp://h/a/", "t", 1, out, sizeof(out)) == 0 &&
	      !strcmp(out, "rtsp://h/a/t"));
	CHECK(rtsp_url_resolve("rtsp://host/a/", "track", 5, out, strlen("rtsp://host/a/t")) == -1);
	CHECK(rtsp_url_has_scheme("rtsp://x", 8) && !rtsp_url_has_scheme("trackID=0", 9) &&
	      !rtsp_url_has_scheme("1a:b", 4) && !rtsp_url_has_scheme("", 0));
}

static void test_rtp_payload(void)
{
	uint8_t p[64];
	size_t off, end;

	memset(p, 0x47, sizeof(p));
	p[0] = 0x80; /* version 2, nothing else */
	CHECK(rtsp_rtp_payload(p, 40, &off, &end) == 0 && off == 12 && end == 40);
	p[0] = 0x82; /* two CSRCs */
	CHECK(rtsp_rtp_payload(p, 40, &off, &end) == 0 && off == 20 && end == 40);
	p[0] = 0x90; /* an extension of one 32-bit word */
	p[12] = 0xbe, p[13] = 0xde, p[14] = 0, p[15] = 1;
	CHECK(rtsp_rtp_payload(p, 40, &off, &end) == 0 && off == 20 && end == 40);
	p[0] = 0xa0; /* 4 bytes of padding */
	p[39] = 4;
	CHECK(rtsp_rtp_payload(p, 40, &off, &end) == 0 && off == 12 && end == 36);
	p[39] = 0; /* padding count 0 */
	CHECK(rtsp_rtp_payload(p, 40, &off, &end) == -1);
	p[39] = 41; /* more padding than packet */
	CHECK(rtsp_rtp_payload(p, 40, &off, &end) == -1);
	p[0] = 0x8f; /* 15 CSRCs do not fit */
	CHECK(rtsp_rtp_payload(p, 40, &off, &end) == -1);
	p[0] = 0x90; /* an extension past the end */
	p[14] = 0xff;
	CHECK(rtsp_rtp_payload(p, 40, &off, &end) == -1);
	CHECK(rtsp_rtp_payload(p, 14, &off, &end) == -1);
	p[0] = 0x40; /* version 1 */
	CHECK(rtsp_rtp_payload(p, 40, &off, &end) == -1);
	CHECK(rtsp_rtp_payload(p, 11, &off, &end) == -1);
}

void unit_rtsp_client(void)
{
	test_resolve();
	test_rtp_payload();
}
