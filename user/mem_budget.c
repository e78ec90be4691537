// SPDX-License-Identifier: GPL-2.0
/*
 * The max-memory budget: the global sum of the charges of flows and sockmap directions, what a
 * grant may add to it (never more than the budget has left), and the fair share allowances shrink
 * to when the budget runs short. Pure accounting, no I/O: each owner sizes its own buffers from
 * what it is granted.
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
	mem_budget.squeeze = false;
	c->bytes = 0;
	c->on = false;
}

uint64_t mem_budget_free(void)
{
	return mem_budget.held < mem_budget.budget ? mem_budget.budget - mem_budget.held : 0;
}

uint64_t mem_budget_grant(uint64_t cur, uint64_t want)
{
	uint64_t free = mem_budget_free();

	if (want <= cur)
		return cur;
	if (want - cur <= free) {
		if (cur < mem_budget_fair_share())
			mem_budget.squeeze = false;
		return want;
	}
	/* Below its share and refused: flows above theirs give back at their next step. */
	if (cur < mem_budget_fair_share())
		mem_budget.squeeze = true;
	return cur + free;
}

bool mem_budget_over(void)
{
	if (!mem_budget_on())
		return false;
	return mem_budget.held > mem_budget.budget ||
	       (mem_budget.squeeze && mem_budget_free() < MEM_BUDGET_FLOOR);
}
