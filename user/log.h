/* SPDX-License-Identifier: GPL-2.0 */
#ifndef KFWD_LOG_H
#define KFWD_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum klog_level { KLOG_ERR, KLOG_WARN, KLOG_INFO, KLOG_DEBUG };

extern int klog_level;

/*
 * Where finished lines go: @line (newline included) starts with a @prefix_len byte prefix
 * (time, name, level). log_sink.c registers its writer; until then (or with NULL) stderr.
 */
typedef void (*klog_output_fn)(int level, const char *line, size_t prefix_len);
void klog_set_output(klog_output_fn fn);
/* The name after the time in every line ("kfwd"; a worker says which: user/workers.c). */
#define KLOG_NAME_MAX 24
void klog_set_name(const char *name);

void klog(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int klog_level_parse(const char *name);
const char *klog_level_name(int level);

/*
 * Rate limit of one call site (one message class): a token bucket of KLOG_BURST lines refilled
 * at KLOG_RATE per second. Lines over it are counted and reported with the next line let
 * through, so a remote peer or a local user cannot flood the log whatever the sink.
 */
#define KLOG_BURST 100
#define KLOG_RATE 20

struct klog_limit {
	uint64_t last_ms; /* when tokens were last added */
	uint32_t tokens_milli; /* thousandths of a line */
	bool primed;
	uint64_t suppressed;
};

/* log_limit.c */
void klog_limited(struct klog_limit *rl, int level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#define klog_rl(level, ...)                                    \
	do {                                                   \
		static struct klog_limit klog_site_;           \
		klog_limited(&klog_site_, level, __VA_ARGS__); \
	} while (0)

/* Debug lines (opt-in, for the operator watching) are not limited. */
#define log_err(...) klog_rl(KLOG_ERR, __VA_ARGS__)
#define log_warn(...) klog_rl(KLOG_WARN, __VA_ARGS__)
#define log_info(...) klog_rl(KLOG_INFO, __VA_ARGS__)
#define log_debug(...)                                 \
	do {                                           \
		if (klog_level >= KLOG_DEBUG)          \
			klog(KLOG_DEBUG, __VA_ARGS__); \
	} while (0)

#endif
