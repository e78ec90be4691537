// SPDX-License-Identifier: GPL-2.0
/*
 * C unit tests for what the HTTP->RTSP gateway adds to the RTSP modules: RFC 3986 reference
 * resolution of SDP controls (rtsp_url_resolve, with the RFC's §5.4 examples) and the RTP
 * payload of interleaved frames (rtsp_rtp_payload). unit_main.c calls unit_rtsp_client().
 */
#include <stdint.h>
#include <string.h>

#include "rtsp_frame.h"
#include "rtsp_url.h"
#include "unit.h"

static int resolves(const char *base, const char *ref, const char *want)
{
	char out[RTSP_URL_RESOLVE_MAX];

	if (rtsp_url_resolve(base, ref, strlen(ref), out, sizeof(out)) < 0)
		return 0;
	if (strcmp(out, want)) {
		fprintf(stderr, "resolve(%s, %s) = %s, want %s\n", base, ref, out, want);
		return 0;
	}
	return 1;
}

static void test_resolve(void)
{
	/* RFC 3986 §5.4.1 and §5.4.2, with rtsp: for http: (no fragments). */
	static const char *const base = "rtsp://a/b/c/d;p?q";
	static const char *const cases[][2] = {
		{ "g:h", "g:h" },
		{ "g", "rtsp://a/b/c/g" },
		{ "./g", "rtsp://a/b/c/g" },
		{ "g/", "rtsp://a/b/c/g/" },
		{ "/g", "rtsp://a/g" },
		{ "//g", "rtsp://g" },
		{ "?y", "rtsp://a/b/c/d;p?y" },
		{ "g?y", "rtsp://a/b/c/g?y" },
		{ ";x", "rtsp://a/b/c/;x" },
		{ "g;x", "rtsp://a/b/c/g;x" },
		{ "", "rtsp://a/b/c/d;p?q" },
		{ ".", "rtsp://a/b/c/" },
		{ "./", "rtsp://a/b/c/" },
		{ "..", "rtsp://a/b/" },
		{ "../", "rtsp://a/b/" },
		{ "../g", "rtsp://a/b/g" },
		{ "../..", "rtsp://a/" },
		{ "../../", "rtsp://a/" },
		{ "../../g", "rtsp://a/g" },
		{ "../../../g", "rtsp://a/g" },
		{ "/./g", "rtsp://a/g" },
		{ "/../g", "rtsp://a/g" },
		{ "g.", "rtsp://a/b/c/g." },
		{ "..g", "rtsp://a/b/c/..g" },
		{ "./../g", "rtsp://a/b/g" },
		{ "./g/.", "rtsp://a/b/c/g/" },
		{ "g/./h", "rtsp://a/b/c/g/h" },
		{ "g/../h", "rtsp://a/b/c/h" },
		{ "g;x=1/./y", "rtsp://a/b/c/g;x=1/y" },
		{ "g;x=1/../y", "rtsp://a/b/c/y" },
		{ "g?y/./x", "rtsp://a/b/c/g?y/./x" },
	};
	char out[16];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		CHECK(resolves(base, cases[i][0], cases[i][1]));
	/* The gateway's cases: a Content-Base with a trailing slash, a query, an empty path. */
	CHECK(resolves("rtsp://h:554/live/ch1/", "trackID=0", "rtsp://h:554/live/ch1/trackID=0"));
	CHECK(resolves("rtsp://h/live/ch1?tok=1", "trackID=0", "rtsp://h/live/trackID=0"));
	CHECK(resolves("rtsp://h", "t", "rtsp://h/t"));
	CHECK(resolves("rtsp://[::1]:8554/a/", "../b", "rtsp://[::1]:8554/b"));
	CHECK(rtsp_url_resolve("rtsp://host/a/", "track", 5, out, sizeof(out)) == -1);
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
