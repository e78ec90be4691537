/* SPDX-License-Identifier: GPL-2.0 */
#ifndef KFWD_SD_NOTIFY_H
#define KFWD_SD_NOTIFY_H

/*
 * systemd's service notification (sd_notify(3)) without libsystemd: one datagram per state
 * change to the AF_UNIX socket named by $NOTIFY_SOCKET. Without that variable every call does
 * nothing, so kfwd behaves the same outside systemd.
 */

/* Reads and unsets $NOTIFY_SOCKET; opens the sending socket. 0, or -1 (logged) if unusable. */
int sd_notify_init(void);
void sd_notify_fini(void);

/* Listeners, BPF and control socket are up (also: a reload ended, successful or not). */
void sd_notify_ready(void);
/* A reload starts; carries MONOTONIC_USEC=, which systemd >= 253 requires with RELOADING=1. */
void sd_notify_reloading(void);
/* Shutdown (the drain) starts. */
void sd_notify_stopping(void);

#endif
