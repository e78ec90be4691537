/* SPDX-License-Identifier: GPL-2.0 */
#ifndef KFWD_URI_H
#define KFWD_URI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Does @s (@len bytes) start with a URI scheme, ALPHA *(ALPHA / DIGIT / "+" / "-" / ".") ":"
 * (RFC 3986 §3.1)? */
bool uri_has_scheme(const char *s, size_t len);
/*
 * RFC 3986 §5.2.4: @path (@len bytes: a path, without its query or fragment) with its "." and
 * ".." segments removed, written to @out, which may be @path itself (the result is never
 * longer than @len and is written behind what is still to be read). A ".." never climbs above
 * the start of @out. Returns the result's length.
 */
size_t uri_remove_dot_segments(const char *path, size_t len, char *out);
/*
 * RFC 3986 §5.2.2: the reference @ref (@ref_len bytes) resolved against @base (@base_len bytes:
 * an absolute URI, or a bare "/path?query" whose scheme and authority the caller keeps) into
 * @out, NUL-terminated. The result is never longer than @base_len + @ref_len + 1. 0, or -1 when
 * the merged reference does not fit in @cap (NUL included).
 */
int uri_resolve(const char *base, size_t base_len, const char *ref, size_t ref_len, char *out,
		size_t cap);

/* An authority's "host[:port]" (RFC 3986 §3.2.2, §3.2.3), userinfo already taken off. */
struct uri_hostport {
	const char *host; /* without the brackets of an IP literal */
	size_t host_len;
	bool bracketed; /* "[v6]" */
	const char *port; /* after the ':', or NULL without one */
	size_t port_len;
};

/* @s (@len bytes) split into host and port. 0, or -1 for an unclosed '[' or anything but
 * ":port" after the ']'. The spans point into @s and may be empty. */
int uri_split_hostport(const char *s, size_t len, struct uri_hostport *hp);
/* A decimal port, 1 to 65535, of at most 5 digits. 0, or -1. */
int uri_parse_port(const char *s, size_t len, uint16_t *port);
/* A host name kfwd resolves: letters, digits, '-', '.' and '_', not empty. */
bool uri_valid_hostname(const char *h, size_t len);

#endif
