/* SPDX-License-Identifier: GPL-2.0 */
#ifndef KFWD_RTSP_URL_H
#define KFWD_RTSP_URL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RTSP_URL_HOST_MAX 256
#define RTSP_URL_CRED_MAX 256

/* An RTSP destination; the credentials are kept apart and never part of a formatted URL. */
struct rtsp_url {
	char host[RTSP_URL_HOST_MAX]; /* without brackets, NUL-terminated */
	bool ipv6; /* host is an IPv6 literal (bracketed in URLs) */
	bool host_is_literal; /* IPv4 or IPv6 literal: no resolving */
	uint16_t port; /* RTSP_DEFAULT_PORT (554) when the URL names none */
	bool has_credentials;
	char user[RTSP_URL_CRED_MAX]; /* percent-decoded */
	char pass[RTSP_URL_CRED_MAX];
	const char *path; /* "/path?query" inside the parsed text, verbatim; may be empty */
	size_t path_len;
};

/* "rtsp://[user[:pass]@]host[:port][/path][?query]". 0, or -1 when it is not a valid one. */
int rtsp_url_parse(const char *s, size_t len, struct rtsp_url *u);
/*
 * What follows a url-embedded route's prefix ("/rtsp/"): "[user[:pass]@]HOST[:PORT][/PATH]
 * [?QUERY]", or the pasted forms "rtsp://HOST/..." and "rtsp:/HOST/..." (a client that merged
 * "//"). 0, or -1.
 */
int rtsp_url_parse_embedded(const char *s, size_t len, struct rtsp_url *u);
/*
 * "rtsp://host[:port]/path?query" without credentials (the port only when not 554). Returns
 * the length, or -1 when it does not fit in @cap (NUL included).
 */
int rtsp_url_format(const struct rtsp_url *u, char *out, size_t cap);
/* Does @ref (@len bytes) start with a URI scheme ("rtsp:", "http:")? uri_has_scheme(). */
bool rtsp_url_has_scheme(const char *ref, size_t len);
/* The size of a resolved URL the RTSP client keeps (a SETUP target, a redirect). */
#define RTSP_URL_RESOLVE_MAX 2048
/*
 * The reference @ref (@len bytes, e.g. an SDP a=control) resolved against the absolute URL
 * @base per RFC 3986 §5.2 (merge, dot segments removed) into @out: uri_resolve(). 0, or -1
 * when it does not fit in @cap (NUL included).
 */
int rtsp_url_resolve(const char *base, const char *ref, size_t len, char *out, size_t cap);

#endif
