/* SPDX-License-Identifier: GPL-2.0 */
#ifndef KFWD_RETRY_H
#define KFWD_RETRY_H

/*
 * The retry policy of a route: whether a failed attempt may be sent again, and how long to wait
 * first. Pure functions of the route and what happened (no session, no clock, no I/O).
 */
#include <stdbool.h>
#include <stdint.h>

#include "config.h"

enum retry_trigger {
	TRIGGER_CONNECT, /* refused or timed out: nothing reached the server */
	TRIGGER_EMPTY, /* closed or reset before any response byte */
	TRIGGER_5XX,
	TRIGGER_TIMEOUT, /* no response head in time */
};

/* What the policy needs to know of the request and of the attempts so far. */
struct retry_attempt {
	unsigned int attempts; /* retries already done */
	unsigned int method; /* llhttp method */
	bool has_body; /* a request body was (being) forwarded: it cannot be sent again */
	bool response_started; /* something of a response (interim included) went to the client */
	bool draining; /* SIGTERM: no new attempts */
};

/* RFC 9110 §9.2.2 */
bool http_method_idempotent(unsigned int method);
/* May the request be retried after @trigger under route @r (NULL: never)? */
bool retry_allowed(const struct route *r, enum retry_trigger trigger,
		   const struct retry_attempt *a);
/* The upper bound of the wait before retry number @attempts (1 for the first):
 * retry-backoff doubled per earlier retry, at most retry-backoff-max. */
uint64_t retry_backoff_ceiling(const struct route *r, unsigned int attempts);
/* Full jitter: @rnd (any random number) mapped uniformly into [0, @ceiling]. */
uint64_t retry_backoff_pick(uint64_t ceiling, uint64_t rnd);

#endif
