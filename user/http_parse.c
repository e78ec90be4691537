// SPDX-License-Identifier: GPL-2.0
/*
 * Request and response heads parsed with llhttp (strict mode). kfwd only lets llhttp see heads:
 * on_headers_complete pauses the parser, and kfwd frames bodies itself so that body bytes can
 * be spliced without ever entering user space.
 */
#include <string.h>
#include <strings.h>

#include "http.h"

static struct http_head *head_of(llhttp_t *p)
{
	return (struct http_head *)p->data;
}

static uint32_t offset_of(struct http_head *h, const char *at)
{
	return (uint32_t)(at - h->base);
}

/* llhttp may deliver one element in several pieces (across feeds); spans grow contiguously. */
static void span_extend(struct http_head *h, struct http_span *s, const char *at, size_t len)
{
	if (s->len == 0)
		s->off = offset_of(h, at);
	s->len += (uint32_t)len;
}

static int on_method(llhttp_t *p, const char *at, size_t len)
{
	struct http_head *h = head_of(p);

	span_extend(h, &h->method, at, len);
	return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
	struct http_head *h = head_of(p);

	span_extend(h, &h->url, at, len);
	return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
	struct http_head *h = head_of(p);

	if (h->last_cb != 1) {
		if (h->n_headers == HTTP_MAX_HEADERS) {
			h->too_many_headers = true;
			return -1;
		}
		memset(&h->headers[h->n_headers++], 0, sizeof(struct http_header));
	}
	h->last_cb = 1;
	span_extend(h, &h->headers[h->n_headers - 1].name, at, len);
	return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
	struct http_head *h = head_of(p);

	/* A value with no name before it (a line starting with ':'): llhttp 8.1 lets it by. */
	if (h->last_cb == 0) {
		h->empty_name = true;
		return -1;
	}
	h->last_cb = 2;
	span_extend(h, &h->headers[h->n_headers - 1].value, at, len);
	return 0;
}

static int on_header_value_complete(llhttp_t *p)
{
	head_of(p)->last_cb = 0;
	return 0;
}

static int on_headers_complete(llhttp_t *p)
{
	/* Stop right after the head: the body is framed and moved by kfwd, not by llhttp. */
	return HPE_PAUSED;
}

static const llhttp_settings_t settings = {
	.on_method = on_method,
	.on_url = on_url,
	.on_header_field = on_header_field,
	.on_header_value = on_header_value,
	.on_header_value_complete = on_header_value_complete,
	.on_headers_complete = on_headers_complete,
};

void http_head_init(struct http_head *h, bool is_request)
{
	memset(h, 0, sizeof(*h));
	h->is_request = is_request;
	llhttp_init(&h->parser, is_request ? HTTP_REQUEST : HTTP_RESPONSE, &settings);
	h->parser.data = h;
}

static void finish(struct http_head *h, const char *base)
{
	llhttp_t *p = &h->parser;
	const char *crlf;

	h->http_major = p->http_major;
	h->http_minor = p->http_minor;
	h->status = p->status_code;
	h->keep_alive = llhttp_should_keep_alive(p);
	h->has_content_length = p->flags & F_CONTENT_LENGTH;
	h->content_length = p->content_length;
	h->has_transfer_encoding = p->flags & F_TRANSFER_ENCODING;
	h->chunked = p->flags & F_CHUNKED;
	h->upgrade = p->upgrade;
	crlf = memchr(base, '\r', h->head_len);
	h->status_line.off = 0;
	h->status_line.len = crlf ? (uint32_t)(crlf - base) : 0;
}

enum http_parse_status http_head_feed(struct http_head *h, const char *base, size_t len,
				      size_t max_line, size_t max_head)
{
	size_t limit = len < max_head ? len : max_head;
	const char *lf;
	llhttp_errno_t err;

	if (h->fed >= limit)
		goto over_limit;
	h->base = base;
	err = llhttp_execute(&h->parser, base + h->fed, limit - h->fed);
	if (err == HPE_PAUSED) {
		h->head_len = (size_t)(llhttp_get_error_pos(&h->parser) - base);
		lf = memchr(base, '\n', h->head_len);
		if (lf && (size_t)(lf - base) > max_line) {
			h->error = HTTP_ERR_URI_TOO_LONG;
			return HTTP_PARSE_ERROR;
		}
		/* Defensive: every header must have a name. */
		for (unsigned int i = 0; i < h->n_headers; i++) {
			if (h->headers[i].name.len == 0) {
				h->error = HTTP_ERR_MALFORMED;
				h->error_reason = "empty header name";
				return HTTP_PARSE_ERROR;
			}
		}
		finish(h, base);
		if (h->is_request && h->has_transfer_encoding && !h->chunked) {
			h->error = HTTP_ERR_TRANSFER_CODING;
			return HTTP_PARSE_ERROR;
		}
		return HTTP_PARSE_DONE;
	}
	if (err != HPE_OK) {
		h->error = h->too_many_headers ? HTTP_ERR_TOO_LARGE : HTTP_ERR_MALFORMED;
		if (err == HPE_INVALID_TRANSFER_ENCODING && h->is_request)
			h->error = HTTP_ERR_TRANSFER_CODING;
		h->error_reason = llhttp_get_error_reason(&h->parser);
		return HTTP_PARSE_ERROR;
	}
	h->fed = limit;
over_limit:
	/* No end of line within the line limit: the request line (or status line) is too long. */
	lf = memchr(base, '\n', limit < max_line + 1 ? limit : max_line + 1);
	if (!lf && limit > max_line) {
		h->error = HTTP_ERR_URI_TOO_LONG;
		return HTTP_PARSE_ERROR;
	}
	if (len >= max_head) {
		h->error = HTTP_ERR_TOO_LARGE;
		return HTTP_PARSE_ERROR;
	}
	return HTTP_PARSE_MORE;
}

bool http_span_eq(const char *base, struct http_span s, const char *text)
{
	return strlen(text) == s.len && !strncasecmp(base + s.off, text, s.len);
}

int http_header_find(const struct http_head *h, const char *base, const char *name)
{
	for (unsigned int i = 0; i < h->n_headers; i++)
		if (http_span_eq(base, h->headers[i].name, name))
			return (int)i;
	return -1;
}

bool http_list_has_token(const char *value, size_t len, const char *token)
{
	size_t tlen = strlen(token);
	size_t i = 0;

	while (i < len) {
		size_t start, end;

		while (i < len && (value[i] == ' ' || value[i] == '\t' || value[i] == ','))
			i++;
		start = i;
		while (i < len && value[i] != ',')
			i++;
		end = i;
		while (end > start && (value[end - 1] == ' ' || value[end - 1] == '\t'))
			end--;
		if (end - start == tlen && !strncasecmp(value + start, token, tlen))
			return true;
	}
	return false;
}
