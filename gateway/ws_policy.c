#include "ws_policy.h"

#include <stdio.h>
#include <string.h>

static int is_space(char c)
{
    return c == ' ' || c == '\t';
}

/* Command separators: every command of a line is checked. */
static int is_sep(char c)
{
    return c == ';' || c == '&' || c == '|' || c == '(' || c == ')' || c == '`' || c == '\n' ||
           c == '\r';
}

/* The words of a command, whitespace-collapsed, into out ("rm -rf /");
 * leading VAR=value assignments are dropped. */
static size_t normalise(const char *s, size_t n, char *out, size_t cap)
{
    size_t o = 0, i = 0;
    int first = 1;
    while (i < n) {
        while (i < n && is_space(s[i]))
            i++;
        size_t start = i;
        while (i < n && !is_space(s[i]))
            i++;
        if (i == start)
            break;
        const char *eq = memchr(s + start, '=', i - start);
        if (first && eq && eq > s + start)
            continue; /* FOO=1 sudo ... */
        first = 0;
        if (o && o + 1 < cap)
            out[o++] = ' ';
        for (size_t k = start; k < i && o + 1 < cap; k++)
            out[o++] = s[k];
    }
    out[o] = '\0';
    return o;
}

/* Does the normalised command cmd start with entry (normalised too)? A
 * one-word entry compares with the first word and its base name. */
static int entry_matches(const char *cmd, size_t clen, const char *entry, size_t elen)
{
    if (!elen)
        return 0;
    if (!memchr(entry, ' ', elen)) {
        size_t w = strcspn(cmd, " ");
        const char *base = cmd;
        for (size_t k = 0; k < w; k++)
            if (cmd[k] == '/')
                base = cmd + k + 1;
        size_t bl = (size_t)(cmd + w - base);
        return (w == elen && !memcmp(cmd, entry, elen)) ||
               (bl == elen && !memcmp(base, entry, elen));
    }
    return clen >= elen && !memcmp(cmd, entry, elen) && (clen == elen || cmd[elen] == ' ');
}

/* The first policy entry that matches one command, or 0. */
static int match_command(const char *policy, const char *s, size_t n, char *matched, size_t cap)
{
    char cmd[POLICY_LINE_MAX + 1];
    size_t clen = normalise(s, n, cmd, sizeof cmd);
    if (!clen)
        return 0;
    const char *p = policy;
    while (p && *p) {
        size_t k = strcspn(p, ",");
        char entry[256];
        size_t elen = normalise(p, k < sizeof entry ? k : sizeof entry - 1, entry, sizeof entry);
        if (entry_matches(cmd, clen, entry, elen)) {
            snprintf(matched, cap, "%s", entry);
            return 1;
        }
        p += k;
        if (*p == ',')
            p++;
    }
    return 0;
}

int policy_check(const char *policy, const char *text, size_t len, char *matched, size_t cap)
{
    if (!policy || !*policy)
        return 0;
    size_t i = 0;
    while (i <= len) {
        size_t start = i;
        while (i < len && !is_sep(text[i]))
            i++;
        if (match_command(policy, text + start, i - start, matched, cap))
            return 1;
        i++;
    }
    return 0;
}

/* Remove the last character (a whole UTF-8 sequence). */
static void rubout(policy_line_t *l)
{
    while (l->len > 0) {
        unsigned char c = (unsigned char)l->buf[--l->len];
        if ((c & 0xC0) != 0x80)
            break;
    }
}

/* Ctrl-W: the last word and the blanks after it. */
static void rubout_word(policy_line_t *l)
{
    while (l->len > 0 && is_space(l->buf[l->len - 1]))
        l->len--;
    while (l->len > 0 && !is_space(l->buf[l->len - 1]))
        l->len--;
}

/* One byte of an escape sequence: 1 while the sequence goes on. */
static int escape_byte(policy_line_t *l, unsigned char c)
{
    switch (l->esc) {
    case 1:
        l->esc = c == '[' ? 2 : c == 'O' ? 3 : 0;
        return 1;
    case 2:
        if (c >= 0x40 && c <= 0x7E)
            l->esc = 0;
        return 1;
    case 3:
        l->esc = 0;
        return 1;
    default:
        return 0;
    }
}

static void line_reset(policy_line_t *l)
{
    l->len = 0;
    l->overflow = 0;
}

size_t policy_feed(const char *policy, policy_line_t *l, const char *in, size_t n, char *out,
                   int *blocked, char *matched, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)in[i];
        if (escape_byte(l, c)) {
            out[o++] = (char)c;
            continue;
        }
        if (c == '\r' || c == '\n') {
            char what[256];
            if (l->len && policy_check(policy, l->buf, l->len, what, sizeof what)) {
                if (!*blocked)
                    snprintf(matched, cap, "%s", what);
                (*blocked)++;
                memcpy(out + o, POLICY_KILL_LINE, POLICY_KILL_LEN);
                o += POLICY_KILL_LEN;
            } else {
                out[o++] = (char)c;
            }
            line_reset(l);
            continue;
        }
        out[o++] = (char)c;
        if (c == 0x1B)
            l->esc = 1;
        else if (c == 0x7F || c == 0x08)
            rubout(l);
        else if (c == 0x15 || c == 0x03) /* Ctrl-U, Ctrl-C: the line is gone */
            line_reset(l);
        else if (c == 0x17)
            rubout_word(l);
        else if (c >= 0x20 && l->len < sizeof l->buf)
            l->buf[l->len++] = (char)c;
        else if (c >= 0x20)
            l->overflow = 1;
    }
    return o;
}
