// SPDX-License-Identifier: GPL-2.0
/*
 * URI references (RFC 3986): the scheme test, dot-segment removal and reference resolution
 * that Location rewriting (http_rewrite.c) and the RTSP client's Content-Base, Location and
 * SDP controls (rtsp_url.c) share, and the host and port of an authority that the
 * url-embedded destinations of both (route.c, rtsp_url.c) parse. Pure: no I/O, no memory of
 * its own; spans point into the caller's text.
 */
#include <ctype.h>
#include <string.h>

#include "uri.h"

#define PORT_DIGITS_MAX 5
#define PORT_MAX 65535

/* The five components of RFC 3986 §3, each span with its delimiters ("s:", "//a", "?q", "#f")
 * so that a component is defined exactly when its length is not 0 (the path has none). */
struct uri_parts {
	const char *scheme, *auth, *path, *query, *frag;
	size_t scheme_len, auth_len, path_len, query_len, frag_len;
};

bool uri_has_scheme(const char *s, size_t len)
{
	size_t i = 1;

	if (!len || !isalpha((unsigned char)s[0]))
		return false;
	while (i < len &&
	       (isalnum((unsigned char)s[i]) || s[i] == '+' || s[i] == '-' || s[i] == '.'))
		i++;
	return i < len && s[i] == ':';
}

/* Length of the span of @s (@len bytes) before the first byte of @stop (never a NUL). */
static size_t span_until(const char *s, size_t len, const char *stop)
{
	size_t n = 0;

	while (n < len && (!s[n] || !strchr(stop, s[n])))
		n++;
	return n;
}

/* RFC 3986 Appendix B, with §3.1's stricter scheme. */
static void uri_split(const char *s, size_t len, struct uri_parts *u)
{
	const char *end = s + len;

	u->scheme = s;
	u->scheme_len = uri_has_scheme(s, len) ? span_until(s, len, ":") + 1 : 0;
	s += u->scheme_len;
	u->auth = s;
	u->auth_len = end - s >= 2 && s[0] == '/' && s[1] == '/' ?
			      2 + span_until(s + 2, (size_t)(end - s) - 2, "/?#") :
			      0;
	s += u->auth_len;
	u->path = s;
	u->path_len = span_until(s, (size_t)(end - s), "?#");
	s += u->path_len;
	u->query = s;
	u->query_len = s < end && *s == '?' ? span_until(s, (size_t)(end - s), "#") : 0;
	s += u->query_len;
	u->frag = s;
	u->frag_len = (size_t)(end - s);
}

/* Drop the last segment of @out[0, @o) and its '/' (RFC 3986 §5.2.4 step 2C). */
static size_t drop_last_segment(const char *out, size_t o)
{
	while (o > 0 && out[o - 1] != '/')
		o--;
	return o > 0 ? o - 1 : 0;
}

/* Are the @left bytes at @p exactly @s? */
static bool is(const char *p, size_t left, const char *s)
{
	return left == strlen(s) && !memcmp(p, s, left);
}

/* Do the @left bytes at @p start with @s? */
static bool starts(const char *p, size_t left, const char *s)
{
	return left >= strlen(s) && !memcmp(p, s, strlen(s));
}

size_t uri_remove_dot_segments(const char *in, size_t len, char *out)
{
	size_t i = 0, o = 0;

	while (i < len) {
		const char *p = in + i;
		size_t left = len - i, seg = 1;

		if (starts(p, left, "../")) { /* 2A */
			i += 3;
		} else if (starts(p, left, "./") || starts(p, left, "/./")) { /* 2A, 2B */
			i += 2;
		} else if (is(p, left, "/.")) { /* 2B */
			out[o++] = '/';
			break;
		} else if (starts(p, left, "/../")) { /* 2C */
			i += 3;
			o = drop_last_segment(out, o);
		} else if (is(p, left, "/..")) { /* 2C */
			o = drop_last_segment(out, o);
			out[o++] = '/';
			break;
		} else if (is(p, left, ".") || is(p, left, "..")) { /* 2D */
			break;
		} else { /* 2E: the first segment with its leading '/' */
			while (seg < left && p[seg] != '/')
				seg++;
			memmove(out + o, p, seg);
			o += seg;
			i += seg;
		}
	}
	return o;
}

