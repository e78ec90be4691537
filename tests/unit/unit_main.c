// SPDX-License-Identifier: GPL-2.0
/*
 * C unit tests for kfwd's pure parsers and rewriters: chunked framing, head limits, routes,
 * allow/deny, Location rewriting, config errors. Prints "N passed, N failed".
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chunked.h"
#include "config.h"
#include "http.h"
#include "http_rewrite.h"
#include "route.h"
#include "unit.h"

int passed, failed;

static void test_chunked_whole(void)
{
	const char *msg = "4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\nX-Trailer: yes\r\n\r\nNEXT";
	struct chunk_scan c;
	size_t n;

	chunk_scan_init(&c);
	n = chunk_scan(&c, msg, strlen(msg));
	CHECK(c.state == CHUNK_DONE);
	CHECK(n == strlen(msg) - 4); /* stops at the end of the message */
}

static void test_chunked_bytewise(void)
{
	const char *msg = "1a\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n";
	struct chunk_scan c;
	size_t total = 0;

	chunk_scan_init(&c);
	for (size_t i = 0; i < strlen(msg); i++)
		total += chunk_scan(&c, msg + i, 1);
	CHECK(c.state == CHUNK_DONE);
	CHECK(total == strlen(msg));
}

static void test_chunked_data_moved(void)
{
	struct chunk_scan c;

	chunk_scan_init(&c);
	CHECK(chunk_scan(&c, "100000\r\n", 8) == 8);
	CHECK(chunk_in_data(&c) && c.remaining == 0x100000);
	chunk_data_moved(&c, 0x100000); /* spliced */
	CHECK(c.state == CHUNK_DATA_CR);
	CHECK(chunk_scan(&c, "\r\n0\r\n\r\n", 7) == 7);
	CHECK(c.state == CHUNK_DONE);
}

static void test_chunked_errors(void)
{
	const char *bad[] = {
		"x\r\n", "4\nWiki", "4\r\nWikiX", "\r\n", "10000000000000000\r\n", "0\r\nTrailer\n"
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct chunk_scan c;

		chunk_scan_init(&c);
		chunk_scan(&c, bad[i], strlen(bad[i]));
		CHECK(c.state == CHUNK_ERROR);
	}
}

/* The parser may rewrite a response's obs-fold in place: it parses a writable copy. */
static char feed_copy[65536];

static enum http_parse_status feed_all(struct http_head *h, const char *text, bool request,
				       size_t max_line, size_t max_head)
{
	size_t len = strlen(text);

	if (len >= sizeof(feed_copy))
		return HTTP_PARSE_ERROR;
	memcpy(feed_copy, text, len + 1);
	http_head_init(h, request);
	return http_head_feed(h, feed_copy, len, max_line, max_head);
}

static void test_head_parse(void)
{
	struct http_head h;
	char req[] = "GET /a?b=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc";
	enum http_parse_status st;

	st = feed_all(&h, req, true, 8192, 32768);
	CHECK(st == HTTP_PARSE_DONE);
	CHECK(h.head_len == strlen(req) - 3);
	CHECK(http_span_eq(req, h.url, "/a?b=1"));
	CHECK(h.has_content_length && h.content_length == 3);
	CHECK(h.n_headers == 2 && http_header_find(&h, req, "host") == 0);

	/* Incremental: one byte at a time gives the same head. */
	http_head_init(&h, true);
	st = HTTP_PARSE_MORE;
	for (size_t i = 1; i <= strlen(req) && st == HTTP_PARSE_MORE; i++)
		st = http_head_feed(&h, req, i, 8192, 32768);
	CHECK(st == HTTP_PARSE_DONE && h.head_len == strlen(req) - 3);
}

/* A client over TLS: X-Forwarded-Proto and Forwarded say https, whatever the client sent. */
static void test_forwarded_proto(void)
{
	const char *req = "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-Proto: ftp\r\n\r\n";
	struct request_rewrite rw = { .target = "/",
				      .target_len = 1,
				      .client_addr = "10.0.0.1",
				      .forwarded = true,
				      .upgrade = -1 };
	struct http_head h;
	struct buf out = { 0 };

	CHECK(feed_all(&h, req, true, 8192, 32768) == HTTP_PARSE_DONE);
	for (int tls = 0; tls < 2; tls++) {
		rw.client_tls = tls;
		buf_consume(&out, buf_len(&out));
		CHECK(http_build_request(&out, &h, req, &rw) == 0);
		CHECK(buf_append(&out, "", 1) == 0);
		CHECK(strstr(buf_start(&out), tls ? "\r\nX-Forwarded-Proto: https\r\n" :
						    "\r\nX-Forwarded-Proto: http\r\n"));
		CHECK(strstr(buf_start(&out), tls ? ";proto=https\r\n" : ";proto=http\r\n"));
		CHECK(!strstr(buf_start(&out), "ftp"));
	}
	buf_free(&out);
}

