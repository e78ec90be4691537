// SPDX-License-Identifier: GPL-2.0
/*
 * C unit tests for the RTSP modules: head parsing, the stream framer fed at every byte split,
 * URL/SDP/Transport rewriting, Basic and Digest answers (RFC 2617 §3.5 vectors), RTSP URLs.
 * unit_main.c calls unit_rtsp().
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rtsp_auth.h"
#include "rtsp_frame.h"
#include "rtsp_parse.h"
#include "rtsp_rewrite.h"
#include "rtsp_url.h"
#include "unit.h"

#define MAX_LINE 4096
#define MAX_HEAD 16384
#define MAX_BODY (1 << 20)

/* Parses a writable copy (rtsp_head_feed() may normalise in place); spans fit @text too. */
static enum rtsp_parse_status parse(struct rtsp_head *h, const char *text)
{
	static char copy[MAX_HEAD + 1];
	size_t len = strlen(text);

	rtsp_head_init(h);
	if (len > MAX_HEAD)
		return RTSP_PARSE_ERROR;
	memcpy(copy, text, len);
	return rtsp_head_feed(h, copy, len, MAX_LINE, MAX_HEAD, MAX_BODY);
}

static bool span_is(const char *base, struct http_span s, const char *want)
{
	return s.len == strlen(want) && !memcmp(base + s.off, want, s.len);
}

static void test_parse_messages(void)
{
	const char *req =
		"SETUP rtsp://cam/s/trackID=1 RTSP/1.0\r\nCSeq: 7\r\n"
		"Transport: RTP/AVP;unicast;client_port=5000-5001,RTP/AVP/TCP;interleaved=0-1\r\n"
		"Session: 12AB;timeout=60\r\nProxy-Require: x-foo\r\n\r\n";
	const char *resp =
		"RTSP/1.0 200 OK\r\nCSeq: 2\r\nContent-Base: rtsp://cam/s/\r\n"
		"Content-Type: application/sdp\r\nContent-Length: 123\r\n"
		"WWW-Authenticate: Basic realm=\"x\"\r\nPublic: OPTIONS, DESCRIBE\r\n\r\n";
	struct rtsp_head h;

	CHECK(parse(&h, req) == RTSP_PARSE_DONE);
	CHECK(h.is_request && h.head_len == strlen(req));
	CHECK(h.has_cseq && h.cseq == 7);
	CHECK(span_is(req, h.http.method, "SETUP"));
	CHECK(span_is(req, h.http.url, "rtsp://cam/s/trackID=1"));
	CHECK(span_is(req, h.session_id, "12AB"));
	CHECK(h.has_session_timeout && h.session_timeout == 60);
	CHECK(span_is(req, h.proxy_require, "x-foo"));
	CHECK(span_is(req, h.transport,
		      "RTP/AVP;unicast;client_port=5000-5001,RTP/AVP/TCP;interleaved=0-1"));
	CHECK(!h.has_content_length && h.content_length == 0);

	CHECK(parse(&h, resp) == RTSP_PARSE_DONE);
	CHECK(!h.is_request && h.status == 200 && span_is(resp, h.reason, "OK"));
	CHECK(h.has_content_length && h.content_length == 123);
	CHECK(span_is(resp, h.content_base, "rtsp://cam/s/"));
	CHECK(span_is(resp, h.www_authenticate, "Basic realm=\"x\""));
	CHECK(span_is(resp, h.public_methods, "OPTIONS, DESCRIBE"));
	CHECK(span_is(resp, h.version, "RTSP/1.0"));
	CHECK(!memcmp(resp, "RTSP", 4)); /* the caller's bytes are never patched */

	/* No Content-Length in a response: no body (llhttp would read to close). */
	CHECK(parse(&h, "RTSP/1.0 454 Session Not Found\r\nCSeq: 3\r\n\r\n") == RTSP_PARSE_DONE);
	CHECK(h.status == 454 && h.content_length == 0 && !h.has_content_length);

	/* Requests servers send. */
	CHECK(parse(&h, "ANNOUNCE rtsp://c/s RTSP/1.0\r\nCSeq: 1\r\nContent-Length: 5\r\n\r\n") ==
	      RTSP_PARSE_DONE);
	CHECK(h.is_request && h.content_length == 5);
	CHECK(parse(&h, "GET_PARAMETER rtsp://c/s RTSP/1.0\r\nCSeq: 2\r\n\r\n") == RTSP_PARSE_DONE);
	CHECK(parse(&h, "SET_PARAMETER rtsp://c/s RTSP/1.0\r\nCSeq: 2\r\n\r\n") == RTSP_PARSE_DONE);
	CHECK(parse(&h,
		    "REDIRECT rtsp://c/s RTSP/1.0\r\nCSeq: 3\r\nLocation: rtsp://d/s\r\n\r\n") ==
	      RTSP_PARSE_DONE);
	CHECK(h.is_request &&
	      span_is("REDIRECT rtsp://c/s RTSP/1.0\r\nCSeq: 3\r\nLocation: rtsp://d/s\r\n\r\n",
		      h.location, "rtsp://d/s"));
	CHECK(parse(&h, "OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n") == RTSP_PARSE_DONE);
}

