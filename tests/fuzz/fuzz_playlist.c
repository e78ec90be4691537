// SPDX-License-Identifier: GPL-2.0
/*
 * libFuzzer target for the playlist rewriting of url-embedded routes (user/playlist.c) and the
 * chunked decoder it reads bodies with (user/chunked.c). The first byte picks the body's
 * framing and the request path the playlist came from; the rest is the body. Invariants: the
 * body is whole at most once and never past the input; a rewritten playlist keeps its lines
 * (as many line feeds), and every rewritten URI stays under a route prefix; the head gets
 * exactly one Content-Length, the body's.
 */
#include "fuzz_common.h"

#include "playlist.h"

static const char head[] = "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.apple.mpegurl\r\n"
			   "Transfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n";

static size_t count_lf(const char *p, size_t len)
{
	size_t n = 0;

	for (size_t i = 0; i < len; i++)
		n += p[i] == '\n';
	return n;
}

static void check_head(const struct buf *h, size_t body_len)
{
	char want[64];
	int n = snprintf(want, sizeof(want), "Content-Length: %zu\r\n\r\n", body_len);
	const char *s = buf_start(h);

	FUZZ_CHECK(n > 0 && buf_len(h) >= (size_t)n);
	FUZZ_CHECK(!memcmp(s + buf_len(h) - (size_t)n, want, (size_t)n));
	FUZZ_CHECK(!memmem(s, buf_len(h) - (size_t)n, "Content-Length", 14));
	FUZZ_CHECK(!memmem(s, buf_len(h), "Transfer-Encoding", 17));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const paths[] = { "/live/a/index.m3u8?t=1", "/", "", "/a/../../b/" };
	static const enum body_framing framings[] = { FRAMING_LENGTH, FRAMING_CHUNKED,
						      FRAMING_CLOSE };
	struct location_rewrite loc = { .prefix = "/http/",
					.authority = "o:81",
					.other_prefix = "/https/",
					.rtsp_prefix = "/rtsp/" };
	struct buf out = { 0 }, out_head = { 0 }, body = { 0 };
	struct playlist_body b;
	char *in;

	if (size < 1)
		return 0;
	loc.req_path = paths[data[0] % 4];
	loc.tls = data[0] & 4;
	playlist_body_init(&b, framings[(data[0] >> 3) % 3], (size_t)(data[0] >> 5) * 7);
	in = fuzz_copy(data + 1, size - 1);
	if (!in)
		return 0;
	size--;
	if (playlist_rewrite(&out, in, size, &loc) == 0 && buf_len(&out))
		FUZZ_CHECK(count_lf(buf_start(&out), buf_len(&out)) == count_lf(in, size));
	/* The body as it arrives, in two reads. */
	if (playlist_body_whole(&b, in, size / 2, false) == 0 &&
	    playlist_body_whole(&b, in, size, true) == 1) {
		FUZZ_CHECK(b.len <= size);
		if (playlist_body_rewrite(&b, in, head, sizeof(head) - 1, &loc, &out_head, &body) ==
		    0)
			check_head(&out_head, buf_len(&body));
	}
	buf_free(&out);
	buf_free(&out_head);
	buf_free(&body);
	free(in);
	return 0;
}
