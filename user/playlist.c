// SPDX-License-Identifier: GPL-2.0
/*
 * HLS/M3U playlists fetched through a url-embedded route (RFC 8216 §4, and the plain .m3u of
 * IPTV channel lists): recognising one, and rewriting its URIs so that a player fetches
 * segments, keys and variant playlists through kfwd too. Pure text in, text out; the HTTP
 * exchange (user/http1.c) reads the body and sends the result.
 */
#include <string.h>
#include <strings.h>

#include "playlist.h"
#include "util.h"

static const char *const playlist_types[] = {
	"application/vnd.apple.mpegurl",
	"application/x-mpegurl",
	"audio/mpegurl",
	"audio/x-mpegurl",
};

static const char utf8_bom[] = "\xEF\xBB\xBF";
#define UTF8_BOM_LEN (sizeof(utf8_bom) - 1)

/* "URI=\"" opens the attribute a tag names its resource with (RFC 8216 §4.2). */
#define URI_ATTR "URI=\""
#define URI_ATTR_LEN (sizeof(URI_ATTR) - 1)

static bool is_ows(char c)
{
	return c == ' ' || c == '\t';
}

static bool has_suffix(const char *s, size_t len, const char *suffix)
{
	size_t n = strlen(suffix);

	return len >= n && !strncasecmp(s + len - n, suffix, n);
}

bool playlist_detect(const char *type, size_t type_len, const char *target, size_t target_len)
{
	size_t mlen = 0, plen = 0;

	if (type) {
		while (type_len && is_ows(type[0])) {
			type++;
			type_len--;
		}
		while (mlen < type_len && type[mlen] != ';')
			mlen++;
		while (mlen && is_ows(type[mlen - 1]))
			mlen--;
		for (size_t i = 0; i < ARRAY_LEN(playlist_types); i++)
			if (mlen == strlen(playlist_types[i]) &&
			    !strncasecmp(type, playlist_types[i], mlen))
				return true;
	}
	while (plen < target_len && target[plen] != '?' && target[plen] != '#')
		plen++;
	return type && mlen > 5 && !strncasecmp(type, "text/", 5) &&
	       (has_suffix(target, plen, ".m3u") || has_suffix(target, plen, ".m3u8"));
}

bool playlist_response(const struct http_head *h, const char *base, const char *target,
		       size_t target_len)
{
	const struct http_header *type = NULL;

	if (h->status < 200 || h->status > 299 || h->status == 204 || h->status == 206)
		return false;
	for (unsigned int i = 0; i < h->n_headers; i++) {
		const struct http_header *f = &h->headers[i];

		/* A content-coded (gzip...) body is not text kfwd could rewrite. */
		if (http_span_eq(base, f->name, "Content-Encoding") &&
		    !(f->value.len == strlen("identity") &&
		      !strncasecmp(base + f->value.off, "identity", f->value.len)))
			return false;
		if (http_span_eq(base, f->name, "Content-Type"))
			type = f;
	}
	return playlist_detect(type ? base + type->value.off : NULL, type ? type->value.len : 0,
			       target, target_len);
}

void playlist_body_init(struct playlist_body *b, enum body_framing framing, uint64_t length)
{
	memset(b, 0, sizeof(*b));
	b->framing = framing;
	b->length = length;
	chunk_scan_init(&b->scan);
}

int playlist_body_whole(struct playlist_body *b, const char *data, size_t len, bool eof)
{
	switch (b->framing) {
	case FRAMING_LENGTH:
		b->len = (size_t)b->length;
		return len >= b->length;
	case FRAMING_CHUNKED:
		b->scanned += chunk_scan(&b->scan, data + b->scanned, len - b->scanned);
		if (b->scan.state == CHUNK_ERROR)
			return -1;
		b->len = b->scanned;
		return b->scan.state == CHUNK_DONE;
	default:
		b->len = len;
		return eof;
	}
}

int playlist_body_rewrite(const struct playlist_body *b, const char *data, const char *head,
			  size_t head_len, const struct location_rewrite *loc, struct buf *out_head,
			  struct buf *body)
{
	struct buf decoded = { 0 };
	size_t len = b->len;
	int rc = 0;