static void test_parse_errors(void)
{
	static const struct {
		const char *text;
		enum rtsp_error want;
		int status;
	} cases[] = {
		{ "PLAY rtsp://c/s RTSP/1.0\r\nCSeq: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
		  RTSP_ERR_TRANSFER_CODING, 400 },
		{ "RTSP/1.0 200 OK\r\nCSeq: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
		  RTSP_ERR_TRANSFER_CODING, 400 },
		{ "OPTIONS * RTSP/2.0\r\nCSeq: 1\r\n\r\n", RTSP_ERR_VERSION, 505 },
		{ "RTSP/2.0 200 OK\r\nCSeq: 1\r\n\r\n", RTSP_ERR_VERSION, 505 },
		{ "OPTIONS * HTTP/1.1\r\nCSeq: 1\r\n\r\n", RTSP_ERR_MALFORMED, 400 },
		{ "PLAY rtsp://c/s RTSP/1.0\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
		  RTSP_ERR_CONTENT_LENGTH, 400 },
		{ "PLAY rtsp://c/s RTSP/1.0\r\nContent-Length: +1\r\n\r\n", RTSP_ERR_CONTENT_LENGTH,
		  400 },
		{ "PLAY rtsp://c/s RTSP/1.0\r\nContent-Length: 99999999\r\n\r\n",
		  RTSP_ERR_TOO_LARGE, 413 },
		{ "PLAY rtsp://c/s RTSP/1.0\r\nCSeq: x\r\n\r\n", RTSP_ERR_MALFORMED, 400 },
		{ "PLAY rtsp://c/s RTSP/1.0\r\nCSeq: 1\r\nCSeq: 2\r\n\r\n", RTSP_ERR_MALFORMED,
		  400 },
		{ "\x01\x02 nonsense\r\n\r\n", RTSP_ERR_MALFORMED, 400 },
	};
	struct rtsp_head h;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		bool ok = parse(&h, cases[i].text) == RTSP_PARSE_ERROR &&
			  h.error == cases[i].want && rtsp_error_status(h.error) == cases[i].status;

		CHECK(ok);
		if (!ok)
			fprintf(stderr, "  case %zu: error %d\n", i, h.error);
	}
}

static void test_parse_limits(void)
{
	static char big[MAX_HEAD + 64];
	struct rtsp_head h;
	size_t n;

	/* Request line over max_line: 414 even before the line ends. */
	n = (size_t)snprintf(big, sizeof(big), "DESCRIBE rtsp://c/");
	memset(big + n, 'a', MAX_LINE + 10);
	rtsp_head_init(&h);
	CHECK(rtsp_head_feed(&h, big, n + MAX_LINE + 10, MAX_LINE, MAX_HEAD, MAX_BODY) ==
		      RTSP_PARSE_ERROR &&
	      rtsp_error_status(h.error) == 414);

	/* A head that never ends within max_head: 413. */
	n = (size_t)snprintf(big, sizeof(big), "OPTIONS * RTSP/1.0\r\n");
	while (n + 20 < MAX_HEAD + 32)
		n += (size_t)snprintf(big + n, sizeof(big) - n, "X-Pad: 0123456789\r\n");
	rtsp_head_init(&h);
	CHECK(rtsp_head_feed(&h, big, n, MAX_LINE, MAX_HEAD, MAX_BODY) == RTSP_PARSE_ERROR &&
	      rtsp_error_status(h.error) == 413);

	/* More headers than HTTP_MAX_HEADERS: 413. */
	n = (size_t)snprintf(big, sizeof(big), "OPTIONS * RTSP/1.0\r\n");
	for (int i = 0; i <= HTTP_MAX_HEADERS; i++)
		n += (size_t)snprintf(big + n, sizeof(big) - n, "X: %d\r\n", i);
	n += (size_t)snprintf(big + n, sizeof(big) - n, "\r\n");
	rtsp_head_init(&h);
	CHECK(rtsp_head_feed(&h, big, n, MAX_LINE, MAX_HEAD, MAX_BODY) == RTSP_PARSE_ERROR &&
	      rtsp_error_status(h.error) == 413);
}

/* Byte by byte, a response and a request parse as they do whole. */
static void test_parse_bytewise(void)
{
	char msgs[][96] = {
		"RTSP/1.0 200 OK\r\nCSeq: 5\r\nSession: abc ; timeout=30\r\nContent-Length: 7\r\n\r\n",
		"RECORD rtsp://c/s RTSP/1.0\r\nCSeq: 6\r\nSession: abc\r\n\r\n",
	};

	for (size_t m = 0; m < 2; m++) {
		struct rtsp_head h;
		enum rtsp_parse_status st = RTSP_PARSE_MORE;
		size_t len = strlen(msgs[m]), i;

		rtsp_head_init(&h);
		for (i = 1; i <= len && st == RTSP_PARSE_MORE; i++)
			st = rtsp_head_feed(&h, msgs[m], i, MAX_LINE, MAX_HEAD, MAX_BODY);
		CHECK(st == RTSP_PARSE_DONE && i - 1 == len && h.head_len == len);
		CHECK(span_is(msgs[m], h.session_id, "abc"));
		CHECK(m == 1 || (h.session_timeout == 30 && h.content_length == 7 && h.cseq == 5));
	}
}

/* ---------------------------------------------------------------- framer */

#define MAX_EVENTS 64
#define BIG_FRAME 2000

struct trace {
	int n;
	enum rtsp_frame_event_kind kind[MAX_EVENTS];
	uint32_t len[MAX_EVENTS];
	uint8_t channel[MAX_EVENTS];
	char payload[2][8192]; /* channels 0 and 1, concatenated */
	size_t payload_len[2];
	char bodies[4096];
	size_t bodies_len;
	char heads[4096]; /* every head's first line, '|' separated */
	size_t heads_len;
	int cur_channel;
	bool error;
};