static void test_head_limits(void)
{
	struct http_head h;
	char *big = malloc(20000);

	memset(big, 'a', 20000);
	memcpy(big, "GET /", 5);
	big[19999] = '\0';
	CHECK(feed_all(&h, big, true, 8192, 32768) == HTTP_PARSE_ERROR);
	CHECK(h.error == HTTP_ERR_URI_TOO_LONG);

	snprintf(big, 20000, "GET / HTTP/1.1\r\nX: %0*d", 15000, 0);
	CHECK(feed_all(&h, big, true, 8192, 8192) == HTTP_PARSE_ERROR);
	CHECK(h.error == HTTP_ERR_TOO_LARGE);
	free(big);

	CHECK(feed_all(&h, "GET / HTTP/1.1\nHost: x\n\n", true, 8192, 32768) == HTTP_PARSE_ERROR);
	CHECK(feed_all(&h, "GET / HTTP/1.1\r\nHost: x\r\n: no-name\r\n\r\n", true, 8192, 32768) ==
	      HTTP_PARSE_ERROR);
	CHECK(feed_all(&h, "GET / HTTP/1.1\r\n: first\r\nHost: x\r\n\r\n", true, 8192, 32768) ==
	      HTTP_PARSE_ERROR);
	CHECK(feed_all(&h, "GET / HTTP/1.1\r\nHost: x\r\nX-Empty:\r\nY: 1\r\n\r\n", true, 8192,
		       32768) == HTTP_PARSE_DONE &&
	      h.n_headers == 3);
	CHECK(feed_all(&h, "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", true,
		       8192, 32768) == HTTP_PARSE_ERROR &&
	      h.error == HTTP_ERR_MALFORMED);
	CHECK(feed_all(&h,
		       "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
		       "Transfer-Encoding: chunked\r\n\r\n",
		       true, 8192, 32768) == HTTP_PARSE_ERROR);
	CHECK(feed_all(&h, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
		       false, 8192, 32768) == HTTP_PARSE_ERROR);
}

static struct config *load_text(const char *text, char *err, size_t errlen)
{
	char path[] = "/tmp/kfwd-unit-XXXXXX";
	int fd = mkstemp(path);
	struct config *cfg;
	FILE *f;

	if (fd < 0)
		return NULL;
	f = fdopen(fd, "w");
	fputs(text, f);
	fclose(f);
	cfg = config_load(path, NULL, 0, err, errlen);
	unlink(path);
	return cfg;
}

static void test_routes(void)
{
	char err[256];
	struct config *cfg = load_text("listen 127.0.0.1:1\n"
				       "upstream a 127.0.0.1:10\n"
				       "upstream b 127.0.0.1:11\n"
				       "route / a\n"
				       "route /api/ b strip-prefix methods=GET,HEAD\n"
				       "route /api/ a host=*.example.com\n"
				       "route /api/v2/ b\n",
				       err, sizeof(err));
	const struct route *r;
	struct route_target t;

	CHECK(cfg != NULL);
	if (!cfg)
		return;
	r = route_match(cfg, "/x", 2, "h", 1);
	CHECK(r == &cfg->routes[0]);
	r = route_match(cfg, "/api/v2/q?z", 11, "h", 1);
	CHECK(r == &cfg->routes[3]);
	r = route_match(cfg, "/api/q", 6, "h:80", 4);
	CHECK(r == &cfg->routes[1]);
	r = route_match(cfg, "/api/q", 6, "w.example.com:8080", 18);
	CHECK(r == &cfg->routes[2]);
	r = route_match(cfg, "/api/q", 6, "example.com", 11);
	CHECK(r == &cfg->routes[1]);
	CHECK(route_allows_method(&cfg->routes[1], HTTP_GET));
	CHECK(!route_allows_method(&cfg->routes[1], HTTP_POST));
	CHECK(route_target_build(&cfg->routes[1], "/api/q?x=1", 10, &t) == 0);
	CHECK(!strcmp(t.target, "/q?x=1"));
	route_target_free(&t);
	CHECK(route_target_build(&cfg->routes[1], "/api/", 5, &t) == 0);
	CHECK(!strcmp(t.target, "/"));
	route_target_free(&t);
	config_free(cfg);
}

