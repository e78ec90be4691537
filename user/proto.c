// SPDX-License-Identifier: GPL-2.0
/* The table of protocols a listener may speak, by their listen keyword. */
#include <stdio.h>
#include <string.h>

#include "http1.h"
#include "proto.h"
#include "rtsp.h"
#include "util.h"

static const struct proto_ops *const protocols[] = {
	&http1_ops,
	&rtsp_ops,
};

const struct proto_ops *proto_find(const char *name)
{
	for (size_t i = 0; i < ARRAY_LEN(protocols); i++)
		if (!strcmp(protocols[i]->name, name))
			return protocols[i];
	return NULL;
}

int proto_check_config(const struct config *cfg, char *err, size_t errlen)
{
	for (size_t i = 0; i < cfg->n_listens; i++) {
		const struct listen_addr *l = &cfg->listens[i];

		if (proto_find(l->proto))
			continue;
		if (l->from_args)
			snprintf(err, errlen, "-l %s: unknown protocol '%s'", l->text, l->proto);
		else
			snprintf(err, errlen,
				 "%s:%d: listen: unknown protocol '%s' (known: http, rtsp)",
				 cfg->path ? cfg->path : "<embedded>", l->line, l->proto);
		return -1;
	}
	return 0;
}
