// SPDX-License-Identifier: GPL-2.0
/*
 * RTSP/1.0 message heads (RFC 2326) parsed with llhttp, as http_parse.c parses HTTP heads, plus
 * the RTSP headers a forwarder and a gateway act on. Owns no memory: spans point into the
 * caller's head bytes.
 *
 * llhttp 8.1 parses RTSP/1.0 requests but no RTSP response; it parses a response whose status
 * line starts "HTTP" at the same offsets, so the first five bytes of a response are fed to it
 * from a constant "HTTP/" instead of the caller's "RTSP/". Its keep-alive verdict (false for
 * every RTSP/1.0 message) and its body framing (close-delimited without Content-Length) are
 * HTTP's, not RTSP's, and are never used here.
 */
#include <string.h>
#include <strings.h>

#include "rtsp_parse.h"

#define RTSP_VERSION_1_0 "RTSP/1.0"
#define CSEQ_MAX UINT32_MAX
#define SESSION_TIMEOUT_MAX UINT32_MAX

int rtsp_is_response(const char *buf, size_t len)
{
	size_t n = len < RTSP_VERSION_PREFIX_LEN ? len : RTSP_VERSION_PREFIX_LEN;

	if (memcmp(buf, RTSP_VERSION_PREFIX, n))
		return 0;
	return n == RTSP_VERSION_PREFIX_LEN ? 1 : -1;
}

void rtsp_head_init(struct rtsp_head *h)
{
	memset(h, 0, sizeof(*h));
	http_head_init(&h->http, true);
	h->is_request = true;
}

int rtsp_error_status(enum rtsp_error e)
{
	switch (e) {
	case RTSP_ERR_NONE:
		return 200;
	case RTSP_ERR_URI_TOO_LONG:
		return 414;
	case RTSP_ERR_TOO_LARGE:
		return 413;
	case RTSP_ERR_VERSION:
		return 505;
	case RTSP_ERR_MALFORMED:
	case RTSP_ERR_TRANSFER_CODING:
	case RTSP_ERR_CONTENT_LENGTH:
		break;
	}
	return 400;
}

static bool is_blank(char c)
{
	return c == ' ' || c == '\t';
}

static struct http_span trim(const char *base, struct http_span s)
{
	while (s.len && is_blank(base[s.off])) {
		s.off++;
		s.len--;
	}
	while (s.len && is_blank(base[s.off + s.len - 1]))
		s.len--;
	return s;
}

int rtsp_parse_u64(const char *s, size_t len, uint64_t max, uint64_t *out)
{
	uint64_t v = 0;

	if (len == 0)
		return -1;
	for (size_t i = 0; i < len; i++) {
		unsigned int d = (unsigned char)s[i] - '0';

		if (d > 9 || v > (max - d) / 10)
			return -1;
		v = v * 10 + d;
	}
	*out = v;
	return 0;
}

int rtsp_header_next(const struct rtsp_head *h, const char *base, const char *name, int after)
{
	for (unsigned int i = (unsigned int)(after + 1); i < h->http.n_headers; i++)
		if (http_span_eq(base, h->http.headers[i].name, name))
			return (int)i;
	return -1;
}

struct http_span rtsp_header_value(const struct rtsp_head *h, const char *base, const char *name)
{
	int i = rtsp_header_next(h, base, name, -1);
	struct http_span none = { 0, 0 };

	return i < 0 ? none : trim(base, h->http.headers[i].value);
}

static enum rtsp_parse_status fail(struct rtsp_head *h, enum rtsp_error e, const char *why)
{
	h->error = e;
	h->error_reason = why;
	return RTSP_PARSE_ERROR;
}

/*
 * Once the first line is buffered: its version must be RTSP/1.0; another RTSP version is told
 * apart (505) from a line that is not RTSP at all (400). llhttp takes "RTSP/2.0" as it is.
 */
