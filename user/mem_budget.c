// SPDX-License-Identifier: GPL-2.0
/*
 * The max-memory budget: the global sum of the charges of flows and sockmap directions, and
 * the fair share they shrink to when the sum reaches the budget. Pure accounting, no I/O:
 * each owner sizes its own buffers from what it is granted.
 */
#include "mem_budget.h"

struct mem_budget mem_budget;

void mem_budget_configure(uint64_t budget)
{
	mem_budget.budget = budget;
}

uint64_t mem_budget_fair_share(void)
{
	uint64_t share;

	if (!mem_budget.flows)
		return mem_budget.budget;
	share = mem_budget.budget / mem_budget.flows;
	return share < MEM_BUDGET_FLOOR ? MEM_BUDGET_FLOOR : share;
}

void mem_budget_join(struct mem_charge *c, uint64_t bytes)
{
	if (c->on) {
		mem_budget_update(c, bytes);
		return;
	}
	c->on = true;
	c->bytes = bytes;
	mem_budget.flows++;
	mem_budget.held += bytes;
}

void mem_budget_update(struct mem_charge *c, uint64_t bytes)
{
	if (!c->on)
		return;
	mem_budget.held = mem_budget.held - c->bytes + bytes;
	c->bytes = bytes;
}

void mem_budget_leave(struct mem_charge *c)
{
	if (!c->on)
		return;
	mem_budget.held -= c->bytes;
	mem_budget.flows--;
	c->bytes = 0;
	c->on = false;
}

uint64_t mem_budget_grant(const struct mem_charge *c, uint64_t cur, uint64_t want)
{
	uint64_t others = mem_budget.held - (c->on ? c->bytes : 0);
	uint64_t room = mem_budget.budget > others ? mem_budget.budget - others : 0;
	uint64_t limit = room > mem_budget_fair_share() ? room : mem_budget_fair_share();

	if (want > limit)
		want = limit;
	return want > cur ? want : cur;
}

bool mem_budget_over(void)
{
	return mem_budget_on() && mem_budget.held > mem_budget.budget;
}
