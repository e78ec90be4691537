// SPDX-License-Identifier: GPL-2.0
/*
 * Seamless binary upgrade (protocol in upgrade.h). Owns the upgrade-socket listener of the
 * running kfwd and its one hand-over connection, and, in a new kfwd started with -x, the
 * connection to the old one and the listening sockets received from it until listen_socket()
 * takes them.
 *
 * Why fd passing and not SO_REUSEPORT overlap: the new process gets the very sockets the old one
 * listens on, with their accept queues. Connections the kernel queued before the switch are
 * accepted by whichever process calls accept() first, and none is lost when the old one closes
 * its copy. With SO_REUSEPORT each process has its own socket and queue; closing the old one
 * resets every connection still queued on it (unless net.ipv4.tcp_migrate_req and a BPF
 * program move them), which is exactly the refusal an upgrade must not cause.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "accept.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "upgrade.h"
#include "upstream_pool.h"

#define UPGRADE_HELLO "KFWD-UPGRADE 1"
#define UPGRADE_READY "READY"
#define UPGRADE_RELEASED "RELEASED"
/* SCM_MAX_FD: the most fds one message can carry. */
#define UPGRADE_MAX_FDS 253
#define UPGRADE_MSG_MAX 64
/* How long the new kfwd waits for each answer of the old one. */
#define UPGRADE_TIMEOUT_S 10
#define UPGRADE_DIR_MODE 0755
#define UPGRADE_SOCKET_MODE 0600

/* The running kfwd's side */
static struct {
	struct loop_handler listen_h;
	struct loop_handler conn_h;
	int listen_fd;
	int conn_fd; /* the one hand-over in progress */
	bool sent; /* listeners sent, READY awaited */
	bool handed_over;
	char path[CONFIG_SOCKET_PATH_MAX];
	dev_t dev; /* the socket file we bound: removed at exit only if still ours */
	ino_t ino;
	void (*on_handover)(void);
} srv = { .listen_fd = -1, .conn_fd = -1 };

/* The new kfwd's side: the connection to the old one, and the listeners received from it
 * (apart, so that the fd's -1 does not put the arrays in the binary's initialised data). */
static struct {
	int fd;
	size_t n;
} cli = { .fd = -1 };
static int cli_fds[UPGRADE_MAX_FDS];
static struct sockaddr_any cli_addrs[UPGRADE_MAX_FDS];

static void conn_close(void)
{
	if (srv.conn_fd < 0)
		return;
	loop_del(srv.conn_fd);
	close(srv.conn_fd);
	srv.conn_fd = -1;
	srv.sent = false;
}

static int send_text(int fd, const char *text, const int *fds, size_t nfds)
{
	char cbuf[CMSG_SPACE(sizeof(int) * UPGRADE_MAX_FDS)] = { 0 };
	struct iovec iov = { .iov_base = (void *)text, .iov_len = strlen(text) };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };

	if (nfds) {
		struct cmsghdr *c;

		msg.msg_control = cbuf;
		msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
		c = CMSG_FIRSTHDR(&msg);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
		memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
	}
	return sendmsg(fd, &msg, MSG_NOSIGNAL) < 0 ? -1 : 0;
}

/* Every listening socket this process accepts on: listen lines, then metrics-listen. */
static size_t collect_listeners(int *fds, size_t max)
{
	size_t n = listeners_fds(fds, max);
	int m = metrics_listen_fd();

	if (m >= 0 && n < max)
		fds[n++] = m;
	return n;
}

static void on_conn(struct loop_handler *h, uint32_t events)
{
	char buf[UPGRADE_MSG_MAX + 1];
	int fds[UPGRADE_MAX_FDS];
	ssize_t n = recv(srv.conn_fd, buf, sizeof(buf) - 1, MSG_DONTWAIT);
	size_t nfds;

	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		log_warn("upgrade: the new kfwd went away%s; still serving",
			 srv.sent ? " before it was ready" : "");
		conn_close();
		return;
	}
	buf[n] = '\0';
	if (!srv.sent && !strcmp(buf, UPGRADE_HELLO)) {
		char text[UPGRADE_MSG_MAX];

		nfds = collect_listeners(fds, UPGRADE_MAX_FDS);
		snprintf(text, sizeof(text), "LISTENERS %zu", nfds);
		if (send_text(srv.conn_fd, text, fds, nfds) < 0) {
			log_warn("upgrade: sending the listening sockets: %m");
			conn_close();
			return;
		}
		srv.sent = true;
		log_info("upgrade: %zu listening sockets sent to the new kfwd", nfds);
		return;
	}
	if (srv.sent && !strcmp(buf, UPGRADE_READY)) {
		int fd = srv.conn_fd;

		log_info("upgrade: the new kfwd is ready: handing over");
		/* The hand-over closes everything of ours, this connection excepted: it answers. */
		loop_del(fd);
		srv.conn_fd = -1;
		srv.handed_over = true;
		srv.on_handover();
		upgrade_close();
		if (send_text(fd, UPGRADE_RELEASED, NULL, 0) < 0)
			log_warn("upgrade: confirming the hand-over: %m");
		close(fd);
		return;
	}
	log_warn("upgrade: unexpected message from the new kfwd; dropping the connection");
	conn_close();
}