/* What a reference resolves to (RFC 3986 §5.2.2), as spans of the base and the reference: the
 * path is @dir (the base's directory, or "/") then @path, with dot segments removed if @dots. */
struct uri_target {
	struct uri_parts t;
	const char *dir;
	size_t dir_len;
	bool dots;
};

/* RFC 3986 §5.2.3: the base's path up to its last '/', or "/" for an authority and no path. */
static void merge(struct uri_target *t, const struct uri_parts *b)
{
	t->dir = b->path;
	t->dir_len = b->path_len;
	if (b->auth_len && !b->path_len) {
		t->dir = "/";
		t->dir_len = 1;
	}
	while (t->dir_len && t->dir[t->dir_len - 1] != '/')
		t->dir_len--;
}

/* RFC 3986 §5.2.2: each component of the target, from the base @b or the reference @r. */
static void target(struct uri_target *t, const struct uri_parts *b, const struct uri_parts *r)
{
	t->t = *r;
	t->dir = "";
	t->dir_len = 0;
	t->dots = true;
	if (r->scheme_len)
		return;
	t->t.scheme = b->scheme;
	t->t.scheme_len = b->scheme_len;
	if (r->auth_len)
		return;
	t->t.auth = b->auth;
	t->t.auth_len = b->auth_len;
	if (!r->path_len) {
		t->t.path = b->path; /* taken as it is */
		t->t.path_len = b->path_len;
		t->dots = false;
		if (!r->query_len) {
			t->t.query = b->query;
			t->t.query_len = b->query_len;
		}
	} else if (r->path[0] != '/') {
		merge(t, b);
	}
}

/* @out[@o, ...) = @len bytes of @s; the caller checked the room. */
static size_t put(char *out, size_t o, const char *s, size_t len)
{
	if (len)
		memcpy(out + o, s, len);
	return o + len;
}

int uri_resolve(const char *base, size_t base_len, const char *ref, size_t ref_len, char *out,
		size_t cap)
{
	struct uri_parts b, r;
	struct uri_target t;
	size_t o, path, merged;

	uri_split(base, base_len, &b);
	uri_split(ref, ref_len, &r);
	target(&t, &b, &r);
	/* The room for the merged reference, before its dot segments go. */
	merged = t.t.scheme_len + t.t.auth_len + t.dir_len + t.t.path_len + t.t.query_len +
		 t.t.frag_len;
	if (merged >= cap)
		return -1;
	o = put(out, 0, t.t.scheme, t.t.scheme_len);
	o = put(out, o, t.t.auth, t.t.auth_len);
	path = o;
	o = put(out, o, t.dir, t.dir_len);
	o = put(out, o, t.t.path, t.t.path_len);
	if (t.dots)
		o = path + uri_remove_dot_segments(out + path, o - path, out + path);
	o = put(out, o, t.t.query, t.t.query_len);
	o = put(out, o, t.t.frag, t.t.frag_len);
	out[o] = '\0';
	return 0;
}

int uri_split_hostport(const char *s, size_t len, struct uri_hostport *hp)
{
	const char *end = s + len, *sep;

	memset(hp, 0, sizeof(*hp));
	if (len && s[0] == '[') {
		sep = memchr(s, ']', len);
		if (!sep)
			return -1;
		hp->bracketed = true;
		hp->host = s + 1;
		hp->host_len = (size_t)(sep - hp->host);
		if (++sep == end)
			return 0;
		if (*sep != ':')
			return -1;
	} else {
		sep = memchr(s, ':', len);
		hp->host = s;
		hp->host_len = sep ? (size_t)(sep - s) : len;
		if (!sep)
			return 0;
	}
	hp->port = sep + 1;
	hp->port_len = (size_t)(end - hp->port);
	return 0;
}

int uri_parse_port(const char *s, size_t len, uint16_t *port)
{
	unsigned long v = 0;

	if (len == 0 || len > PORT_DIGITS_MAX)
		return -1;
	for (size_t i = 0; i < len; i++) {
		if (!isdigit((unsigned char)s[i]))
			return -1;
		v = v * 10 + (unsigned long)(s[i] - '0');
	}
	if (v == 0 || v > PORT_MAX)
		return -1;
	*port = (uint16_t)v;
	return 0;
}

bool uri_valid_hostname(const char *h, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (!isalnum((unsigned char)h[i]) && h[i] != '-' && h[i] != '.' && h[i] != '_')
			return false;
	return len > 0;
}