static void trace_add(struct trace *t, const struct rtsp_frame_event *ev, const uint8_t *p)
{
	bool merge = t->n && (ev->kind == RTSP_EV_BODY || ev->kind == RTSP_EV_PAYLOAD) &&
		     t->kind[t->n - 1] == ev->kind;

	if (ev->kind == RTSP_EV_PAYLOAD && t->cur_channel < 2 &&
	    t->payload_len[t->cur_channel] + ev->len <= sizeof(t->payload[0])) {
		memcpy(t->payload[t->cur_channel] + t->payload_len[t->cur_channel], p, ev->len);
		t->payload_len[t->cur_channel] += ev->len;
	}
	if (ev->kind == RTSP_EV_BODY && t->bodies_len + ev->len <= sizeof(t->bodies)) {
		memcpy(t->bodies + t->bodies_len, p, ev->len);
		t->bodies_len += ev->len;
	}
	if (ev->kind == RTSP_EV_HEAD) {
		size_t l = strcspn((const char *)p, "\r");

		if (t->heads_len + l + 1 <= sizeof(t->heads)) {
			memcpy(t->heads + t->heads_len, p, l);
			t->heads_len += l;
			t->heads[t->heads_len++] = '|';
		}
	}
	if (ev->kind == RTSP_EV_FRAME)
		t->cur_channel = ev->channel;
	if (merge) {
		t->len[t->n - 1] += ev->len;
		return;
	}
	if (t->n == MAX_EVENTS)
		return;
	t->kind[t->n] = ev->kind;
	t->len[t->n] = ev->len;
	t->channel[t->n] = ev->channel;
	t->n++;
}

/*
 * Feed @stream in pieces ending at @cuts (ascending, the last = the stream's length), as a
 * flow engine would: unconsumed bytes stay buffered; when @skip, payload bytes are "moved"
 * past the framer (rtsp_frame_pending/moved) instead of being shown to it.
 */
static void run_framer(uint8_t *stream, const size_t *cuts, size_t n_cuts, bool skip,
		       struct trace *t)
{
	struct rtsp_framer fr;
	size_t pos = 0;

	memset(t, 0, sizeof(*t));
	rtsp_framer_init(&fr, MAX_LINE, MAX_HEAD, MAX_BODY);
	for (size_t c = 0; c < n_cuts && !t->error; c++) {
		size_t have = cuts[c];

		for (;;) {
			struct rtsp_frame_event ev;
			size_t used;

			if (skip && fr.state == RTSP_FR_PAYLOAD && pos < have) {
				uint64_t n = rtsp_frame_pending(&fr);

				if (n > have - pos)
					n = have - pos;
				ev.kind = RTSP_EV_PAYLOAD;
				ev.len = (uint32_t)n;
				trace_add(t, &ev, stream + pos);
				rtsp_frame_moved(&fr, n);
				pos += n;
				continue;
			}
			used = rtsp_frame_step(&fr, stream + pos, have - pos, &ev);
			if (ev.kind == RTSP_EV_NEED_MORE)
				break;
			if (ev.kind == RTSP_EV_ERROR) {
				t->error = true;
				if (getenv("UNIT_DEBUG"))
					fprintf(stderr, "framer error %d head %d at %zu n %d\n",
						fr.error, fr.head.error, pos, t->n);
				break;
			}
			trace_add(t, &ev, stream + pos);
			pos += used;
		}
	}
}

static bool trace_eq(const struct trace *a, const struct trace *b)
{
	return a->n == b->n && !memcmp(a->kind, b->kind, sizeof(a->kind[0]) * (size_t)a->n) &&
	       !memcmp(a->len, b->len, sizeof(a->len[0]) * (size_t)a->n) &&
	       a->payload_len[0] == b->payload_len[0] && a->payload_len[1] == b->payload_len[1] &&
	       !memcmp(a->payload[0], b->payload[0], a->payload_len[0]) &&
	       !memcmp(a->payload[1], b->payload[1], a->payload_len[1]) &&
	       a->bodies_len == b->bodies_len && !memcmp(a->bodies, b->bodies, a->bodies_len) &&
	       a->heads_len == b->heads_len && !memcmp(a->heads, b->heads, a->heads_len) &&
	       a->error == b->error;
}

static size_t put_frame(uint8_t *out, uint8_t channel, const uint8_t *payload, size_t len)
{
	out[0] = '$';
	out[1] = channel;
	out[2] = (uint8_t)(len >> 8);
	out[3] = (uint8_t)len;
	memcpy(out + 4, payload, len);
	return 4 + len;
}

static size_t put_text(uint8_t *out, const char *s)
{
	memcpy(out, s, strlen(s));
	return strlen(s);
}

