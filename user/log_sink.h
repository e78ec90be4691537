/* SPDX-License-Identifier: GPL-2.0 */
#ifndef KFWD_LOG_SINK_H
#define KFWD_LOG_SINK_H

#include <stddef.h>
#include <stdint.h>

/* Where log lines go: stderr (the default) or a syslog socket (/dev/log). */

/*
 * Send log lines to the syslog datagram socket at @path from now on, or to stderr when @path is
 * NULL or empty. Returns -1 (lines still go to stderr) when the socket cannot be reached.
 */
int log_sink_open(const char *path);
void log_sink_close(void);
/*
 * One finished line at @level (enum klog_level). @line starts with a @prefix_len byte prefix
 * (time, name, level) that stderr shows and syslog replaces with its own header.
 */
void log_sink_write(int level, const char *line, size_t prefix_len);

/*
 * A syslog client that never blocks: an AF_UNIX datagram socket connected to a syslog daemon
 * (OpenWrt's logd, busybox syslogd, rsyslog and journald all read /dev/log).
 */
struct syslog_client {
	int fd;
	char path[108];
	uint64_t last_attempt_ms; /* reconnects are tried at most once a second */
	uint64_t dropped; /* lines the socket did not take (full, or no daemon) */
};

int syslog_client_open(struct syslog_client *c, const char *path);
void syslog_client_close(struct syslog_client *c);
/* Send @msg with @priority (facility | severity) and @tag; 0, or -1 (counted in dropped). */
int syslog_client_send(struct syslog_client *c, int priority, const char *tag, const char *msg,
		       size_t len);

#endif
