/* SPDX-License-Identifier: GPL-2.0 */
#ifndef KFWD_RTSP_REWRITE_H
#define KFWD_RTSP_REWRITE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rtsp_parse.h"

enum rtsp_rw_result {
	RTSP_RW_OK = 0,
	RTSP_RW_OVERFLOW = -1, /* the output would exceed its capacity */
	RTSP_RW_NO_TRANSPORT = -2, /* no TCP entry left in Transport: answer 461 */
	RTSP_RW_MALFORMED = -3, /* a header to rewrite continues on a folded line */
};

/* Which way a message goes through kfwd; URLs are mapped the same way. */
enum rtsp_dir {
	RTSP_TO_UPSTREAM, /* client URLs become upstream URLs */
	RTSP_TO_CLIENT, /* upstream URLs become client URLs */
};

/*
 * One URL prefix pair: "rtsp://router:8554/cam1" (what the client asked for) and
 * "rtsp://192.168.1.20:554/stream1" (what the server is asked for). A URL is mapped when it
 * starts with the prefix (scheme and authority case-insensitive, path exact) followed by its
 * end, '/', '?' or ';' (or the prefix ends with '/'): the rest is kept. Neither prefix carries
 * credentials. The caller takes the client prefix from the authority the client actually sent,
 * so "host" and "host:554" need no equivalence here.
 */
struct rtsp_url_map {
	const char *client;
	size_t client_len;
	const char *upstream;
	size_t upstream_len;
};

/* How a head is rewritten by rtsp_rewrite_head(). */
struct rtsp_rewrite {
	const struct rtsp_url_map *map;
	enum rtsp_dir dir;
	const char *via; /* "kfwd": adds "Via: RTSP/1.0 kfwd"; NULL: no Via */
	bool filter_transport; /* drop Transport entries that are not over TCP */
	int64_t content_length; /* >= 0: replace (or add, when non-zero) Content-Length */
};

/* A bounded output: writes past cap set overflow and are dropped. */
struct rtsp_out {
	char *buf;
	size_t cap;
	size_t len;
	bool overflow;
};

void rtsp_out_put(struct rtsp_out *o, const void *p, size_t n);
void rtsp_out_str(struct rtsp_out *o, const char *s);

/* Append @url mapped by @m in @dir (unchanged when the prefix does not match; "*" never does). */
bool rtsp_map_url(const struct rtsp_url_map *m, enum rtsp_dir dir, const char *url, size_t len,
		  struct rtsp_out *o);
/*
 * Rewrite the parsed head @head (@h from rtsp_head_feed()) into @out: the Request-URI,
 * Content-Base, Content-Location, Location and every RTP-Info url= by @rw->map in @rw->dir;
 * Transport filtered, Content-Length replaced, Via added when asked. Everything else is kept
 * byte for byte. *@out_len is the new head's length, CRLFCRLF included.
 */
enum rtsp_rw_result rtsp_rewrite_head(const char *head, const struct rtsp_head *h,
				      const struct rtsp_rewrite *rw, char *out, size_t cap,
				      size_t *out_len);
/*
 * Rewrite the absolute URLs of "a=control:" lines of an SDP body by @m in @dir; relative
 * controls and "*" are kept, as is every other byte. The caller sends the new length as
 * Content-Length.
 */
enum rtsp_rw_result rtsp_rewrite_sdp(const char *body, size_t len, const struct rtsp_url_map *m,
				     enum rtsp_dir dir, char *out, size_t cap, size_t *out_len);
/*
 * Keep only the TCP entries ("RTP/AVP/TCP;...", "MP2T/TCP;...") of a Transport value.
 * RTSP_RW_NO_TRANSPORT when none is left.
 */
enum rtsp_rw_result rtsp_filter_transport(const char *value, size_t len, struct rtsp_out *o);
/*
 * A reply kfwd answers itself: "RTSP/1.0 STATUS REASON", CSeq echoed when @cseq_len, then
 * @extra (complete header lines, or NULL), Content-Length: 0.
 */
enum rtsp_rw_result rtsp_build_reply(int status, const char *cseq, size_t cseq_len,
				     const char *extra, char *out, size_t cap, size_t *out_len);
const char *rtsp_reason(int status);

#endif
