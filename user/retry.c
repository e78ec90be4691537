// SPDX-License-Identifier: GPL-2.0
/* The retry policy (see retry.h): pure, unit-tested in tests/unit/unit_arch.c. */
#include <llhttp.h>

#include "retry.h"

bool http_method_idempotent(unsigned int method)
{
	switch (method) {
	case HTTP_GET:
	case HTTP_HEAD:
	case HTTP_OPTIONS:
	case HTTP_TRACE:
	case HTTP_PUT:
	case HTTP_DELETE:
		return true;
	default:
		return false;
	}
}

bool retry_allowed(const struct route *r, enum retry_trigger trigger, const struct retry_attempt *a)
{
	static const unsigned int needs[] = {
		[TRIGGER_CONNECT] = RETRY_ON_CONNECT,
		[TRIGGER_EMPTY] = RETRY_ON_CONNECT,
		[TRIGGER_5XX] = RETRY_ON_5XX,
		[TRIGGER_TIMEOUT] = RETRY_ON_TIMEOUT,
	};

	if (!r || !(r->retry_on & needs[trigger]) || a->attempts >= r->retries)
		return false;
	/* Never once anything of a response went to the client. */
	if (a->response_started || a->draining)
		return false;
	if (trigger == TRIGGER_CONNECT)
		return true; /* the request never left: safe for every method */
	/* The server may have acted on it; and a body already forwarded cannot be sent again. */
	if (!http_method_idempotent(a->method) && !r->retry_non_idempotent)
		return false;
	return !a->has_body;
}

uint64_t retry_backoff_ceiling(const struct route *r, unsigned int attempts)
{
	uint64_t ceiling = r->retry_backoff_ms;

	for (unsigned int i = 1; i < attempts && ceiling < r->retry_backoff_max_ms; i++)
		ceiling *= 2;
	return ceiling > r->retry_backoff_max_ms ? r->retry_backoff_max_ms : ceiling;
}

uint64_t retry_backoff_pick(uint64_t ceiling, uint64_t rnd)
{
	return ceiling ? rnd % (ceiling + 1) : 0;
}
