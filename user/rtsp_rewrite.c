// SPDX-License-Identifier: GPL-2.0
/*
 * Pure RTSP rewriting for a forwarder between a client and one server: URLs in the request
 * line, in Content-Base/Content-Location/Location, in RTP-Info url= and in SDP a=control: move
 * between the client's and the server's prefix; Transport lists lose their non-TCP entries;
 * Via and Content-Length are set; kfwd's own replies are built. Every output is bounded by its
 * caller's buffer: nothing is allocated, overflow is an error.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "rtsp_rewrite.h"

#define RTSP_VIA_VERSION "RTSP/1.0 "
#define SDP_CONTROL "a=control:"
#define URL_PARAM "url="
#define LOWER_TRANSPORT_TCP "TCP"
#define CRLF "\r\n"

void rtsp_out_put(struct rtsp_out *o, const void *p, size_t n)
{
	if (o->overflow || n > o->cap - o->len) {
		o->overflow = true;
		return;
	}
	memcpy(o->buf + o->len, p, n);
	o->len += n;
}

void rtsp_out_str(struct rtsp_out *o, const char *s)
{
	rtsp_out_put(o, s, strlen(s));
}

static bool is_blank(char c)
{
	return c == ' ' || c == '\t';
}

/* Length of "scheme://authority" at the start of @p, or 0 when it has no "://". */
static size_t authority_end(const char *p, size_t len)
{
	const char *sep = len >= 3 ? memmem(p, len, "://", 3) : NULL;
	size_t i;

	if (!sep)
		return 0;
	i = (size_t)(sep - p) + 3;
	while (i < len && p[i] != '/' && p[i] != '?' && p[i] != ';')
		i++;
	return i;
}

static bool prefix_matches(const char *url, size_t len, const char *prefix, size_t plen)
{
	size_t auth = authority_end(prefix, plen);

	if (!plen || len < plen || strncasecmp(url, prefix, auth) ||
	    memcmp(url + auth, prefix + auth, plen - auth))
		return false;
	if (len == plen || prefix[plen - 1] == '/')
		return true;
	return url[plen] == '/' || url[plen] == '?' || url[plen] == ';';
}

bool rtsp_map_url(const struct rtsp_url_map *m, enum rtsp_dir dir, const char *url, size_t len,
		  struct rtsp_out *o)
{
	const char *from = dir == RTSP_TO_UPSTREAM ? m->client : m->upstream;
	size_t from_len = dir == RTSP_TO_UPSTREAM ? m->client_len : m->upstream_len;
	const char *to = dir == RTSP_TO_UPSTREAM ? m->upstream : m->client;
	size_t to_len = dir == RTSP_TO_UPSTREAM ? m->upstream_len : m->client_len;

	if (!prefix_matches(url, len, from, from_len)) {
		rtsp_out_put(o, url, len);
		return false;
	}
	rtsp_out_put(o, to, to_len);
	rtsp_out_put(o, url + from_len, len - from_len);
	return true;
}

/* RTP-Info: every "url=" parameter of every list element, quoted (RFC 7826) or not. */
static void map_rtp_info(const struct rtsp_url_map *m, enum rtsp_dir dir, const char *v, size_t len,
			 struct rtsp_out *o)
{
	size_t i = 0;

	while (i < len) {
		size_t start, end;

		/* At the start of a parameter: copy the separators and blanks before it. */
		start = i;
		while (i < len && (is_blank(v[i]) || v[i] == ',' || v[i] == ';'))
			i++;
		rtsp_out_put(o, v + start, i - start);
		if (len - i > strlen(URL_PARAM) &&
		    !strncasecmp(v + i, URL_PARAM, strlen(URL_PARAM))) {
			rtsp_out_put(o, v + i, strlen(URL_PARAM));
			i += strlen(URL_PARAM);
			if (v[i] == '"') {
				const char *q = memchr(v + i + 1, '"', len - i - 1);

				end = q ? (size_t)(q - v) : len;
				rtsp_out_put(o, "\"", 1);
				rtsp_map_url(m, dir, v + i + 1, end - i - 1, o);
				i = end;
				if (q) {
					rtsp_out_put(o, "\"", 1);
					i++;
				}
				continue;
			}
			end = i;
			while (end < len && v[end] != ';' && v[end] != ',')
				end++;
			rtsp_map_url(m, dir, v + i, end - i, o);
			i = end;
			continue;
		}
		/* Any other parameter: copy it (quoted strings may hold ',' or ';'). */
		start = i;
		while (i < len && v[i] != ';' && v[i] != ',') {
			if (v[i] == '"') {
				const char *q = memchr(v + i + 1, '"', len - i - 1);

				i = q ? (size_t)(q - v) : len - 1;
			}
			i++;
		}
		rtsp_out_put(o, v + start, i - start);
	}
}

