// SPDX-License-Identifier: GPL-2.0
/*
 * Client-side RTSP authentication: kfwd answering a server's 401 with the credentials of a
 * route, so that they never reach the client. WWW-Authenticate challenges are parsed here,
 * Basic and Digest (RFC 2617: MD5, MD5-sess, qop=auth) answered; MD5 comes from OpenSSL's EVP.
 * Owns no memory.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

#include <openssl/evp.h>

#include "rtsp_auth.h"

#define MD5_LEN 16
#define MD5_HEX_LEN (2 * MD5_LEN)

static bool is_blank(char c)
{
	return c == ' ' || c == '\t';
}

static bool is_tchar(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c && strchr("!#$%&'*+-.^_`|~", c));
}

static size_t skip_ows(const char *v, size_t len, size_t i)
{
	while (i < len && is_blank(v[i]))
		i++;
	return i;
}

static bool token_is(const char *s, size_t len, const char *want)
{
	return strlen(want) == len && !strncasecmp(s, want, len);
}

/*
 * A token or quoted string at @i, unescaped into @dst (@cap bytes, NUL included; *@fits false
 * when cut). Returns the index after it, or -1 when it is neither.
 */
static long read_value(const char *v, size_t len, size_t i, char *dst, size_t cap, bool *fits)
{
	size_t n = 0;

	*fits = true;
	if (i < len && v[i] == '"') {
		for (i++; i < len && v[i] != '"'; i++) {
			if (v[i] == '\\' && i + 1 < len)
				i++;
			if (n + 1 < cap)
				dst[n++] = v[i];
			else
				*fits = false;
		}
		if (i == len)
			return -1; /* unterminated */
		i++;
	} else {
		size_t start = i;

		while (i < len && is_tchar(v[i])) {
			if (n + 1 < cap)
				dst[n++] = v[i];
			else
				*fits = false;
			i++;
		}
		if (i == start)
			return -1;
	}
	if (cap)
		dst[n] = '\0';
	return (long)i;
}

static void apply_param(struct rtsp_challenge *c, const char *name, size_t name_len,
			const char *val, bool fits)
{
	if (token_is(name, name_len, "realm")) {
		snprintf(c->realm, sizeof(c->realm), "%s", val);
	} else if (token_is(name, name_len, "nonce")) {
		snprintf(c->nonce, sizeof(c->nonce), "%s", val);
	} else if (token_is(name, name_len, "opaque")) {
		snprintf(c->opaque, sizeof(c->opaque), "%s", val);
		c->has_opaque = true;
	} else if (token_is(name, name_len, "stale")) {
		c->stale = !strcasecmp(val, "true");
		return;
	} else if (token_is(name, name_len, "algorithm")) {
		if (!strcasecmp(val, "MD5"))
			c->algorithm = RTSP_DIGEST_MD5;
		else if (!strcasecmp(val, "MD5-sess"))
			c->algorithm = RTSP_DIGEST_MD5_SESS;
		else
			c->usable = false;
		return;
	} else if (token_is(name, name_len, "qop")) {
		/* A list of options; kfwd answers "auth" only. */
		c->qop_auth = false;
		for (const char *p = val; *p;) {
			size_t l;

			while (*p == ' ' || *p == '\t' || *p == ',')
				p++;
			l = strcspn(p, ", \t");
			if (l == 4 && !strncasecmp(p, "auth", 4))
				c->qop_auth = true;
			p += l;
		}
		if (!c->qop_auth)
			c->usable = false;
		return;
	} else {
		return;
	}
	if (!fits)
		c->usable = false;
}

