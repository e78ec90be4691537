/* SPDX-License-Identifier: GPL-2.0 */
#ifndef KFWD_EVENT_H
#define KFWD_EVENT_H

/*
 * What the data path tells the control plane: plain event structs handed to one sink that the
 * control plane registers while somebody listens (kfwdctl monitor). The data path never calls
 * the control plane directly; with no sink an event costs one pointer test.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "stats.h"

enum kev_type {
	KEV_CONN_OPEN, /* client connection accepted */
	KEV_CONN_CLOSE, /* client connection closed */
	KEV_FLOW_PAUSE, /* a flow reached its high-water mark: source EPOLLIN off */
	KEV_FLOW_RESUME, /* a flow went below its low-water mark */
};

struct kev {
	enum kev_type type;
	uint64_t conn_id;
	const char *client; /* open, close: ADDR:PORT */
	const char *upstream; /* close: where the last request went, "" if nowhere */
	uint64_t bytes_up; /* close: client -> upstream */
	uint64_t bytes_down; /* close: upstream -> client */
	uint64_t duration_ms; /* close */
	uint32_t status; /* close: last response status, 0 before any */
	enum flow_dir dir; /* pause, resume */
	uint64_t level; /* pause, resume: bytes held by the flow */
	uint64_t pauses; /* pause, resume: the flow's pause count */
};

typedef void (*kev_sink_fn)(const struct kev *ev);

extern kev_sink_fn kev_sink;

/* Register @fn (NULL: nobody listens; events are then not even built). */
void kev_set_sink(kev_sink_fn fn);
/* @fn hears when somebody starts or stops listening (a master tells its workers, workers.c). */
void kev_on_sink_change(void (*fn)(bool listening));

static inline bool kev_listening(void)
{
	return kev_sink != NULL;
}

static inline void kev_emit(const struct kev *ev)
{
	if (kev_sink)
		kev_sink(ev);
}

#endif
