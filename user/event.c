// SPDX-License-Identifier: GPL-2.0
/* The one event sink between the data path and the control plane (see event.h). */
#include "event.h"

kev_sink_fn kev_sink;

void kev_set_sink(kev_sink_fn fn)
{
	kev_sink = fn;
}
