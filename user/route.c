// SPDX-License-Identifier: GPL-2.0
/* Route selection: longest path prefix wins; url-embedded routes name their destination. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <llhttp.h>

#include "route.h"
#include "uri.h"

static size_t path_len(const char *url, size_t len)
{
	const char *q = memchr(url, '?', len);

	return q ? (size_t)(q - url) : len;
}

bool host_pattern_match(const char *pattern, const char *host, size_t host_len)
{
	size_t plen;

	if (!strcmp(pattern, "*"))
		return true;
	if (!strncmp(pattern, "*.", 2)) {
		/* "*.example.com" matches "a.example.com", not "example.com". */
		plen = strlen(pattern + 1);
		return host_len > plen && !strncasecmp(host + host_len - plen, pattern + 1, plen);
	}
	plen = strlen(pattern);
	return plen == host_len && !strncasecmp(pattern, host, host_len);
}

/* The host part of a Host header value: "[v6]:port" -> "[v6]", "name:port" -> "name". */
static size_t host_without_port(const char *host, size_t len)
{
	if (len && host[0] == '[') {
		const char *close = memchr(host, ']', len);

		return close ? (size_t)(close - host + 1) : len;
	}
	for (size_t i = 0; i < len; i++)
		if (host[i] == ':')
			return i;
	return len;
}

const struct route *route_match(const struct config *cfg, const char *url, size_t url_len,
				const char *host, size_t host_len)
{
	size_t plen = path_len(url, url_len);
	const struct route *best = NULL;

	host_len = host ? host_without_port(host, host_len) : 0;
	for (size_t i = 0; i < cfg->n_routes; i++) {
		const struct route *r = &cfg->routes[i];

		if (r->prefix_len > plen || memcmp(url, r->prefix, r->prefix_len))
			continue;
		if (r->host && (!host || !host_pattern_match(r->host, host, host_len)))
			continue;
		if (!best || r->prefix_len > best->prefix_len ||
		    (r->prefix_len == best->prefix_len && r->host && !best->host))
			best = r;
	}
	return best;
}

bool route_allows_method(const struct route *r, unsigned int method)
{
	return !r->methods || (method < 64 && (r->methods & (1ULL << method)));
}

void route_allow_header(const struct route *r, char *out, size_t len)
{
	size_t used = 0;

	out[0] = '\0';
	for (unsigned int i = 0; i < 64 && used < len; i++) {
		if (!(r->methods & (1ULL << i)))
			continue;
		used += (size_t)snprintf(out + used, len - used, "%s%s", used ? ", " : "",
					 llhttp_method_name((llhttp_method_t)i));
	}
}

static bool cidr_match(const struct access_rule *rule, const struct sockaddr_any *addr)
{
	const struct sockaddr *sa = (const struct sockaddr *)&addr->ss;
	const unsigned char *bytes;
	unsigned int full, rest;

	if (sa->sa_family != rule->family)
		return false;
	bytes = sa->sa_family == AF_INET ?
			(const unsigned char *)&((const struct sockaddr_in *)sa)->sin_addr :
			(const unsigned char *)&((const struct sockaddr_in6 *)sa)->sin6_addr;
	full = rule->prefix_len / 8;
	rest = rule->prefix_len % 8;
	if (memcmp(bytes, rule->addr, full))
		return false;
	if (rest) {
		unsigned char mask = (unsigned char)(0xff << (8 - rest));

		return (bytes[full] & mask) == (rule->addr[full] & mask);
	}
	return true;
}

bool route_destination_allowed(const struct config *cfg, const char *host,
			       const struct sockaddr_any *addr)
{
	for (size_t i = 0; i < cfg->n_rules; i++) {
		const struct access_rule *rule = &cfg->rules[i];
		bool match = rule->is_cidr ? cidr_match(rule, addr) :
					     host_pattern_match(rule->host, host, strlen(host));

		if (match)
			return rule->allow;
	}
	return false;
}

static int set_target(struct route_target *t, const char *rest, size_t len)
{
	bool need_slash = len == 0 || rest[0] != '/';

	t->target = malloc(len + 2);
	if (!t->target)
		return -1;
	t->target_len = 0;
	if (need_slash)
		t->target[t->target_len++] = '/';
	memcpy(t->target + t->target_len, rest, len);
	t->target_len += len;
	t->target[t->target_len] = '\0';
	return 0;
}

#define HTTP_DEFAULT_PORT 80
#define HTTPS_DEFAULT_PORT 443

/* @t's address when its host (@host_len bytes) is an IP literal (@bracketed: IPv6); a name
 * must be valid. */