int rtsp_auth_parse(const char *v, size_t len, struct rtsp_challenge *out, size_t max)
{
	struct rtsp_challenge *cur = NULL, skipped;
	size_t n = 0, i = 0;
	char val[RTSP_AUTH_FIELD_MAX];

	while (i < len) {
		size_t tok, tok_len, j;
		long after;
		bool fits;

		while (i < len && (is_blank(v[i]) || v[i] == ','))
			i++;
		if (i == len)
			break;
		tok = i;
		while (i < len && is_tchar(v[i]))
			i++;
		tok_len = i - tok;
		if (!tok_len)
			return -1;
		j = skip_ows(v, len, i);
		if (j < len && v[j] == '=' && cur) {
			/* auth-param of the current challenge */
			after = read_value(v, len, skip_ows(v, len, j + 1), val, sizeof(val),
					   &fits);
			if (after < 0)
				return -1;
			apply_param(cur, v + tok, tok_len, val, fits);
			i = (size_t)after;
			continue;
		}
		if (j < len && v[j] == '=')
			return -1; /* a parameter before any scheme */
		/* A new challenge; entries past @max are parsed into a scratch one. */
		cur = n < max ? &out[n++] : &skipped;
		memset(cur, 0, sizeof(*cur));
		cur->scheme = token_is(v + tok, tok_len, "Basic")  ? RTSP_AUTH_BASIC :
			      token_is(v + tok, tok_len, "Digest") ? RTSP_AUTH_DIGEST :
								     RTSP_AUTH_OTHER;
		cur->usable = cur->scheme != RTSP_AUTH_OTHER;
		i = j;
		/* token68 ("Negotiate abc==") belongs to schemes kfwd does not answer. */
		if (i < len && v[i] != ',' && cur->scheme == RTSP_AUTH_OTHER) {
			size_t k = i;

			while (k < len && v[k] != ',' && v[k] != ' ' && v[k] != '"')
				k++;
			while (k < len && v[k] == '=')
				k++;
			if (k > i && (k == len || v[k] == ',')) {
				i = k;
				continue;
			}
		}
	}
	for (size_t k = 0; k < n; k++)
		if (out[k].scheme == RTSP_AUTH_DIGEST && !out[k].nonce[0])
			out[k].usable = false;
	return (int)n;
}

int rtsp_auth_choose(const struct rtsp_head *h, const char *base, struct rtsp_challenge *best)
{
	struct rtsp_challenge c[RTSP_AUTH_MAX_CHALLENGES];
	bool found = false;

	for (int i = rtsp_header_next(h, base, "WWW-Authenticate", -1); i >= 0;
	     i = rtsp_header_next(h, base, "WWW-Authenticate", i)) {
		struct http_span s = h->http.headers[i].value;
		int n = rtsp_auth_parse(base + s.off, s.len, c, RTSP_AUTH_MAX_CHALLENGES);

		for (int k = 0; k < n; k++) {
			if (!c[k].usable || (found && best->scheme >= c[k].scheme))
				continue;
			*best = c[k];
			found = true;
		}
	}
	return found ? 0 : -1;
}

/* MD5 over @n strings joined by ':', in lower-case hex. */
static int md5_hex(char out[MD5_HEX_LEN + 1], size_t n, const char *const *parts)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int md_len = 0;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	int ok;

	if (!ctx)
		return -1;
	ok = EVP_DigestInit_ex(ctx, EVP_md5(), NULL);
	for (size_t i = 0; ok && i < n; i++) {
		if (i)
			ok = EVP_DigestUpdate(ctx, ":", 1);
		if (ok)
			ok = EVP_DigestUpdate(ctx, parts[i], strlen(parts[i]));
	}
	if (ok)
		ok = EVP_DigestFinal_ex(ctx, md, &md_len);
	EVP_MD_CTX_free(ctx);
	if (!ok || md_len != MD5_LEN)
		return -1;
	for (unsigned int i = 0; i < MD5_LEN; i++) {
		out[2 * i] = hex[md[i] >> 4];
		out[2 * i + 1] = hex[md[i] & 0xf];
	}
	out[MD5_HEX_LEN] = '\0';
	return 0;
}

/* Append @s as a quoted string (RFC 7230 quoted-pair for '"' and '\'). */
static void put_quoted(char *out, size_t cap, size_t *n, const char *s)
{
	if (*n < cap)
		out[(*n)++] = '"';
	for (; *s; s++) {
		if ((*s == '"' || *s == '\\') && *n < cap)
			out[(*n)++] = '\\';
		if (*n < cap)
			out[(*n)++] = *s;
	}
	if (*n < cap)
		out[(*n)++] = '"';
}

/* A full buffer is caught by the caller's final check (the NUL needs a byte too). */
static void put_str(char *out, size_t cap, size_t *n, const char *s)
{
	for (; *s; s++)
		if (*n < cap)
			out[(*n)++] = *s;
}