	if (b->framing == FRAMING_CHUNKED) {
		rc = chunk_decode(&decoded, data, len);
		data = buf_len(&decoded) ? buf_start(&decoded) : "";
		len = buf_len(&decoded);
	}
	if (rc == 0)
		rc = playlist_rewrite(body, data, len, loc);
	if (rc == 0)
		rc = http_head_set_length(out_head, head, head_len, buf_len(body));
	buf_free(&decoded);
	return rc;
}

/* One URI as a Location is rewritten, or as it is when it stays (another scheme). */
static int rewrite_uri(struct buf *out, const char *v, size_t len,
		       const struct location_rewrite *loc)
{
	size_t mark = out->tail;
	int r = len ? http_rewrite_location(out, v, len, loc) : 1;

	if (r < 0)
		return -1;
	if (r == 0)
		return 0;
	out->tail = mark;
	return buf_append(out, v, len);
}

/* A tag line: the value of each URI="..." attribute rewritten; quoted values skipped. */
static int rewrite_tag(struct buf *out, const char *line, size_t len,
		       const struct location_rewrite *loc)
{
	size_t i = 0, copied = 0;

	while (i < len) {
		const char *close;

		if (line[i] != '"' && line[i] != 'U') {
			i++;
			continue;
		}
		if (line[i] == 'U' && i > 0 && (line[i - 1] == ':' || line[i - 1] == ',') &&
		    len - i > URI_ATTR_LEN && !memcmp(line + i, URI_ATTR, URI_ATTR_LEN)) {
			const char *v = line + i + URI_ATTR_LEN;

			close = memchr(v, '"', len - i - URI_ATTR_LEN);
			if (!close)
				break;
			if (buf_append(out, line + copied, (size_t)(v - line) - copied) < 0 ||
			    rewrite_uri(out, v, (size_t)(close - v), loc) < 0)
				return -1;
			copied = (size_t)(close - line);
			i = copied + 1;
			continue;
		}
		if (line[i] == 'U') {
			i++;
			continue;
		}
		/* Another attribute's quoted string: a "URI=\"" inside it is text. */
		close = memchr(line + i + 1, '"', len - i - 1);
		if (!close)
			break;
		i = (size_t)(close - line) + 1;
	}
	return buf_append(out, line + copied, len - copied);
}

/* One line without its end: a tag, a comment, blank, or a URI (surrounding blanks kept). */
static int rewrite_line(struct buf *out, const char *line, size_t len,
			const struct location_rewrite *loc)
{
	size_t lead = 0, end = len;

	while (lead < len && is_ows(line[lead]))
		lead++;
	while (end > lead && is_ows(line[end - 1]))
		end--;
	if (lead == end)
		return buf_append(out, line, len);
	if (line[lead] == '#') {
		/* "#EXT..." tags carry attributes; other '#' lines are comments. */
		if (end - lead > 4 && !memcmp(line + lead, "#EXT", 4))
			return rewrite_tag(out, line, len, loc);
		return buf_append(out, line, len);
	}
	if (buf_append(out, line, lead) < 0 || rewrite_uri(out, line + lead, end - lead, loc) < 0)
		return -1;
	return buf_append(out, line + end, len - end);
}

int playlist_rewrite(struct buf *out, const char *in, size_t len,
		     const struct location_rewrite *loc)
{
	size_t i = 0;

	if (len >= UTF8_BOM_LEN && !memcmp(in, utf8_bom, UTF8_BOM_LEN)) {
		if (buf_append(out, in, UTF8_BOM_LEN) < 0)
			return -1;
		i = UTF8_BOM_LEN;
	}
	while (i < len) {
		const char *nl = memchr(in + i, '\n', len - i);
		size_t end = nl ? (size_t)(nl - in) : len, text_end = end;

		/* The line end as it was: LF or CRLF. */
		if (text_end > i && in[text_end - 1] == '\r')
			text_end--;
		if (rewrite_line(out, in + i, text_end - i, loc) < 0 ||
		    buf_append(out, in + text_end, (nl ? end + 1 : end) - text_end) < 0)
			return -1;
		i = nl ? end + 1 : end;
	}
	return 0;
}
