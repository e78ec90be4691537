/* SPDX-License-Identifier: GPL-2.0 */
#ifndef KFWD_HTTP_H
#define KFWD_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <llhttp.h>

#define HTTP_MAX_HEADERS 128
/* RFC 9110 §8.6 lets a recipient refuse a length it cannot hold; kfwd stays below 2^63. */
#define HTTP_CONTENT_LENGTH_MAX INT64_MAX

/* Offsets are relative to the first byte of the head, so the buffer may move between calls. */
struct http_span {
	uint32_t off;
	uint32_t len;
};

struct http_header {
	struct http_span name;
	struct http_span value;
};

enum http_parse_status {
	HTTP_PARSE_MORE, /* head incomplete, feed more bytes */
	HTTP_PARSE_DONE, /* head complete: head_len bytes */
	HTTP_PARSE_ERROR,
};

/* Why a head was rejected; session maps it to a status code. */
enum http_error {
	HTTP_ERR_NONE,
	HTTP_ERR_MALFORMED, /* 400 / 502 */
	HTTP_ERR_URI_TOO_LONG, /* 414 */
	HTTP_ERR_TOO_LARGE, /* 431 / 502 */
};

enum body_framing {
	FRAMING_NONE,
	FRAMING_LENGTH,
	FRAMING_CHUNKED,
	FRAMING_CLOSE, /* response delimited by the upstream closing */
};

struct http_head {
	llhttp_t parser;
	const char *base; /* head start during http_head_feed() */
	size_t fed; /* bytes already given to llhttp */
	int last_cb; /* header callback continuity: 0 none, 1 name, 2 value */

	bool is_request;
	struct http_span method; /* requests */
	struct http_span url; /* requests */
	struct http_span status_line; /* responses: "HTTP/1.1 200 OK" without CRLF */
	struct http_header headers[HTTP_MAX_HEADERS];
	unsigned int n_headers;
	bool too_many_headers;
	bool empty_name;
	bool obs_fold; /* a response header value was folded (unfolded in place) */

	/* Set when HTTP_PARSE_DONE */
	size_t head_len;
	uint8_t http_major, http_minor;
	int status;
	bool keep_alive; /* llhttp's view: version + Connection header */
	bool has_content_length;
	uint64_t content_length;
	bool has_transfer_encoding;
	bool chunked; /* chunked is the final transfer coding */
	bool upgrade; /* Upgrade header or CONNECT */
	enum http_error error;
	const char *error_reason;
};

void http_head_init(struct http_head *h, bool is_request);
/*
 * Feed the head bytes buffered so far: @base points at the head's first byte and @len counts
 * every byte buffered from there (only the new ones are parsed). @max_line and @max_head bound
 * the request/status line and the whole head. A response's obs-folds are overwritten with
 * spaces in @base (RFC 9112 §5.2); a request with one is refused.
 */
enum http_parse_status http_head_feed(struct http_head *h, char *base, size_t len, size_t max_line,
				      size_t max_head);

/* RFC 9112 §3.2: the forms of a request-target kfwd routes. */
enum http_target_form {
	HTTP_TARGET_ORIGIN, /* "/path?query" */
	HTTP_TARGET_ABSOLUTE, /* "http://authority/path?query" */
	HTTP_TARGET_ASTERISK, /* "*" (OPTIONS only) */
};

/* Spans relative to the request-target's first byte. */
struct http_target {
	enum http_target_form form;
	struct http_span path; /* "/path?query"; empty for an absolute-form without a path */
	struct http_span authority; /* absolute-form */
};

/*
 * Split the request-target @url of a @method request (CONNECT's authority-form excepted).
 * Returns 0, or -1 for a target no origin-form route can take: a fragment (RFC 9112 §3.2 has
 * none), a scheme other than http, an empty authority or one with userinfo, or "*" other than
 * with OPTIONS.
 */
int http_target_parse(const char *url, size_t len, unsigned int method, struct http_target *t);

/* RFC 9110 §5.6.2: a byte of a token. */
bool http_is_tchar(char ch);

bool http_span_eq(const char *base, struct http_span s, const char *text);
/* Index of the first header called @name (case-insensitive), or -1. */
int http_header_find(const struct http_head *h, const char *base, const char *name);
/* Does the comma-separated list in @value contain @token (case-insensitive)? */
bool http_list_has_token(const char *value, size_t len, const char *token);

#endif
