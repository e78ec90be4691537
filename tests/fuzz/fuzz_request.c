// SPDX-License-Identifier: GPL-2.0
/*
 * libFuzzer target for the request head parser (user/http_parse.c) and the request rewriting
 * kfwd applies before forwarding (user/http_rewrite.c, user/route.c). The first input byte picks
 * where the head is cut in two feeds (llhttp then delivers pieces across calls); the rest is
 * the bytes a client sent. Invariants checked on every head kfwd accepts:
 *   - every span lies inside the head;
 *   - the rewritten head parses again as exactly one complete head (nothing smuggled after it);
 *   - its framing (Content-Length, chunked) and method are the ones kfwd acted on.
 */
#include "fuzz_common.h"

#include "config.h"
#include "http.h"
#include "http_rewrite.h"
#include "route.h"

#define FUZZ_MAX_LINE 8192
#define FUZZ_MAX_HEAD 65536

static struct config *cfg;

static void load_config(void)
{
	char err[256];

	cfg = config_load_text(
		NULL,
		"listen 127.0.0.1:1\n"
		"upstream a 127.0.0.1:10\n"
		"route / a\n"
		"route /public/ a methods=GET,HEAD\n"
		"route /api/ a strip-prefix host=*.example.com set-header User-Agent "
		"\"kfwd fuzz\" remove-header Accept\n"
		"route /http/ url-embedded\n",
		NULL, 0, err, sizeof(err));
	if (!cfg) {
		fprintf(stderr, "fuzz config: %s\n", err);
		abort();
	}
}

static void check_span(const struct http_head *h, struct http_span s)
{
	FUZZ_CHECK((size_t)s.off + s.len <= h->head_len);
}

/* What handle_request() does with an accepted head, up to the forwarded request. */
static void rewrite(const struct http_head *h, const char *base)
{
	const char *url = base + h->url.off, *path = "/", *route_host = NULL;
	size_t path_len = 1, route_host_len = 0;
	int host = http_header_find(h, base, "Host");
	struct request_rewrite rw = { 0 };
	struct route_target t = { 0 };
	struct buf out = { 0 };
	struct http_target form;
	const struct route *r;

	if (http_target_parse(url, h->url.len, h->parser.method, &form) < 0)
		return;
	FUZZ_CHECK(!memchr(url, '#', h->url.len));
	if (host >= 0) {
		route_host = base + h->headers[host].value.off;
		route_host_len = h->headers[host].value.len;
	}
	if (form.form == HTTP_TARGET_ABSOLUTE) {
		FUZZ_CHECK((size_t)form.authority.off + form.authority.len <= h->url.len);
		route_host = url + form.authority.off;
		route_host_len = form.authority.len;
	}
	if (form.path.len) {
		FUZZ_CHECK((size_t)form.path.off + form.path.len <= h->url.len);
		path = url + form.path.off;
		path_len = form.path.len;
		FUZZ_CHECK(path[0] == '/');
	}
	r = route_match(cfg, path, path_len, route_host, route_host_len);
	if (!r || route_target_build(r, path, path_len, &t) < 0) {
		route_target_free(&t);
		return;
	}
	FUZZ_CHECK(t.target_len > 0 && t.target[0] == '/');
	rw.target = t.target;
	rw.target_len = t.target_len;
	rw.host = t.host_header[0] ? t.host_header : NULL;
	rw.client_addr = "192.0.2.1";
	rw.forwarded = true;
	rw.overrides = r->header_overrides;
	rw.n_overrides = r->n_header_overrides;
	rw.upgrade = http_upgrade_header(h, base);
	if (http_build_request(&out, h, base, &rw) == 0)
		fuzz_check_forwarded(h, &out);
	buf_free(&out);
	route_target_free(&t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct http_head *h;
	size_t cut;
	char *buf;

	if (!cfg)
		load_config();
	if (size < 1)
		return 0;
	cut = data[0];
	data++;
	size--;
	h = malloc(sizeof(*h));
	buf = fuzz_copy(data, size);
	if (!h || !buf)
		goto out;
	http_head_init(h, true);
	if (fuzz_feed_in_two(h, buf, size, cut, FUZZ_MAX_LINE, FUZZ_MAX_HEAD) != HTTP_PARSE_DONE)
		goto out;
	check_span(h, h->method);
	check_span(h, h->url);
	for (unsigned int i = 0; i < h->n_headers; i++) {
		check_span(h, h->headers[i].name);
		check_span(h, h->headers[i].value);
		FUZZ_CHECK(h->headers[i].name.len > 0);
	}
	/* handle_request() answers 400 to anything but HTTP/1.x before rewriting. */
	if (h->http_major == 1 && h->parser.method != HTTP_CONNECT)
		rewrite(h, buf);
out:
	free(buf);
	free(h);
	return 0;
}
