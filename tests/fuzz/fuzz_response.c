// SPDX-License-Identifier: GPL-2.0
/*
 * libFuzzer target for the response head parser (user/http_parse.c) and the response rewriting
 * (user/http_rewrite.c: hop-by-hop fields, Location for url-embedded routes). The first input
 * byte picks where the head is cut in two feeds and whether the client spoke HTTP/1.0 or asked
 * to close; the rest is what an upstream sent. Invariants on every head kfwd accepts: the spans
 * lie inside the head, and the forwarded head parses again as exactly one complete head with
 * the same status and framing.
 */
#include "fuzz_common.h"

#include "http.h"
#include "http_rewrite.h"

#define FUZZ_MAX_HEAD 65536

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const struct location_rewrite loc = {
		.prefix = "/http/",
		.authority = "origin.example:8080",
		.req_path = "/dir/page?q=1",
	};
	struct http_head *h;
	struct buf out = { 0 };
	size_t cut;
	uint8_t flags;
	char *buf;

	if (size < 1)
		return 0;
	flags = data[0];
	cut = data[0] >> 1;
	data++;
	size--;
	h = malloc(sizeof(*h));
	buf = fuzz_copy(data, size);
	if (!h || !buf)
		goto out;
	http_head_init(h, false);
	if (fuzz_feed_in_two(h, buf, size, cut, FUZZ_MAX_HEAD, FUZZ_MAX_HEAD) != HTTP_PARSE_DONE)
		goto out;
	FUZZ_CHECK((size_t)h->status_line.off + h->status_line.len <= h->head_len);
	for (unsigned int i = 0; i < h->n_headers; i++) {
		const struct http_span *v = &h->headers[i].value;

		FUZZ_CHECK((size_t)h->headers[i].name.off + h->headers[i].name.len <= h->head_len);
		FUZZ_CHECK((size_t)v->off + v->len <= h->head_len);
		/* Unfolded: no value holds a line break. */
		FUZZ_CHECK(!memchr(buf + v->off, '\r', v->len) &&
			   !memchr(buf + v->off, '\n', v->len));
	}
	if (h->status == 101) {
		if (http_build_switch(&out, h, buf) == 0)
			FUZZ_CHECK(buf_len(&out) > 0);
	} else if (h->status >= 200 && http_build_response(&out, h, buf, flags & 1, false,
							   (flags & 2) ? &loc : NULL) == 0) {
		fuzz_check_forwarded(h, &out);
	}
out:
	buf_free(&out);
	free(buf);
	free(h);
	return 0;
}
