/* SPDX-License-Identifier: GPL-2.0 */
#ifndef KFWD_LOG_H
#define KFWD_LOG_H

enum klog_level { KLOG_ERR, KLOG_WARN, KLOG_INFO, KLOG_DEBUG };

extern int klog_level;

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
