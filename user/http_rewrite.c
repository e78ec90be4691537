// SPDX-License-Identifier: GPL-2.0
/* Header rewriting between client and upstream (RFC 9110 §7.6.1: hop-by-hop fields). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http_rewrite.h"
#include "uri.h"

static const char *const hop_by_hop[] = {
	"Connection", "Keep-Alive", "Proxy-Connection", "TE", "Trailer", "Upgrade",
};

/*
 * Fields that frame or route the message: a Connection option naming one never removes it
 * (RFC 9110 §7.6.1 lets a proxy keep them, as HAProxy does), or "Connection: Content-Length"
 * would turn a body kfwd framed into a second request the next hop reads.
 */
static const char *const never_by_connection[] = {
	"Content-Length",
	"Transfer-Encoding",
	"Host",
};

/* A header the next hop must not see: fixed hop-by-hop names and names listed in Connection. */
static bool is_hop_by_hop(const struct http_head *h, const char *base, struct http_span name)
{
	for (size_t i = 0; i < sizeof(hop_by_hop) / sizeof(hop_by_hop[0]); i++)
		if (http_span_eq(base, name, hop_by_hop[i]))
			return true;
	for (size_t i = 0; i < sizeof(never_by_connection) / sizeof(never_by_connection[0]); i++)
		if (http_span_eq(base, name, never_by_connection[i]))
			return false;
	for (unsigned int i = 0; i < h->n_headers; i++) {
		const struct http_header *c = &h->headers[i];
		char lname[256];

		if (!http_span_eq(base, c->name, "Connection") || name.len >= sizeof(lname))
			continue;
		memcpy(lname, base + name.off, name.len);
		lname[name.len] = '\0';
		if (http_list_has_token(base + c->value.off, c->value.len, lname))
			return true;
	}
	return false;
}

static int append_str(struct buf *out, const char *s)
{
	return buf_append(out, s, strlen(s));
}

static int append_header(struct buf *out, const char *base, const struct http_header *hdr)
{
	if (buf_append(out, base + hdr->name.off, hdr->name.len) < 0 || append_str(out, ": ") < 0 ||
	    buf_append(out, base + hdr->value.off, hdr->value.len) < 0 ||
	    append_str(out, "\r\n") < 0)
		return -1;
	return 0;
}

static int append_forwarded(struct buf *out, const struct http_head *h, const char *base,
			    const struct request_rewrite *rw, const struct http_header *client_host)
{
	bool v6 = strchr(rw->client_addr, ':') != NULL;

	/* RFC 7239 §6: IPv6 "for" values are bracketed and quoted. */
	if (append_str(out, v6 ? "Forwarded: for=\"[" : "Forwarded: for=") < 0 ||
	    append_str(out, rw->client_addr) < 0 || append_str(out, v6 ? "]\"" : "") < 0)
		return -1;
	if (client_host &&
	    (append_str(out, ";host=\"") < 0 ||
	     buf_append(out, base + client_host->value.off, client_host->value.len) < 0 ||
	     append_str(out, "\"") < 0))
		return -1;
	return append_str(out, rw->client_tls ? ";proto=https\r\n" : ";proto=http\r\n");
}

static bool is_overridden(const struct request_rewrite *rw, const char *base, struct http_span name)
{
	for (size_t i = 0; i < rw->n_overrides; i++)
		if (http_span_eq(base, name, rw->overrides[i].name))
			return true;
	return false;
}

static int append_set_headers(struct buf *out, const struct request_rewrite *rw)
{
	for (size_t i = 0; i < rw->n_overrides; i++) {
		const struct header_override *o = &rw->overrides[i];

		if (o->value && (append_str(out, o->name) < 0 || append_str(out, ": ") < 0 ||
				 append_str(out, o->value) < 0 || append_str(out, "\r\n") < 0))
			return -1;
	}
	return 0;
}

