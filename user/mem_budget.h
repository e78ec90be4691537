/* SPDX-License-Identifier: GPL-2.0 */
#ifndef KFWD_MEM_BUDGET_H
#define KFWD_MEM_BUDGET_H

#include <stdbool.h>
#include <stdint.h>

/*
 * max-memory: one budget for the bytes kfwd holds in flight (pipe fill, copy buffers, the
 * socket buffers it sizes, sockmap caps). Owners of such bytes hold a charge; the sum of the
 * charges and the number of charged flows give each flow its fair share.
 */

/* The least a flow is allowed whatever the number of flows: one 64 KiB loopback skb. */
#define MEM_BUDGET_FLOOR (64u * 1024)

struct mem_charge {
	uint64_t bytes;
	bool on; /* counted in mem_budget.flows */
};

struct mem_budget {
	uint64_t budget; /* max-memory; 0: no budget */
	uint64_t held; /* the sum of the charges */
	uint64_t flows; /* the charges */
	bool squeeze; /* a flow below the fair share was refused room: those above it shrink */
};

extern struct mem_budget mem_budget;

void mem_budget_configure(uint64_t budget);

static inline bool mem_budget_on(void)
{
	return mem_budget.budget != 0;
}

/* budget / flows, never below MEM_BUDGET_FLOOR; the budget itself when nothing is charged. */
uint64_t mem_budget_fair_share(void);

/* Start, change and end a charge (idempotent for a charge that is off). */
void mem_budget_join(struct mem_charge *c, uint64_t bytes);
void mem_budget_update(struct mem_charge *c, uint64_t bytes);
void mem_budget_leave(struct mem_charge *c);

/* What the budget has left: budget - held, 0 once held reaches it. */
uint64_t mem_budget_free(void);

/*
 * The allowance a charge of @cur may grow to on its way to @want: @cur plus what the budget has
 * left at most, so a grant never takes the sum past the budget (the owner's charge must grow by
 * no more than its allowance does). Never less than @cur: shrinking is the owner's choice.
 */
uint64_t mem_budget_grant(uint64_t cur, uint64_t want);

/*
 * Should allowances above the fair share shrink? When the budget is exceeded (flows at the
 * floor), or nearly spent while a flow below its share was refused room.
 */
bool mem_budget_over(void);

#endif