/* A server→client stream mixing frames, responses (one body starting with '$') and requests. */
static size_t mixed_stream(uint8_t *s, uint8_t *want0, size_t *want0_len, uint8_t *want1,
			   size_t *want1_len, char *bodies, size_t *bodies_len)
{
	static const char sdp[] =
		"v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=x\r\nm=video 0 RTP/AVP 96\r\n";
	uint8_t p[BIG_FRAME];
	size_t n = 0;
	char head[256];

	for (size_t i = 0; i < sizeof(p); i++)
		p[i] = (uint8_t)(i * 7 + 3);
	*want0_len = *want1_len = *bodies_len = 0;

	n += put_frame(s + n, 0, p, 1332);
	memcpy(want0, p, 1332);
	*want0_len = 1332;
	n += put_text(
		s + n,
		"RTSP/1.0 200 OK\r\nCSeq: 3\r\nContent-Length: 10\r\n\r\n$\x01\x01\x05XYZABC");
	memcpy(bodies, "$\x01\x01\x05XYZABC", 10);
	*bodies_len = 10;
	n += put_frame(s + n, 1, p, 0);
	n += put_frame(s + n, 1, p + 100, 60);
	memcpy(want1, p + 100, 60);
	*want1_len = 60;
	n += put_text(s + n, "GET_PARAMETER rtsp://h/s RTSP/1.0\r\nCSeq: 9\r\nSession: 42\r\n\r\n");
	snprintf(head, sizeof(head),
		 "ANNOUNCE rtsp://h/s RTSP/1.0\r\nCSeq: 10\r\nContent-Type: application/sdp\r\n"
		 "Content-Length: %zu\r\n\r\n",
		 strlen(sdp));
	n += put_text(s + n, head);
	n += put_text(s + n, sdp);
	memcpy(bodies + *bodies_len, sdp, strlen(sdp));
	*bodies_len += strlen(sdp);
	n += put_text(s + n, "RTSP/1.0 200 OK\r\nCSeq: 4\r\nSession: 42;timeout=60\r\n\r\n");
	n += put_text(s + n,
		      "REDIRECT rtsp://h/s RTSP/1.0\r\nCSeq: 11\r\nLocation: rtsp://o/s\r\n\r\n");
	n += put_frame(s + n, 0, p, BIG_FRAME);
	memcpy(want0 + *want0_len, p, BIG_FRAME);
	*want0_len += BIG_FRAME;
	n += put_frame(s + n, 0, p + 7, 5);
	memcpy(want0 + *want0_len, p + 7, 5);
	*want0_len += 5;
	return n;
}

static void test_framer_splits(void)
{
	static uint8_t stream[8192], want0[4096], want1[256];
	static char bodies[1024];
	static struct trace whole, t;
	static const enum rtsp_frame_event_kind kinds[] = {
		RTSP_EV_FRAME, RTSP_EV_PAYLOAD, RTSP_EV_HEAD,	 RTSP_EV_BODY,
		RTSP_EV_FRAME, RTSP_EV_FRAME,	RTSP_EV_PAYLOAD, RTSP_EV_HEAD,
		RTSP_EV_HEAD,  RTSP_EV_BODY,	RTSP_EV_HEAD,	 RTSP_EV_HEAD,
		RTSP_EV_FRAME, RTSP_EV_PAYLOAD, RTSP_EV_FRAME,	 RTSP_EV_PAYLOAD,
	};
	size_t want0_len, want1_len, bodies_len, len, cuts[3];
	int mismatches = 0;

	len = mixed_stream(stream, want0, &want0_len, want1, &want1_len, bodies, &bodies_len);
	cuts[0] = len;
	run_framer(stream, cuts, 1, false, &whole);
	CHECK(!whole.error);
	CHECK(whole.n == (int)(sizeof(kinds) / sizeof(kinds[0])));
	for (int i = 0; i < whole.n && i < (int)(sizeof(kinds) / sizeof(kinds[0])); i++)
		CHECK(whole.kind[i] == kinds[i]);
	CHECK(whole.payload_len[0] == want0_len && !memcmp(whole.payload[0], want0, want0_len));
	CHECK(whole.payload_len[1] == want1_len && !memcmp(whole.payload[1], want1, want1_len));
	CHECK(whole.bodies_len == bodies_len && !memcmp(whole.bodies, bodies, bodies_len));
	CHECK(whole.len[0] == 1332 && whole.len[3] == 10 && whole.len[4] == 0 &&
	      whole.len[12] == BIG_FRAME);

	/* Every two-piece split, every three-piece split around the heads, and byte by byte. */
	for (size_t k = 0; k <= len; k++) {
		cuts[0] = k;
		cuts[1] = len;
		run_framer(stream, cuts, 2, k & 1, &t);
		mismatches += !trace_eq(&whole, &t);
	}
	for (size_t a = 1300; a < 1500; a++) {
		for (size_t b = a; b < 1500; b += 3) {
			cuts[0] = a;
			cuts[1] = b;
			cuts[2] = len;
			run_framer(stream, cuts, 3, false, &t);
			mismatches += !trace_eq(&whole, &t);
		}
	}
	{
		static size_t bytewise[8192];

		for (size_t i = 0; i < len; i++)
			bytewise[i] = i + 1;
		run_framer(stream, bytewise, len, false, &t);
		mismatches += !trace_eq(&whole, &t);
		run_framer(stream, bytewise, len, true, &t);
		mismatches += !trace_eq(&whole, &t);
	}
	CHECK(mismatches == 0);
	if (mismatches)
		fprintf(stderr, "  %d splits framed differently\n", mismatches);
}

static void test_framer_errors(void)
{
	struct rtsp_framer fr;
	struct rtsp_frame_event ev;
	uint8_t garbage[] = "\x00\x01RTSP/1.0 200 OK\r\n\r\n";
	uint8_t lower[] = "options * RTSP/1.0\r\n\r\n";
	uint8_t bad[] = "RTSP/1.0 200 OK\r\nContent-Length: -1\r\n\r\n";
	uint8_t cut[] = "$\x00\x05";

	rtsp_framer_init(&fr, MAX_LINE, MAX_HEAD, MAX_BODY);
	CHECK(rtsp_frame_step(&fr, garbage, sizeof(garbage) - 1, &ev) == 0 &&
	      ev.kind == RTSP_EV_ERROR && fr.error == RTSP_FRAME_GARBAGE);
	CHECK(rtsp_frame_step(&fr, garbage, sizeof(garbage) - 1, &ev) == 0 &&
	      ev.kind == RTSP_EV_ERROR); /* sticky */
	rtsp_framer_init(&fr, MAX_LINE, MAX_HEAD, MAX_BODY);
	CHECK(rtsp_frame_step(&fr, lower, sizeof(lower) - 1, &ev) == 0 && ev.kind == RTSP_EV_ERROR);
	rtsp_framer_init(&fr, MAX_LINE, MAX_HEAD, MAX_BODY);
	CHECK(rtsp_frame_step(&fr, bad, sizeof(bad) - 1, &ev) == 0 && ev.kind == RTSP_EV_ERROR &&
	      fr.error == RTSP_FRAME_BAD_HEAD && fr.head.error == RTSP_ERR_CONTENT_LENGTH);
	rtsp_framer_init(&fr, MAX_LINE, MAX_HEAD, MAX_BODY);
	CHECK(rtsp_frame_step(&fr, cut, 3, &ev) == 0 && ev.kind == RTSP_EV_NEED_MORE);
	CHECK(rtsp_frame_step(&fr, garbage + 2, 1, &ev) == 0 && /* "R" */
	      ev.kind == RTSP_EV_NEED_MORE);
}

