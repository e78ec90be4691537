/* SPDX-License-Identifier: GPL-2.0 */
#ifndef KFWD_LOG_H
#define KFWD_LOG_H

#include <stddef.h>

enum klog_level { KLOG_ERR, KLOG_WARN, KLOG_INFO, KLOG_DEBUG };

extern int klog_level;

/*
 * Where finished lines go: @line (newline included) starts with a @prefix_len byte prefix
 * (time, name, level). log_sink.c registers its writer; until then (or with NULL) stderr.
 */
typedef void (*klog_output_fn)(int level, const char *line, size_t prefix_len);
void klog_set_output(klog_output_fn fn);

void klog(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int klog_level_parse(const char *name);
const char *klog_level_name(int level);

#define log_err(...) klog(KLOG_ERR, __VA_ARGS__)
#define log_warn(...) klog(KLOG_WARN, __VA_ARGS__)
#define log_info(...) klog(KLOG_INFO, __VA_ARGS__)
#define log_debug(...)                                 \
	do {                                           \
		if (klog_level >= KLOG_DEBUG)          \
			klog(KLOG_DEBUG, __VA_ARGS__); \
	} while (0)

#endif