static int basic(const char *user, const char *pass, char *out, size_t cap)
{
	char plain[2 * RTSP_AUTH_CRED_MAX + 2];
	unsigned char enc[4 * ((sizeof(plain) + 2) / 3) + 1];
	int plain_len, enc_len;

	plain_len = snprintf(plain, sizeof(plain), "%s:%s", user, pass);
	if (plain_len < 0 || (size_t)plain_len >= sizeof(plain))
		return -1;
	enc_len = EVP_EncodeBlock(enc, (const unsigned char *)plain, plain_len);
	if (enc_len < 0 || (size_t)enc_len + strlen("Basic ") + 1 > cap)
		return -1;
	return snprintf(out, cap, "Basic %s", (const char *)enc);
}

int rtsp_auth_authorization(const struct rtsp_challenge *c, const char *user, const char *pass,
			    const char *method, const char *uri, uint32_t nc, const char *cnonce,
			    char *out, size_t cap)
{
	char ha1[MD5_HEX_LEN + 1], ha2[MD5_HEX_LEN + 1], resp[MD5_HEX_LEN + 1], nc_hex[9];
	size_t n = 0;

	if (!c->usable || !cap)
		return -1;
	if (c->scheme == RTSP_AUTH_BASIC)
		return basic(user, pass, out, cap);
	snprintf(nc_hex, sizeof(nc_hex), "%08x", nc);
	if (md5_hex(ha1, 3, (const char *const[]){ user, c->realm, pass }) < 0)
		return -1;
	if (c->algorithm == RTSP_DIGEST_MD5_SESS &&
	    md5_hex(ha1, 3, (const char *const[]){ ha1, c->nonce, cnonce }) < 0)
		return -1;
	if (md5_hex(ha2, 2, (const char *const[]){ method, uri }) < 0)
		return -1;
	if (c->qop_auth) {
		if (md5_hex(resp, 6,
			    (const char *const[]){ ha1, c->nonce, nc_hex, cnonce, "auth", ha2 }) <
		    0)
			return -1;
	} else if (md5_hex(resp, 3, (const char *const[]){ ha1, c->nonce, ha2 }) < 0) {
		return -1;
	}
	put_str(out, cap, &n, "Digest username=");
	put_quoted(out, cap, &n, user);
	put_str(out, cap, &n, ", realm=");
	put_quoted(out, cap, &n, c->realm);
	put_str(out, cap, &n, ", nonce=");
	put_quoted(out, cap, &n, c->nonce);
	put_str(out, cap, &n, ", uri=");
	put_quoted(out, cap, &n, uri);
	put_str(out, cap, &n, ", response=");
	put_quoted(out, cap, &n, resp);
	if (c->algorithm == RTSP_DIGEST_MD5_SESS)
		put_str(out, cap, &n, ", algorithm=MD5-sess");
	if (c->qop_auth) {
		put_str(out, cap, &n, ", qop=auth, nc=");
		put_str(out, cap, &n, nc_hex);
		put_str(out, cap, &n, ", cnonce=");
		put_quoted(out, cap, &n, cnonce);
	}
	if (c->has_opaque) {
		put_str(out, cap, &n, ", opaque=");
		put_quoted(out, cap, &n, c->opaque);
	}
	if (n >= cap)
		return -1;
	out[n] = '\0';
	return (int)n;
}

int rtsp_auth_cnonce(char out[RTSP_AUTH_CNONCE_LEN + 1])
{
	static const char hex[] = "0123456789abcdef";
	unsigned char raw[RTSP_AUTH_CNONCE_LEN / 2];
	ssize_t r;

	do
		r = getrandom(raw, sizeof(raw), 0);
	while (r < 0 && errno == EINTR);
	if (r != (ssize_t)sizeof(raw))
		return -1;
	for (size_t i = 0; i < sizeof(raw); i++) {
		out[2 * i] = hex[raw[i] >> 4];
		out[2 * i + 1] = hex[raw[i] & 0xf];
	}
	out[RTSP_AUTH_CNONCE_LEN] = '\0';
	return 0;
}
