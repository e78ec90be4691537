/* SPDX-License-Identifier: GPL-2.0 */
#ifndef KFWD_ACCESS_LOG_H
#define KFWD_ACCESS_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

/* One finished request, as the access log writes it. */
struct access_entry {
	uint64_t conn; /* the session id kfwdctl conn list shows */
	const char *client; /* address, no port */
	const char *method; /* NULL: no request head was parsed (400, 408, 431, 503...) */
	const char *target; /* as the client sent it; NULL with method */
	int status; /* 0: none went out (client gone, upstream failed mid-way) */
	uint64_t bytes_in; /* request bytes forwarded upstream, head included */
	uint64_t bytes_out; /* response bytes delivered to the client, head included */
	uint64_t duration_ms;
	const char *data_path; /* splice, copy, sockmap */
};

/*
 * Open what @cfg's access-log names (reopen it when it is the one open); close it for
 * access-log off. Called at start and on every new configuration. Returns -1 (logged) when the
 * file or socket cannot be opened; access lines are then dropped and counted.
 */
int access_log_configure(const struct config *cfg);
/* SIGUSR1 (logrotate): close and open the file again by its name. */
void access_log_reopen(void);
void access_log_close(void);
bool access_log_enabled(void);
void access_log_write(const struct access_entry *e);

#endif
