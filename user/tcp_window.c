// SPDX-License-Identifier: GPL-2.0
/*
 * tcp-user-timeout on a peer that pauses its reading. TCP_USER_TIMEOUT also ends a connection
 * whose peer keeps its receive window shut that long although it answers every probe: the
 * zero-window probes (Linux 5.11, "tcp: fix TCP_USER_TIMEOUT with zero window") and the
 * retransmissions that probe a window shut on a segment in flight (tcp_rtx_probe0_timed_out,
 * measured on 6.18: a loopback client with a 16 KiB receive buffer was cut 2.5 s after it
 * stopped reading, with 2 s). A paused player would be cut. RFC 1122 4.2.2.17 keeps such a
 * connection open while the peer answers, so this module suspends the option (0) while the
 * peer's last advertised window is zero, and puts it back once the window is open and nothing
 * is retransmitted or probed any more (the kernel's clocks then start afresh). It is checked
 * every half timeout (the kernel's clock starts when the window shuts: the check comes first)
 * and whenever bytes were written while it is suspended. A peer that vanishes while its
 * window is shut is left to the kernel's own rules (no answer for twice TCP_RTO_MAX, 240 s, or
 * tcp_retries2 unanswered probes) and to kfwd's idle timeouts.
 */
#include <linux/tcp.h> /* tcpi_snd_wnd (Linux 5.4), which glibc's struct tcp_info lacks */
#include <netinet/in.h>
#include <sys/socket.h>

#include "log.h"
#include "loop.h"
#include "tcp_window.h"

#define RTW_CHECKS_PER_TIMEOUT 2

static void set_user_timeout(int fd, uint64_t ms)
{
	unsigned int v = (unsigned int)ms;

	if (setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &v, sizeof(v)) < 0)
		log_debug("TCP_USER_TIMEOUT: %m");
}

/*
 * 1 when the peer's last advertised window is zero, 0 when it is open and no retransmission
 * or probe is outstanding (the kernel's clocks for the timeout start afresh), -1 otherwise
 * (an opening window whose first bytes are not acknowledged yet, or no answer).
 */
static int window_state(int fd)
{
	struct tcp_info ti;
	socklen_t len = sizeof(ti);

	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0)
		return -1;
	if (!ti.tcpi_snd_wnd)
		return 1;
	return !ti.tcpi_retransmits && !ti.tcpi_probes ? 0 : -1;
}

void tcp_window_check(struct tcp_window *w, int fd, uint64_t user_timeout_ms, uint64_t bytes_out)
{
	int st;

	w->next_check_ms = now_ms() + user_timeout_ms / RTW_CHECKS_PER_TIMEOUT;
	w->bytes_out = bytes_out;
	if (!user_timeout_ms || fd < 0)
		return;
	st = window_state(fd);
	if (st == 1 && !w->suspended) {
		set_user_timeout(fd, 0);
		w->suspended = true;
		log_debug("fd %d: window shut, tcp-user-timeout suspended", fd);
	} else if (st == 0 && w->suspended) {
		set_user_timeout(fd, user_timeout_ms);
		w->suspended = false;
		log_debug("fd %d: window open, tcp-user-timeout back", fd);
	}
}

void tcp_window_progress(struct tcp_window *w, int fd, uint64_t user_timeout_ms, uint64_t bytes_out)
{
	/* Bytes written may only have joined the unsent ones: the socket is asked. */
	if (w->suspended && bytes_out != w->bytes_out)
		tcp_window_check(w, fd, user_timeout_ms, bytes_out);
}
