// SPDX-License-Identifier: GPL-2.0
/*
 * libFuzzer target for the chunked scanner (user/chunked.c), the one piece of code that decides
 * where a chunked body ends in both directions. The input is a body; it is scanned once whole
 * and once in pieces whose sizes come from the input's own bytes, with chunk data "spliced"
 * (chunk_data_moved) the way the flow moves it. Both must agree on the state, the size of the
 * message and where an error is, and a message accepted as complete must match a simple
 * reference reading of RFC 9112 §7.1.
 */
#include "fuzz_common.h"

#include "chunked.h"

/* Scan @p in pieces the way flow.c does: data bytes moved without scanning. */
static size_t scan_pieces(struct chunk_scan *c, const char *p, size_t len)
{
	size_t pos = 0, step = 1;

	while (pos < len && c->state != CHUNK_DONE && c->state != CHUNK_ERROR) {
		size_t n = len - pos;

		if (chunk_in_data(c)) {
			if (n > c->remaining)
				n = (size_t)c->remaining;
			chunk_data_moved(c, n);
			pos += n;
			continue;
		}
		step = (step * 7 + (unsigned char)p[pos]) % 13 + 1;
		if (n > step)
			n = step;
		n = chunk_scan(c, p + pos, n);
		pos += n;
	}
	return pos;
}

/* The reference reading is written apart from user/chunked.c on purpose: a shared helper
 * would share its bugs. */
static int hexval(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

/* Reference: the length of a complete chunked message at @p, or 0. Lines end with CRLF. */
static size_t reference_length(const char *p, size_t len)
{
	size_t pos = 0;

	for (;;) {
		uint64_t size = 0;
		size_t digits = 0;
		const char *crlf;

		while (pos < len && hexval(p[pos]) >= 0) {
			size = size * 16 + (uint64_t)hexval(p[pos++]);
			if (++digits > 15)
				return 0;
		}
		crlf = memmem(p + pos, len - pos, "\r\n", 2);
		if (!digits || !crlf)
			return 0;
		pos = (size_t)(crlf - p) + 2;
		if (size == 0)
			break;
		if (len - pos < size + 2 || memcmp(p + pos + size, "\r\n", 2))
			return 0;
		pos += size + 2;
	}
	for (;;) {
		const char *crlf = memmem(p + pos, len - pos, "\r\n", 2);

		if (!crlf)
			return 0;
		if (crlf == p + pos)
			return pos + 2;
		if (!memchr(p + pos, ':', (size_t)(crlf - (p + pos))))
			return 0;
		pos = (size_t)(crlf - p) + 2;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct chunk_scan whole, pieces;
	size_t n_whole, n_pieces;
	char *buf = fuzz_copy(data, size);

	if (!buf)
		return 0;
	chunk_scan_init(&whole);
	n_whole = chunk_scan(&whole, buf, size);
	chunk_scan_init(&pieces);
	n_pieces = scan_pieces(&pieces, buf, size);
	FUZZ_CHECK(n_whole <= size);
	FUZZ_CHECK(whole.state == pieces.state);
	FUZZ_CHECK(n_whole == n_pieces);
	if (whole.state == CHUNK_DONE) {
		FUZZ_CHECK(reference_length(buf, size) == n_whole);
		/* Nothing a peer could read as a second message hides in the first. */
		FUZZ_CHECK(!memchr(buf, '\0', n_whole) || whole.state == CHUNK_DONE);
	}
	free(buf);
	return 0;
}
