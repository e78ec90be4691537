// SPDX-License-Identifier: GPL-2.0
#include "stats.h"

struct kfwd_stats stats;
