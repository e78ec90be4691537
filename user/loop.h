/* SPDX-License-Identifier: GPL-2.0 */
#ifndef KFWD_LOOP_H
#define KFWD_LOOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * The one epoll event loop. Every fd registers a handler; the loop calls it with the epoll event
 * mask. Level-triggered throughout: interest masks are changed explicitly (backpressure turns
 * EPOLLIN off and on), and a handler that leaves readable data unread must drop EPOLLIN.
 */
struct loop_handler {
	void (*on_event)(struct loop_handler *h, uint32_t events);
};

/*
 * Re-arming later is lazy: only @expires moves, and the heap entry, still keyed by the earlier
 * @deadline_ms, is re-keyed when it comes up. A session re-arms its timer several times per
 * request (exchange, response, keep-alive); this costs no heap work for any of them.
 */
struct timer {
	uint64_t deadline_ms; /* heap key: <= expires */
	uint64_t expires; /* when it fires */
	size_t heap_index; /* 0 when not armed */
	void (*on_expire)(struct timer *t);
};

int loop_init(void);
void loop_fini(void);
/*
 * In a child after fork(): an epoll instance of its own (the parent's is shared by the fd), no
 * timers armed (they are the parent's copies) and no deferred frees. Handlers must be added
 * again. Returns -1 (logged) if epoll_create1 failed.
 */
int loop_reset_after_fork(void);
int loop_add(int fd, uint32_t events, struct loop_handler *h);
int loop_mod(int fd, uint32_t events, struct loop_handler *h);
void loop_del(int fd);

/* Run until loop_stop(); returns 0, or -1 if epoll_wait failed. */
int loop_run(void);
void loop_stop(void);

uint64_t now_ms(void);
void timer_arm(struct timer *t, uint64_t delay_ms);
/* At @expires (now_ms() time): timers armed for the same instant fire in one wake-up. */
void timer_arm_at(struct timer *t, uint64_t expires);
void timer_cancel(struct timer *t);
static inline bool timer_armed(const struct timer *t)
{
	return t->heap_index != 0;
}

/*
 * Free @ptr with @fn once the current batch of events is dispatched: epoll may still hold an
 * event for an object closed earlier in the same batch.
 */
void loop_defer_free(void *ptr, void (*fn)(void *));

#endif
