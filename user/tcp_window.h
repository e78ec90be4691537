/* SPDX-License-Identifier: GPL-2.0 */
#ifndef KFWD_TCP_WINDOW_H
#define KFWD_TCP_WINDOW_H

#include <stdbool.h>
#include <stdint.h>

/*
 * tcp-user-timeout held back from a peer that is alive but keeps its receive window shut (a
 * paused player): see tcp_window.c. One per watched socket, zeroed to start.
 */
struct tcp_window {
	bool suspended; /* TCP_USER_TIMEOUT is 0 on the socket now */
	uint64_t bytes_out; /* what had been written to the socket at the last check */
	uint64_t next_check_ms;
};

/* Due at w->next_check_ms (0: now): suspend the option on @fd while its peer holds the window
 * shut, put it back once the window is open; schedules the next check. */
void tcp_window_check(struct tcp_window *w, int fd, uint64_t user_timeout_ms, uint64_t bytes_out);
/* Bytes were written to @fd (@bytes_out in all): if the window opened, the option is back. */
void tcp_window_progress(struct tcp_window *w, int fd, uint64_t user_timeout_ms,
			 uint64_t bytes_out);

#endif
