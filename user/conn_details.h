/* SPDX-License-Identifier: GPL-2.0 */
#ifndef KFWD_CONN_DETAILS_H
#define KFWD_CONN_DETAILS_H

/*
 * Per-connection details a protocol module or a transport adds to `kfwdctl conn list`
 * (RTSP session and frames, TLS version and cipher...) without the control plane knowing them:
 * the module fills "key=value" items, ctl_show.c sends each as one KFWD_CONN_DETAIL attribute, and
 * kfwdctl shows them as a "details" column / JSON object. Keys are lower-case words with '-'.
 */
#include <stdarg.h>
#include <stdio.h>

#define CONN_DETAILS_MAX 24
#define CONN_DETAIL_LEN 160

struct conn_details {
	unsigned int n;
	char item[CONN_DETAILS_MAX][CONN_DETAIL_LEN];
};

/* Add "KEY=VALUE" (VALUE from printf @fmt); silently ignored once the table is full. */
static inline __attribute__((format(printf, 3, 4))) void
conn_details_add(struct conn_details *d, const char *key, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (d->n >= CONN_DETAILS_MAX)
		return;
	n = snprintf(d->item[d->n], CONN_DETAIL_LEN, "%s=", key);
	if (n < 0 || n >= CONN_DETAIL_LEN)
		return;
	va_start(ap, fmt);
	vsnprintf(d->item[d->n] + n, CONN_DETAIL_LEN - (size_t)n, fmt, ap);
	va_end(ap);
	d->n++;
}

#endif