/* ---------------------------------------------------------------- rewriting */

static const struct rtsp_url_map cam_map = {
	.client = "rtsp://router:8554/cam1",
	.client_len = sizeof("rtsp://router:8554/cam1") - 1,
	.upstream = "rtsp://192.168.1.20/stream1",
	.upstream_len = sizeof("rtsp://192.168.1.20/stream1") - 1,
};

static bool rewrite_is(const char *in, const struct rtsp_rewrite *rw, const char *want,
		       enum rtsp_rw_result want_r)
{
	static char out[MAX_HEAD];
	struct rtsp_head h;
	size_t out_len = 0;
	enum rtsp_rw_result r;

	if (parse(&h, in) != RTSP_PARSE_DONE)
		return false;
	r = rtsp_rewrite_head(in, &h, rw, out, sizeof(out), &out_len);
	if (r != want_r)
		return false;
	if (r != RTSP_RW_OK)
		return true;
	if (out_len != strlen(want) || memcmp(out, want, out_len)) {
		fprintf(stderr, "  got  '%.*s'\n  want '%s'\n", (int)out_len, out, want);
		return false;
	}
	return true;
}

static void test_rewrite_requests(void)
{
	struct rtsp_rewrite up = { .map = &cam_map,
				   .dir = RTSP_TO_UPSTREAM,
				   .via = "kfwd",
				   .filter_transport = true,
				   .content_length = -1 };

	CHECK(rewrite_is("DESCRIBE rtsp://router:8554/cam1 RTSP/1.0\r\nCSeq: 2\r\n\r\n", &up,
			 "DESCRIBE rtsp://192.168.1.20/stream1 RTSP/1.0\r\nCSeq: 2\r\n"
			 "Via: RTSP/1.0 kfwd\r\n\r\n",
			 RTSP_RW_OK));
	/* A per-track SETUP URL keeps its tail; UDP entries go, TCP ones stay. */
	CHECK(rewrite_is(
		"SETUP rtsp://ROUTER:8554/cam1/trackID=1 RTSP/1.0\r\nCSeq: 3\r\n"
		"Transport: RTP/AVP;unicast;client_port=5000-5001, RTP/AVP/TCP;unicast;"
		"interleaved=0-1,RTP/AVP/UDP;unicast, MP2T/TCP;interleaved=2-3\r\n\r\n",
		&up,
		"SETUP rtsp://192.168.1.20/stream1/trackID=1 RTSP/1.0\r\nCSeq: 3\r\n"
		"Transport: RTP/AVP/TCP;unicast;interleaved=0-1,MP2T/TCP;interleaved=2-3\r\n"
		"Via: RTSP/1.0 kfwd\r\n\r\n",
		RTSP_RW_OK));
	CHECK(rewrite_is("SETUP rtsp://router:8554/cam1/t1 RTSP/1.0\r\nCSeq: 3\r\n"
			 "Transport: RTP/AVP;unicast;client_port=5000-5001\r\n\r\n",
			 &up, "", RTSP_RW_NO_TRANSPORT));
	/* "*" stays; a longer path segment is another resource; other hosts are kept. */
	CHECK(rewrite_is("OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n", &up,
			 "OPTIONS * RTSP/1.0\r\nCSeq: 1\r\nVia: RTSP/1.0 kfwd\r\n\r\n",
			 RTSP_RW_OK));
	up.via = NULL;
	CHECK(rewrite_is("PLAY rtsp://router:8554/cam10 RTSP/1.0\r\nCSeq: 1\r\n\r\n", &up,
			 "PLAY rtsp://router:8554/cam10 RTSP/1.0\r\nCSeq: 1\r\n\r\n", RTSP_RW_OK));
	CHECK(rewrite_is("PLAY rtsp://router:8554/cam1?x=1 RTSP/1.0\r\nCSeq: 1\r\n\r\n", &up,
			 "PLAY rtsp://192.168.1.20/stream1?x=1 RTSP/1.0\r\nCSeq: 1\r\n\r\n",
			 RTSP_RW_OK));
	/* Content-Length replaced, or added. */
	up.content_length = 12;
	CHECK(rewrite_is("ANNOUNCE rtsp://router:8554/cam1 RTSP/1.0\r\nContent-Length: 5\r\n"
			 "CSeq: 1\r\n\r\n",
			 &up,
			 "ANNOUNCE rtsp://192.168.1.20/stream1 RTSP/1.0\r\nContent-Length: 12\r\n"
			 "CSeq: 1\r\n\r\n",
			 RTSP_RW_OK));
	CHECK(rewrite_is("ANNOUNCE rtsp://router:8554/cam1 RTSP/1.0\r\nCSeq: 1\r\n\r\n", &up,
			 "ANNOUNCE rtsp://192.168.1.20/stream1 RTSP/1.0\r\nCSeq: 1\r\n"
			 "Content-Length: 12\r\n\r\n",
			 RTSP_RW_OK));
}

