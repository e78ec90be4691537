// SPDX-License-Identifier: GPL-2.0
/*
 * C unit tests for user/uri.c: reference resolution with RFC 3986 §5.4's normal and abnormal
 * examples, resolution against a bare path (how Location rewriting uses it), §5.2.4's dot
 * segment examples in place, the scheme test, the room check, and an authority's host and port.
 * unit_main.c calls unit_uri().
 */
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "unit.h"
#include "uri.h"

#define URI_TEST_MAX 256

int unit_resolves(const char *base, const char *ref, const char *want)
{
	char out[URI_TEST_MAX];

	if (uri_resolve(base, strlen(base), ref, strlen(ref), out, sizeof(out)) < 0) {
		fprintf(stderr, "resolve(%s, %s) failed, want %s\n", base, ref, want);
		return 0;
	}
	if (strcmp(out, want)) {
		fprintf(stderr, "resolve(%s, %s) = %s, want %s\n", base, ref, out, want);
		return 0;
	}
	return 1;
}

/* RFC 3986 §5.4.1 (normal) and §5.4.2 (abnormal), in the RFC's order. */
static void test_rfc_examples(void)
{
	static const char *const base = "http://a/b/c/d;p?q";
	static const char *const cases[][2] = {
		/* §5.4.1 */
		{ "g:h", "g:h" },
		{ "g", "http://a/b/c/g" },
		{ "./g", "http://a/b/c/g" },
		{ "g/", "http://a/b/c/g/" },
		{ "/g", "http://a/g" },
		{ "//g", "http://g" },
		{ "?y", "http://a/b/c/d;p?y" },
		{ "g?y", "http://a/b/c/g?y" },
		{ "#s", "http://a/b/c/d;p?q#s" },
		{ "g#s", "http://a/b/c/g#s" },
		{ "g?y#s", "http://a/b/c/g?y#s" },
		{ ";x", "http://a/b/c/;x" },
		{ "g;x", "http://a/b/c/g;x" },
		{ "g;x?y#s", "http://a/b/c/g;x?y#s" },
		{ "", "http://a/b/c/d;p?q" },
		{ ".", "http://a/b/c/" },
		{ "./", "http://a/b/c/" },
		{ "..", "http://a/b/" },
		{ "../", "http://a/b/" },
		{ "../g", "http://a/b/g" },
		{ "../..", "http://a/" },
		{ "../../", "http://a/" },
		{ "../../g", "http://a/g" },
		/* §5.4.2 */
		{ "../../../g", "http://a/g" },
		{ "../../../../g", "http://a/g" },
		{ "/./g", "http://a/g" },
		{ "/../g", "http://a/g" },
		{ "g.", "http://a/b/c/g." },
		{ ".g", "http://a/b/c/.g" },
		{ "g..", "http://a/b/c/g.." },
		{ "..g", "http://a/b/c/..g" },
		{ "./../g", "http://a/b/g" },
		{ "./g/.", "http://a/b/c/g/" },
		{ "g/./h", "http://a/b/c/g/h" },
		{ "g/../h", "http://a/b/c/h" },
		{ "g;x=1/./y", "http://a/b/c/g;x=1/y" },
		{ "g;x=1/../y", "http://a/b/c/y" },
		{ "g?y/./x", "http://a/b/c/g?y/./x" },
		{ "g?y/../x", "http://a/b/c/g?y/../x" },
		{ "g#s/./x", "http://a/b/c/g#s/./x" },
		{ "g#s/../x", "http://a/b/c/g#s/../x" },
		{ "http:g", "http:g" }, /* the strict parser of §5.2.2 */
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		CHECK(unit_resolves(base, cases[i][0], cases[i][1]));
}

/* A base without scheme and authority (a request's path) and one with an empty path. */
static void test_other_bases(void)
{
	CHECK(unit_resolves("/dir/page?q=1", "rel/file", "/dir/rel/file"));
	CHECK(unit_resolves("/dir/page?q=1", "?only=1", "/dir/page?only=1"));
	CHECK(unit_resolves("/dir/page?q=1", "#frag", "/dir/page?q=1#frag"));
	CHECK(unit_resolves("/dir/page?q=1", "../../../x", "/x"));
	CHECK(unit_resolves("/a/../b?q", "?r", "/a/../b?r")); /* an empty path keeps the base's */
	CHECK(unit_resolves("/", "//h/x/../y", "//h/y"));
	CHECK(unit_resolves("rtsp://h?x", "?y", "rtsp://h?y"));
	CHECK(unit_resolves("rtsp://h/a/b", "rtsp://o/x/./y/../z", "rtsp://o/x/z"));
}

static int removes(const char *in, const char *want)
{
	char buf[URI_TEST_MAX];
	size_t n = strlen(in);

	memcpy(buf, in, n);
	n = uri_remove_dot_segments(buf, n, buf); /* in place */
	if (n != strlen(want) || memcmp(buf, want, n)) {
		fprintf(stderr, "remove_dot_segments(%s) = %.*s, want %s\n", in, (int)n, buf, want);
		return 0;
	}
	return 1;
}

static void test_dot_segments(void)
{
	/* §5.2.4's two examples, then each rule at the end of the input. */
	CHECK(removes("/a/b/c/./../../g", "/a/g"));
	CHECK(removes("mid/content=5/../6", "mid/6"));
	CHECK(removes("/a/.", "/a/"));
	CHECK(removes("/a/..", "/"));
	CHECK(removes("..", ""));
	CHECK(removes(".", ""));
	CHECK(removes("../../x", "x"));
	CHECK(removes("/..x/.x/x./x../", "/..x/.x/x./x../"));
	CHECK(removes("", ""));
}

static void test_scheme_and_room(void)
{
	char out[16];

	CHECK(uri_has_scheme("rtsp://x", 8) && uri_has_scheme("a+b-c.d:", 8));
	CHECK(!uri_has_scheme("trackID=0", 9) && !uri_has_scheme("1a:b", 4));
	CHECK(!uri_has_scheme(":x", 2) && !uri_has_scheme("a/b:c", 5) && !uri_has_scheme("", 0));
	/* "rtsp://host/a/track" is 19 bytes: no room in 16, room in 20. */
	CHECK(uri_resolve("rtsp://host/a/", 14, "track", 5, out, sizeof(out)) == -1);
	CHECK(uri_resolve("rtsp://host/a/", 14, "t", 1, out, sizeof(out)) == 0 &&
	      !strcmp(out, "rtsp://host/a/t"));
}

static int splits(const char *s, const char *host, const char *port, bool bracketed)
{
	struct uri_hostport hp;

	if (uri_split_hostport(s, strlen(s), &hp) < 0)
		return 0;
	return hp.host_len == strlen(host) && !memcmp(hp.host, host, hp.host_len) &&
	       hp.bracketed == bracketed &&
	       (port ? hp.port && hp.port_len == strlen(port) &&
				!memcmp(hp.port, port, hp.port_len) :
		       !hp.port);
}

static void test_host_and_port(void)
{
	struct uri_hostport hp;
	uint16_t port = 0;

	CHECK(splits("h", "h", NULL, false) && splits("h:81", "h", "81", false));
	CHECK(splits("[::1]", "::1", NULL, true) && splits("[::1]:8554", "::1", "8554", true));
	CHECK(splits("h:", "h", "", false) && splits("", "", NULL, false));
	CHECK(uri_split_hostport("[::1", 4, &hp) == -1 &&
	      uri_split_hostport("[::1]x", 6, &hp) == -1);
	CHECK(uri_parse_port("65535", 5, &port) == 0 && port == 65535);
	CHECK(uri_parse_port("1", 1, &port) == 0 && port == 1);
	CHECK(uri_parse_port("0", 1, &port) == -1 && uri_parse_port("65536", 5, &port) == -1);
	CHECK(uri_parse_port("008080", 6, &port) == -1 && uri_parse_port("", 0, &port) == -1);
	CHECK(uri_parse_port("8a", 2, &port) == -1 && uri_parse_port("-1", 2, &port) == -1);
	CHECK(uri_valid_hostname("a-b.c_d", 7) && !uri_valid_hostname("", 0));
	CHECK(!uri_valid_hostname("a b", 3) && !uri_valid_hostname("a\0b", 3));
}

void unit_uri(void)
{
	test_rfc_examples();
	test_other_bases();
	test_dot_segments();
	test_scheme_and_room();
	test_host_and_port();
}
