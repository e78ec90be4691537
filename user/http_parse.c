// SPDX-License-Identifier: GPL-2.0
/*
 * Request and response heads parsed with llhttp (strict mode). kfwd only lets llhttp see heads:
 * on_headers_complete pauses the parser, and kfwd frames bodies itself so that body bytes can
 * be spliced without ever entering user space. What llhttp 8.1 lets by and kfwd refuses on top
 * (framing a peer could read differently than kfwd: Transfer-Encoding lists, huge
 * Content-Length, obs-fold, fragments) is checked here too.
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

/*
 * llhttp delivers one element in pieces: across feeds (contiguous, since offsets are relative to
 * the head) and, for a header value, on both sides of an obs-fold ("a\r\n b" arrives as "a"
 * and " b"). A span covers its first piece to its last; a gap between pieces is a fold, which
 * a request may not hold (RFC 9112 §5.2) and which a response's unfold() turns into spaces.
 * Returns 1 when this piece folded the element, -1 when the element may not have a gap.
 */
static int span_extend(struct http_head *h, struct http_span *s, const char *at, size_t len,
		       bool may_fold)
{
	uint32_t off = offset_of(h, at);

	if (s->len == 0 && s->off == 0) {
		s->off = off;
	} else if (off != s->off + s->len) {
		if (!may_fold || h->is_request)
			return -1;
		h->obs_fold = true;
		s->len = off + (uint32_t)len - s->off;
		return 1;
	}
	s->len = off + (uint32_t)len - s->off;
	return 0;
}

