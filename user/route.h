/* SPDX-License-Identifier: GPL-2.0 */
#ifndef KFWD_ROUTE_H
#define KFWD_ROUTE_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"

#define ROUTE_HOST_MAX 256

/* Where one request goes, and how its request line and Host change on the way. */
struct route_target {
	const struct route *route;
	/* url-embedded: the destination named in the URL */
	char host[ROUTE_HOST_MAX]; /* without brackets */
	uint16_t port;
	bool host_is_literal;
	struct sockaddr_any addr; /* valid when host_is_literal */
	/* Host header to send, or empty to keep the client's */
	char host_header[ROUTE_HOST_MAX + 16];
	/* request-target to send upstream (malloc'd) */
	char *target;
	size_t target_len;
};

/*
 * The route for a request: the longest prefix of the request-target's path among routes whose
 * host= matches @host (the Host header, port ignored); on a tie a host-specific route beats a
 * host-less one, then the first defined wins. NULL if none.
 */
const struct route *route_match(const struct config *cfg, const char *url, size_t url_len,
				const char *host, size_t host_len);
bool route_allows_method(const struct route *r, unsigned int method);
/* "GET, HEAD" for an Allow header. */
void route_allow_header(const struct route *r, char *out, size_t len);
/*
 * allow/deny for url-embedded destinations: rules in order, first match wins, default deny.
 * Host patterns see the name in the URL, CIDR rules the address it resolved to.
 */
bool route_destination_allowed(const struct config *cfg, const char *host,
			       const struct sockaddr_any *addr);
bool host_pattern_match(const char *pattern, const char *host, size_t host_len);
/* Fill @t for @url on @r. Returns 0, or -1 when the URL does not name a valid destination. */
int route_target_build(const struct route *r, const char *url, size_t url_len,
		       struct route_target *t);
/* CONNECT's request-target, "host:port" (port required). */
int route_target_connect(const char *authority, size_t len, struct route_target *t);
void route_target_free(struct route_target *t);
/*
 * The prefix of the first url-embedded route whose destinations speak TLS (@tls) or plain
 * HTTP, or NULL: where a Location of that scheme is rewritten to.
 */
const char *route_embedded_prefix(const struct config *cfg, bool tls);
/*
 * The prefix of the first HTTP-to-RTSP gateway route ("route /rtsp/ rtsp-gateway"), or NULL:
 * where an rtsp:// Location or playlist URI is rewritten to.
 */
const char *route_rtsp_prefix(const struct config *cfg);
/*
 * A URL pasted after a url-embedded prefix ("/http/http://HOST/..."): the length of its
 * "SCHEME://" (or "SCHEME:/", a client merged the slashes), 0 when @s does not start with
 * "SCHEME:", or -1 when it does without a slash after it.
 */
int url_pasted_scheme(const char *s, size_t len, const char *scheme);

#endif