static void test_rewrite_responses(void)
{
	struct rtsp_rewrite down = {
		.map = &cam_map, .dir = RTSP_TO_CLIENT, .via = "kfwd", .content_length = -1
	};
	char small[32];
	size_t n;
	struct rtsp_head h;
	const char *resp = "RTSP/1.0 200 OK\r\nCSeq: 4\r\n\r\n";

	CHECK(rewrite_is(
		"RTSP/1.0 200 OK\r\nCSeq: 5\r\nContent-Base: rtsp://192.168.1.20/stream1/\r\n"
		"Content-Location: rtsp://192.168.1.20/stream1\r\n"
		"RTP-Info: url=rtsp://192.168.1.20/stream1/trackID=1;seq=1;rtptime=2,"
		" url=\"rtsp://192.168.1.20/stream1/trackID=2\";seq=3, url=rtsp://other/x;seq=4\r\n"
		"Session: 42;timeout=60\r\n\r\n",
		&down,
		"RTSP/1.0 200 OK\r\nCSeq: 5\r\nContent-Base: rtsp://router:8554/cam1/\r\n"
		"Content-Location: rtsp://router:8554/cam1\r\n"
		"RTP-Info: url=rtsp://router:8554/cam1/trackID=1;seq=1;rtptime=2,"
		" url=\"rtsp://router:8554/cam1/trackID=2\";seq=3, url=rtsp://other/x;seq=4\r\n"
		"Session: 42;timeout=60\r\nVia: RTSP/1.0 kfwd\r\n\r\n",
		RTSP_RW_OK));
	down.via = NULL;
	CHECK(rewrite_is("RTSP/1.0 302 Moved Temporarily\r\nCSeq: 2\r\n"
			 "Location: rtsp://192.168.1.20/stream1/alt\r\n\r\n",
			 &down,
			 "RTSP/1.0 302 Moved Temporarily\r\nCSeq: 2\r\n"
			 "Location: rtsp://router:8554/cam1/alt\r\n\r\n",
			 RTSP_RW_OK));
	/* A server REDIRECT: Request-URI and Location towards the client. */
	CHECK(rewrite_is("REDIRECT rtsp://192.168.1.20/stream1 RTSP/1.0\r\nCSeq: 2\r\n"
			 "Location: rtsp://192.168.1.20/stream1b\r\n\r\n",
			 &down,
			 "REDIRECT rtsp://router:8554/cam1 RTSP/1.0\r\nCSeq: 2\r\n"
			 "Location: rtsp://192.168.1.20/stream1b\r\n\r\n",
			 RTSP_RW_OK));
	/* Bounded output. */
	CHECK(parse(&h, resp) == RTSP_PARSE_DONE);
	down.via = "kfwd";
	CHECK(rtsp_rewrite_head(resp, &h, &down, small, sizeof(small), &n) == RTSP_RW_OVERFLOW);
	CHECK(rtsp_build_reply(461, "7", 1, NULL, small, sizeof(small), &n) == RTSP_RW_OVERFLOW);
}

static void test_build_reply(void)
{
	char out[256];
	size_t n;
	const char *want =
		"RTSP/1.0 461 Unsupported Transport\r\nCSeq: 7\r\nContent-Length: 0\r\n\r\n";

	CHECK(rtsp_build_reply(461, "7", 1, NULL, out, sizeof(out), &n) == RTSP_RW_OK &&
	      n == strlen(want) && !memcmp(out, want, n));
	CHECK(rtsp_build_reply(405, "1", 1, "Public: OPTIONS, DESCRIBE\r\n", out, sizeof(out),
			       &n) == RTSP_RW_OK &&
	      strstr(out, "405 Method Not Allowed\r\nCSeq: 1\r\nPublic: OPTIONS, DESCRIBE\r\n"));
}

#define SDP_TRACKS 1800 /* ~200 KB of SDP */

