// SPDX-License-Identifier: GPL-2.0
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "loop.h"

#define LOOP_BATCH 256

struct deferred {
	void *ptr;
	void (*fn)(void *);
};

static int epfd = -1;
static bool stopping;

/* Timers live in a binary min-heap indexed from 1, so heap_index 0 means "not armed". */
static struct timer **heap;
static size_t heap_len, heap_cap;

static struct deferred *deferred;
static size_t deferred_len, deferred_cap;

uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int loop_init(void)
{
	epfd = epoll_create1(EPOLL_CLOEXEC);
	if (epfd < 0) {
		log_err("epoll_create1: %m");
		return -1;
	}
	return 0;
}

static void run_deferred(void)
{
	/* A deferred free may defer more; index, don't iterate a snapshot. */
	for (size_t i = 0; i < deferred_len; i++)
		deferred[i].fn(deferred[i].ptr);
	deferred_len = 0;
}

void loop_fini(void)
{
	run_deferred();
	free(deferred);
	deferred = NULL;
	deferred_cap = 0;
	free(heap);
	heap = NULL;
	heap_len = heap_cap = 0;
	if (epfd >= 0)
		close(epfd);
	epfd = -1;
}

int loop_reset_after_fork(void)
{
	/* The heap indexes from 1 (see above). */
	for (size_t i = 1; i <= heap_len; i++)
		heap[i]->heap_index = 0;
	heap_len = 0;
	deferred_len = 0; /* the parent frees its own */
	stopping = false;
	if (epfd >= 0)
		close(epfd);
	return loop_init();
}

int loop_add(int fd, uint32_t events, struct loop_handler *h)
{
	struct epoll_event ev = { .events = events, .data.ptr = h };

	if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		log_err("epoll_ctl add fd %d: %m", fd);
		return -1;
	}
	return 0;
}

int loop_mod(int fd, uint32_t events, struct loop_handler *h)
{
	struct epoll_event ev = { .events = events, .data.ptr = h };

	if (epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &ev) < 0) {
		log_err("epoll_ctl mod fd %d: %m", fd);
		return -1;
	}
	return 0;
}

void loop_del(int fd)
{
	/* Fails only if fd was never added; closing the fd would remove it anyway. */
	(void)epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL);
}

void loop_stop(void)
{
	stopping = true;
}

void loop_defer_free(void *ptr, void (*fn)(void *))
{
	if (deferred_len == deferred_cap) {
		size_t cap = deferred_cap ? deferred_cap * 2 : 64;
		struct deferred *d = realloc(deferred, cap * sizeof(*d));

		if (!d) {
			/* Out of memory: leaking is safer than a use-after-free. */
			log_err("deferred free: out of memory, leaking %p", ptr);
			return;
		}
		deferred = d;
		deferred_cap = cap;
	}
	deferred[deferred_len++] = (struct deferred){ ptr, fn };
}

static void heap_set(size_t i, struct timer *t)
{
	heap[i] = t;
	t->heap_index = i;
}

static void heap_up(size_t i)
{
	struct timer *t = heap[i];

	while (i > 1 && heap[i / 2]->deadline_ms > t->deadline_ms) {
		heap_set(i, heap[i / 2]);
		i /= 2;
	}
	heap_set(i, t);
}

static void heap_down(size_t i)
{
	struct timer *t = heap[i];

	for (;;) {
		size_t child = i * 2;

		if (child > heap_len)
			break;
		if (child < heap_len && heap[child + 1]->deadline_ms < heap[child]->deadline_ms)
			child++;
		if (heap[child]->deadline_ms >= t->deadline_ms)
			break;
		heap_set(i, heap[child]);
		i = child;
	}
	heap_set(i, t);
}

void timer_cancel(struct timer *t)
{
	size_t i = t->heap_index;
	struct timer *last;

	if (!i)
		return;
	t->heap_index = 0;
	last = heap[heap_len--];
	if (i > heap_len)
		return;
	heap_set(i, last);
	heap_up(i);
	heap_down(last->heap_index);
}

void timer_arm(struct timer *t, uint64_t delay_ms)
{
	timer_arm_at(t, now_ms() + delay_ms);
}

void timer_arm_at(struct timer *t, uint64_t expires)
{
	t->expires = expires;
	if (t->heap_index) {
		/* Later: run_timers() re-keys the entry when the old key comes up. Earlier: the
		 * entry moves up in place. */
		if (expires < t->deadline_ms) {
			t->deadline_ms = expires;
			heap_up(t->heap_index);
		}
		return;
	}
	t->deadline_ms = expires;
	if (heap_len + 1 >= heap_cap) {
		size_t cap = heap_cap ? heap_cap * 2 : 1024;
		struct timer **h = realloc(heap, cap * sizeof(*h));

		if (!h) {
			/* Without a timer the connection would never time out; the loop's
			 * periodic sweep is not there to save us, so fail loudly. */
			log_err("timer heap: out of memory");
			abort();
		}
		heap = h;
		heap_cap = cap;
	}
	heap_len++;
	heap_set(heap_len, t);
	heap_up(heap_len);
}

static int next_timeout_ms(void)
{
	uint64_t now;

	if (!heap_len)
		return -1;
	now = now_ms();
	if (heap[1]->deadline_ms <= now)
		return 0;
	if (heap[1]->deadline_ms - now > 60000)
		return 60000;
	return (int)(heap[1]->deadline_ms - now);
}

static void run_timers(void)
{
	uint64_t now = now_ms();

	while (heap_len && heap[1]->deadline_ms <= now) {
		struct timer *t = heap[1];

		if (t->expires > now) {
			/* Re-armed later since it was queued: its real deadline becomes the key. */
			t->deadline_ms = t->expires;
			heap_down(1);
			continue;
		}
		timer_cancel(t);
		t->on_expire(t);
	}
}

int loop_run(void)
{
	struct epoll_event events[LOOP_BATCH];

	while (!stopping) {
		int n = epoll_wait(epfd, events, LOOP_BATCH, next_timeout_ms());

		if (n < 0) {
			if (errno == EINTR)
				continue;
			log_err("epoll_wait: %m");
			return -1;
		}
		for (int i = 0; i < n; i++) {
			struct loop_handler *h = events[i].data.ptr;

			h->on_event(h, events[i].events);
		}
		run_deferred();
		run_timers();
		run_deferred();
	}
	return 0;
}
