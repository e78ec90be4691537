// SPDX-License-Identifier: GPL-2.0
/*
 * The NOTIFY_SOCKET datagram protocol (sd_notify(3)), spoken directly: newline-separated
 * VAR=VALUE lines in one datagram, sent to the AF_UNIX socket systemd names in $NOTIFY_SOCKET
 * (a path, or an abstract name written with a leading '@'). systemd identifies the sender by
 * the credentials the kernel attaches (it sets SO_PASSCRED on its end), so nothing else is
 * needed; libsystemd would add a dependency OpenWrt does not have for these few bytes.
 */
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "sd_notify.h"

#define SD_NOTIFY_MSG_MAX 128
#define USEC_PER_SEC 1000000ULL
#define NSEC_PER_USEC 1000ULL

static struct {
	int fd;
	struct sockaddr_un addr;
	socklen_t addr_len;
	bool warned;
} sd = { .fd = -1 };

int sd_notify_init(void)
{
	const char *name = getenv("NOTIFY_SOCKET");
	size_t len;

	if (!name || !name[0])
		return 0;
	len = strlen(name);
	if ((name[0] != '/' && name[0] != '@') || len >= sizeof(sd.addr.sun_path)) {
		log_warn(
			"NOTIFY_SOCKET '%s': not an absolute path or @abstract name; not notifying",
			name);
		unsetenv("NOTIFY_SOCKET");
		return -1;
	}
	memset(&sd.addr, 0, sizeof(sd.addr));
	sd.addr.sun_family = AF_UNIX;
	memcpy(sd.addr.sun_path, name, len);
	/* An abstract name's length is exact: no terminating NUL counts. */
	if (name[0] == '@')
		sd.addr.sun_path[0] = '\0';
	sd.addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len +
				  (name[0] == '/' ? 1 : 0));
	/* Nothing kfwd starts may talk to systemd in its name. */
	unsetenv("NOTIFY_SOCKET");
	sd.fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (sd.fd < 0) {
		log_warn("NOTIFY_SOCKET: socket: %m; not notifying");
		return -1;
	}
	return 0;
}

void sd_notify_fini(void)
{
	if (sd.fd >= 0)
		close(sd.fd);
	sd.fd = -1;
}

/* Best effort: systemd gone or its queue full must not stop the daemon; warn once. */
static void sd_send(const char *msg)
{
	ssize_t n;

	if (sd.fd < 0)
		return;
	do
		n = sendto(sd.fd, msg, strlen(msg), MSG_NOSIGNAL | MSG_DONTWAIT,
			   (const struct sockaddr *)&sd.addr, sd.addr_len);
	while (n < 0 && errno == EINTR);
	if (n < 0 && !sd.warned) {
		sd.warned = true;
		log_warn("NOTIFY_SOCKET: sending to systemd: %m");
	}
}

void sd_notify_ready(void)
{
	sd_send("READY=1");
}

void sd_notify_reloading(void)
{
	char msg[SD_NOTIFY_MSG_MAX];
	struct timespec ts;

	if (sd.fd < 0)
		return;
	if (clock_gettime(CLOCK_MONOTONIC, &ts) < 0) {
		sd_send("RELOADING=1");
		return;
	}
	snprintf(msg, sizeof(msg), "RELOADING=1\nMONOTONIC_USEC=%llu",
		 (unsigned long long)ts.tv_sec * USEC_PER_SEC +
			 (unsigned long long)ts.tv_nsec / NSEC_PER_USEC);
	sd_send(msg);
}

void sd_notify_stopping(void)
{
	sd_send("STOPPING=1");
}
