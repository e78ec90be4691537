// SPDX-License-Identifier: GPL-2.0
/*
 * libFuzzer target for what the RTSP client side (the HTTP->RTSP gateway) adds to the RTSP
 * modules: rtsp_url_resolve() (user/uri.c's uri_resolve()) of an SDP control against a base
 * URL, and rtsp_rtp_payload(). The input is "BASE-PATH\nREFERENCE"; the base is made absolute
 * with "rtsp://h". Oracles: a resolved URL fits, keeps the base's scheme and authority unless
 * the reference names its own, and its path has no dot segments left (the base's path is taken
 * as it is for an empty or "?query" reference, RFC 3986 §5.2.2), so that it resolves to itself
 * against the base; an RTP payload lies inside the packet.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rtsp_frame.h"
#include "rtsp_url.h"

#define BASE_PREFIX "rtsp://h"

static void check_path(const char *url)
{
	const char *path = strchr(url + strlen(BASE_PREFIX), '/');
	const char *q = url + strcspn(url, "?#"); /* the path ends at a query or fragment */
	size_t n;

	if (!path || q < path)
		return;
	n = (size_t)(q - path);
	for (size_t i = 0; i < n; i++) {
		/* A segment "." or "..": after a '/', up to the next '/' or the end of the path. */
		if (path[i] != '/' || i + 1 >= n || path[i + 1] != '.')
			continue;
		if (i + 2 == n || path[i + 2] == '/' ||
		    (path[i + 2] == '.' && (i + 3 == n || path[i + 3] == '/')))
			abort();
	}
}

/* An absolute URL without dot segments is its own resolution. */
static void check_resolves_to_itself(const char *base, const char *url)
{
	char again[RTSP_URL_RESOLVE_MAX];

	check_path(url);
	if (rtsp_url_resolve(base, url, strlen(url), again, sizeof(again)) < 0 ||
	    strcmp(url, again))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char base[512], out[RTSP_URL_RESOLVE_MAX];
	const uint8_t *nl = memchr(data, '\n', size);
	size_t base_len, off, end;

	if (!nl || memchr(data, '\0', size))
		return 0;
	base_len = (size_t)(nl - data);
	if (base_len + sizeof(BASE_PREFIX) + 1 > sizeof(base) || memchr(data, '?', base_len) ||
	    (base_len && data[0] != '/'))
		return 0;
	memcpy(base, BASE_PREFIX, strlen(BASE_PREFIX));
	memcpy(base + strlen(BASE_PREFIX), data, base_len);
	base[strlen(BASE_PREFIX) + base_len] = '\0';
	if (rtsp_url_resolve(base, (const char *)nl + 1, size - base_len - 1, out, sizeof(out)) ==
	    0) {
		const char *ref = (const char *)nl + 1;
		size_t ref_len = size - base_len - 1;

		if (strlen(out) >= sizeof(out))
			abort();
		if (!rtsp_url_has_scheme(ref, ref_len) &&
		    !(ref_len >= 2 && !memcmp(ref, "//", 2))) {
			if (strncmp(out, BASE_PREFIX, strlen(BASE_PREFIX)))
				abort();
			if (ref_len && ref[0] != '?' && ref[0] != '#')
				check_resolves_to_itself(base, out);
		}
	}
	if (rtsp_rtp_payload(data, size, &off, &end) == 0 && (off > end || end > size))
		abort();
	return 0;
}
