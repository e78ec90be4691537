/* SPDX-License-Identifier: GPL-2.0 */
#ifndef KFWD_CHUNKED_H
#define KFWD_CHUNKED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

/*
 * Chunked transfer coding (RFC 9112 §7.1) tracked byte by byte so kfwd always knows where the
 * message ends, while forwarding the coding verbatim: size lines and trailers pass through user
 * space, chunk data is spliced.
 */
enum chunk_state {
	CHUNK_SIZE,
	CHUNK_SIZE_BWS, /* whitespace after the size: only ';' or CR may follow */
	CHUNK_EXT,
	CHUNK_SIZE_LF,
	CHUNK_DATA,
	CHUNK_DATA_CR,
	CHUNK_DATA_LF,
	CHUNK_TRAILER_START,
	CHUNK_TRAILER_NAME,
	CHUNK_TRAILER_LINE, /* a trailer field's value */
	CHUNK_TRAILER_LF,
	CHUNK_END_LF,
	CHUNK_DONE,
	CHUNK_ERROR,
};

struct chunk_scan {
	enum chunk_state state;
	uint64_t size; /* of the chunk whose size line is being read */
	uint64_t remaining; /* data bytes left in the current chunk */
	unsigned int digits;
	size_t line_len;
	size_t trailer_len;
};

void chunk_scan_init(struct chunk_scan *c);
/*
 * Advance over up to @len bytes; returns how many were valid: it stops after the last byte of
 * the message (DONE) or at the first invalid byte, not counted (ERROR). Chunk extensions and
 * trailer fields are checked against RFC 9112 §7.1.1/§7.1.2 (no control bytes, a trailer line is
 * a field name, a colon and a value, no obs-fold), since they are forwarded as they are.
 */
size_t chunk_scan(struct chunk_scan *c, const char *p, size_t len);
/* @n data bytes of the current chunk moved without being scanned (spliced). */
void chunk_data_moved(struct chunk_scan *c, uint64_t n);

/*
 * The data of the chunked message in @p (@len bytes, its end included) appended to @out, the
 * size lines, extensions and trailers left out. 0, or -1 when @p is not one whole message or
 * memory ran out.
 */
int chunk_decode(struct buf *out, const char *p, size_t len);

static inline bool chunk_in_data(const struct chunk_scan *c)
{
	return c->state == CHUNK_DATA && c->remaining > 0;
}

#endif