static int on_method(llhttp_t *p, const char *at, size_t len)
{
	struct http_head *h = head_of(p);

	return span_extend(h, &h->method, at, len, false);
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
	struct http_head *h = head_of(p);

	return span_extend(h, &h->url, at, len, false);
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
	return span_extend(h, &h->headers[h->n_headers - 1].name, at, len, false);
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
	struct http_head *h = head_of(p);
	struct http_header *hdr;
	int r;

	/* A value with no name before it (a line starting with ':'): llhttp 8.1 lets it by. */
	if (h->last_cb == 0) {
		h->empty_name = true;
		return -1;
	}
	hdr = &h->headers[h->n_headers - 1];
	h->last_cb = 2;
	r = span_extend(h, &hdr->value, at, len, true);
	if (r < 0) {
		h->error_reason = "obs-fold in a request";
		return -1;
	}
	/* How llhttp reads a folded length or coding is its own affair: refused outright. */
	if (r > 0 && (http_span_eq(h->base, hdr->name, "Content-Length") ||
		      http_span_eq(h->base, hdr->name, "Transfer-Encoding"))) {
		h->error_reason = "obs-fold in a framing field";
		return -1;
	}
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

/*
 * The element of a comma-separated list (RFC 9110 §5.6.1) that starts at *@pos, without its
 * OWS: [*@start, returned end). *@pos is left on the comma after it, or at @len.
 */
static size_t list_next(const char *v, size_t len, size_t *pos, size_t *start)
{
	size_t end;

	while (*pos < len && (v[*pos] == ' ' || v[*pos] == '\t'))
		(*pos)++;
	*start = *pos;
	while (*pos < len && v[*pos] != ',')
		(*pos)++;
	end = *pos;
	while (end > *start && (v[end - 1] == ' ' || v[end - 1] == '\t'))
		end--;
	return end;
}

/*
 * RFC 9112 §6.1/§6.3: the Transfer-Encoding list, over every such field, must be valid tokens
 * with chunked exactly once and last. "identity" (no longer a coding since RFC 7230) and a list
 * where chunked is not final are refused: a peer could frame the body differently than kfwd.
 */
static bool transfer_encoding_ok(const struct http_head *h, const char *base)
{
	bool chunked_last = false;

	for (unsigned int i = 0; i < h->n_headers; i++) {
		const char *v = base + h->headers[i].value.off;
		size_t len = h->headers[i].value.len, pos = 0;

		if (!http_span_eq(base, h->headers[i].name, "Transfer-Encoding"))
			continue;
		for (;;) {
			size_t start, end = list_next(v, len, &pos, &start);

			if (end == start || chunked_last)
				return false; /* empty element, or anything after chunked */
			for (size_t j = start; j < end; j++)
				if (!http_is_tchar(v[j]))
					return false;
			if (end - start == strlen("identity") &&
			    !strncasecmp(v + start, "identity", end - start))
				return false;
			chunked_last = end - start == strlen("chunked") &&
				       !strncasecmp(v + start, "chunked", end - start);
			if (pos == len)
				break;
			pos++; /* the comma */
		}
	}
	return chunked_last;
}

/*
 * A response's obs-folds (CRLF and the whitespace after it) become spaces in place (RFC 9112
 * §5.2), so each value is one line. llhttp refuses a bare CR or LF in a value, so every one
 * inside a value span is part of a fold.
 */
static void unfold(struct http_head *h, char *base)
{
	for (unsigned int i = 0; i < h->n_headers; i++) {
		char *v = base + h->headers[i].value.off;
		bool in_fold = false;

		for (uint32_t j = 0; j < h->headers[i].value.len; j++) {
			if (v[j] == '\r' || v[j] == '\n')
				in_fold = true;
			else if (v[j] != ' ' && v[j] != '\t')
				in_fold = false;
			if (in_fold)
				v[j] = ' ';
		}
	}
}

static void finish(struct http_head *h, const char *base)
{
	llhttp_t *p = &h->parser;
	const char *sol, *eol;

	h->http_major = p->http_major;
	h->http_minor = p->http_minor;
	h->status = p->status_code;
	h->keep_alive = llhttp_should_keep_alive(p);
	h->has_content_length = p->flags & F_CONTENT_LENGTH;
	h->content_length = p->content_length;
	h->has_transfer_encoding = p->flags & F_TRANSFER_ENCODING;
	h->chunked = p->flags & F_CHUNKED;
	h->upgrade = p->upgrade;
	/* llhttp skips empty lines before a status line and ends one at a bare LF too: the span
	 * covers the line llhttp read, which kfwd forwards with its own CRLF. */
	sol = base;
	while (sol < base + h->head_len && (*sol == '\r' || *sol == '\n'))
		sol++;
	eol = sol;
	while (eol < base + h->head_len && *eol != '\r' && *eol != '\n')
		eol++;
	h->status_line.off = (uint32_t)(sol - base);
	h->status_line.len = (uint32_t)(eol - sol);
}

/* Framing a peer could read differently than kfwd does: returns why, or NULL after setting
 * h->chunked from kfwd's own reading of Transfer-Encoding. */
static const char *framing_error(struct http_head *h, const char *base)
{
	if (h->has_content_length && h->content_length > HTTP_CONTENT_LENGTH_MAX)
		return "Content-Length too large";
	if (h->has_transfer_encoding && !transfer_encoding_ok(h, base))
		return "Transfer-Encoding without chunked as the final coding";
	/* kfwd frames the body by its own reading of the list, the one it forwards. */
	h->chunked = h->has_transfer_encoding;
	return NULL;
}

enum http_parse_status http_head_feed(struct http_head *h, char *base, size_t len, size_t max_line,
				      size_t max_head)
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
		if (h->obs_fold)
			unfold(h, base);
		finish(h, base);
		h->error_reason = framing_error(h, base);
		if (h->error_reason) {
			h->error = HTTP_ERR_MALFORMED;
			return HTTP_PARSE_ERROR;
		}
		return HTTP_PARSE_DONE;
	}
	if (err != HPE_OK) {
		h->error = h->too_many_headers ? HTTP_ERR_TOO_LARGE : HTTP_ERR_MALFORMED;
		if (!h->error_reason)
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

bool http_is_tchar(char ch)
{
	if ((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z'))
		return true;
	return ch && strchr("!#$%&'*+-.^_`|~", ch) != NULL;
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
		size_t start, end = list_next(value, len, &i, &start);

		if (end - start == tlen && !strncasecmp(value + start, token, tlen))
			return true;
		i++; /* the comma */
	}
	return false;
}

int http_target_parse(const char *url, size_t len, unsigned int method, struct http_target *t)
{
	static const char scheme[] = "http://";
	const size_t slen = sizeof(scheme) - 1;
	size_t auth_end;

	memset(t, 0, sizeof(*t));
	if (memchr(url, '#', len))
		return -1;
	if (len && url[0] == '/') {
		t->form = HTTP_TARGET_ORIGIN;
		t->path.len = (uint32_t)len;
		return 0;
	}
	if (len == 1 && url[0] == '*') {
		t->form = HTTP_TARGET_ASTERISK;
		return method == HTTP_OPTIONS ? 0 : -1;
	}
	/* https:// is refused: kfwd speaks plain HTTP to its upstreams. */
	if (len <= slen || strncasecmp(url, scheme, slen))
		return -1;
	auth_end = slen;
	while (auth_end < len && url[auth_end] != '/' && url[auth_end] != '?')
		auth_end++;
	if (auth_end == slen || memchr(url + slen, '@', auth_end - slen))
		return -1;
	t->form = HTTP_TARGET_ABSOLUTE;
	t->authority.off = (uint32_t)slen;
	t->authority.len = (uint32_t)(auth_end - slen);
	/* "http://h?q" has an empty path before its query: "/?q" is not in the buffer. */
	if (auth_end < len && url[auth_end] != '/')
		return -1;
	t->path.off = (uint32_t)auth_end;
	t->path.len = (uint32_t)(len - auth_end);
	return 0;
}
