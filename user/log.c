// SPDX-License-Identifier: GPL-2.0
/*
 * Logging to stderr: one line per event, prefixed with a monotonic-free wall clock and level;
 * a rate limit per call site above the sink.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "log.h"

int klog_level = KLOG_INFO;
static klog_output_fn output;
static char log_name[KLOG_NAME_MAX] = "kfwd";

void klog_set_name(const char *n)
{
	snprintf(log_name, sizeof(log_name), "%s", n);
}

void klog_set_output(klog_output_fn fn)
{
	output = fn;
}

static const char *const level_names[] = { "error", "warn", "info", "debug" };

void klog(int level, const char *fmt, ...)
{
	char line[1024];
	struct timespec ts;
	struct tm tm;
	va_list ap;
	int n;

	if (level > klog_level)
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = snprintf(line, sizeof(line), "%02d:%02d:%02d.%03ld %s %s: ", tm.tm_hour, tm.tm_min,
		     tm.tm_sec, ts.tv_nsec / 1000000, log_name, level_names[level]);
	va_start(ap, fmt);
	vsnprintf(line + n, sizeof(line) - n, fmt, ap);
	va_end(ap);
	/* One fputs per line so concurrent writers (tests reading stderr) never see torn lines. */
	strncat(line, "\n", sizeof(line) - strlen(line) - 1);
	if (output)
		output(level, line, (size_t)n);
	else
		fputs(line, stderr);
}

int klog_level_parse(const char *name)
{
	for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++)
		if (!strcmp(name, level_names[i]))
			return (int)i;
	return -1;
}

const char *klog_level_name(int level)
{
	if (level < 0 || level > KLOG_DEBUG)
		return "?";
	return level_names[level];
}