static void test_url_embedded(void)
{
	struct route r = { .prefix = "/http/", .prefix_len = 6, .kind = ROUTE_URL_EMBEDDED };
	struct route_target t;
	const char *u;

	u = "/http/example.com:8080/a/b?c=d";
	CHECK(route_target_build(&r, u, strlen(u), &t) == 0);
	CHECK(!strcmp(t.host, "example.com") && t.port == 8080 && !t.host_is_literal);
	CHECK(!strcmp(t.target, "/a/b?c=d") && !strcmp(t.host_header, "example.com:8080"));
	route_target_free(&t);
	u = "/http/[::1]/x";
	CHECK(route_target_build(&r, u, strlen(u), &t) == 0);
	CHECK(t.host_is_literal && t.port == 80 && !strcmp(t.host_header, "[::1]"));
	route_target_free(&t);
	u = "/http/127.0.0.1";
	CHECK(route_target_build(&r, u, strlen(u), &t) == 0 && !strcmp(t.target, "/"));
	route_target_free(&t);
	u = "/http/bad host/x";
	CHECK(route_target_build(&r, u, strlen(u), &t) < 0);
	route_target_free(&t);
	u = "/http/h:99999/x";
	CHECK(route_target_build(&r, u, strlen(u), &t) < 0);
	route_target_free(&t);

	/* A tls route: port 443 by default, and only another port is named in Host. */
	r.tls.on = true;
	u = "/http/secure.test/x";
	CHECK(route_target_build(&r, u, strlen(u), &t) == 0 && t.port == 443 &&
	      !strcmp(t.host_header, "secure.test"));
	route_target_free(&t);
	u = "/http/secure.test:80/x";
	CHECK(route_target_build(&r, u, strlen(u), &t) == 0 && t.port == 80 &&
	      !strcmp(t.host_header, "secure.test:80"));
	route_target_free(&t);
}

static void test_access_rules(void)
{
	char err[256];
	struct config *cfg = load_text("listen 127.0.0.1:1\n"
				       "route /http/ url-embedded\n"
				       "deny 192.168.1.1\n"
				       "allow 192.168.0.0/16\n"
				       "allow *.example.com\n",
				       err, sizeof(err));
	struct sockaddr_any a = { .len = sizeof(struct sockaddr_in) };
	struct sockaddr_in *sin = (struct sockaddr_in *)&a.ss;

	CHECK(cfg != NULL);
	if (!cfg)
		return;
	sin->sin_family = AF_INET;
	inet_pton(AF_INET, "192.168.1.1", &sin->sin_addr);
	CHECK(!route_destination_allowed(cfg, "192.168.1.1", &a));
	inet_pton(AF_INET, "192.168.7.9", &sin->sin_addr);
	CHECK(route_destination_allowed(cfg, "192.168.7.9", &a));
	inet_pton(AF_INET, "10.0.0.1", &sin->sin_addr);
	CHECK(route_destination_allowed(cfg, "www.example.com", &a));
	CHECK(!route_destination_allowed(cfg, "example.com", &a)); /* default deny */
	config_free(cfg);
}

static void check_location_with(const struct location_rewrite *rw, const char *in, const char *want)
{
	struct location_rewrite loc = *rw;
	struct buf out = { 0 };
	int r = http_rewrite_location(&out, in, strlen(in), &loc);

	if (!want) {
		CHECK(r == 1);
	} else {
		CHECK(r == 0 && buf_len(&out) == strlen(want) &&
		      !memcmp(buf_start(&out), want, strlen(want)));
		if (r == 0 &&
		    (buf_len(&out) != strlen(want) || memcmp(buf_start(&out), want, strlen(want))))
			fprintf(stderr, "  got '%.*s' want '%s'\n", (int)buf_len(&out),
				buf_start(&out), want);
	}
	buf_free(&out);
}

static void check_location(const char *in, const char *want)
{
	struct location_rewrite loc = { "/http/", "up:8080", "/dir/page?q=1", false, NULL, NULL };

	check_location_with(&loc, in, want);
}

