// SPDX-License-Identifier: GPL-2.0
/*
 * Unit tests of user/playlist.c (HLS/M3U detection, URI rewriting, the body read whole) and
 * chunk_decode() of user/chunked.c. unit_main.c calls unit_playlist().
 */
#include <string.h>

#include "chunked.h"
#include "playlist.h"
#include "unit.h"

static const struct location_rewrite loc = {
	.prefix = "/http/",
	.authority = "o.example:81",
	.req_path = "/live/a/index.m3u8?tok=1",
	.tls = false,
	.other_prefix = "/https/",
	.rtsp_prefix = "/rtsp/",
};

static void check_rewrite(const char *in, const char *want)
{
	struct buf out = { 0 };
	int r = playlist_rewrite(&out, in, strlen(in), &loc);
	bool ok = r == 0 && buf_len(&out) == strlen(want) &&
		  !memcmp(buf_start(&out), want, strlen(want));

	CHECK(ok);
	if (!ok)
		fprintf(stderr, "  in   '%s'\n  got  '%.*s'\n  want '%s'\n", in, (int)buf_len(&out),
			buf_start(&out), want);
	buf_free(&out);
}

static void test_detect(void)
{
	static const char m3u8[] = "/a/b.M3U8?x=.ts";

	CHECK(playlist_detect("application/vnd.apple.mpegurl", 29, "/x", 2));
	CHECK(playlist_detect(" Application/X-MpegURL ; charset=utf-8", 38, "/x", 2));
	CHECK(playlist_detect("audio/mpegurl", 13, "/x", 2));
	CHECK(playlist_detect("audio/x-mpegurl", 15, "/x", 2));
	CHECK(playlist_detect("text/plain; charset=utf-8", 25, m3u8, strlen(m3u8)));
	CHECK(playlist_detect("text/plain", 10, "/list.m3u", 9));
	CHECK(!playlist_detect("text/plain", 10, "/list.txt", 9));
	CHECK(!playlist_detect("text/plain", 10, "/x?f=a.m3u8", 11));
	CHECK(!playlist_detect("application/octet-stream", 24, "/a.m3u8", 7));
	CHECK(!playlist_detect(NULL, 0, "/a.m3u8", 7));
	CHECK(!playlist_detect("application/vnd.apple.mpegurlx", 30, "/x", 2));
	CHECK(!playlist_detect("text/", 5, "/a.m3u8", 7));
}

static void test_rewrite(void)
{
	check_rewrite("", "");
	check_rewrite("#EXTM3U\nseg.ts\n", "#EXTM3U\n/http/o.example:81/live/a/seg.ts\n");
	check_rewrite("seg.ts", "/http/o.example:81/live/a/seg.ts");
	check_rewrite("../k.bin\r\n/abs/x.ts\r\n", "/http/o.example:81/live/k.bin\r\n"
						   "/http/o.example:81/abs/x.ts\r\n");
	check_rewrite("http://h/p?q\nHTTPS://s/p\nrtsp://c/l\nskd://k\ndata:,x\n",
		      "/http/h/p?q\n/https/s/p\n/rtsp/c/l\nskd://k\ndata:,x\n");
	check_rewrite("//cdn/p.ts\n", "/http/cdn/p.ts\n");
	check_rewrite(" \tseg.ts \r\n\n \n", " \t/http/o.example:81/live/a/seg.ts \r\n\n \n");
	check_rewrite("# comment URI=\"x\"\n#EXTINF:1,URI=\"y\"\n",
		      "# comment URI=\"x\"\n#EXTINF:1,URI=\"/http/o.example:81/live/a/y\"\n");
	check_rewrite("#EXT-X-KEY:METHOD=AES-128,URI=\"k\",IV=0x1\n",
		      "#EXT-X-KEY:METHOD=AES-128,URI=\"/http/o.example:81/live/a/k\",IV=0x1\n");
	/* Only an attribute named URI, not one ending in it, nor text inside a quoted value. */
	check_rewrite(
		"#EXT-X-X:XURI=\"a\",N=\"b,\",URI=\"c\",M=\"x,URI=y\"\n",
		"#EXT-X-X:XURI=\"a\",N=\"b,\",URI=\"/http/o.example:81/live/a/c\",M=\"x,URI=y\"\n");
	check_rewrite("#EXT-X-MAP:URI=\"\"\n", "#EXT-X-MAP:URI=\"\"\n");
	check_rewrite("#EXT-X-MAP:URI=\"unterminated\n", "#EXT-X-MAP:URI=\"unterminated\n");
	check_rewrite("\xEF\xBB\xBF#EXTM3U\nx.ts",
		      "\xEF\xBB\xBF#EXTM3U\n/http/o.example:81/live/a/x.ts");
	check_rewrite("\xEF\xBB\xBFx.ts\n", "\xEF\xBB\xBF/http/o.example:81/live/a/x.ts\n");
}

