// SPDX-License-Identifier: GPL-2.0
/*
 * Rate-limited log lines (klog_limited, declared in log.h): a token bucket per call site on the
 * loop's clock, so log.c itself needs nothing above it.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>

#include "log.h"
#include "loop.h"
#include "stats.h"

/* A layer above klog(), which stays the one sink. */
void klog_limited(struct klog_limit *rl, int level, const char *fmt, ...)
{
	const uint32_t full = KLOG_BURST * 1000;
	uint64_t now, add;
	int saved_errno = errno; /* for %m */
	char msg[1024];
	va_list ap;

	if (level > klog_level)
		return;
	now = now_ms();
	if (!rl->primed) {
		rl->primed = true;
		rl->tokens_milli = full;
	} else {
		add = (now - rl->last_ms) * KLOG_RATE;
		rl->tokens_milli = add >= full - rl->tokens_milli ? full : rl->tokens_milli + add;
	}
	rl->last_ms = now;
	if (rl->tokens_milli < 1000) {
		rl->suppressed++;
		stats.log_suppressed++;
		return;
	}
	rl->tokens_milli -= 1000;
	if (rl->suppressed) {
		klog(level, "(%lu lines like the next one suppressed: more than %d per second)",
		     (unsigned long)rl->suppressed, KLOG_RATE);
		rl->suppressed = 0;
	}
	errno = saved_errno;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	klog(level, "%s", msg);
}
