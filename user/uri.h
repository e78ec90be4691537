/* SPDX-License-Identifier: GPL-2.0 */
#ifndef KFWD_URI_H
#define KFWD_URI_H

#include <stdbool.h>
#include <stddef.h>

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

#endif