/* With a /https/ url-embedded tls route: each scheme to its route; "//h" keeps the request's. */
static void test_location_https(void)
{
	struct location_rewrite plain = { "/http/", "up:8080", "/d/p", false, "/https/", "/rtsp/" };
	struct location_rewrite tls = { "/https/", "secure.com", "/d/p", true, "/http/", NULL };
	struct location_rewrite tls_only = { "/https/", "secure.com", "/d/p", true, NULL, NULL };

	check_location_with(&plain, "https://secure.com/x?y", "/https/secure.com/x?y");
	check_location_with(&plain, "http://other.com/x", "/http/other.com/x");
	check_location_with(&tls, "https://secure.com:8443/x", "/https/secure.com:8443/x");
	check_location_with(&tls, "HTTP://plain.com/x", "/http/plain.com/x");
	check_location_with(&tls, "//cdn.net/a", "/https/cdn.net/a");
	check_location_with(&tls, "/abs", "/https/secure.com/abs");
	check_location_with(&tls, "rel", "/https/secure.com/d/rel");
	check_location_with(&tls_only, "http://plain.com/x", NULL);
	check_location_with(&tls_only, "https://s.com", "/https/s.com/");
	/* rtsp:// to the gateway's route when there is one, else left as it is. */
	check_location_with(&plain, "rtsp://cam:8554/live?t=1", "/rtsp/cam:8554/live?t=1");
	check_location_with(&plain, "RTSP://u:p@cam", "/rtsp/u:p@cam/");
	check_location_with(&tls, "rtsp://cam/live", NULL);
}

/* set-header / remove-header: a quoted value keeps its blanks; the client's fields of those
 * names go, whatever their case; the set ones come after the client's fields. */
static void test_header_overrides(void)
{
	const char *req = "GET / HTTP/1.1\r\nHost: h\r\nuser-agent: curl\r\nReferer: r\r\n"
			  "Accept: */*\r\n\r\n";
	char err[256];
	struct config *cfg = load_text("listen 127.0.0.1:1\nroute / url-embedded remove-header "
				       "REFERER set-header User-Agent \"A  b\tc (d)\" # \"x\n",
				       err, sizeof(err));
	struct request_rewrite rw = { .target = "/", .target_len = 1, .client_addr = "1.2.3.4" };
	struct http_head h;
	struct buf out = { 0 };

	CHECK(cfg && cfg->routes[0].n_header_overrides == 2);
	if (!cfg)
		return;
	rw.upgrade = -1;
	rw.overrides = cfg->routes[0].header_overrides;
	rw.n_overrides = cfg->routes[0].n_header_overrides;
	CHECK(feed_all(&h, req, true, 8192, 32768) == HTTP_PARSE_DONE);
	CHECK(http_build_request(&out, &h, req, &rw) == 0 && buf_append(&out, "", 1) == 0);
	CHECK(strstr(buf_start(&out), "\r\nAccept: */*\r\nUser-Agent: A  b\tc (d)\r\n"));
	CHECK(!strstr(buf_start(&out), "curl") && !strstr(buf_start(&out), "Referer"));
	buf_free(&out);
	config_free(cfg);
}

/* A rewritten body's head: framing fields replaced by one Content-Length. */
static void test_head_set_length(void)
{
	const char head[] = "HTTP/1.1 200 OK\r\ncontent-length: 5\r\nX: 1\r\n"
			    "Transfer-Encoding: chunked\r\nContent-Lengthy: 2\r\n\r\n";
	const char want[] = "HTTP/1.1 200 OK\r\nX: 1\r\nContent-Lengthy: 2\r\n"
			    "Content-Length: 123\r\n\r\n";
	struct buf out = { 0 };

	CHECK(http_head_set_length(&out, head, sizeof(head) - 1, 123) == 0);
	CHECK(buf_len(&out) == sizeof(want) - 1 &&
	      !memcmp(buf_start(&out), want, sizeof(want) - 1));
	buf_free(&out);
}

/* The whole URL pasted after a url-embedded prefix. */
static void test_pasted_scheme(void)
{
	CHECK(url_pasted_scheme("http://h/p", 10, "http") == 7);
	CHECK(url_pasted_scheme("HTTP:/h/p", 9, "http") == 6);
	CHECK(url_pasted_scheme("http:///h", 9, "http") == 7); /* two slashes at most */
	CHECK(url_pasted_scheme("http:h/p", 8, "http") == -1);
	CHECK(url_pasted_scheme("https://h", 9, "http") == 0);
	CHECK(url_pasted_scheme("h:80/p", 6, "http") == 0);
	CHECK(url_pasted_scheme("http", 4, "http") == 0);
	CHECK(url_pasted_scheme("rtsp://h", 8, "rtsp") == 7);
}

