/*
 * Which workspace paths the sync-worker skips: rules in gitignore syntax
 * (man gitignore, PATTERN FORMAT), from the built-in defaults and the
 * workspace's .atelierignore. Patterns are compiled once at load; matching
 * allocates nothing, as it runs for every changed path.
 *
 * Supported: blank lines, '#' comments, "\#" and "\!", trailing spaces (kept
 * when escaped), '!' negation (the last matching rule wins), trailing '/'
 * (directories only), anchoring by a leading or middle '/', '*', '?',
 * [...] with ranges, [!...] / [^...] and [:class:], "**" as a whole segment
 * (leading: any depth; middle: zero or more directories; trailing: all
 * inside), '\' escapes, CRLF line ends, a UTF-8 BOM.
 */
#ifndef ATELIER_IGNORE_H
#define ATELIER_IGNORE_H

#include <stddef.h>

#include "err.h"

#define AT_IGNORE_MAX_RULES 1024       /* rules in one set, all texts together */
#define AT_IGNORE_MAX_TEXT (64 * 1024) /* bytes of text read, all texts together */

typedef struct at_ignore at_ignore_t;

/* What the sync-worker starts from, before the workspace's .atelierignore. */
extern const char AT_IGNORE_DEFAULTS[];

/* A rule set from text (len bytes, gitignore syntax; NULL = no rules). Past
 * the limits above the rest of the text is dropped, at a line boundary, and
 * *truncated (may be NULL) is set to 1, else 0. NULL only when out of memory. */
at_ignore_t *at_ignore_new(const char *text, size_t len, int *truncated);

/* Appends the rules of text after those already there: as in git, a later
 * rule wins over an earlier one. AT_ETOOBIG when the limits dropped part of
 * text (the rules before the cut are kept), AT_ENOMEM when out of memory. */
at_err_t at_ignore_add(at_ignore_t *ig, const char *text, size_t len);

void at_ignore_free(at_ignore_t *ig);

/* 1 if path is ignored, else 0. path is workspace-relative and normalised
 * (as from at_path_confine: '/'-separated, no leading '/', no empty, "." or
 * ".." segments); is_dir says whether it names a directory. A path inside an
 * ignored directory is ignored whatever the later rules say, as git never
 * descends into an ignored directory. */
int at_ignore_match(const at_ignore_t *ig, const char *path, int is_dir);

#endif