enum rtsp_rw_result rtsp_filter_transport(const char *value, size_t len, struct rtsp_out *o)
{
	size_t i = 0, kept = 0;

	while (i < len) {
		size_t start, end, spec_end, lower;

		while (i < len && (is_blank(value[i]) || value[i] == ','))
			i++;
		start = i;
		while (i < len && value[i] != ',')
			i++;
		end = i;
		while (end > start && is_blank(value[end - 1]))
			end--;
		if (end == start)
			continue;
		spec_end = start;
		while (spec_end < end && value[spec_end] != ';')
			spec_end++;
		while (spec_end > start && is_blank(value[spec_end - 1]))
			spec_end--;
		lower = spec_end;
		while (lower > start && value[lower - 1] != '/')
			lower--;
		/* "RTP/AVP" alone is UDP; the lower transport is the third component. */
		if (lower == start || spec_end - lower != strlen(LOWER_TRANSPORT_TCP) ||
		    strncasecmp(value + lower, LOWER_TRANSPORT_TCP, spec_end - lower))
			continue;
		if (kept++)
			rtsp_out_put(o, ",", 1);
		rtsp_out_put(o, value + start, end - start);
	}
	return kept ? RTSP_RW_OK : RTSP_RW_NO_TRANSPORT;
}

enum header_kind {
	HDR_OTHER,
	HDR_URL,
	HDR_RTP_INFO,
	HDR_TRANSPORT,
	HDR_CONTENT_LENGTH,
};

static enum header_kind classify(const char *name, size_t len, const struct rtsp_rewrite *rw)
{
	static const struct {
		const char *name;
		enum header_kind kind;
	} table[] = {
		{ "Content-Base", HDR_URL },	{ "Content-Location", HDR_URL },
		{ "Location", HDR_URL },	{ "RTP-Info", HDR_RTP_INFO },
		{ "Transport", HDR_TRANSPORT }, { "Content-Length", HDR_CONTENT_LENGTH },
	};

	for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
		if (strlen(table[i].name) != len || strncasecmp(table[i].name, name, len))
			continue;
		if (table[i].kind == HDR_TRANSPORT && !rw->filter_transport)
			return HDR_OTHER;
		if (table[i].kind == HDR_CONTENT_LENGTH && rw->content_length < 0)
			return HDR_OTHER;
		return table[i].kind;
	}
	return HDR_OTHER;
}

/* One line [@p, @p + @len) without its line end. */
static enum rtsp_rw_result header_line(const char *p, size_t len, bool folded_next,
				       const struct rtsp_rewrite *rw, struct rtsp_out *o)
{
	const char *colon = memchr(p, ':', len);
	size_t name_len, v, end;
	enum header_kind kind;
	enum rtsp_rw_result r = RTSP_RW_OK;
	char num[24];

	kind = colon ? classify(p, (size_t)(colon - p), rw) : HDR_OTHER;
	if (kind == HDR_OTHER || is_blank(p[0])) {
		rtsp_out_put(o, p, len);
		rtsp_out_put(o, CRLF, 2);
		return RTSP_RW_OK;
	}
	if (folded_next)
		return RTSP_RW_MALFORMED;
	name_len = (size_t)(colon - p);
	v = name_len + 1;
	while (v < len && is_blank(p[v]))
		v++;
	end = len;
	while (end > v && is_blank(p[end - 1]))
		end--;
	rtsp_out_put(o, p, v);
	switch (kind) {
	case HDR_URL:
		rtsp_map_url(rw->map, rw->dir, p + v, end - v, o);
		break;
	case HDR_RTP_INFO:
		map_rtp_info(rw->map, rw->dir, p + v, end - v, o);
		break;
	case HDR_TRANSPORT:
		r = rtsp_filter_transport(p + v, end - v, o);
		break;
	case HDR_CONTENT_LENGTH:
		snprintf(num, sizeof(num), "%lld", (long long)rw->content_length);
		rtsp_out_str(o, num);
		break;
	case HDR_OTHER:
		break;
	}
	rtsp_out_put(o, CRLF, 2);
	return r;
}

