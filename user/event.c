// SPDX-License-Identifier: GPL-2.0
/* The one event sink between the data path and the control plane (see event.h). */
#include "event.h"

kev_sink_fn kev_sink;
static void (*sink_changed)(bool listening);

void kev_on_sink_change(void (*fn)(bool listening))
{
	sink_changed = fn;
}

void kev_set_sink(kev_sink_fn fn)
{
	bool was = kev_sink != NULL;

	kev_sink = fn;
	if (sink_changed && was != (fn != NULL))
		sink_changed(fn != NULL);
}