/* A 200 KB SDP with absolute controls, rewritten towards the client; the head follows it. */
static void test_rewrite_big_sdp(void)
{
	static char sdp[256 * 1024], out[320 * 1024], head_out[1024], head[256];
	size_t n = 0, out_len = 0, head_len = 0, mapped = 0;
	struct rtsp_head h, h2;
	struct rtsp_rewrite down = { .map = &cam_map, .dir = RTSP_TO_CLIENT, .content_length = -1 };

	n += (size_t)snprintf(sdp + n, sizeof(sdp) - n,
			      "v=0\r\no=- 1 1 IN IP4 192.168.1.20\r\ns=cam\r\n"
			      "a=control:rtsp://192.168.1.20/stream1/\r\n");
	for (int i = 0; i < SDP_TRACKS; i++)
		n += (size_t)snprintf(sdp + n, sizeof(sdp) - n,
				      "m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
				      "a=fmtp:96 packetization-mode=1;profile-level-id=42e01f\r\n"
				      "a=control:%s\r\n",
				      i % 3 == 2 ? "trackID=rel" :
						   "rtsp://192.168.1.20/stream1/trackID=1");
	CHECK(n > 200 * 1024);
	CHECK(rtsp_rewrite_sdp(sdp, n, &cam_map, RTSP_TO_CLIENT, out, sizeof(out), &out_len) ==
	      RTSP_RW_OK);
	for (const char *p = out; (p = strstr(p, "a=control:rtsp://router:8554/cam1/")); p++)
		mapped++;
	CHECK(mapped == 1 + SDP_TRACKS - SDP_TRACKS / 3);
	CHECK(!memmem(out, out_len, "192.168.1.20/stream1", strlen("192.168.1.20/stream1")));
	CHECK(memmem(out, out_len, "a=control:trackID=rel\r\n", 23) != NULL);
	CHECK(out_len == n + mapped * (strlen("rtsp://router:8554/cam1") -
				       strlen("rtsp://192.168.1.20/stream1")));
	CHECK(rtsp_rewrite_sdp(sdp, n, &cam_map, RTSP_TO_CLIENT, out, out_len - 1, &head_len) ==
	      RTSP_RW_OVERFLOW);

	/* The DESCRIBE reply's head gets the new Content-Length. */
	snprintf(head, sizeof(head),
		 "RTSP/1.0 200 OK\r\nCSeq: 2\r\nContent-Base: rtsp://192.168.1.20/stream1/\r\n"
		 "Content-Type: application/sdp\r\nContent-Length: %zu\r\n\r\n",
		 n);
	CHECK(parse(&h, head) == RTSP_PARSE_DONE && h.content_length == n);
	down.content_length = (int64_t)out_len;
	CHECK(rtsp_rewrite_head(head, &h, &down, head_out, sizeof(head_out), &head_len) ==
	      RTSP_RW_OK);
	rtsp_head_init(&h2);
	CHECK(rtsp_head_feed(&h2, head_out, head_len, MAX_LINE, MAX_HEAD, UINT64_MAX) ==
		      RTSP_PARSE_DONE &&
	      h2.content_length == out_len &&
	      span_is(head_out, h2.content_base, "rtsp://router:8554/cam1/"));
}

/* A client's ANNOUNCE (RECORD): its SDP goes the other way; LF-only lines keep their ends. */
static void test_rewrite_sdp_to_upstream(void)
{
	const char *in = "v=0\na=control:rtsp://router:8554/cam1/\na=control:*\n"
			 "a=control:rtsp://elsewhere/x\na=control:rtsp://router:8554/cam1/t1";
	const char *want = "v=0\na=control:rtsp://192.168.1.20/stream1/\na=control:*\n"
			   "a=control:rtsp://elsewhere/x\na=control:rtsp://192.168.1.20/stream1/t1";
	char out[512];
	size_t n = 0;

	CHECK(rtsp_rewrite_sdp(in, strlen(in), &cam_map, RTSP_TO_UPSTREAM, out, sizeof(out), &n) ==
		      RTSP_RW_OK &&
	      n == strlen(want) && !memcmp(out, want, n));
}

/* ---------------------------------------------------------------- auth */

