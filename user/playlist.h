/* SPDX-License-Identifier: GPL-2.0 */
#ifndef KFWD_PLAYLIST_H
#define KFWD_PLAYLIST_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"
#include "chunked.h"
#include "http.h"
#include "http_rewrite.h"

/* A playlist response's body being read whole: its framing and how far it is known. */
struct playlist_body {
	enum body_framing framing;
	uint64_t length; /* FRAMING_LENGTH */
	struct chunk_scan scan; /* FRAMING_CHUNKED: the first @scanned bytes are valid */
	size_t scanned;
	size_t len; /* the message's bytes (its framing included), once whole */
};

/*
 * Is a response of Content-Type @type (@type_len bytes; NULL when it has none) to a request for
 * @target (path and query) an HLS/M3U playlist? The playlist media types
 * (application/vnd.apple.mpegurl, application/x-mpegurl, audio/mpegurl, audio/x-mpegurl), or a
 * path ending in .m3u/.m3u8 served with a text/ type.
 */
bool playlist_detect(const char *type, size_t type_len, const char *target, size_t target_len);

/*
 * Is the response @h (its text at @base) to a request for @target a playlist kfwd rewrites: a
 * 2xx other than 206 with a body, not content-coded, that playlist_detect() recognises?
 */
bool playlist_response(const struct http_head *h, const char *base, const char *target,
		       size_t target_len);

void playlist_body_init(struct playlist_body *b, enum body_framing framing, uint64_t length);
/*
 * Is the message whole in @data (@len bytes read so far after the head; @eof: the sender
 * closed)? 1 (then b->len is its length in @data), 0, or -1 when its chunked framing is bad.
 */
int playlist_body_whole(struct playlist_body *b, const char *data, size_t len, bool eof);
/*
 * The whole message in @data rewritten (playlist_rewrite()) into @body, and @head (a head
 * http_build_response() built for it) with the new Content-Length into @out_head. 0, or -1.
 */
int playlist_body_rewrite(const struct playlist_body *b, const char *data, const char *head,
			  size_t head_len, const struct location_rewrite *loc, struct buf *out_head,
			  struct buf *body);

/*
 * @in (a whole playlist, @len bytes) into @out with every URI line and every URI="..." attribute
 * of a tag rewritten as a Location is (http_rewrite_location() with @loc): through kfwd's
 * url-embedded and RTSP gateway routes, relative references resolved against @loc->req_path.
 * Tags, comments, blank lines, line ends and URIs of other schemes stay as they are. 0, or -1
 * when memory ran out.
 */
int playlist_rewrite(struct buf *out, const char *in, size_t len,
		     const struct location_rewrite *loc);

#endif