static int set_literal_address(struct route_target *t, bool bracketed, size_t host_len)
{
	memset(&t->addr, 0, sizeof(t->addr));
	if (bracketed) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&t->addr.ss;

		if (inet_pton(AF_INET6, t->host, &sin6->sin6_addr) != 1)
			return -1;
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(t->port);
		t->addr.len = sizeof(*sin6);
		t->host_is_literal = true;
	} else {
		struct sockaddr_in *sin = (struct sockaddr_in *)&t->addr.ss;

		if (inet_pton(AF_INET, t->host, &sin->sin_addr) == 1) {
			sin->sin_family = AF_INET;
			sin->sin_port = htons(t->port);
			t->addr.len = sizeof(*sin);
			t->host_is_literal = true;
		} else if (!uri_valid_hostname(t->host, host_len)) {
			return -1;
		}
	}
	return 0;
}

/*
 * "<host>[:<port>]/<path>[?query]" after the route prefix; IPv6 literals in brackets. The port
 * defaults to @default_port (80, or 443 on a tls route), which the Host header then omits.
 */
static int parse_embedded(struct route_target *t, const char *s, size_t len, uint16_t default_port)
{
	size_t auth_len = 0;
	struct uri_hostport hp;

	while (auth_len < len && s[auth_len] != '/' && s[auth_len] != '?')
		auth_len++;
	if (uri_split_hostport(s, auth_len, &hp) < 0 || hp.host_len == 0 ||
	    hp.host_len >= ROUTE_HOST_MAX)
		return -1;
	memcpy(t->host, hp.host, hp.host_len);
	t->host[hp.host_len] = '\0';
	t->port = default_port;
	if (hp.port && uri_parse_port(hp.port, hp.port_len, &t->port) < 0)
		return -1;
	if (set_literal_address(t, hp.bracketed, hp.host_len) < 0)
		return -1;
	snprintf(t->host_header, sizeof(t->host_header), "%s%s%s", hp.bracketed ? "[" : "", t->host,
		 hp.bracketed ? "]" : "");
	if (t->port != default_port) {
		size_t n = strlen(t->host_header);

		snprintf(t->host_header + n, sizeof(t->host_header) - n, ":%u", t->port);
	}
	return set_target(t, s + auth_len, len - auth_len);
}

int url_pasted_scheme(const char *s, size_t len, const char *scheme)
{
	size_t n = strlen(scheme), skip = n + 1;

	if (len < skip || strncasecmp(s, scheme, n) || s[n] != ':')
		return 0;
	while (skip < len && skip < n + 3 && s[skip] == '/')
		skip++;
	return skip == n + 1 ? -1 : (int)skip;
}

int route_target_build(const struct route *r, const char *url, size_t url_len,
		       struct route_target *t)
{
	memset(t, 0, sizeof(*t));
	t->route = r;
	if (r->kind == ROUTE_URL_EMBEDDED) {
		size_t skip = r->prefix_len;
		int pasted;

		/* "route /http url-embedded" reads "/http/host/..." too. */
		if (skip < url_len && url[skip] == '/' && r->prefix[r->prefix_len - 1] != '/')
			skip++;
		/* The whole URL pasted after the prefix: "/http/http://host/...". */
		pasted =
			url_pasted_scheme(url + skip, url_len - skip, r->tls.on ? "https" : "http");
		if (pasted < 0)
			return -1;
		skip += (size_t)pasted;
		return parse_embedded(t, url + skip, url_len - skip,
				      r->tls.on ? HTTPS_DEFAULT_PORT : HTTP_DEFAULT_PORT);
	}
	if (r->strip_prefix)
		return set_target(t, url + r->prefix_len, url_len - r->prefix_len);
	return set_target(t, url, url_len);
}

int route_target_connect(const char *authority, size_t len, struct route_target *t)
{
	memset(t, 0, sizeof(*t));
	if (!len || memchr(authority, '/', len) || memchr(authority, '?', len))
		return -1;
	/* Reuse the url-embedded parser; a CONNECT target must name its port. */
	if (parse_embedded(t, authority, len, HTTP_DEFAULT_PORT) < 0 ||
	    !strchr(t->host_header, ':') ||
	    (t->host_header[0] == '[' && !strstr(t->host_header, "]:")))
		return -1;
	return 0;
}

const char *route_embedded_prefix(const struct config *cfg, bool tls)
{
	for (size_t i = 0; i < cfg->n_routes; i++) {
		const struct route *r = &cfg->routes[i];

		if (r->kind == ROUTE_URL_EMBEDDED && r->tls.on == tls)
			return r->prefix;
	}
	return NULL;
}

const char *route_rtsp_prefix(const struct config *cfg)
{
	for (size_t i = 0; i < cfg->n_routes; i++)
		if (cfg->routes[i].kind == ROUTE_RTSP_GATEWAY)
			return cfg->routes[i].prefix;
	return NULL;
}

void route_target_free(struct route_target *t)
{
	free(t->target);
	t->target = NULL;
}
