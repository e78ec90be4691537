/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Shared by the daemon-code fuzz targets: an exact-size heap copy of the input (so a read one
 * byte too far is an ASan report), a name resolver that never leaves the process, and the
 * invariant check that aborts with a message.
 */
#ifndef KFWD_FUZZ_COMMON_H
#define KFWD_FUZZ_COMMON_H

#include <arpa/inet.h>
#include <netdb.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_CHECK(cond)                                                                    \
	do {                                                                                \
		if (!(cond)) {                                                              \
			fprintf(stderr, "invariant broken %s:%d: %s\n", __FILE__, __LINE__, \
				#cond);                                                     \
			abort();                                                            \
		}                                                                           \
	} while (0)

static inline char *fuzz_copy(const uint8_t *data, size_t size)
{
	char *p = malloc(size ? size : 1);

	if (p)
		memcpy(p, data, size);
	return p;
}

/*
 * Feed a head to the parser in two calls, the first @cut bytes then all (as when it arrives in
 * two reads): llhttp then hands out pieces across calls. Returns the last status.
 */
static inline enum http_parse_status fuzz_feed_in_two(struct http_head *h, char *buf, size_t size,
						      size_t cut, size_t max_line, size_t max_head)
{
	enum http_parse_status st = HTTP_PARSE_MORE;

	if (cut < size)
		st = http_head_feed(h, buf, cut, max_line, max_head);
	if (st == HTTP_PARSE_MORE)
		st = http_head_feed(h, buf, size, max_line, max_head);
	FUZZ_CHECK(st != HTTP_PARSE_DONE || h->head_len <= size);
	return st;
}

/* X-Forwarded-*, Forwarded, Via, Connection, Host: at most this many fields added. */
#define FUZZ_ADDED_HEADERS 8

/*
 * A head kfwd forwards (@out, built from the accepted @h) must parse again as exactly one
 * complete head with the same method or status and the same framing: anything else would let
 * the next hop read the message differently than kfwd did.
 */
static inline void fuzz_check_forwarded(const struct http_head *h, const struct buf *out)
{
	struct http_head *again = malloc(sizeof(*again));
	enum http_parse_status st;

	if (!again)
		return;
	http_head_init(again, h->is_request);
	st = http_head_feed(again, buf_start(out), buf_len(out), buf_len(out) + 1,
			    buf_len(out) + 1);
	/* kfwd adds fields of its own: past the parser's header count is not a fault here. */
	if (st == HTTP_PARSE_ERROR && again->too_many_headers &&
	    h->n_headers + FUZZ_ADDED_HEADERS >= HTTP_MAX_HEADERS) {
		free(again);
		return;
	}
	if (st != HTTP_PARSE_DONE)
		fprintf(stderr, "forwarded head refused (%s):\n%.*s\n",
			again->error_reason ? again->error_reason : "?", (int)buf_len(out),
			buf_start(out));
	FUZZ_CHECK(st == HTTP_PARSE_DONE);
	FUZZ_CHECK(again->head_len == buf_len(out));
	if (h->is_request)
		FUZZ_CHECK(again->parser.method == h->parser.method);
	else
		FUZZ_CHECK(again->status == h->status);
	FUZZ_CHECK(again->has_content_length == h->has_content_length);
	FUZZ_CHECK(!h->has_content_length || again->content_length == h->content_length);
	FUZZ_CHECK(again->chunked == h->chunked);
	FUZZ_CHECK(again->has_transfer_encoding == h->has_transfer_encoding);
	FUZZ_CHECK(!again->obs_fold);
	free(again);
}

/*
 * The config parser resolves host names with getaddrinfo(); a fuzzer must not wait for DNS.
 * These definitions take the place of libc's: numeric addresses only, one result.
 */
struct fuzz_ai {
	struct addrinfo ai;
	struct sockaddr_storage ss;
};

int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
		struct addrinfo **res)
{
	struct fuzz_ai *r = calloc(1, sizeof(*r));
	unsigned long port = service ? strtoul(service, NULL, 10) : 0;

	if (!r)
		return EAI_MEMORY;
	if (node && inet_pton(AF_INET, node, &((struct sockaddr_in *)&r->ss)->sin_addr) == 1) {
		((struct sockaddr_in *)&r->ss)->sin_family = AF_INET;
		((struct sockaddr_in *)&r->ss)->sin_port = htons((uint16_t)port);
		r->ai.ai_addrlen = sizeof(struct sockaddr_in);
		r->ai.ai_family = AF_INET;
	} else if (node &&
		   inet_pton(AF_INET6, node, &((struct sockaddr_in6 *)&r->ss)->sin6_addr) == 1) {
		((struct sockaddr_in6 *)&r->ss)->sin6_family = AF_INET6;
		((struct sockaddr_in6 *)&r->ss)->sin6_port = htons((uint16_t)port);
		r->ai.ai_addrlen = sizeof(struct sockaddr_in6);
		r->ai.ai_family = AF_INET6;
	} else {
		free(r);
		return EAI_NONAME;
	}
	r->ai.ai_socktype = hints ? hints->ai_socktype : 0;
	r->ai.ai_addr = (struct sockaddr *)&r->ss;
	*res = &r->ai;
	return 0;
}

void freeaddrinfo(struct addrinfo *res)
{
	free(res); /* the first member of struct fuzz_ai */
}

#endif
