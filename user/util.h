/* SPDX-License-Identifier: GPL-2.0 */
#ifndef KFWD_UTIL_H
#define KFWD_UTIL_H

/* Small language helpers every layer may use. */
#include <stddef.h>

/* The structure of type @type whose member @member is at @ptr (an intrusive link). */
#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#endif
