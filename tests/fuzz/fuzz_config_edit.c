// SPDX-License-Identifier: GPL-2.0
/*
 * libFuzzer target for the configuration text editing of runtime changes (user/config_edit.c).
 * The first byte picks the line to delete (0: none; a route line only, as route del), the second which directives a set drops
 * and whether lines are appended; the rest is the configuration text. Invariants: the result
 * has the runtime marker, every line of it ends in '\n', it ends with the appended lines, a
 * line of the file stays a line (deleted ones commented out), the runtime changes of the
 * result are those of the text minus the dropped or deleted ones plus the appended ones, and
 * the line and option accessors stay inside their buffers.
 */
#include "fuzz_common.h"

#include "config_edit.h"

#define LINE_OUT 64 /* small, so long lines get cut */

static const char *const keys[] = { "log-level", "route", "upstream", "#" };
static const char *const appends[] = { "", "log-level debug\n", "route /z u\nlog-level info\n" };

static unsigned int lines_of(const char *s)
{
	unsigned int n = 0;

	for (; *s; s++)
		n += *s == '\n';
	return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *drop[sizeof(keys) / sizeof(keys[0])];
	struct config_edit e = { 0 };
	char *text, *out, line[LINE_OUT], opts[LINE_OUT], err[LINE_OUT];
	size_t n_drop = 0, alen, olen;
	const char *rt;

	if (size < 2)
		return 0;
	e.del_line = data[0] % 8;
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		if (data[1] & (1u << i))
			drop[n_drop++] = keys[i];
	e.drop_keys = drop;
	e.n_drop = n_drop;
	e.append = appends[(data[1] >> 4) % (sizeof(appends) / sizeof(appends[0]))];
	text = malloc(size - 1); /* the rest, NUL-terminated (an inner NUL ends it early) */
	if (!text)
		return 0;
	memcpy(text, data + 2, size - 2);
	text[size - 2] = '\0';
	/* As route del: only a route line is ever deleted. */
	if (e.del_line && (!config_edit_line(text, e.del_line, line, sizeof(line)) ||
			   !config_edit_first_word_is(line, strlen(line), "route")))
		e.del_line = 0;

	out = config_edit_text(text, &e);
	FUZZ_CHECK(out);
	olen = strlen(out);
	alen = strlen(e.append);
	rt = config_edit_runtime_start(out);
	FUZZ_CHECK(rt);
	FUZZ_CHECK(!olen || out[olen - 1] == '\n');
	FUZZ_CHECK(olen >= alen && !strcmp(out + olen - alen, e.append));
	/* Without a marker before, every line of the text is the file's and is kept. */
	if (!config_edit_runtime_start(text)) {
		unsigned int in = lines_of(text) + (*text && text[strlen(text) - 1] != '\n');

		FUZZ_CHECK(lines_of(out) == in + 1 + lines_of(e.append));
		FUZZ_CHECK(config_edit_runtime_changes(out) == lines_of(e.append));
	}
	FUZZ_CHECK(config_edit_runtime_changes(out) <= lines_of(rt));

	for (int no = 0; no < 4; no++) {
		if (config_edit_line(out, no, line, sizeof(line))) {
			FUZZ_CHECK(no >= 1 && strlen(line) < sizeof(line) && !strchr(line, '\n'));
			config_edit_route_options(line, opts, sizeof(opts));
			FUZZ_CHECK(strlen(opts) < sizeof(opts));
			(void)config_edit_first_word_is(line, strlen(line), "route");
		}
	}
	config_edit_explain_error(text, "/etc/kfwd.conf", out, err, sizeof(err));
	FUZZ_CHECK(strlen(err) < sizeof(err));
	free(out);
	free(text);
	return 0;
}