static void check_decode(const char *in, int want_rc, const char *want)
{
	struct buf out = { 0 };
	int r = chunk_decode(&out, in, strlen(in));

	CHECK(r == want_rc);
	if (r == 0)
		CHECK(buf_len(&out) == strlen(want) &&
		      !memcmp(buf_start(&out), want, strlen(want)));
	buf_free(&out);
}

static void test_chunk_decode(void)
{
	check_decode("3\r\nabc\r\n0\r\n\r\n", 0, "abc");
	check_decode("1;e=1\r\na\r\nA\r\n0123456789\r\n0\r\nT: v\r\n\r\n", 0, "a0123456789");
	check_decode("0\r\n\r\n", 0, "");
	check_decode("3\r\nabc\r\n", -1, NULL); /* not whole */
	check_decode("3\r\nabcd\r\n0\r\n\r\n", -1, NULL);
	check_decode("0\r\n\r\nextra", -1, NULL);
}

static void test_body(void)
{
	static const char chunked[] = "5\r\nx.ts\n\r\n0\r\n\r\n";
	static const char head[] = "HTTP/1.1 200 OK\r\nContent-Type: audio/mpegurl\r\n"
				   "Transfer-Encoding: chunked\r\nVia: 1.1 kfwd\r\n\r\n";
	static const char want_head[] = "HTTP/1.1 200 OK\r\nContent-Type: audio/mpegurl\r\n"
					"Via: 1.1 kfwd\r\nContent-Length: 31\r\n\r\n";
	struct buf out_head = { 0 }, body = { 0 };
	struct playlist_body b;

	playlist_body_init(&b, FRAMING_CHUNKED, 0);
	CHECK(playlist_body_whole(&b, chunked, 4, false) == 0);
	CHECK(playlist_body_whole(&b, chunked, sizeof(chunked) - 1, false) == 1 &&
	      b.len == sizeof(chunked) - 1);
	CHECK(playlist_body_rewrite(&b, chunked, head, sizeof(head) - 1, &loc, &out_head, &body) ==
	      0);
	CHECK(buf_len(&body) == 31 &&
	      !memcmp(buf_start(&body), "/http/o.example:81/live/a/x.ts\n", 31));
	CHECK(buf_len(&out_head) == sizeof(want_head) - 1 &&
	      !memcmp(buf_start(&out_head), want_head, sizeof(want_head) - 1));
	buf_free(&out_head);
	buf_free(&body);

	playlist_body_init(&b, FRAMING_CHUNKED, 0);
	CHECK(playlist_body_whole(&b, "zz\r\n", 4, false) == -1);
	playlist_body_init(&b, FRAMING_LENGTH, 10);
	CHECK(playlist_body_whole(&b, "0123456789abc", 9, false) == 0);
	CHECK(playlist_body_whole(&b, "0123456789abc", 13, false) == 1 && b.len == 10);
	playlist_body_init(&b, FRAMING_CLOSE, 0);
	CHECK(playlist_body_whole(&b, "abc", 3, false) == 0);
	CHECK(playlist_body_whole(&b, "abc", 3, true) == 1 && b.len == 3);
}

void unit_playlist(void)
{
	test_detect();
	test_rewrite();
	test_chunk_decode();
	test_body();
}