static void test_digest_rfc2617(void)
{
	const char *v = "Digest realm=\"testrealm@host.com\", qop=\"auth,auth-int\", "
			"nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", "
			"opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"";
	struct rtsp_challenge c[2];
	char out[512];

	CHECK(rtsp_auth_parse(v, strlen(v), c, 2) == 1);
	CHECK(c[0].scheme == RTSP_AUTH_DIGEST && c[0].usable && c[0].qop_auth && c[0].has_opaque);
	CHECK(!strcmp(c[0].realm, "testrealm@host.com"));
	CHECK(rtsp_auth_authorization(&c[0], "Mufasa", "Circle Of Life", "GET", "/dir/index.html",
				      1, "0a4f113b", out, sizeof(out)) > 0);
	CHECK(strstr(out, "response=\"6629fae49393a05397450978507c4ef1\"") != NULL);
	CHECK(strstr(out, "qop=auth, nc=00000001, cnonce=\"0a4f113b\"") != NULL);
	CHECK(strstr(out, "opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"") != NULL);
	CHECK(!strncmp(out, "Digest username=\"Mufasa\", realm=\"testrealm@host.com\"", 51));
	/* MD5-sess: HA1 = MD5(MD5(user:realm:pass):nonce:cnonce). */
	c[0].algorithm = RTSP_DIGEST_MD5_SESS;
	CHECK(rtsp_auth_authorization(&c[0], "Mufasa", "Circle Of Life", "GET", "/dir/index.html",
				      1, "0a4f113b", out, sizeof(out)) > 0);
	CHECK(strstr(out, "response=\"8e3825c57e897f5a0dec6c2d4e5059d0\"") != NULL);
	CHECK(strstr(out, "algorithm=MD5-sess") != NULL);
	/* Too small a buffer. */
	CHECK(rtsp_auth_authorization(&c[0], "Mufasa", "Circle Of Life", "GET", "/dir/index.html",
				      1, "0a4f113b", out, 40) == -1);
}

static void test_auth_challenges(void)
{
	const char *many =
		"Basic realm=\"cam\", Digest realm=\"cam\", nonce=\"abc\","
		" algorithm=MD5, stale=TRUE, Negotiate abc==, Digest realm=\"a\\\"b\", "
		"nonce=\"n\", algorithm=SHA-256, Digest realm=\"q\", nonce=\"n\", qop=\"auth-int\"";
	struct rtsp_challenge c[8], best;
	const char *resp = "RTSP/1.0 401 Unauthorized\r\nCSeq: 2\r\n"
			   "WWW-Authenticate: Basic realm=\"cam\"\r\n"
			   "WWW-Authenticate: Digest realm=\"cam\", nonce=\"abc\"\r\n\r\n";
	struct rtsp_head h;
	char out[512];

	CHECK(rtsp_auth_parse(many, strlen(many), c, 8) == 5);
	CHECK(c[0].scheme == RTSP_AUTH_BASIC && c[0].usable && !strcmp(c[0].realm, "cam"));
	CHECK(c[1].scheme == RTSP_AUTH_DIGEST && c[1].usable && c[1].stale && !c[1].qop_auth &&
	      !strcmp(c[1].nonce, "abc"));
	CHECK(c[2].scheme == RTSP_AUTH_OTHER && !c[2].usable);
	CHECK(c[3].scheme == RTSP_AUTH_DIGEST && !c[3].usable && !strcmp(c[3].realm, "a\"b"));
	CHECK(c[4].scheme == RTSP_AUTH_DIGEST && !c[4].usable); /* auth-int only */
	CHECK(rtsp_auth_parse("realm=\"x\"", 9, c, 8) == -1);
	CHECK(rtsp_auth_parse("Digest realm=\"x", 15, c, 8) == -1);

	/* Across headers, Digest wins; no qop: response = MD5(HA1:nonce:HA2). */
	CHECK(parse(&h, resp) == RTSP_PARSE_DONE);
	CHECK(rtsp_auth_choose(&h, resp, &best) == 0 && best.scheme == RTSP_AUTH_DIGEST);
	CHECK(rtsp_auth_authorization(&best, "admin", "secret", "DESCRIBE", "rtsp://10.0.0.1/cam",
				      1, "x", out, sizeof(out)) > 0);
	CHECK(strstr(out, "response=\"b685f038c3c50cbfcfd1179458d38bae\"") && !strstr(out, "qop"));
	/* Basic per RFC 2617 §2. */
	CHECK(rtsp_auth_parse("Basic realm=\"WallyWorld\"", 24, c, 8) == 1);
	CHECK(rtsp_auth_authorization(&c[0], "Aladdin", "open sesame", "DESCRIBE", "*", 0, "", out,
				      sizeof(out)) > 0 &&
	      !strcmp(out, "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="));
	{
		char a[RTSP_AUTH_CNONCE_LEN + 1], b[RTSP_AUTH_CNONCE_LEN + 1];

		CHECK(rtsp_auth_cnonce(a) == 0 && rtsp_auth_cnonce(b) == 0 && strcmp(a, b) &&
		      strlen(a) == RTSP_AUTH_CNONCE_LEN);
	}
}

/* ---------------------------------------------------------------- URLs */

static void test_urls(void)
{
	struct rtsp_url u;
	char out[512];
	const char *s;

	s = "rtsp://us%3Aer:p%40ss@[::1]:8554/a/b?x=1&y=${(b)yyyyMMddHHmmss}";
	CHECK(rtsp_url_parse(s, strlen(s), &u) == 0);
	CHECK(u.ipv6 && u.host_is_literal && !strcmp(u.host, "::1") && u.port == 8554);
	CHECK(u.has_credentials && !strcmp(u.user, "us:er") && !strcmp(u.pass, "p@ss"));
	CHECK(rtsp_url_format(&u, out, sizeof(out)) > 0 &&
	      !strcmp(out, "rtsp://[::1]:8554/a/b?x=1&y=${(b)yyyyMMddHHmmss}"));
	s = "RTSP://cam.example/live";
	CHECK(rtsp_url_parse(s, strlen(s), &u) == 0 && u.port == 554 && !u.has_credentials &&
	      !u.host_is_literal);
	CHECK(rtsp_url_format(&u, out, sizeof(out)) > 0 && !strcmp(out, "rtsp://cam.example/live"));
	s = "10.0.0.5:554/live/ch1?token=x";
	CHECK(rtsp_url_parse_embedded(s, strlen(s), &u) == 0 && u.port == 554 &&
	      !strcmp(u.host, "10.0.0.5") && u.path_len == strlen("/live/ch1?token=x"));
	s = "admin:pw@10.0.0.5/live";
	CHECK(rtsp_url_parse_embedded(s, strlen(s), &u) == 0 && !strcmp(u.user, "admin") &&
	      !strcmp(u.pass, "pw"));
	CHECK(rtsp_url_format(&u, out, sizeof(out)) > 0 && !strcmp(out, "rtsp://10.0.0.5/live"));
	s = "rtsp://h:8554/x";
	CHECK(rtsp_url_parse_embedded(s, strlen(s), &u) == 0 && !strcmp(u.host, "h") &&
	      u.port == 8554);
	s = "rtsp:/h/x";
	CHECK(rtsp_url_parse_embedded(s, strlen(s), &u) == 0 && !strcmp(u.host, "h"));
	s = "h?q=1";
	CHECK(rtsp_url_parse_embedded(s, strlen(s), &u) == 0 &&
	      rtsp_url_format(&u, out, sizeof(out)) > 0 && !strcmp(out, "rtsp://h/?q=1"));
	CHECK(rtsp_url_format(&u, out, 8) == -1);

	static const char *bad[] = {
		"http://h/x",	  "rtsp://h:0/x",   "rtsp://h:65536/", "rtsp://[::1/",
		"rtsp://[zz]/",	  "rtsp:///x",	    "rtsp://h:/x",     "rtsp://bad host/",
		"rtsp://u:%4@h/", "rtsp://[::1]x/",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CHECK(rtsp_url_parse(bad[i], strlen(bad[i]), &u) == -1);
	CHECK(rtsp_url_parse_embedded("rtsp:h", 6, &u) == -1);
}

void unit_rtsp(void)
{
	test_parse_messages();
	test_parse_errors();
	test_parse_limits();
	test_parse_bytewise();
	test_framer_splits();
	test_framer_errors();
	test_rewrite_requests();
	test_rewrite_responses();
	test_build_reply();
	test_rewrite_big_sdp();
	test_rewrite_sdp_to_upstream();
	test_digest_rfc2617();
	test_auth_challenges();
	test_urls();
}
