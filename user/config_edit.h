/* SPDX-License-Identifier: GPL-2.0 */
#ifndef KFWD_CONFIG_EDIT_H
#define KFWD_CONFIG_EDIT_H

/*
 * Editing the text of a configuration, for the control socket's runtime changes: pure
 * functions on strings (no I/O, no configuration structures). The running configuration keeps
 * the text it was parsed from; a change is that text edited (a route line appended or
 * commented out, a directive set) and parsed again. Lines added at runtime follow
 * CONFIG_EDIT_MARKER, so a reload (the file again) drops them.
 */
#include <stdbool.h>
#include <stddef.h>

#define CONFIG_EDIT_MARKER "# ---- kfwdctl: runtime changes below, dropped on reload ----"
#define CONFIG_EDIT_DELETED "# deleted by kfwdctl: "

/* One change to a configuration text. */
struct config_edit {
	int del_line; /* 1-based; 0: none. From the file: commented out; runtime: dropped */
	const char *const *drop_keys; /* earlier runtime lines of these directives go */
	size_t n_drop;
	const char *append; /* lines (each ending in '\n') added at the end of the runtime part */
};

/* The first runtime line of @text (after the marker), or NULL when it has no marker. */
const char *config_edit_runtime_start(const char *text);
/* How many lines of @text come from the file (the marker included). */
int config_edit_base_lines(const char *text);
/* The runtime lines of @text that are not blank and not comments. */
unsigned int config_edit_runtime_changes(const char *text);
/* Step *@p over one line: @line/@len without its '\n'. False at the end of the text. */
bool config_edit_next_line(const char **p, const char **line, size_t *len);
/* The first word of the @len bytes at @line (after blanks) equals @word. */
bool config_edit_first_word_is(const char *line, size_t len, const char *word);
/* The line @no (1-based) of @text into @out (cut to @outlen); false if there is none. */
bool config_edit_line(const char *text, int no, char *out, size_t outlen);
/*
 * @text with @e applied, the marker added if it had none: a string to free(), or NULL when
 * memory runs out. Every line of the result ends in '\n'.
 */
char *config_edit_text(const char *text, const struct config_edit *e);
/*
 * The words of a route line after `route PREFIX TARGET` up to a comment, separated by one
 * space, into @out (cut to @outlen; "" when there are none); credentials (auth=USER:PASS)
 * shown as auth=***.
 */
void config_edit_route_options(const char *line, char *out, size_t outlen);
/*
 * A parser error @err about @text (parsed as file @path) for a human: an error on a line added
 * at runtime loses its "PATH:LINE: " (that line is not in the file); any other is copied.
 */
void config_edit_explain_error(const char *err, const char *path, const char *text, char *out,
			       size_t outlen);

#endif
