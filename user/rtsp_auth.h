/* SPDX-License-Identifier: GPL-2.0 */
#ifndef KFWD_RTSP_AUTH_H
#define KFWD_RTSP_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rtsp_parse.h"

#define RTSP_AUTH_FIELD_MAX 256 /* realm, nonce, opaque: longer makes a challenge unusable */
#define RTSP_AUTH_CRED_MAX 256 /* user and password */
#define RTSP_AUTH_CNONCE_LEN 16 /* hex digits of a generated cnonce */
#define RTSP_AUTH_MAX_CHALLENGES 8

enum rtsp_auth_scheme {
	RTSP_AUTH_OTHER, /* a scheme kfwd cannot answer */
	RTSP_AUTH_BASIC,
	RTSP_AUTH_DIGEST,
};

enum rtsp_digest_alg {
	RTSP_DIGEST_MD5,
	RTSP_DIGEST_MD5_SESS,
};

/* One challenge of a WWW-Authenticate header (RFC 2617). */
struct rtsp_challenge {
	enum rtsp_auth_scheme scheme;
	enum rtsp_digest_alg algorithm;
	bool usable; /* every field fit, the algorithm is known, qop (if any) offers auth */
	bool qop_auth; /* answer with qop=auth, nc and cnonce */
	bool stale;
	bool has_opaque;
	char realm[RTSP_AUTH_FIELD_MAX];
	char nonce[RTSP_AUTH_FIELD_MAX];
	char opaque[RTSP_AUTH_FIELD_MAX];
};

/*
 * Parse one WWW-Authenticate value, which may hold several challenges ("Digest realm="a",
 * nonce="b", Basic realm="c""): quoted strings with quoted pairs, blanks and empty list
 * elements as RFC 7235 allows. Fills at most @max entries; returns how many, or -1 when the
 * value is not a challenge list.
 */
int rtsp_auth_parse(const char *value, size_t len, struct rtsp_challenge *out, size_t max);
/*
 * The best usable challenge among every WWW-Authenticate header of @h: Digest (MD5 or
 * MD5-sess) before Basic. 0 when one was found, -1 otherwise.
 */
int rtsp_auth_choose(const struct rtsp_head *h, const char *base, struct rtsp_challenge *best);
/*
 * The Authorization value (without "Authorization: ") answering @c for @method on @uri (the
 * Request-URI exactly as sent). @nc counts the requests sent with this nonce (from 1) and
 * @cnonce is the client nonce (rtsp_auth_cnonce()); both are ignored without qop. Returns the
 * value's length, or -1 when it does not fit in @cap (NUL included) or a digest failed.
 */
int rtsp_auth_authorization(const struct rtsp_challenge *c, const char *user, const char *pass,
			    const char *method, const char *uri, uint32_t nc, const char *cnonce,
			    char *out, size_t cap);
/* A random cnonce of RTSP_AUTH_CNONCE_LEN hex digits; 0, or -1 when getrandom() failed. */
int rtsp_auth_cnonce(char out[RTSP_AUTH_CNONCE_LEN + 1]);

#endif