static void on_listen(struct loop_handler *h, uint32_t events)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);
	int fd = accept4(srv.listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

	if (fd < 0)
		return;
	/* The listening sockets are root's to give: only root may take them. */
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 || cred.uid != 0) {
		log_warn("upgrade: refusing a hand-over to uid %d (pid %d): root only",
			 (int)cred.uid, (int)cred.pid);
		close(fd);
		return;
	}
	if (srv.conn_fd >= 0) {
		log_warn("upgrade: pid %d asks while another hand-over is in progress",
			 (int)cred.pid);
		close(fd);
		return;
	}
	srv.conn_fd = fd;
	srv.conn_h.on_event = on_conn;
	if (loop_add(fd, EPOLLIN, &srv.conn_h) < 0) {
		close(fd);
		srv.conn_fd = -1;
		return;
	}
	log_info("upgrade: pid %d takes over", (int)cred.pid);
}

/* The directory, like ctl-socket-file's: root's and writable by nobody else, since a socket
 * there that is not ours would be handed a new kfwd's trust. */
static int check_dir(const char *path)
{
	char dir[CONFIG_SOCKET_PATH_MAX];
	char *slash;
	struct stat st;

	snprintf(dir, sizeof(dir), "%s", path);
	slash = strrchr(dir, '/');
	if (!slash || slash == dir) {
		log_err("upgrade-socket %s: want an absolute path inside a directory", path);
		return -1;
	}
	*slash = '\0';
	if (mkdir(dir, UPGRADE_DIR_MODE) < 0 && errno != EEXIST) {
		log_err("upgrade-socket: mkdir %s: %m", dir);
		return -1;
	}
	if (lstat(dir, &st) < 0 || !S_ISDIR(st.st_mode) || st.st_uid != geteuid() ||
	    (st.st_mode & 022)) {
		log_err("upgrade-socket: %s must be a directory owned by uid %u and writable by "
			"nobody else",
			dir, (unsigned int)geteuid());
		return -1;
	}
	return 0;
}

bool upgrade_handed_over(void)
{
	return srv.handed_over;
}

int upgrade_listen(const struct config *cfg, void (*on_handover)(void))
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	struct stat st;

	srv.on_handover = on_handover;
	if (!cfg->upgrade_socket[0])
		return 0;
	if (check_dir(cfg->upgrade_socket) < 0)
		return -1;
	snprintf(srv.path, sizeof(srv.path), "%s", cfg->upgrade_socket);
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", srv.path);
	srv.listen_fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (srv.listen_fd < 0) {
		log_err("upgrade-socket: socket: %m");
		return -1;
	}
	/* A socket left by an earlier kfwd, or the one we are replacing (which no longer needs
	 * its path: it is handing over). */
	if (unlink(srv.path) < 0 && errno != ENOENT) {
		log_err("upgrade-socket: unlink %s: %m", srv.path);
		goto fail;
	}
	if (bind(srv.listen_fd, (struct sockaddr *)&sun, sizeof(sun)) < 0 ||
	    chmod(srv.path, UPGRADE_SOCKET_MODE) < 0 || lstat(srv.path, &st) < 0 ||
	    listen(srv.listen_fd, 1) < 0) {
		log_err("upgrade-socket %s: %m", srv.path);
		goto fail;
	}
	srv.dev = st.st_dev;
	srv.ino = st.st_ino;
	srv.listen_h.on_event = on_listen;
	if (loop_add(srv.listen_fd, EPOLLIN, &srv.listen_h) < 0)
		goto fail;
	log_info("upgrade socket: %s (kfwd -x %s takes over)", srv.path, srv.path);
	return 0;
fail:
	close(srv.listen_fd);
	srv.listen_fd = -1;
	return -1;
}

void upgrade_close(void)
{
	struct stat st;

	conn_close();
	if (srv.listen_fd < 0)
		return;
	loop_del(srv.listen_fd);
	close(srv.listen_fd);
	srv.listen_fd = -1;
	/* After a hand-over the path is the new kfwd's (and it may have bound its own there);
	 * after `user` the directory is root's and the socket stays for the next start. */
	if (srv.handed_over || lstat(srv.path, &st) < 0 || st.st_dev != srv.dev ||
	    st.st_ino != srv.ino)
		return;
	if (unlink(srv.path) < 0 && errno != ENOENT && errno != EACCES)
		log_warn("upgrade-socket: unlink %s: %m", srv.path);
}

