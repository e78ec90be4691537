// SPDX-License-Identifier: GPL-2.0
/*
 * libFuzzer target for the URL parsers: the request-target forms (http_target_parse), the
 * url-embedded destination parser and CONNECT's authority (user/route.c), and the Location
 * rewriting of url-embedded routes (user/http_rewrite.c). The first byte picks the route's
 * shape; the rest is the target. Invariants: every span lies inside the input, a target built
 * for upstream is origin-form, a destination has a host and a port, and a rewritten Location
 * stays under the route's prefix.
 */
#include "fuzz_common.h"

#include "http.h"
#include "http_rewrite.h"
#include "route.h"

static void check_target(const struct route_target *t)
{
	FUZZ_CHECK(t->target && t->target_len > 0 && t->target[0] == '/');
	FUZZ_CHECK(strlen(t->host) < sizeof(t->host));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct route routes[] = {
		{ .prefix = "/http/", .prefix_len = 6, .kind = ROUTE_URL_EMBEDDED },
		{ .prefix = "/http", .prefix_len = 5, .kind = ROUTE_URL_EMBEDDED },
		{ .prefix = "/api/", .prefix_len = 5, .kind = ROUTE_UPSTREAM, .strip_prefix = true },
		{ .prefix = "/", .prefix_len = 1, .kind = ROUTE_UPSTREAM },
	};
	const struct route *r;
	struct route_target t = { 0 };
	struct http_target form;
	struct buf out = { 0 };
	char *buf;

	if (size < 1)
		return 0;
	r = &routes[data[0] % (sizeof(routes) / sizeof(routes[0]))];
	data++;
	size--;
	buf = fuzz_copy(data, size);
	if (!buf)
		return 0;
	if (http_target_parse(buf, size, HTTP_GET, &form) == 0) {
		FUZZ_CHECK(form.form != HTTP_TARGET_ASTERISK);
		FUZZ_CHECK((size_t)form.path.off + form.path.len <= size);
		FUZZ_CHECK((size_t)form.authority.off + form.authority.len <= size);
		FUZZ_CHECK(!form.path.len || buf[form.path.off] == '/');
		FUZZ_CHECK(!memchr(buf, '#', size));
	}
	if (size >= r->prefix_len && !memcmp(buf, r->prefix, r->prefix_len) &&
	    route_target_build(r, buf, size, &t) == 0) {
		check_target(&t);
		if (r->kind == ROUTE_URL_EMBEDDED) {
			const struct location_rewrite loc = {
				.prefix = r->prefix,
				.authority = t.host_header,
				.req_path = t.target,
			};

			FUZZ_CHECK(t.host[0] && t.port > 0);
			/* The target as a Location value: relative, absolute or network-path. */
			if (http_rewrite_location(&out, buf, size, &loc) == 0)
				FUZZ_CHECK(buf_len(&out) >= 5 &&
					   !memcmp(buf_start(&out), "/http", 5));
		}
	}
	route_target_free(&t);
	if (route_target_connect(buf, size, &t) == 0)
		FUZZ_CHECK(t.host[0] && t.port > 0 && strchr(t.host_header, ':'));
	route_target_free(&t);
	buf_free(&out);
	free(buf);
	return 0;
}
