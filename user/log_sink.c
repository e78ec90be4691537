// SPDX-License-Identifier: GPL-2.0
/*
 * The output of kfwd's logs: stderr, or a syslog daemon's datagram socket. Owns the daemon log's
 * syslog client and the syslog wire format shared with the access log. Nothing here blocks the
 * event loop: the socket is non-blocking, and a line the daemon cannot take now is dropped and
 * counted, never queued.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "log_sink.h"
#include "loop.h"

/* RFC 3164 as syslog(3) writes it to /dev/log: "<PRI>Mmm dd hh:mm:ss TAG[PID]: MSG". */
#define SYSLOG_LINE_MAX 2048
#define SYSLOG_RECONNECT_MS 1000

static struct syslog_client daemon_log = { .fd = -1 };

static int syslog_connect(struct syslog_client *c)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int fd;

	c->last_attempt_ms = now_ms();
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", c->path);
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
		int err = errno;

		close(fd);
		errno = err;
		return -1;
	}
	if (c->fd >= 0)
		close(c->fd);
	c->fd = fd;
	return 0;
}

int syslog_client_open(struct syslog_client *c, const char *path)
{
	syslog_client_close(c);
	if (strlen(path) >= sizeof(c->path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	snprintf(c->path, sizeof(c->path), "%s", path);
	return syslog_connect(c);
}

void syslog_client_close(struct syslog_client *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	c->path[0] = '\0';
}

int syslog_client_send(struct syslog_client *c, int priority, const char *tag, const char *msg,
		       size_t len)
{
	static const char *const months[] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
					      "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
	char line[SYSLOG_LINE_MAX];
	time_t now = time(NULL);
	struct tm tm;
	int n;

	localtime_r(&now, &tm);
	n = snprintf(line, sizeof(line), "<%d>%s %2d %02d:%02d:%02d %s[%d]: ", priority,
		     months[tm.tm_mon], tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, tag,
		     (int)getpid());
	if (n < 0 || (size_t)n >= sizeof(line))
		return -1;
	if (len > sizeof(line) - (size_t)n)
		len = sizeof(line) - (size_t)n;
	memcpy(line + n, msg, len);
	/* A syslog daemon that restarted left this socket connected to nothing: reconnect,
	 * at most once a second, and send again. */
	for (int attempt = 0; attempt < 2; attempt++) {
		if (c->fd >= 0 &&
		    send(c->fd, line, (size_t)n + len, MSG_DONTWAIT | MSG_NOSIGNAL) >= 0)
			return 0;
		if (c->fd >= 0 && errno != ECONNREFUSED && errno != ENOTCONN)
			break; /* EAGAIN, ENOBUFS: the daemon is behind; never wait for it */
		if (!c->path[0] || now_ms() - c->last_attempt_ms < SYSLOG_RECONNECT_MS ||
		    syslog_connect(c) < 0)
			break;
	}
	c->dropped++;
	return -1;
}

int log_sink_open(const char *path)
{
	klog_set_output(log_sink_write);
	if (!path || !path[0]) {
		syslog_client_close(&daemon_log);
		return 0;
	}
	if (daemon_log.fd >= 0 && !strcmp(daemon_log.path, path))
		return 0;
	if (syslog_client_open(&daemon_log, path) < 0) {
		int err = errno;

		fprintf(stderr,
			"kfwd: log-target syslog:%s: %s; logging to stderr until it answers\n",
			path, strerror(err));
		return -1;
	}
	return 0;
}

void log_sink_close(void)
{
	syslog_client_close(&daemon_log);
}

void log_sink_write(int level, const char *line, size_t prefix_len)
{
	static const int severities[] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG };
	size_t len = strlen(line);

	/* Configured but not connected (no syslog daemon yet): each send tries to reconnect. */
	if (daemon_log.path[0] && level >= KLOG_ERR && level <= KLOG_DEBUG && prefix_len <= len) {
		/* syslog lines carry no newline; the daemon adds its own time and host. */
		size_t body = len - prefix_len - (len > prefix_len && line[len - 1] == '\n');

		if (syslog_client_send(&daemon_log, LOG_DAEMON | severities[level], "kfwd",
				       line + prefix_len, body) == 0)
			return;
	}
	fputs(line, stderr);
}
