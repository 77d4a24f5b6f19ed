/*
 * The command policy (ATELIER_COMMAND_POLICY): commands refused when a
 * terminal line or an exec command starts with one of them. A courtesy that
 * keeps the seed's list, not a boundary: quoting, aliases, scripts, history
 * recall, tab completion and every interactive program get past it. The
 * sandbox is what protects the host (openapi.json, "websocket").
 *
 * An entry of one word matches a command whose first word (or its base
 * name: /usr/bin/sudo) is that word; an entry of several words ("rm -rf /")
 * matches a command that starts with those words. Every command of a line
 * is checked: the line is split at ; & | ( ) ` and newlines, and leading
 * VAR=value words are skipped.
 */
#ifndef GATEWAY_WS_POLICY_H
#define GATEWAY_WS_POLICY_H

#include <stddef.h>

#define POLICY_LINE_MAX 1024 /* bytes of a typed line kept for the check */

/* 1 when some command in text[0..len) is refused by policy (the
 * comma-separated list); the entry that matched goes to matched. */
int policy_check(const char *policy, const char *text, size_t len, char *matched, size_t cap);

/* What a client typed into one terminal since the last line end, as far as
 * it can be followed (editing keys are applied; escape sequences such as
 * arrow keys are skipped, so history recall is invisible to the check). */
typedef struct policy_line {
    char buf[POLICY_LINE_MAX];
    size_t len;
    int esc;      /* inside an escape sequence: 0 no, 1 after ESC, 2 in CSI, 3 after SS3 */
    int overflow; /* the line grew past POLICY_LINE_MAX (only its start is kept) */
} policy_line_t;

/* The bytes a line's end becomes when the line is refused: end of line,
 * kill line, carriage return (the shell discards what was typed and shows a
 * new prompt; a program reading lines gets an empty one). */
#define POLICY_KILL_LINE "\x05\x15\r"
#define POLICY_KILL_LEN 3

/* Feed typed bytes: copies to out (capacity 3 * n) what should reach the
 * terminal: everything as typed, except that the end of a refused line is
 * replaced by POLICY_KILL_LINE. Returns the bytes written; *blocked counts
 * refused lines and matched names the first entry that matched. */
size_t policy_feed(const char *policy, policy_line_t *line, const char *in, size_t n, char *out,
                   int *blocked, char *matched, size_t cap);

#endif
