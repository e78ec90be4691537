// SPDX-License-Identifier: GPL-2.0
/* Socket addresses: ADDR:PORT parsing (configuration, kfwdctl changes) and text forms. */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"

int parse_addr_port(const char *text, struct sockaddr_any *out, bool allow_names)
{
	char host[256];
	const char *colon, *port_text;
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res;
	size_t hlen;
	char *end;
	long port;

	if (text[0] == '[') {
		const char *close = strchr(text, ']');

		if (!close || close[1] != ':')
			return -1;
		hlen = (size_t)(close - text - 1);
		if (hlen >= sizeof(host))
			return -1;
		memcpy(host, text + 1, hlen);
		host[hlen] = '\0';
		port_text = close + 2;
	} else {
		colon = strrchr(text, ':');
		if (!colon)
			return -1;
		hlen = (size_t)(colon - text);
		if (hlen == 0 || hlen >= sizeof(host))
			return -1;
		memcpy(host, text, hlen);
		host[hlen] = '\0';
		port_text = colon + 1;
	}
	errno = 0;
	port = strtol(port_text, &end, 10);
	if (errno || *end || port <= 0 || port > 65535 || !isdigit((unsigned char)*port_text))
		return -1;

	memset(out, 0, sizeof(*out));
	if (!strcmp(host, "*")) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&out->ss;

		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)port);
		sin->sin_addr.s_addr = htonl(INADDR_ANY);
		out->len = sizeof(*sin);
		return 0;
	}
	hints.ai_flags = AI_NUMERICSERV | (allow_names ? 0 : AI_NUMERICHOST);
	if (getaddrinfo(host, port_text, &hints, &res) != 0)
		return -1;
	memcpy(&out->ss, res->ai_addr, res->ai_addrlen);
	out->len = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

void addr_host_text(const struct sockaddr_storage *ss, char *out, size_t len)
{
	const void *ip;

	if (ss->ss_family == AF_INET)
		ip = &((const struct sockaddr_in *)ss)->sin_addr;
	else if (ss->ss_family == AF_INET6)
		ip = &((const struct sockaddr_in6 *)ss)->sin6_addr;
	else
		ip = NULL;
	if (!ip || !inet_ntop(ss->ss_family, ip, out, (socklen_t)len))
		snprintf(out, len, "?");
}

void addr_text(const struct sockaddr_storage *ss, char *out, size_t len)
{
	char ip[INET6_ADDRSTRLEN];

	addr_host_text(ss, ip, sizeof(ip));
	if (ss->ss_family == AF_INET)
		snprintf(out, len, "%s:%u", ip, ntohs(((const struct sockaddr_in *)ss)->sin_port));
	else if (ss->ss_family == AF_INET6)
		snprintf(out, len, "[%s]:%u", ip,
			 ntohs(((const struct sockaddr_in6 *)ss)->sin6_port));
	else
		snprintf(out, len, "?");
}

int addr_peer_text(int fd, char *out, size_t len)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);

	if (fd < 0 || getpeername(fd, (struct sockaddr *)&ss, &sl) < 0)
		return -1;
	addr_text(&ss, out, len);
	return 0;
}
