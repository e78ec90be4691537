/* SPDX-License-Identifier: GPL-2.0 */
#ifndef KFWD_PLAYLIST_H
#define KFWD_PLAYLIST_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"
#include "http_rewrite.h"

/*
 * Is a response of Content-Type @type (@type_len bytes; NULL when it has none) to a request for
 * @target (path and query) an HLS/M3U playlist? The playlist media types
 * (application/vnd.apple.mpegurl, application/x-mpegurl, audio/mpegurl, audio/x-mpegurl), or a
 * path ending in .m3u/.m3u8 served with a text/ type.
 */
bool playlist_detect(const char *type, size_t type_len, const char *target, size_t target_len);

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
