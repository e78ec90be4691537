/* SPDX-License-Identifier: GPL-2.0 */
/* The C unit tests' check macro and counters (defined in unit_main.c), shared by every file. */
#ifndef KFWD_UNIT_H
#define KFWD_UNIT_H

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

void unit_rtsp(void); /* unit_rtsp.c */

#endif
