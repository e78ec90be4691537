/* SPDX-License-Identifier: GPL-2.0 */
#ifndef KFWD_ADDR_H
#define KFWD_ADDR_H

/* Socket addresses: parsing ADDR:PORT and writing them back as text, in one place. */
#include <stdbool.h>
#include <stddef.h>
#include <netinet/in.h>
#include <sys/socket.h>

/* "[v6 address]:65535" and its NUL */
#define ADDR_TEXT_MAX (INET6_ADDRSTRLEN + 16)

struct sockaddr_any {
	struct sockaddr_storage ss;
	socklen_t len;
};

/* "ADDR:PORT", "[V6]:PORT" or "*:PORT" into @out; host names only with @allow_names
 * (resolved now, blocking: for the configuration only). 0, or -1 when invalid. */
int parse_addr_port(const char *text, struct sockaddr_any *out, bool allow_names);
/* "1.2.3.4:80" / "[::1]:80"; "?" for another family. */
void addr_text(const struct sockaddr_storage *ss, char *out, size_t len);
/* The address alone, without port or brackets (X-Forwarded-For); "?" for another family. */
void addr_host_text(const struct sockaddr_storage *ss, char *out, size_t len);
/* The peer of connected socket @fd as addr_text(); -1 when it has none (left untouched). */
int addr_peer_text(int fd, char *out, size_t len);

#endif