enum rtsp_rw_result rtsp_rewrite_head(const char *head, const struct rtsp_head *h,
				      const struct rtsp_rewrite *rw, char *out, size_t cap,
				      size_t *out_len)
{
	struct rtsp_out o = { .buf = out, .cap = cap };
	const char *p = head, *end = head + h->head_len;
	bool first = true, has_length = false;
	enum rtsp_rw_result r;

	while (p < end) {
		const char *lf = memchr(p, '\n', (size_t)(end - p));
		size_t line_len = lf ? (size_t)(lf - p) : (size_t)(end - p);
		const char *next = lf ? lf + 1 : end;

		if (line_len && p[line_len - 1] == '\r')
			line_len--;
		if (line_len == 0)
			break; /* the empty line ending the head */
		if (first && h->is_request) {
			const char *url = head + h->http.url.off;

			rtsp_out_put(&o, p, (size_t)(url - p));
			rtsp_map_url(rw->map, rw->dir, url, h->http.url.len, &o);
			rtsp_out_put(&o, url + h->http.url.len,
				     (size_t)(p + line_len - url - h->http.url.len));
			rtsp_out_put(&o, CRLF, 2);
		} else if (first) {
			rtsp_out_put(&o, p, line_len);
			rtsp_out_put(&o, CRLF, 2);
		} else {
			bool folded = next < end && is_blank(*next);
			const char *colon = memchr(p, ':', line_len);

			if (colon && classify(p, (size_t)(colon - p), rw) == HDR_CONTENT_LENGTH)
				has_length = true;
			r = header_line(p, line_len, folded, rw, &o);
			if (r != RTSP_RW_OK)
				return r;
		}
		first = false;
		p = next;
	}
	if (rw->content_length > 0 && !has_length) {
		char line[48];

		snprintf(line, sizeof(line), "Content-Length: %lld" CRLF,
			 (long long)rw->content_length);
		rtsp_out_str(&o, line);
	}
	if (rw->via) {
		rtsp_out_str(&o, "Via: " RTSP_VIA_VERSION);
		rtsp_out_str(&o, rw->via);
		rtsp_out_put(&o, CRLF, 2);
	}
	rtsp_out_put(&o, CRLF, 2);
	if (o.overflow)
		return RTSP_RW_OVERFLOW;
	*out_len = o.len;
	return RTSP_RW_OK;
}

enum rtsp_rw_result rtsp_rewrite_sdp(const char *body, size_t len, const struct rtsp_url_map *m,
				     enum rtsp_dir dir, char *out, size_t cap, size_t *out_len)
{
	struct rtsp_out o = { .buf = out, .cap = cap };
	const size_t ctl_len = strlen(SDP_CONTROL);
	size_t i = 0;

	while (i < len) {
		const char *lf = memchr(body + i, '\n', len - i);
		size_t next = lf ? (size_t)(lf - body) + 1 : len;
		size_t end = lf ? (size_t)(lf - body) : len;

		if (end > i && body[end - 1] == '\r')
			end--;
		if (end - i > ctl_len && !memcmp(body + i, SDP_CONTROL, ctl_len) &&
		    authority_end(body + i + ctl_len, end - i - ctl_len)) {
			rtsp_out_put(&o, body + i, ctl_len);
			rtsp_map_url(m, dir, body + i + ctl_len, end - i - ctl_len, &o);
			rtsp_out_put(&o, body + end, next - end);
		} else {
			rtsp_out_put(&o, body + i, next - i);
		}
		i = next;
	}
	if (o.overflow)
		return RTSP_RW_OVERFLOW;
	*out_len = o.len;
	return RTSP_RW_OK;
}

const char *rtsp_reason(int status)
{
	static const struct {
		int status;
		const char *reason;
	} table[] = {
		{ 200, "OK" },
		{ 301, "Moved Permanently" },
		{ 302, "Moved Temporarily" },
		{ 400, "Bad Request" },
		{ 401, "Unauthorized" },
		{ 403, "Forbidden" },
		{ 404, "Not Found" },
		{ 405, "Method Not Allowed" },
		{ 408, "Request Timeout" },
		{ 413, "Request Entity Too Large" },
		{ 414, "Request-URI Too Large" },
		{ 454, "Session Not Found" },
		{ 459, "Aggregate Operation Not Allowed" },
		{ 461, "Unsupported Transport" },
		{ 500, "Internal Server Error" },
		{ 501, "Not Implemented" },
		{ 502, "Bad Gateway" },
		{ 503, "Service Unavailable" },
		{ 504, "Gateway Time-out" },
		{ 505, "RTSP Version not supported" },
		{ 551, "Option not supported" },
	};

	for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
		if (table[i].status == status)
			return table[i].reason;
	return "Error";
}

enum rtsp_rw_result rtsp_build_reply(int status, const char *cseq, size_t cseq_len,
				     const char *extra, char *out, size_t cap, size_t *out_len)
{
	struct rtsp_out o = { .buf = out, .cap = cap };
	char line[64];

	snprintf(line, sizeof(line), "RTSP/1.0 %03d %s" CRLF, status, rtsp_reason(status));
	rtsp_out_str(&o, line);
	if (cseq_len) {
		rtsp_out_str(&o, "CSeq: ");
		rtsp_out_put(&o, cseq, cseq_len);
		rtsp_out_put(&o, CRLF, 2);
	}
	if (extra)
		rtsp_out_str(&o, extra);
	rtsp_out_str(&o, "Content-Length: 0" CRLF CRLF);
	if (o.overflow)
		return RTSP_RW_OVERFLOW;
	*out_len = o.len;
	return RTSP_RW_OK;
}
