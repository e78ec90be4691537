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

/* Longest matching prefix of the request-target's path, or NULL. */
const struct route *route_match(const struct config *cfg, const char *url, size_t url_len);
/* Fill @t for @url on @r. Returns 0, or -1 when the URL does not name a valid destination. */
int route_target_build(const struct route *r, const char *url, size_t url_len,
		       struct route_target *t);
void route_target_free(struct route_target *t);

#endif
