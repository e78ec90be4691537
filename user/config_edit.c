// SPDX-License-Identifier: GPL-2.0
/*
 * Configuration text editing for runtime changes (config_edit.h): the marker that separates
 * the file's lines from the ones kfwdctl added, line access and the edit itself. Pure string
 * functions, unit-tested in tests/unit/unit_arch.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config_edit.h"

#define MARKER_LEN (sizeof(CONFIG_EDIT_MARKER) - 1)
#define DELETED_LEN (sizeof(CONFIG_EDIT_DELETED) - 1)
#define ROUTE_FIXED_WORDS 3 /* route PREFIX TARGET */
#define AUTH_OPTION "auth="
#define AUTH_OPTION_LEN (sizeof(AUTH_OPTION) - 1)
#define AUTH_SHOWN AUTH_OPTION "***"

const char *config_edit_runtime_start(const char *text)
{
	const char *m;

	if (!strncmp(text, CONFIG_EDIT_MARKER "\n", MARKER_LEN + 1))
		return text + MARKER_LEN + 1;
	m = strstr(text, "\n" CONFIG_EDIT_MARKER "\n");
	return m ? m + MARKER_LEN + 2 : NULL;
}

int config_edit_base_lines(const char *text)
{
	const char *rt = config_edit_runtime_start(text), *end = rt ? rt : text + strlen(text);
	int n = 0;

	for (const char *p = text; p < end; p++)
		n += *p == '\n';
	if (!rt && end > text && end[-1] != '\n')
		n++;
	return n;
}

bool config_edit_next_line(const char **p, const char **line, size_t *len)
{
	const char *nl;

	if (!**p)
		return false;
	nl = strchr(*p, '\n');
	*line = *p;
	*len = nl ? (size_t)(nl - *p) : strlen(*p);
	*p = nl ? nl + 1 : *p + *len;
	return true;
}

unsigned int config_edit_runtime_changes(const char *text)
{
	const char *rt = config_edit_runtime_start(text), *line;
	unsigned int n = 0;
	size_t len;

	if (!rt)
		return 0;
	while (config_edit_next_line(&rt, &line, &len))
		n += len > 0 && line[0] != '#';
	return n;
}

bool config_edit_first_word_is(const char *line, size_t len, const char *word)
{
	size_t i = 0, wl = strlen(word);

	while (i < len && (line[i] == ' ' || line[i] == '\t'))
		i++;
	return len - i >= wl && !strncmp(line + i, word, wl) &&
	       (i + wl == len || line[i + wl] == ' ' || line[i + wl] == '\t' ||
		line[i + wl] == '\r');
}

bool config_edit_line(const char *text, int no, char *out, size_t outlen)
{
	const char *p = text, *line;
	size_t len;

	for (int i = 1; config_edit_next_line(&p, &line, &len); i++) {
		if (i == no) {
			snprintf(out, outlen, "%.*s", (int)len, line);
			return true;
		}
	}
	return false;
}

static char *put(char *o, const void *s, size_t n)
{
	memcpy(o, s, n);
	return o + n;
}

char *config_edit_text(const char *text, const struct config_edit *e)
{
	const char *rt = config_edit_runtime_start(text), *p = text, *line;
	size_t append = e->append ? strlen(e->append) : 0, len;
	/* Every line gets its '\n' (+1 for a last one without), one line may get the deleted
	 * prefix, the marker may be added, then the appended lines and the NUL. */
	char *out = malloc(strlen(text) + 1 + DELETED_LEN + MARKER_LEN + 1 + append + 1), *o;
	int no = 0;

	if (!out)
		return NULL;
	o = out;
	while (config_edit_next_line(&p, &line, &len)) {
		bool runtime = rt && line >= rt, drop = false;

		no++;
		if (no == e->del_line) {
			if (!runtime) {
				o = put(o, CONFIG_EDIT_DELETED, DELETED_LEN);
				o = put(o, line, len);
				*o++ = '\n';
			}
			continue;
		}
		for (size_t i = 0; runtime && i < e->n_drop && !drop; i++)
			drop = config_edit_first_word_is(line, len, e->drop_keys[i]);
		if (!drop) {
			o = put(o, line, len);
			*o++ = '\n';
		}
	}
	if (!rt) {
		o = put(o, CONFIG_EDIT_MARKER, MARKER_LEN);
		*o++ = '\n';
	}
	o = put(o, e->append ? e->append : "", append);
	*o = '\0';
	return out;
}

void config_edit_route_options(const char *line, char *out, size_t outlen)
{
	const char *p = line;
	size_t used = 0;
	int word = 0;

	if (outlen)
		out[0] = '\0';
	for (;;) {
		size_t n;

		p += strspn(p, " \t\r");
		n = strcspn(p, " \t\r");
		if (!n || p[0] == '#')
			break;
		if (++word > ROUTE_FIXED_WORDS && used < outlen) {
			/* RTSP upstream credentials stay out of what ctl-group members may list. */
			bool secret = !strncmp(p, AUTH_OPTION, AUTH_OPTION_LEN);

			used += (size_t)snprintf(out + used, outlen - used, "%s%.*s",
						 used ? " " : "",
						 secret ? (int)strlen(AUTH_SHOWN) : (int)n,
						 secret ? AUTH_SHOWN : p);
		}
		p += n;
	}
}

void config_edit_explain_error(const char *err, const char *path, const char *text, char *out,
			       size_t outlen)
{
	size_t n = strlen(path);
	char *end;
	long line;

	if (strncmp(err, path, n) || err[n] != ':') {
		snprintf(out, outlen, "%s", err);
		return;
	}
	line = strtol(err + n + 1, &end, 10);
	if (end[0] != ':' || line <= config_edit_base_lines(text)) {
		snprintf(out, outlen, "%s", err);
		return;
	}
	snprintf(out, outlen, "%s", end[1] == ' ' ? end + 2 : end + 1);
}