static enum rtsp_parse_status check_version(struct rtsp_head *h, const char *base, size_t len,
					    size_t max_line)
{
	const char *lf = memchr(base, '\n', len < max_line + 1 ? len : max_line + 1);
	size_t line_len, off, end;

	if (!lf)
		return RTSP_PARSE_MORE;
	line_len = (size_t)(lf - base);
	if (line_len && base[line_len - 1] == '\r')
		line_len--;
	if (h->is_request) {
		end = line_len;
		off = end;
		while (off && base[off - 1] != ' ')
			off--;
	} else {
		off = 0;
		end = 0;
		while (end < line_len && base[end] != ' ')
			end++;
	}
	h->version.off = (uint32_t)off;
	h->version.len = (uint32_t)(end - off);
	h->version_checked = true;
	if (http_span_eq(base, h->version, RTSP_VERSION_1_0))
		return RTSP_PARSE_MORE;
	if (end - off > RTSP_VERSION_PREFIX_LEN &&
	    !memcmp(base + off, RTSP_VERSION_PREFIX, RTSP_VERSION_PREFIX_LEN))
		return fail(h, RTSP_ERR_VERSION, "RTSP version not supported");
	return fail(h, RTSP_ERR_MALFORMED, "not an RTSP/1.0 message");
}

/* http_parse.c's verdict in RTSP terms; any Transfer-Encoding it saw is RTSP's own 400. */
static enum rtsp_parse_status map_http_error(struct rtsp_head *h, const char *base)
{
	llhttp_errno_t err = llhttp_get_errno(&h->http.parser);

	if (err == HPE_INVALID_CONTENT_LENGTH || err == HPE_UNEXPECTED_CONTENT_LENGTH)
		return fail(h, RTSP_ERR_CONTENT_LENGTH, h->http.error_reason);
	if (h->http.error == HTTP_ERR_URI_TOO_LONG)
		return fail(h, RTSP_ERR_URI_TOO_LONG, "request line too long");
	if (h->http.error == HTTP_ERR_TOO_LARGE)
		return fail(h, RTSP_ERR_TOO_LARGE, "head too large");
	if (err == HPE_INVALID_TRANSFER_ENCODING ||
	    rtsp_header_next(h, base, "Transfer-Encoding", -1) >= 0)
		return fail(h, RTSP_ERR_TRANSFER_CODING, "transfer coding in RTSP");
	return fail(h, RTSP_ERR_MALFORMED,
		    h->http.error_reason ? h->http.error_reason : "malformed");
}

/*
 * Content-Length exactly once, plain digits, within @max_body: checked on the headers themselves
 * rather than on llhttp's flags, which keep no count and let leading zeros by.
 */
static enum rtsp_parse_status content_length(struct rtsp_head *h, const char *base,
					     uint64_t max_body)
{
	int i = rtsp_header_next(h, base, "Content-Length", -1);
	struct http_span v;

	if (i < 0)
		return RTSP_PARSE_DONE;
	if (rtsp_header_next(h, base, "Content-Length", i) >= 0)
		return fail(h, RTSP_ERR_CONTENT_LENGTH, "several Content-Length");
	v = trim(base, h->http.headers[i].value);
	if (rtsp_parse_u64(base + v.off, v.len, UINT64_MAX, &h->content_length) < 0)
		return fail(h, RTSP_ERR_CONTENT_LENGTH, "bad Content-Length");
	if (h->content_length > max_body)
		return fail(h, RTSP_ERR_TOO_LARGE, "body too large");
	h->has_content_length = true;
	return RTSP_PARSE_DONE;
}

static enum rtsp_parse_status cseq(struct rtsp_head *h, const char *base)
{
	int i = rtsp_header_next(h, base, "CSeq", -1);
	uint64_t v;

	if (i < 0)
		return RTSP_PARSE_DONE;
	if (rtsp_header_next(h, base, "CSeq", i) >= 0)
		return fail(h, RTSP_ERR_MALFORMED, "several CSeq");
	h->cseq_span = trim(base, h->http.headers[i].value);
	if (rtsp_parse_u64(base + h->cseq_span.off, h->cseq_span.len, CSEQ_MAX, &v) < 0)
		return fail(h, RTSP_ERR_MALFORMED, "bad CSeq");
	h->cseq = (uint32_t)v;
	h->has_cseq = true;
	return RTSP_PARSE_DONE;
}

