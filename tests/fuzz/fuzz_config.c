// SPDX-License-Identifier: GPL-2.0
/*
 * libFuzzer target for the configuration parser (user/config.c): the text of a config file or
 * of a kfwdctl runtime change. Host names resolve only when numeric (fuzz_common.h). A parse
 * either fails with a "FILE:LINE: what" message or gives a configuration that frees cleanly.
 */
#include "fuzz_common.h"

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = malloc(size + 1);
	struct config *cfg;
	char err[512];

	if (!text)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	err[0] = '\0';
	cfg = config_load_text("fuzz.conf", text, NULL, 0, err, sizeof(err));
	if (cfg)
		config_free(cfg);
	else
		FUZZ_CHECK(!strncmp(err, "fuzz.conf", 9) || err[0]);
	free(text);
	return 0;
}