int http_build_request(struct buf *out, const struct http_head *h, const char *base,
		       const struct request_rewrite *rw)
{
	const struct http_header *client_host = NULL;
	unsigned int xff_seen = 0;
	char version[16];

	snprintf(version, sizeof(version), " HTTP/%u.%u\r\n", h->http_major, h->http_minor);
	if (buf_append(out, base + h->method.off, h->method.len) < 0 || append_str(out, " ") < 0 ||
	    buf_append(out, rw->target, rw->target_len) < 0 || append_str(out, version) < 0)
		return -1;
	if (rw->host && (append_str(out, "Host: ") < 0 || append_str(out, rw->host) < 0 ||
			 append_str(out, "\r\n") < 0))
		return -1;
	for (unsigned int i = 0; i < h->n_headers; i++) {
		const struct http_header *hdr = &h->headers[i];

		if (is_hop_by_hop(h, base, hdr->name) || is_overridden(rw, base, hdr->name))
			continue;
		if (http_span_eq(base, hdr->name, "Host")) {
			client_host = hdr;
			if (rw->host)
				continue;
		}
		/* Set by kfwd, never taken from the client; X-Forwarded-For is rebuilt below. */
		if (http_span_eq(base, hdr->name, "X-Forwarded-Proto") ||
		    http_span_eq(base, hdr->name, "X-Forwarded-Host") ||
		    http_span_eq(base, hdr->name, "X-Forwarded-For"))
			continue;
		if (append_header(out, base, hdr) < 0)
			return -1;
	}
	if (append_set_headers(out, rw) < 0)
		return -1;
	/* Earlier hops' X-Forwarded-For values, in order, then this client, as one field. */
	if (append_str(out, "X-Forwarded-For: ") < 0)
		return -1;
	for (unsigned int i = 0; i < h->n_headers; i++) {
		const struct http_header *hdr = &h->headers[i];

		if (!http_span_eq(base, hdr->name, "X-Forwarded-For") || !hdr->value.len)
			continue;
		if ((xff_seen++ && append_str(out, ", ") < 0) ||
		    buf_append(out, base + hdr->value.off, hdr->value.len) < 0)
			return -1;
	}
	if ((xff_seen && append_str(out, ", ") < 0) || append_str(out, rw->client_addr) < 0 ||
	    append_str(out, "\r\n") < 0)
		return -1;
	if (append_str(out, rw->client_tls ? "X-Forwarded-Proto: https\r\n" :
					     "X-Forwarded-Proto: http\r\n") < 0)
		return -1;
	if (client_host &&
	    (append_str(out, "X-Forwarded-Host: ") < 0 ||
	     buf_append(out, base + client_host->value.off, client_host->value.len) < 0 ||
	     append_str(out, "\r\n") < 0))
		return -1;
	if (rw->forwarded && append_forwarded(out, h, base, rw, client_host) < 0)
		return -1;
	/* A Via field of our own after any earlier ones: together they list the hops in order. */
	if (append_str(out, "Via: 1.1 kfwd\r\n") < 0)
		return -1;
	if (rw->upgrade >= 0) {
		/* Upgrade is hop-by-hop: this hop asks the next for the same switch. */
		if (append_header(out, base, &h->headers[rw->upgrade]) < 0 ||
		    append_str(out, "Connection: Upgrade\r\n") < 0)
			return -1;
		return append_str(out, "\r\n");
	}
	/* HTTP/1.0 is not persistent by default; ask so the connection can be pooled. */
	if (h->http_major == 1 && h->http_minor == 0 &&
	    append_str(out, "Connection: keep-alive\r\n") < 0)
		return -1;
	return append_str(out, "\r\n");
}

static bool is_redirect(int status)
{
	return status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
}

/*
 * @path (a path, no query) with its "." and ".." segments removed (RFC 3986 §5.2.4), appended:
 * a reference never climbs above the root of the destination it names.
 */
static int append_path(struct buf *out, const char *path, size_t len)
{
	if (len == 0)
		return 0;
	if (buf_reserve(out, len, (size_t)-1) < 0)
		return -1;
	out->tail += uri_remove_dot_segments(path, len, out->data + out->tail);
	return 0;
}