static void test_embedded_prefixes(void)
{
	char err[256];
	struct config *cfg = load_text("listen 127.0.0.1:1\nroute /http/ url-embedded\n"
				       "route /https/ url-embedded tls\n",
				       err, sizeof(err));

	CHECK(cfg && !strcmp(route_embedded_prefix(cfg, false), "/http/") &&
	      !strcmp(route_embedded_prefix(cfg, true), "/https/"));
	config_free(cfg);
	cfg = load_text("listen 127.0.0.1:1\nroute /http/ url-embedded\n", err, sizeof(err));
	CHECK(cfg && route_embedded_prefix(cfg, true) == NULL);
	config_free(cfg);
}

static void test_location(void)
{
	check_location("http://other.com/x?y=1", "/http/other.com/x?y=1");
	check_location("http://other.com:81", "/http/other.com:81/");
	check_location("/abs/path?k=v", "/http/up:8080/abs/path?k=v");
	check_location("rel/file", "/http/up:8080/dir/rel/file");
	check_location("?only=1", "/http/up:8080/dir/page?only=1");
	check_location("#frag", "/http/up:8080/dir/page?q=1#frag");
	check_location("//cdn.net/a", "/http/cdn.net/a");
	/* Dot segments go (RFC 3986 §5.2.4), never above the destination's root. */
	check_location("../x?a=../b", "/http/up:8080/x?a=../b");
	check_location("../../../x", "/http/up:8080/x");
	check_location("./y/./z/..", "/http/up:8080/dir/y/");
	check_location("/a/./b/../c", "/http/up:8080/a/c");
	check_location("http://h/a/../b/.", "/http/h/b/");
	check_location(".hidden/..x", "/http/up:8080/dir/.hidden/..x");
	check_location("https://secure.com/x", NULL);
	check_location("mailto:x@y", NULL);
}

static void test_config_errors(void)
{
	static const struct {
		const char *text;
		const char *want;
	} cases[] = {
		{ "listen 127.0.0.1:1\nroute / nowhere\n", ":2: unknown upstream" },
		{ "listen 127.0.0.1:99999\nroute /http/ url-embedded\n", ":1: bad listen" },
		{ "listen 127.0.0.1:1\nroute /http/ url-embedded\nbogus 1\n",
		  ":3: unknown directive" },
		/* found by fuzz_config: an unknown method name used to abort in llhttp */
		{ "listen 127.0.0.1:1\nupstream a 127.0.0.1:2\nroute / a methods=GET,FOO\n",
		  ":3: bad method list" },
		{ "listen 127.0.0.1:1\nroute /http/ url-embedded\npipe-size 64k\npipe-low-water 64k\n",
		  "pipe-low-water" },
		{ "listen 127.0.0.1:1\nupstream a 127.0.0.1:2\nroute / a retries=99\n",
		  ":3: retries" },
		{ "listen 127.0.0.1:1\nroute /http/ url-embedded\nallow 10.0.0.0/40\n",
		  ":3: bad prefix" },
	};
	char err[256];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct config *cfg = load_text(cases[i].text, err, sizeof(err));

		CHECK(cfg == NULL && strstr(err, cases[i].want));
		if (cfg || !strstr(err, cases[i].want))
			fprintf(stderr, "  case %zu: '%s'\n", i, cfg ? "(accepted)" : err);
		config_free(cfg);
	}
}

static void test_sizes(void)
{
	size_t sz;
	uint64_t ms;

	CHECK(parse_size("256k", &sz) == 0 && sz == 262144);
	CHECK(parse_size("1m", &sz) == 0 && sz == 1048576);
	CHECK(parse_size("12x", &sz) < 0);
	CHECK(parse_duration_ms("5s", &ms) == 0 && ms == 5000);
	CHECK(parse_duration_ms("250", &ms) == 0 && ms == 250);
	CHECK(parse_duration_ms("2m", &ms) == 0 && ms == 120000);
	CHECK(parse_duration_ms("s", &ms) < 0);
}

