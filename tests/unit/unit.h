/* SPDX-License-Identifier: GPL-2.0 */
#ifndef KFWD_UNIT_H
#define KFWD_UNIT_H

/* The C unit tests' one assertion and counters (tests/unit/unit_main.c prints them). */
#include <stdio.h>

extern int passed, failed;

#define CHECK(cond)                                                                     \
	do {                                                                            \
		if (cond) {                                                             \
			passed++;                                                       \
		} else {                                                                \
			failed++;                                                       \
			fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond); \
		}                                                                       \
	} while (0)

/* unit_arch.c: the retry policy, the flow FIFO (and under max-memory), configuration text editing */
void test_retry_policy(void);
void test_flow_fifo(void);
void test_config_edit(void);
void test_flow_budget(void);
void test_flow_hold(void);

/* unit_rtsp.c: the RTSP parser, framer, rewriter, authentication and URLs */
void unit_rtsp(void);
/* unit_loop.c: timers and the small-buffer pool */
void unit_loop(void);
/* unit_rtsp_client.c: reference resolution and RTP payloads, for the RTSP client side */
void unit_rtsp_client(void);
/* unit_uri.c: RFC 3986 reference resolution and dot segments */
void unit_uri(void);
/* Does uri_resolve(@base, @ref) give @want? Says what it gave when not. */
int unit_resolves(const char *base, const char *ref, const char *want);
/* unit_playlist.c: HLS/M3U detection and rewriting, chunked decoding */
void unit_playlist(void);
/* unit_tls.c: TLS contexts and the TLS transport over socketpairs */
void unit_tls(void);

#endif