/* PREFIX/AUTHORITY then the path of @path (dot segments removed), then its query/fragment. */
static int append_embedded(struct buf *out, const char *prefix, const char *auth, size_t auth_len,
			   const char *path, size_t path_len)
{
	size_t plen = strlen(prefix), end = 0;

	if (buf_append(out, prefix, plen) < 0)
		return -1;
	if ((plen == 0 || prefix[plen - 1] != '/') && append_str(out, "/") < 0)
		return -1;
	if (buf_append(out, auth, auth_len) < 0)
		return -1;
	while (end < path_len && path[end] != '?' && path[end] != '#')
		end++;
	if ((end == 0 || path[0] != '/') && append_str(out, "/") < 0)
		return -1;
	if (append_path(out, path, end) < 0)
		return -1;
	return buf_append(out, path + end, path_len - end);
}

/* A relative reference (RFC 3986 §5.2.2) against the request's path @rp. */
static int append_relative(struct buf *out, const char *prefix, const char *auth, const char *rp,
			   const char *v, size_t len)
{
	size_t rlen = strlen(rp), cap = rlen + len + 2; /* uri_resolve()'s bound and the NUL */
	char *resolved = malloc(cap);
	int r = -1;

	if (resolved && uri_resolve(rp, rlen, v, len, resolved, cap) == 0)
		r = append_embedded(out, prefix, auth, strlen(auth), resolved, strlen(resolved));
	free(resolved);
	return r;
}

int http_rewrite_location(struct buf *out, const char *v, size_t len,
			  const struct location_rewrite *loc)
{
	const char *auth, *prefix = loc->prefix;
	size_t auth_len = 0;
	bool https = len >= 8 && !strncasecmp(v, "https://", 8);
	bool rtsp = len >= 7 && !strncasecmp(v, "rtsp://", 7);

	if ((len >= 7 && !strncasecmp(v, "http://", 7)) || https) {
		/* The other scheme's URLs go to its route, if there is one. */
		if (https != loc->tls && !(prefix = loc->other_prefix))
			return 1;
		v += https ? 8 : 7;
		len -= https ? 8 : 7;
	} else if (rtsp) {
		if (!(prefix = loc->rtsp_prefix))
			return 1;
		v += 7;
		len -= 7;
	} else if (len >= 2 && v[0] == '/' && v[1] == '/') {
		/* Network-path reference: the request's scheme. */
		v += 2;
		len -= 2;
	} else if (uri_has_scheme(v, len)) {
		return 1; /* every other scheme stays as it is */
	} else if (len && v[0] == '/') {
		return append_embedded(out, prefix, loc->authority, strlen(loc->authority), v, len);
	} else {
		return append_relative(out, prefix, loc->authority, loc->req_path, v, len);
	}
	auth = v;
	while (auth_len < len && v[auth_len] != '/' && v[auth_len] != '?' && v[auth_len] != '#')
		auth_len++;
	if (auth_len == 0)
		return 1;
	return append_embedded(out, prefix, auth, auth_len, v + auth_len, len - auth_len);
}

/* Status line and end-to-end headers of a response, Location rewritten when @loc is given. */
static int append_response_fields(struct buf *out, const struct http_head *h, const char *base,
				  const struct location_rewrite *loc)
{
	if (buf_append(out, base + h->status_line.off, h->status_line.len) < 0 ||
	    append_str(out, "\r\n") < 0)
		return -1;
	for (unsigned int i = 0; i < h->n_headers; i++) {
		const struct http_header *hdr = &h->headers[i];

		if (is_hop_by_hop(h, base, hdr->name))
			continue;
		if (loc && is_redirect(h->status) && http_span_eq(base, hdr->name, "Location")) {
			size_t mark = out->tail;
			int r;

			if (append_str(out, "Location: ") < 0)
				return -1;
			r = http_rewrite_location(out, base + hdr->value.off, hdr->value.len, loc);
			if (r < 0)
				return -1;
			if (r == 0) {
				if (append_str(out, "\r\n") < 0)
					return -1;
				continue;
			}
			out->tail = mark; /* left as it is */
		}
		if (append_header(out, base, hdr) < 0)
			return -1;
	}
	return append_str(out, "Via: 1.1 kfwd\r\n");
}

