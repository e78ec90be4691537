// SPDX-License-Identifier: GPL-2.0
/*
 * The control socket (ctl_socket.h): a NETLINK_USERSOCK socket bound to kfwd's port id (the
 * pid unless ctl-port-id says otherwise), the ctl-socket-file naming that port id for
 * kfwdctl, sending without ever blocking the loop, and the permission check on the
 * credentials the kernel attaches to every datagram.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <linux/netlink.h>

#include "common_ctl.h"
#include "ctl_socket.h"
#include "log.h"

#define CTL_RCVBUF (1 << 20)
#define PUBLISHED_DIR_MODE 0755
#define PUBLISHED_FILE_MODE 0644

static struct {
	int fd;
	uint32_t portid;
	bool published;
	char file[sizeof(((struct config *)0)->ctl_socket_file)];
} sock = { .fd = -1 };

int ctl_socket_fd(void)
{
	return sock.fd;
}

uint32_t ctl_socket_portid(void)
{
	return sock.portid;
}

int ctl_socket_send(uint32_t portid, const void *buf, size_t len)
{
	struct sockaddr_nl to = { .nl_family = AF_NETLINK, .nl_pid = portid };
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
	struct msghdr mh = {
		.msg_name = &to, .msg_namelen = sizeof(to), .msg_iov = &iov, .msg_iovlen = 1
	};

	if (sock.fd < 0)
		return -EBADF;
	/* Never blocks: a reader whose buffer is full loses this answer (EAGAIN), a reader
	 * that is gone is reported with ECONNREFUSED. */
	if (sendmsg(sock.fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
		return -errno;
	return 0;
}

/* ------------------------------------------------------------------ permissions */

static bool creds_in_group(const struct ucred *cr, gid_t gid)
{
	char path[64], line[1024];
	bool uid_ok = false, member = false;
	FILE *f;

	if (cr->gid == gid)
		return true;
	/* Supplementary groups are not in SCM_CREDENTIALS: ask /proc, and only believe it if the
	 * process there still has the sender's uid (a pid can be reused). */
	snprintf(path, sizeof(path), "/proc/%d/status", (int)cr->pid);
	f = fopen(path, "re");
	if (!f)
		return false;
	while (fgets(line, sizeof(line), f)) {
		unsigned long v;

		if (sscanf(line, "Uid: %lu", &v) == 1) {
			uid_ok = v == cr->uid;
		} else if (!strncmp(line, "Groups:", 7)) {
			char *p = line + 7, *end;

			for (;;) {
				v = strtoul(p, &end, 10);
				if (end == p)
					break;
				if (v == gid)
					member = true;
				p = end;
			}
		}
	}
	fclose(f);
	return uid_ok && member;
}

/* 0, or -EPERM with @why filled in. */
int ctl_check_permission(const struct config *cfg, const struct ucred *cr, unsigned int cmd,
			 char *why, size_t len)
{
	if (cr->uid == 0)
		return 0;
	if (!KFWD_CTL_CMD_READONLY(cmd)) {
		snprintf(
			why, len,
			"permission denied: '%s' changes kfwd and is for uid 0 only (sender uid %u)",
			kctl_cmd_name(cmd), (unsigned int)cr->uid);
		return -EPERM;
	}
	if (cfg->has_ctl_group && creds_in_group(cr, cfg->ctl_group))
		return 0;
	if (cfg->has_ctl_group)
		snprintf(why, len,
			 "permission denied: '%s' is for uid 0 and group %s (sender uid %u gid %u)",
			 kctl_cmd_name(cmd), cfg->ctl_group_name, (unsigned int)cr->uid,
			 (unsigned int)cr->gid);
	else
		snprintf(
			why, len,
			"permission denied: '%s' is for uid 0 (no ctl-group configured; sender uid %u)",
			kctl_cmd_name(cmd), (unsigned int)cr->uid);
	return -EPERM;
}

/* ------------------------------------------------------------------ socket and file */

/* @consequence: what kfwd does about it, to end the message. */
static void report_holder(int level, uint32_t portid, const char *consequence)
{
	struct kctl_holder h;
	int r = kctl_portid_holder(portid, 0, &h);

	if (r > 0 && h.pid)
		klog(level,
		     "ctl: netlink port id %u is held by pid %d (%s, uid %d): another kfwd, or a "
		     "process squatting it; %s",
		     portid, (int)h.pid, h.comm, (int)h.uid, consequence);
	else
		klog(level,
		     "ctl: netlink port id %u is held by another socket (inode %lu): another kfwd, "
		     "or a process squatting it; %s",
		     portid, r > 0 ? h.inode : 0UL, consequence);
}

/*
 * Bind the control socket to @portid. The default (kfwd's pid) can be taken by any local user
 * beforehand: then the kernel assigns a free id, which the published file names. An id set
 * with ctl-port-id is what the operator asked for: taken, kfwd does not start.
 */
static int bind_portid(int fd, uint32_t portid, bool fixed, uint32_t *bound)
{
	struct sockaddr_nl addr = { .nl_family = AF_NETLINK, .nl_pid = portid };
	socklen_t alen = sizeof(addr);

	if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		if (errno != EADDRINUSE) {
			log_err("ctl: bind netlink port id %u: %m", portid);
			return -1;
		}
		if (fixed) {
			report_holder(KLOG_ERR, portid,
				      "refusing to start (set ctl-port-id to use another)");
			return -1;
		}
		report_holder(KLOG_WARN, portid, "using a port id the kernel assigns instead");
		addr.nl_pid = 0;
		if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
			log_err("ctl: bind netlink port id (kernel-assigned): %m");
			return -1;
		}
		portid = 0;
	}
	if (getsockname(fd, (struct sockaddr *)&addr, &alen) < 0 ||
	    (portid && addr.nl_pid != portid) || !addr.nl_pid) {
		log_err("ctl: netlink port id %u not bound as asked", portid);
		return -1;
	}
	*bound = addr.nl_pid;
	return 0;
}