/* Chunk lines and trailers are forwarded as they are: only valid ones pass (RFC 9112 §7.1). */
static void test_chunked_validation(void)
{
	const char *bad[] = {
		"5 3\r\nhello\r\n0\r\n\r\n", /* a second size after BWS */
		"5;a\x01\r\nhello\r\n", /* control byte in an extension */
		"0\r\nGET /x HTTP/1.1\r\n\r\n", /* trailer line without a colon */
		"0\r\nX-T : 1\r\n\r\n", /* space before the colon */
		"0\r\n X-T: 1\r\n\r\n", /* obs-fold */
		"0\r\nX-T: a\x7f\r\n\r\n", /* DEL in a value */
	};
	const char *good[] = {
		"5 ;x=1\r\nhello\r\n0\r\n\r\n",
		"5;a=\"b c\"\r\nhello\r\n0\r\nX-T:\t1 2\r\nY:\r\n\r\n",
	};
	struct chunk_scan c;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		chunk_scan_init(&c);
		chunk_scan(&c, bad[i], strlen(bad[i]));
		CHECK(c.state == CHUNK_ERROR);
	}
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		chunk_scan_init(&c);
		CHECK(chunk_scan(&c, good[i], strlen(good[i])) == strlen(good[i]));
		CHECK(c.state == CHUNK_DONE);
	}
}

/* Heads whose framing a peer could read differently are refused; a response is unfolded. */
static void test_head_framing(void)
{
	const char *bad_requests[] = {
		"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity, chunked\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 9223372036854775808\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n",
	};
	struct http_head h;

	for (size_t i = 0; i < sizeof(bad_requests) / sizeof(bad_requests[0]); i++)
		CHECK(feed_all(&h, bad_requests[i], true, 8192, 32768) == HTTP_PARSE_ERROR);
	CHECK(feed_all(&h, "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
		       true, 8192, 32768) == HTTP_PARSE_DONE &&
	      h.chunked);
	CHECK(feed_all(&h, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", false,
		       8192, 32768) == HTTP_PARSE_ERROR);
	CHECK(feed_all(&h, "HTTP/1.1 200 OK\r\nX-A: a\r\n\tb\r\nContent-Length: 0\r\n\r\n", false,
		       8192, 32768) == HTTP_PARSE_DONE);
	CHECK(h.obs_fold && http_span_eq(feed_copy, h.headers[0].value, "a   b"));
	CHECK(feed_all(&h, "\r\nHTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n", false, 8192, 32768) ==
	      HTTP_PARSE_DONE);
	CHECK(http_span_eq(feed_copy, h.status_line, "HTTP/1.1 200 OK"));
}

static void test_request_target(void)
{
	struct http_target t;
	const char *u;

	u = "/a?b";
	CHECK(http_target_parse(u, strlen(u), HTTP_GET, &t) == 0 && t.form == HTTP_TARGET_ORIGIN);
	u = "http://h.example:81/p?q";
	CHECK(http_target_parse(u, strlen(u), HTTP_GET, &t) == 0 && t.form == HTTP_TARGET_ABSOLUTE);
	CHECK(http_span_eq(u, t.authority, "h.example:81") && http_span_eq(u, t.path, "/p?q"));
	u = "HTTP://h";
	CHECK(http_target_parse(u, strlen(u), HTTP_GET, &t) == 0 && t.path.len == 0);
	CHECK(http_target_parse("*", 1, HTTP_OPTIONS, &t) == 0 && t.form == HTTP_TARGET_ASTERISK);
	CHECK(http_target_parse("*", 1, HTTP_GET, &t) < 0);
	u = "/a#f";
	CHECK(http_target_parse(u, strlen(u), HTTP_GET, &t) < 0);
	u = "https://h/";
	CHECK(http_target_parse(u, strlen(u), HTTP_GET, &t) < 0);
	u = "http://u@h/";
	CHECK(http_target_parse(u, strlen(u), HTTP_GET, &t) < 0);
	u = "http:///p";
	CHECK(http_target_parse(u, strlen(u), HTTP_GET, &t) < 0);
}

int main(void)
{
	test_chunked_whole();
	test_chunked_bytewise();
	test_chunked_data_moved();
	test_chunked_errors();
	test_chunked_validation();
	test_head_parse();
	test_head_framing();
	test_request_target();
	test_head_limits();
	test_forwarded_proto();
	test_routes();
	test_url_embedded();
	test_access_rules();
	test_location();
	test_location_https();
	test_embedded_prefixes();
	test_pasted_scheme();
	test_header_overrides();
	test_head_set_length();
	test_config_errors();
	test_sizes();
	test_retry_policy();
	test_flow_fifo();
	test_config_edit();
	test_flow_budget();
	test_flow_hold();
	unit_loop();
	unit_rtsp();
	unit_rtsp_client();
	unit_uri();
	unit_playlist();
	unit_tls();
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
