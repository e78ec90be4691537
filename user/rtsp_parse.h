/* SPDX-License-Identifier: GPL-2.0 */
#ifndef KFWD_RTSP_PARSE_H
#define KFWD_RTSP_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http.h"

/* A message is a response when it starts with these five bytes; anything else is a request. */
#define RTSP_VERSION_PREFIX "RTSP/"
#define RTSP_VERSION_PREFIX_LEN 5
#define RTSP_DEFAULT_PORT 554

/* Why a head was rejected, and the status kfwd answers a client with. */
enum rtsp_error {
	RTSP_ERR_NONE,
	RTSP_ERR_MALFORMED, /* 400 (502 from a server) */
	RTSP_ERR_URI_TOO_LONG, /* 414 */
	RTSP_ERR_TOO_LARGE, /* 413: head over the limit or too many headers */
	RTSP_ERR_TRANSFER_CODING, /* 400: RTSP has no transfer codings */
	RTSP_ERR_CONTENT_LENGTH, /* 400: not one plain decimal value */
	RTSP_ERR_VERSION, /* 505: RTSP/x.y other than 1.0 */
};

/*
 * One parsed RTSP/1.0 head. Spans are relative to the head's first byte (trimmed of blanks) and
 * have len 0 when the header is absent; for a header given several times they name the first.
 */
struct rtsp_head {
	struct http_head http; /* llhttp state, method, URL, every header */
	bool is_request; /* chosen from the first five bytes */
	bool version_checked;

	/* Set when RTSP_PARSE_DONE */
	size_t head_len;
	int status; /* responses */
	struct http_span version; /* "RTSP/1.0" */
	struct http_span reason; /* responses: the reason phrase */
	bool has_cseq;
	uint32_t cseq;
	struct http_span cseq_span;
	struct http_span session_id; /* Session value up to ';' */
	bool has_session_timeout;
	uint32_t session_timeout; /* seconds, from ";timeout=" */
	bool has_content_length;
	uint64_t content_length; /* 0 when absent: RTSP has no close-delimited bodies */
	struct http_span content_base;
	struct http_span content_location;
	struct http_span content_type;
	struct http_span location;
	struct http_span transport;
	struct http_span rtp_info;
	struct http_span public_methods;
	struct http_span www_authenticate; /* the first; see rtsp_header_next() for the others */
	struct http_span proxy_require;
	struct http_span require;
	enum rtsp_error error;
	const char *error_reason;
};

/* The result of rtsp_head_feed(), as http_head_feed()'s. */
enum rtsp_parse_status {
	RTSP_PARSE_MORE,
	RTSP_PARSE_DONE,
	RTSP_PARSE_ERROR,
};

/* Is the message starting at @buf (@len bytes buffered) a response? -1: too few bytes to tell. */
int rtsp_is_response(const char *buf, size_t len);

void rtsp_head_init(struct rtsp_head *h);
/*
 * Feed the head bytes buffered so far, as http_head_feed(): @base points at the head's first
 * byte, @len counts every byte buffered from there; only new bytes are parsed, and @base may
 * move between calls (the bytes may not change). @max_line bounds the request or status line,
 * @max_head the head, @max_body the Content-Length. @base is writable only because
 * http_head_feed() may normalise bytes of a head in place; a response's "RTSP" is never
 * patched: llhttp is shown "HTTP/" from a constant. llhttp's keep-alive and body framing are not
 * used (it takes an RTSP/1.0 response without Content-Length as close-delimited; RTSP says no
 * body).
 */
enum rtsp_parse_status rtsp_head_feed(struct rtsp_head *h, char *base, size_t len, size_t max_line,
				      size_t max_head, uint64_t max_body);

/* The status an RTSP server (kfwd towards a client) answers a rejected request with. */
int rtsp_error_status(enum rtsp_error e);

/* The next header called @name after index @after (-1: from the start), or -1. */
int rtsp_header_next(const struct rtsp_head *h, const char *base, const char *name, int after);
/* A header's value with blanks trimmed (len 0 when absent). */
struct http_span rtsp_header_value(const struct rtsp_head *h, const char *base, const char *name);
/* Parse a whole span as a decimal number without sign or blanks; -1 if it is not one. */
int rtsp_parse_u64(const char *s, size_t len, uint64_t max, uint64_t *out);

#endif