/* ------------------------------------------------------------------ the new kfwd */

static int recv_msg(char *buf, size_t len, int *fds, size_t *nfds)
{
	char cbuf[CMSG_SPACE(sizeof(int) * UPGRADE_MAX_FDS)];
	struct iovec iov = { .iov_base = buf, .iov_len = len - 1 };
	struct msghdr msg = { .msg_iov = &iov,
			      .msg_iovlen = 1,
			      .msg_control = cbuf,
			      .msg_controllen = sizeof(cbuf) };
	ssize_t n = recvmsg(cli.fd, &msg, MSG_CMSG_CLOEXEC);

	if (nfds)
		*nfds = 0;
	if (n <= 0) {
		if (n == 0)
			errno = ECONNRESET;
		return -1;
	}
	buf[n] = '\0';
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
		size_t k;

		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		if (!nfds) {
			int tmp[UPGRADE_MAX_FDS];

			memcpy(tmp, CMSG_DATA(c), k * sizeof(int));
			for (size_t i = 0; i < k; i++)
				close(tmp[i]);
			continue;
		}
		memcpy(fds + *nfds, CMSG_DATA(c), k * sizeof(int));
		*nfds += k;
	}
	if (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
		errno = EMSGSIZE;
		return -1;
	}
	return 0;
}

int upgrade_takeover(const char *path, const struct config *cfg)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	struct timeval tv = { .tv_sec = UPGRADE_TIMEOUT_S };
	struct ucred cred;
	socklen_t len = sizeof(cred);
	char buf[UPGRADE_MSG_MAX + 1];
	size_t announced;

	listen_set_inherited(upgrade_take_listener);
	if (strlen(path) >= sizeof(sun.sun_path)) {
		log_err("-x %s: path too long", path);
		return -1;
	}
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
	cli.fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (cli.fd < 0 || setsockopt(cli.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0 ||
	    setsockopt(cli.fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0 ||
	    connect(cli.fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
		log_err("-x %s: no running kfwd to take over from: %m", path);
		goto fail;
	}
	/* Only a kfwd as root, or as the configured user, may hand us sockets to serve on. */
	if (getsockopt(cli.fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 ||
	    (cred.uid != 0 && !(cfg->has_user && cred.uid == cfg->run_uid))) {
		log_err("-x %s: held by uid %d (pid %d), not by kfwd: refusing", path,
			(int)cred.uid, (int)cred.pid);
		goto fail;
	}
	if (send_text(cli.fd, UPGRADE_HELLO, NULL, 0) < 0 ||
	    recv_msg(buf, sizeof(buf), cli_fds, &cli.n) < 0) {
		log_err("-x %s: the running kfwd (pid %d) did not answer: %m", path, (int)cred.pid);
		goto fail;
	}
	if (sscanf(buf, "LISTENERS %zu", &announced) != 1 || announced != cli.n) {
		log_err("-x %s: unexpected answer from pid %d", path, (int)cred.pid);
		goto fail;
	}
	for (size_t i = 0; i < cli.n; i++) {
		cli_addrs[i].len = sizeof(cli_addrs[i].ss);
		if (getsockname(cli_fds[i], (struct sockaddr *)&cli_addrs[i].ss,
				&cli_addrs[i].len) < 0)
			cli_addrs[i].len = 0;
	}
	log_info("upgrade: took %zu listening sockets from pid %d", cli.n, (int)cred.pid);
	return 0;
fail:
	upgrade_takeover_done();
	return -1;
}

int upgrade_take_listener(const struct sockaddr_any *addr)
{
	for (size_t i = 0; i < cli.n; i++) {
		int fd = cli_fds[i];

		if (fd < 0 || !cli_addrs[i].len || !sockaddr_equal(&cli_addrs[i], addr))
			continue;
		cli_fds[i] = -1;
		return fd;
	}
	return -1;
}

int upgrade_ready(void)
{
	char buf[UPGRADE_MSG_MAX + 1];

	if (cli.fd < 0)
		return 0;
	if (send_text(cli.fd, UPGRADE_READY, NULL, 0) < 0 ||
	    recv_msg(buf, sizeof(buf), NULL, NULL) < 0 || strcmp(buf, UPGRADE_RELEASED)) {
		log_err("upgrade: the old kfwd did not confirm the hand-over: %m");
		return -1;
	}
	log_info("upgrade: the old kfwd stopped accepting and drains its connections");
	return 0;
}

void upgrade_takeover_done(void)
{
	for (size_t i = 0; i < cli.n; i++)
		if (cli_fds[i] >= 0)
			close(cli_fds[i]);
	cli.n = 0;
	if (cli.fd >= 0)
		close(cli.fd);
	cli.fd = -1;
}
