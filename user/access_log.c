// SPDX-License-Identifier: GPL-2.0
/*
 * The access log: one line per request, to a file or to syslog. Owns the file descriptor, its
 * bounded output buffer and the syslog client of access lines. Writes never block the event
 * loop: the file is opened O_APPEND|O_NONBLOCK (a FIFO reader that stalls cannot stop kfwd),
 * lines wait in a buffer of ACCESS_LOG_BUFFER bytes at most, and what does not fit is dropped
 * and counted (kfwd_access_log_dropped_total).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "access_log.h"
#include "log.h"
#include "log_sink.h"
#include "loop.h"
#include "stats.h"

#define ACCESS_LOG_BUFFER (64 * 1024)
#define ACCESS_LINE_MAX 2048
/* Longer targets are cut (and end in "..."): a line must fit in one syslog datagram. */
#define ACCESS_TARGET_MAX 1024
/* A file that took nothing (a full FIFO) is tried again after this long. */
#define ACCESS_RETRY_MS 100
#define ACCESS_FILE_MODE 0640

static struct {
	enum access_log_kind kind;
	char path[CONFIG_PATH_MAX];
	int fd;
	char *buf; /* bytes not yet written to fd */
	size_t len;
	struct timer retry;
	struct syslog_client syslog;
} alog = { .fd = -1, .syslog = { .fd = -1 } };

static void count_dropped(const char *bytes, size_t len)
{
	for (const char *p = bytes; (p = memchr(p, '\n', len - (size_t)(p - bytes))); p++)
		stats.access_log_dropped++;
}

static void flush(void)
{
	while (alog.len && alog.fd >= 0) {
		ssize_t n = write(alog.fd, alog.buf, alog.len);

		if (n > 0) {
			memmove(alog.buf, alog.buf + n, alog.len - (size_t)n);
			alog.len -= (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN) {
			if (!timer_armed(&alog.retry))
				timer_arm(&alog.retry, ACCESS_RETRY_MS);
			return;
		}
		/* ENOSPC, EIO, a FIFO without reader: these lines are lost, later ones may not be. */
		log_warn("access-log %s: write: %s", alog.path,
			 n < 0 ? strerror(errno) : "0 bytes");
		count_dropped(alog.buf, alog.len);
		alog.len = 0;
	}
}

static void on_retry(struct timer *t)
{
	flush();
}

static int open_file(const char *path)
{
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_NONBLOCK | O_CLOEXEC | O_NOCTTY,
		      ACCESS_FILE_MODE);

	if (fd < 0)
		log_err("access-log %s: %m", path);
	return fd;
}

static void close_target(void)
{
	flush();
	if (alog.fd >= 0)
		close(alog.fd);
	alog.fd = -1;
	count_dropped(alog.buf, alog.len);
	alog.len = 0;
	syslog_client_close(&alog.syslog);
	timer_cancel(&alog.retry);
	alog.kind = ACCESS_LOG_OFF;
	alog.path[0] = '\0';
}

int access_log_configure(const struct config *cfg)
{
	alog.retry.on_expire = on_retry;
	/* The same target again (a reload): reopen, as logrotate expects from a reload too. */
	if (cfg->access_log == alog.kind && !strcmp(cfg->access_log_path, alog.path)) {
		access_log_reopen();
		return 0;
	}
	close_target();
	alog.kind = cfg->access_log;
	snprintf(alog.path, sizeof(alog.path), "%s", cfg->access_log_path);
	switch (cfg->access_log) {
	case ACCESS_LOG_OFF:
		return 0;
	case ACCESS_LOG_SYSLOG:
		/* A syslog daemon that starts after kfwd (boot order on a router) is found
		 * later: sends reconnect, at most once a second. */
		if (syslog_client_open(&alog.syslog, alog.path) < 0)
			log_warn("access-log syslog:%s: %m (lines are dropped until it answers)",
				 alog.path);
		break;
	case ACCESS_LOG_FILE:
		if (!alog.buf && !(alog.buf = malloc(ACCESS_LOG_BUFFER)))
			return -1;
		alog.fd = open_file(alog.path);
		if (alog.fd < 0)
			return -1;
		break;
	}
	log_info("access log: %s%s", alog.kind == ACCESS_LOG_SYSLOG ? "syslog:" : "", alog.path);
	return 0;
}

void access_log_reopen(void)
{
	int fd;

	if (alog.kind != ACCESS_LOG_FILE)
		return;
	flush();
	fd = open_file(alog.path);
	if (fd < 0)
		return; /* keep writing where we were */
	if (alog.fd >= 0)
		close(alog.fd);
	alog.fd = fd;
	log_info("access log reopened: %s", alog.path);
	flush();
}

void access_log_close(void)
{
	close_target();
	free(alog.buf);
	alog.buf = NULL;
}

bool access_log_enabled(void)
{
	return alog.kind != ACCESS_LOG_OFF;
}

/* The target with bytes that could break the line's syntax escaped as \xHH. */
static size_t put_target(char *out, size_t cap, const char *target)
{
	static const char hex[] = "0123456789abcdef";
	size_t n = 0;

	for (const unsigned char *p = (const unsigned char *)target; *p; p++) {
		if (n + 4 >= cap ||
		    (size_t)(p - (const unsigned char *)target) >= ACCESS_TARGET_MAX) {
			n += (size_t)snprintf(out + n, cap - n, "...");
			break;
		}
		if (*p > ' ' && *p < 0x7f && *p != '"' && *p != '\\') {
			out[n++] = (char)*p;
			continue;
		}
		out[n++] = '\\';
		out[n++] = 'x';
		out[n++] = hex[*p >> 4];
		out[n++] = hex[*p & 0xf];
	}
	out[n] = '\0';
	return n;
}

void access_log_write(const struct access_entry *e)
{
	char line[ACCESS_LINE_MAX], target[ACCESS_TARGET_MAX + 8], status[16] = "-";
	struct timespec ts;
	struct tm tm;
	int n;

	if (alog.kind == ACCESS_LOG_OFF)
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	if (e->target)
		put_target(target, sizeof(target), e->target);
	if (e->status)
		snprintf(status, sizeof(status), "%d", e->status);
	n = snprintf(line, sizeof(line),
		     "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s conn=%lu \"%s %s\" %s in=%lu out=%lu "
		     "ms=%lu path=%s\n",
		     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
		     ts.tv_nsec / 1000000, e->client, (unsigned long)e->conn,
		     e->method ? e->method : "-", e->target ? target : "-", status,
		     (unsigned long)e->bytes_in, (unsigned long)e->bytes_out,
		     (unsigned long)e->duration_ms, e->data_path);
	if (n < 0 || (size_t)n >= sizeof(line)) {
		stats.access_log_dropped++;
		return;
	}
	if (alog.kind == ACCESS_LOG_SYSLOG) {
		if (syslog_client_send(&alog.syslog, LOG_DAEMON | LOG_INFO, "kfwd-access", line,
				       (size_t)n - 1) < 0)
			stats.access_log_dropped++;
		return;
	}
	if (alog.fd < 0 || alog.len + (size_t)n > ACCESS_LOG_BUFFER) {
		stats.access_log_dropped++;
		return;
	}
	memcpy(alog.buf + alog.len, line, (size_t)n);
	alog.len += (size_t)n;
	if (!timer_armed(&alog.retry))
		flush();
}
