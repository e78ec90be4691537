// SPDX-License-Identifier: GPL-2.0
/*
 * libFuzzer target for the control protocol parser (user/common_ctl.c), the code both the
 * daemon (requests from any local user) and kfwdctl (answers) run on every datagram before
 * anything else looks at it. The input is one datagram; every message in it is parsed and
 * every attribute the policies accept is then read the way the two programs read them.
 *
 *   make fuzz            builds with clang -fsanitize=fuzzer,address,undefined and runs it
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <libmnl/libmnl.h>

#include "common_ctl.h"

static volatile uint64_t sink;

static void walk(const struct nlattr *nest, const struct kctl_set *set, int depth);

static void use(const struct nlattr *a, const struct kctl_policy *pol, int depth)
{
	switch (pol->type) {
	case KCTL_U8:
		sink += mnl_attr_get_u8(a);
		break;
	case KCTL_U32:
		sink += mnl_attr_get_u32(a);
		break;
	case KCTL_U64:
		sink += mnl_attr_get_u64(a);
		break;
	case KCTL_STR: {
		const char *s = mnl_attr_get_str(a);

		sink += strlen(s) + kctl_token_ok(s) + (kctl_setting_find(s) != NULL);
		break;
	}
	case KCTL_NEST:
		walk(a, pol->nest, depth + 1);
		break;
	default:
		break;
	}
}

static void walk(const struct nlattr *nest, const struct kctl_set *set, int depth)
{
	const struct nlattr *tb[KCTL_SET_TYPES_MAX], *a;

	if (depth > KFWD_CTL_MAX_DEPTH)
		abort(); /* the parser must have refused this */
	kctl_parse_nested(nest, set, tb);
	for (unsigned int t = 1; t <= set->max; t++)
		if (tb[t])
			use(tb[t], &set->attrs[t], depth);
	/* Repeated attributes are read by iterating, as kfwdctl and the daemon do. */
	mnl_attr_for_each_nested(a, nest)
	{
		unsigned int t = mnl_attr_get_type(a);

		if (t <= set->max && set->attrs[t].multi)
			use(a, &set->attrs[t], depth);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* An exact-size heap copy, so reading one byte too far is caught. */
	void *buf = malloc(size ? size : 1);
	const struct nlmsghdr *nlh;
	struct kctl_err err;
	const void *pos;
	size_t rem;

	if (!buf)
		return 0;
	memcpy(buf, data, size);
	pos = buf;
	rem = size;
	while ((nlh = kctl_next_msg(&pos, &rem, &err))) {
		struct kctl_msg m;

		if (kctl_msg_parse(nlh, &m, &err) != KCTL_PARSE_OK) {
			sink += strlen(err.msg);
			continue;
		}
		sink += kctl_cmd_name(nlh->nlmsg_type)[0];
		if (m.ext_msg)
			sink += strlen(m.ext_msg);
		for (unsigned int t = 1; t <= KFWD_A_MAX; t++)
			if (m.tb[t])
				use(m.tb[t], &kctl_top.attrs[t], 0);
	}
	free(buf);
	return 0;
}