int http_build_response(struct buf *out, const struct http_head *h, const char *base, bool close,
			bool client_http10, const struct location_rewrite *loc)
{
	if (append_response_fields(out, h, base, loc) < 0)
		return -1;
	if (close && !client_http10 && append_str(out, "Connection: close\r\n") < 0)
		return -1;
	if (!close && client_http10 && append_str(out, "Connection: keep-alive\r\n") < 0)
		return -1;
	return append_str(out, "\r\n");
}

static bool line_names(const char *line, size_t len, const char *name)
{
	size_t n = strlen(name);

	return len > n && line[n] == ':' && !strncasecmp(line, name, n);
}

int http_head_set_length(struct buf *out, const char *head, size_t len, uint64_t length)
{
	char field[48];
	size_t i = 0;

	while (i < len) {
		const char *crlf = memmem(head + i, len - i, "\r\n", 2);
		size_t line_len = crlf ? (size_t)(crlf - head) - i : len - i;

		if (line_len == 0)
			break; /* the end of the head */
		if (!line_names(head + i, line_len, "Content-Length") &&
		    !line_names(head + i, line_len, "Transfer-Encoding") &&
		    buf_append(out, head + i, line_len + (crlf ? 2 : 0)) < 0)
			return -1;
		i += line_len + (crlf ? 2 : 0);
	}
	snprintf(field, sizeof(field), "Content-Length: %llu\r\n\r\n", (unsigned long long)length);
	return append_str(out, field);
}

int http_upgrade_header(const struct http_head *h, const char *base)
{
	bool conn_upgrade = false;
	int idx = -1;

	for (unsigned int i = 0; i < h->n_headers; i++) {
		const struct http_header *hdr = &h->headers[i];

		if (http_span_eq(base, hdr->name, "Connection") &&
		    http_list_has_token(base + hdr->value.off, hdr->value.len, "upgrade"))
			conn_upgrade = true;
		if (http_span_eq(base, hdr->name, "Upgrade") && hdr->value.len)
			idx = (int)i;
	}
	return conn_upgrade ? idx : -1;
}

int http_build_switch(struct buf *out, const struct http_head *h, const char *base)
{
	int up = http_upgrade_header(h, base);

	if (append_response_fields(out, h, base, NULL) < 0)
		return -1;
	if (up >= 0 && append_header(out, base, &h->headers[up]) < 0)
		return -1;
	return append_str(out, "Connection: Upgrade\r\n\r\n");
}

const char *http_reason(int status)
{
	switch (status) {
	case 400:
		return "Bad Request";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 408:
		return "Request Timeout";
	case 413:
		return "Content Too Large";
	case 414:
		return "URI Too Long";
	case 431:
		return "Request Header Fields Too Large";
	case 500:
		return "Internal Server Error";
	case 501:
		return "Not Implemented";
	case 502:
		return "Bad Gateway";
	case 503:
		return "Service Unavailable";
	case 504:
		return "Gateway Timeout";
	default:
		return "Error";
	}
}

int http_build_error(struct buf *out, int status, const char *extra_headers)
{
	char text[512];
	char body[128];
	int blen, n;

	blen = snprintf(body, sizeof(body), "%d %s\n", status, http_reason(status));
	n = snprintf(text, sizeof(text),
		     "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
		     "Cache-Control: no-cache\r\n%sConnection: close\r\n\r\n%s",
		     status, http_reason(status), blen, extra_headers ? extra_headers : "", body);
	if (n < 0 || (size_t)n >= sizeof(text))
		return -1;
	return buf_append(out, text, (size_t)n);
}