/* "Session: id[;timeout=N]": the id, and the timeout when it is a plain number. */
static void session(struct rtsp_head *h, const char *base)
{
	static const char param[] = "timeout=";
	struct http_span v = rtsp_header_value(h, base, "Session");
	const char *s = base + v.off;
	size_t id_len = 0, i;

	while (id_len < v.len && s[id_len] != ';')
		id_len++;
	h->session_id = trim(base, (struct http_span){ v.off, (uint32_t)id_len });
	i = id_len;
	while (i < v.len) {
		size_t start, end;
		uint64_t t;

		i++; /* ';' */
		while (i < v.len && is_blank(s[i]))
			i++;
		start = i;
		while (i < v.len && s[i] != ';')
			i++;
		end = i;
		while (end > start && is_blank(s[end - 1]))
			end--;
		if (end - start > sizeof(param) - 1 &&
		    !strncasecmp(s + start, param, sizeof(param) - 1) &&
		    !rtsp_parse_u64(s + start + sizeof(param) - 1,
				    end - start - (sizeof(param) - 1), SESSION_TIMEOUT_MAX, &t)) {
			h->session_timeout = (uint32_t)t;
			h->has_session_timeout = true;
		}
	}
}

static enum rtsp_parse_status finish(struct rtsp_head *h, const char *base, uint64_t max_body)
{
	enum rtsp_parse_status st;

	h->head_len = h->http.head_len;
	if (h->http.has_transfer_encoding ||
	    rtsp_header_next(h, base, "Transfer-Encoding", -1) >= 0)
		return fail(h, RTSP_ERR_TRANSFER_CODING, "transfer coding in RTSP");
	st = content_length(h, base, max_body);
	if (st == RTSP_PARSE_DONE)
		st = cseq(h, base);
	if (st != RTSP_PARSE_DONE)
		return st;
	if (!h->is_request) {
		uint32_t off = h->version.len + 1;

		h->status = h->http.status;
		/* "RTSP/1.0 200 OK": the reason starts after the three-digit code and a blank. */
		off += 4;
		if (off < h->http.status_line.len)
			h->reason = (struct http_span){ off, h->http.status_line.len - off };
	}
	session(h, base);
	h->content_base = rtsp_header_value(h, base, "Content-Base");
	h->content_location = rtsp_header_value(h, base, "Content-Location");
	h->content_type = rtsp_header_value(h, base, "Content-Type");
	h->location = rtsp_header_value(h, base, "Location");
	h->transport = rtsp_header_value(h, base, "Transport");
	h->rtp_info = rtsp_header_value(h, base, "RTP-Info");
	h->public_methods = rtsp_header_value(h, base, "Public");
	h->www_authenticate = rtsp_header_value(h, base, "WWW-Authenticate");
	h->proxy_require = rtsp_header_value(h, base, "Proxy-Require");
	h->require = rtsp_header_value(h, base, "Require");
	return RTSP_PARSE_DONE;
}

enum rtsp_parse_status rtsp_head_feed(struct rtsp_head *h, char *base, size_t len, size_t max_line,
				      size_t max_head, uint64_t max_body)
{
	enum http_parse_status st;

	if (h->error)
		return RTSP_PARSE_ERROR;
	if (h->http.fed == 0) {
		int resp = rtsp_is_response(base, len);

		if (resp < 0)
			return RTSP_PARSE_MORE;
		if (resp) {
			http_head_init(&h->http, false);
			h->is_request = false;
			/* No callback fires on these bytes (no on_version/on_status is set). */
			if (llhttp_execute(&h->http.parser, "HTTP/", RTSP_VERSION_PREFIX_LEN) !=
			    HPE_OK)
				return fail(h, RTSP_ERR_MALFORMED, "llhttp refused a status line");
			h->http.fed = RTSP_VERSION_PREFIX_LEN;
		}
	}
	if (!h->version_checked && check_version(h, base, len, max_line) == RTSP_PARSE_ERROR)
		return RTSP_PARSE_ERROR;
	st = http_head_feed(&h->http, base, len, max_line, max_head);
	if (st == HTTP_PARSE_MORE)
		return RTSP_PARSE_MORE;
	if (st == HTTP_PARSE_ERROR)
		return map_http_error(h, base);
	if (!h->version_checked && check_version(h, base, len, max_line) == RTSP_PARSE_ERROR)
		return RTSP_PARSE_ERROR;
	return finish(h, base, max_body);
}
