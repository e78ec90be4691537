// SPDX-License-Identifier: GPL-2.0
/* Unit tests of the event loop's timers (lazy re-arming) and of the small-buffer pool. */
#include <string.h>

#include "buf.h"
#include "loop.h"
#include "unit.h"

#define TIMERS 4

struct fired {
	struct timer t;
	int id;
	uint64_t at_ms;
};

static int order[TIMERS], n_fired;
static uint64_t fired_at[TIMERS];

static void on_fire(struct timer *t)
{
	struct fired *f = (struct fired *)t;

	f->at_ms = now_ms();
	fired_at[n_fired] = f->at_ms;
	order[n_fired++] = f->id;
	if (n_fired == TIMERS)
		loop_stop();
}

/* Re-arming later must delay the timer; earlier must advance it; the order must hold. */
static void test_timer_rearm(void)
{
	struct fired f[TIMERS];
	uint64_t start;

	memset(f, 0, sizeof(f));
	for (int i = 0; i < TIMERS; i++) {
		f[i].id = i;
		f[i].t.on_expire = on_fire;
	}
	CHECK(loop_init() == 0);
	start = now_ms();
	timer_arm(&f[0].t, 40);
	timer_arm(&f[1].t, 20);
	timer_arm(&f[1].t, 120); /* later: lazy, must not fire at 20 ms */
	timer_arm(&f[2].t, 10);
	timer_arm(&f[3].t, 1000);
	timer_arm(&f[3].t, 60); /* earlier: moves up in place */
	timer_arm(&f[2].t, 80); /* later again */
	CHECK(loop_run() == 0);
	CHECK(n_fired == TIMERS);
	CHECK(order[0] == 0 && order[1] == 3 && order[2] == 2 && order[3] == 1);
	CHECK(f[0].at_ms - start >= 40);
	CHECK(f[3].at_ms - start >= 60 && f[3].at_ms - start < 1000);
	CHECK(f[2].at_ms - start >= 80);
	CHECK(f[1].at_ms - start >= 120);
	for (int i = 0; i < TIMERS; i++)
		CHECK(!timer_armed(&f[i].t));
	loop_fini();
}

/* An emptied first-size buffer is reused by the next one; a grown one still works. */
static void test_buf_pool(void)
{
	struct buf a = { 0 }, b = { 0 };
	char *first;

	CHECK(buf_append(&a, "x", 1) == 0);
	first = a.data;
	buf_free(&a);
	CHECK(a.data == NULL && a.size == 0);
	CHECK(buf_append(&b, "y", 1) == 0);
	CHECK(b.data == first);
	CHECK(buf_reserve(&b, 10000, (size_t)-1) == 0 && b.size >= 10001);
	CHECK(buf_len(&b) == 1 && buf_start(&b)[0] == 'y');
	buf_consume(&b, 1);
	buf_release_small(&b); /* not the pooled size: kept */
	CHECK(b.data != NULL);
	buf_free(&b);
}

void unit_loop(void)
{
	test_timer_rearm();
	test_buf_pool();
}