/* @uid: the one kfwd answers with (after `user`), for kfwdctl's check of the answers. */
static int publish_file(const char *path, uint32_t portid, uid_t uid)
{
	char dir[sizeof(sock.file)], tmp[sizeof(sock.file) + 16];
	char *slash;
	struct stat st;
	int fd, n;

	snprintf(dir, sizeof(dir), "%s", path);
	slash = strrchr(dir, '/');
	if (!slash || slash == dir) {
		log_err("ctl: ctl-socket-file %s: want an absolute path inside a directory", path);
		return -1;
	}
	*slash = '\0';
	if (mkdir(dir, PUBLISHED_DIR_MODE) < 0 && errno != EEXIST) {
		log_err("ctl: mkdir %s: %m", dir);
		return -1;
	}
	if (lstat(dir, &st) < 0) {
		log_err("ctl: %s: %m", dir);
		return -1;
	}
	/* kfwdctl trusts what is written here: nobody else may be able to replace it. */
	if (!S_ISDIR(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 022)) {
		log_err("ctl: %s must be a directory owned by uid %u and writable by nobody else",
			dir, (unsigned int)geteuid());
		return -1;
	}
	snprintf(tmp, sizeof(tmp), "%s.%d.tmp", path, (int)getpid());
	if (unlink(tmp) < 0 && errno != ENOENT) {
		log_err("ctl: unlink %s: %m", tmp);
		return -1;
	}
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, PUBLISHED_FILE_MODE);
	if (fd < 0) {
		log_err("ctl: create %s: %m", tmp);
		return -1;
	}
	n = uid ? dprintf(fd, "portid=%u pid=%d uid=%u\n", portid, (int)getpid(),
			  (unsigned int)uid) :
		  dprintf(fd, "portid=%u pid=%d\n", portid, (int)getpid());
	if (n < 0 || fchmod(fd, PUBLISHED_FILE_MODE) < 0) {
		log_err("ctl: write %s: %m", tmp);
		close(fd);
		unlink(tmp);
		return -1;
	}
	if (close(fd) < 0 || rename(tmp, path) < 0) {
		log_err("ctl: publish %s: %m", path);
		unlink(tmp);
		return -1;
	}
	return 0;
}

/* Remove the file only if it still names this process (another kfwd may have taken over). */
static void unpublish_file(void)
{
	char buf[128];
	unsigned int portid;
	int pid, fd;
	ssize_t n;

	if (!sock.published)
		return;
	sock.published = false;
	fd = open(sock.file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return;
	buf[n] = '\0';
	/* After `user` the root-owned directory is not ours to change: the file stays, and
	 * kfwdctl calls it stale once this pid is gone. */
	if (sscanf(buf, "portid=%u pid=%d", &portid, &pid) == 2 && pid == (int)getpid() &&
	    unlink(sock.file) < 0 && errno != EACCES)
		log_warn("ctl: unlink %s: %m", sock.file);
}
int ctl_socket_open(const struct config *cfg, struct loop_handler *h)
{
	int one = 1, rcvbuf = CTL_RCVBUF;
	uint32_t portid = cfg->ctl_port_id ? cfg->ctl_port_id : (uint32_t)getpid();

	sock.fd = socket(AF_NETLINK, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, KFWD_CTL_NETLINK);
	if (sock.fd < 0) {
		log_err("ctl: netlink socket: %m");
		goto fail;
	}
	if (setsockopt(sock.fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)) < 0) {
		log_err("ctl: SO_PASSCRED: %m");
		goto fail;
	}
	if (setsockopt(sock.fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf)) < 0 &&
	    setsockopt(sock.fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf)) < 0)
		log_warn("ctl: SO_RCVBUF: %m");
	if (bind_portid(sock.fd, portid, cfg->ctl_port_id != 0, &sock.portid) < 0)
		goto fail;
	if (loop_add(sock.fd, EPOLLIN, h) < 0)
		goto fail;
	snprintf(sock.file, sizeof(sock.file), "%s", cfg->ctl_socket_file);
	if (publish_file(sock.file, sock.portid, cfg->has_user ? cfg->run_uid : 0) < 0) {
		loop_del(sock.fd);
		goto fail;
	}
	sock.published = true;
	log_info("control socket: netlink port id %u, published in %s", sock.portid, sock.file);
	return 0;
fail:
	if (sock.fd >= 0)
		close(sock.fd);
	sock.fd = -1;
	sock.portid = 0;
	return -1;
}

void ctl_socket_close(void)
{
	if (sock.fd >= 0) {
		loop_del(sock.fd);
		close(sock.fd);
		sock.fd = -1;
	}
	unpublish_file();
}

void ctl_socket_forget(void)
{
	/* Not in this process's epoll (a worker starts with a fresh loop): just close. */
	if (sock.fd >= 0)
		close(sock.fd);
	sock.fd = -1;
	sock.published = false;
}
