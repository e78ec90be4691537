// SPDX-License-Identifier: GPL-2.0
/*
 * RTSP URLs (RFC 2326 §3.2) and their url-embedded form "/rtsp/HOST[:PORT]/PATH", with
 * credentials split off so that they are used by kfwd and never forwarded. Separate from
 * route.c's url-embedded parser, which fills a route_target for HTTP (port 80, no userinfo);
 * both split host and port with uri.c.
 * Owns no memory: the path points into the parsed text.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "route.h"
#include "rtsp_parse.h"
#include "rtsp_url.h"
#include "uri.h"

#define RTSP_SCHEME "rtsp:"

static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = (char)tolower((unsigned char)c);
	return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Percent-decode @len bytes into @dst (@cap with the NUL); -1 on a bad escape or overflow. */
static int pct_decode(const char *s, size_t len, char *dst, size_t cap)
{
	size_t n = 0;

	for (size_t i = 0; i < len; i++) {
		int c = (unsigned char)s[i];

		if (c == '%') {
			int hi = i + 2 < len ? hex_value(s[i + 1]) : -1;
			int lo = hi >= 0 ? hex_value(s[i + 2]) : -1;

			if (lo < 0)
				return -1;
			c = hi << 4 | lo;
			i += 2;
		}
		if (c == 0 || n + 1 >= cap)
			return -1;
		dst[n++] = (char)c;
	}
	dst[n] = '\0';
	return 0;
}

static int parse_credentials(struct rtsp_url *u, const char *s, size_t len)
{
	const char *colon = memchr(s, ':', len);
	size_t user_len = colon ? (size_t)(colon - s) : len;

	u->has_credentials = true;
	if (pct_decode(s, user_len, u->user, sizeof(u->user)) < 0)
		return -1;
	if (!colon)
		return 0;
	return pct_decode(colon + 1, len - user_len - 1, u->pass, sizeof(u->pass));
}

/* "[user[:pass]@]host[:port]" then the path; @s has no scheme. */
static int parse_authority_path(const char *s, size_t len, struct rtsp_url *u)
{
	size_t auth_len = 0;
	struct uri_hostport hp;
	const char *at;

	memset(u, 0, sizeof(*u));
	u->port = RTSP_DEFAULT_PORT;
	while (auth_len < len && s[auth_len] != '/' && s[auth_len] != '?')
		auth_len++;
	u->path = s + auth_len;
	u->path_len = len - auth_len;
	at = memrchr(s, '@', auth_len);
	if (at) {
		if (parse_credentials(u, s, (size_t)(at - s)) < 0)
			return -1;
		auth_len -= (size_t)(at + 1 - s);
		s = at + 1;
	}
	if (uri_split_hostport(s, auth_len, &hp) < 0 || hp.host_len == 0 ||
	    hp.host_len >= sizeof(u->host))
		return -1;
	memcpy(u->host, hp.host, hp.host_len);
	u->host[hp.host_len] = '\0';
	u->ipv6 = hp.bracketed;
	if (hp.port && uri_parse_port(hp.port, hp.port_len, &u->port) < 0)
		return -1;
	if (u->ipv6) {
		struct in6_addr a6;

		if (inet_pton(AF_INET6, u->host, &a6) != 1)
			return -1;
		u->host_is_literal = true;
	} else {
		struct in_addr a4;

		u->host_is_literal = inet_pton(AF_INET, u->host, &a4) == 1;
		if (!u->host_is_literal && !uri_valid_hostname(u->host, hp.host_len))
			return -1;
	}
	return 0;
}

int rtsp_url_parse(const char *s, size_t len, struct rtsp_url *u)
{
	const size_t scheme = strlen(RTSP_SCHEME "//");

	if (len < scheme || strncasecmp(s, RTSP_SCHEME "//", scheme))
		return -1;
	return parse_authority_path(s + scheme, len - scheme, u);
}

int rtsp_url_parse_embedded(const char *s, size_t len, struct rtsp_url *u)
{
	/* "rtsp://HOST" as pasted, or "rtsp:/HOST" after a client merged the slashes. */
	int skip = url_pasted_scheme(s, len, "rtsp");

	if (skip < 0)
		return -1;
	return parse_authority_path(s + skip, len - (size_t)skip, u);
}

bool rtsp_url_has_scheme(const char *ref, size_t len)
{
	return uri_has_scheme(ref, len);
}

int rtsp_url_resolve(const char *base, const char *ref, size_t len, char *out, size_t cap)
{
	return uri_resolve(base, strlen(base), ref, len, out, cap);
}

int rtsp_url_format(const struct rtsp_url *u, char *out, size_t cap)
{
	char port[8] = "";
	int n;

	if (u->path_len >= cap)
		return -1;
	if (u->port != RTSP_DEFAULT_PORT)
		snprintf(port, sizeof(port), ":%u", u->port);
	n = snprintf(out, cap, "rtsp://%s%s%s%s%s%.*s", u->ipv6 ? "[" : "", u->host,
		     u->ipv6 ? "]" : "", port, u->path_len && u->path[0] == '?' ? "/" : "",
		     (int)u->path_len, u->path);
	if (n < 0 || (size_t)n >= cap)
		return -1;
	return n;
}
