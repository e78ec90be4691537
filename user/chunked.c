// SPDX-License-Identifier: GPL-2.0
/* The chunked transfer coding's byte-by-byte scanner (see chunked.h). */
#include <string.h>

#include "chunked.h"
#include "http.h"

#define CHUNK_LINE_MAX 4096
#define CHUNK_TRAILERS_MAX (64 * 1024)
#define CHUNK_SIZE_DIGITS_MAX 15 /* keeps the size below 2^60 */

void chunk_scan_init(struct chunk_scan *c)
{
	memset(c, 0, sizeof(*c));
	c->state = CHUNK_SIZE;
}

/* A byte a field value or chunk extension may not hold: controls other than HTAB, and DEL. */
static bool is_ctl(char ch)
{
	unsigned char u = (unsigned char)ch;

	return (u < 0x20 && u != '\t') || u == 0x7f;
}

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

void chunk_data_moved(struct chunk_scan *c, uint64_t n)
{
	c->remaining -= n;
	if (c->remaining == 0)
		c->state = CHUNK_DATA_CR;
}

/* Long: one state machine over the chunked grammar, byte by byte; split, its states would scatter. */
size_t chunk_scan(struct chunk_scan *c, const char *p, size_t len)
{
	size_t i = 0;

	while (i < len && c->state != CHUNK_DONE && c->state != CHUNK_ERROR) {
		char ch = p[i];
		int v;

		switch (c->state) {
		case CHUNK_SIZE:
			v = hexval(ch);
			if (v >= 0 && c->digits < CHUNK_SIZE_DIGITS_MAX) {
				c->size = c->size * 16 + (uint64_t)v;
				c->digits++;
			} else if (c->digits && ch == ';') {
				c->state = CHUNK_EXT;
			} else if (c->digits && (ch == ' ' || ch == '\t')) {
				c->state = CHUNK_SIZE_BWS;
			} else if (c->digits && ch == '\r') {
				c->state = CHUNK_SIZE_LF;
			} else {
				c->state = CHUNK_ERROR;
				continue;
			}
			break;
		case CHUNK_SIZE_BWS:
			/* "5 3" is not a size of 5: after BWS only an extension or the CR. */
			if (++c->line_len > CHUNK_LINE_MAX) {
				c->state = CHUNK_ERROR;
				continue;
			}
			if (ch == ';')
				c->state = CHUNK_EXT;
			else if (ch == '\r')
				c->state = CHUNK_SIZE_LF;
			else if (ch != ' ' && ch != '\t') {
				c->state = CHUNK_ERROR;
				continue;
			}
			break;
		case CHUNK_EXT:
			/* Extensions pass through unchanged: bounded, and no control bytes. */
			if (ch == '\r')
				c->state = CHUNK_SIZE_LF;
			else if (is_ctl(ch) || ++c->line_len > CHUNK_LINE_MAX) {
				c->state = CHUNK_ERROR;
				continue;
			}
			break;
		case CHUNK_SIZE_LF:
			if (ch != '\n') {
				c->state = CHUNK_ERROR;
				continue;
			}
			c->line_len = 0;
			c->digits = 0;
			if (c->size == 0) {
				c->state = CHUNK_TRAILER_START;
			} else {
				c->remaining = c->size;
				c->size = 0;
				c->state = CHUNK_DATA;
			}
			break;
		case CHUNK_DATA: {
			size_t take = len - i;

			if (take > c->remaining)
				take = (size_t)c->remaining;
			chunk_data_moved(c, take);
			i += take;
			continue;
		}
		case CHUNK_DATA_CR:
			if (ch != '\r') {
				c->state = CHUNK_ERROR;
				continue;
			}
			c->state = CHUNK_DATA_LF;
			break;
		case CHUNK_DATA_LF:
			if (ch != '\n') {
				c->state = CHUNK_ERROR;
				continue;
			}
			c->state = CHUNK_SIZE;
			break;
		case CHUNK_TRAILER_START:
			if (ch == '\r') {
				c->state = CHUNK_END_LF;
				break;
			}
			/* A trailer line starts with a field name (no obs-fold, no request line). */
			if (!http_is_tchar(ch)) {
				c->state = CHUNK_ERROR;
				continue;
			}
			c->state = CHUNK_TRAILER_NAME;
			continue;
		case CHUNK_TRAILER_NAME:
			if (++c->trailer_len > CHUNK_TRAILERS_MAX) {
				c->state = CHUNK_ERROR;
				continue;
			}
			if (ch == ':')
				c->state = CHUNK_TRAILER_LINE;
			else if (!http_is_tchar(ch)) {
				c->state = CHUNK_ERROR;
				continue;
			}
			break;
		case CHUNK_TRAILER_LINE:
			if (++c->trailer_len > CHUNK_TRAILERS_MAX || (ch != '\r' && is_ctl(ch))) {
				c->state = CHUNK_ERROR;
				continue;
			}
			if (ch == '\r')
				c->state = CHUNK_TRAILER_LF;
			break;
		case CHUNK_TRAILER_LF:
			if (ch != '\n') {
				c->state = CHUNK_ERROR;
				continue;
			}
			c->state = CHUNK_TRAILER_START;
			break;
		case CHUNK_END_LF:
			if (ch != '\n') {
				c->state = CHUNK_ERROR;
				continue;
			}
			c->state = CHUNK_DONE;
			break;
		case CHUNK_DONE:
		case CHUNK_ERROR:
			break;
		}
		i++;
	}
	return i;
}

int chunk_decode(struct buf *out, const char *p, size_t len)
{
	struct chunk_scan c;
	size_t i = 0;

	chunk_scan_init(&c);
	while (i < len && c.state != CHUNK_DONE) {
		if (chunk_in_data(&c)) {
			size_t n = c.remaining < len - i ? (size_t)c.remaining : len - i;

			if (buf_append(out, p + i, n) < 0)
				return -1;
			chunk_data_moved(&c, n);
			i += n;
			continue;
		}
		/* One byte at a time outside the data: the scanner would run on into it. */
		if (chunk_scan(&c, p + i, 1) != 1)
			return -1;
		i++;
	}
	return c.state == CHUNK_DONE && i == len ? 0 : -1;
}
