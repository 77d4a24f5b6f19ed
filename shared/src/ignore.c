/*
 * gitignore matching, written to agree with git's dir.c and wildmatch.c
 * (checked against git 2.39 `check-ignore`, see tests/unit/test_ignore.c).
 *
 * A rule without a '/' (once a trailing one is taken off) is matched against
 * one path segment at a time by glob(), with the usual iterative
 * backtracking for '*'. Any other rule is anchored: split into segments at
 * load, it runs as a small automaton over the path's segments, a "**"
 * segment looping on any number of them. All rules advance together, one
 * path segment at a time, so checking every directory above a path (as git
 * does) costs no more than checking the path itself: at most about pattern
 * text x path length steps, with no recursion and no allocation.
 *
 * Where git's code strays from man gitignore (a literal prefix before "**",
 * an escaped '/', a '/' inside [...]) this follows the manual; see the test.
 */
#include "atelier/ignore.h"

#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

const char AT_IGNORE_DEFAULTS[] = ".git/\n__pycache__/\nnode_modules/\n*.pyc\n";

enum {
    NEGATED = 1 << 0,  /* "!pattern": a match un-ignores */
    DIR_ONLY = 1 << 1, /* "pattern/": matches directories only */
    ANCHORED = 1 << 2, /* a '/' at the start or in the middle: matches the whole path */
};

typedef struct {
    const char *pat; /* no '/' */
    size_t len;
    int starstar; /* the segment is "**" */
} seg_t;

typedef struct {
    unsigned flags;
    const char *pat; /* without '!', the leading and the trailing '/' */
    size_t len;
    seg_t *segs; /* anchored rules: pat split at each '/' */
    size_t nsegs;
    size_t state; /* anchored rules: its states 0..nsegs start at this bit */
    void *mem;    /* one block: segs, then the text of pat */
} rule_t;

struct at_ignore {
    rule_t *rules;
    size_t n, cap;
    size_t text;    /* bytes of text read, against AT_IGNORE_MAX_TEXT */
    size_t nstates; /* automaton states of all anchored rules */
};

/* An anchored rule has nsegs + 1 <= pattern length + 2 states, so the text
 * limit bounds them all: the sets fit on the stack of at_ignore_match. */
#define MAX_STATES (AT_IGNORE_MAX_TEXT + 2 * AT_IGNORE_MAX_RULES)
#define STATE_WORDS ((MAX_STATES + 63) / 64)

/* [:name:] inside a class: whether c is in it, -1 for a name git does not know.
 * ASCII only, as in git, whatever the locale. */
static int posix_class(const char *name, size_t len, unsigned char c)
{
    static const struct {
        const char *name;
        int (*is)(int);
    } names[] = {
        {"alnum", isalnum}, {"alpha", isalpha}, {"blank", isblank}, {"cntrl", iscntrl},
        {"digit", isdigit}, {"graph", isgraph}, {"lower", islower}, {"print", isprint},
        {"punct", ispunct}, {"space", isspace}, {"upper", isupper}, {"xdigit", isxdigit},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strlen(names[i].name) == len && memcmp(names[i].name, name, len) == 0)
            return c < 0x80 && names[i].is(c);
    return -1;
}

/* The class "[...]" at p: sets *hit to whether c is in it and returns its
 * length, or 0 when it is malformed (no ']', unknown [:name:]), which makes
 * git's wildmatch give up on the whole pattern. As there: ']' first is a
 * member, '!' or '^' first negates, '\' escapes, "a-z" is a range. */
static size_t bracket(const char *p, const char *pe, unsigned char c, int *hit)
{
    const char *q = p + 1;
    int neg = 0, in = 0;
    unsigned prev = 256; /* the previous member, which may start a range; 256: none */

    if (q < pe && (*q == '!' || *q == '^'))
        neg = 1, q++;
    for (int first = 1; q < pe && (first || *q != ']'); first = 0) {
        unsigned ch = (unsigned char)*q++;
        if (ch == '\\') {
            if (q == pe)
                return 0;
            ch = (unsigned char)*q++;
        } else if (ch == '-' && prev < 256 && q < pe && *q != ']') {
            unsigned hi = (unsigned char)*q++;
            if (hi == '\\') {
                if (q == pe)
                    return 0;
                hi = (unsigned char)*q++;
            }
            in |= c >= prev && c <= hi;
            prev = 256;
            continue;
        } else if (ch == '[' && q < pe && *q == ':') {
            const char *close = memchr(q, ']', (size_t)(pe - q));
            if (!close)
                return 0;
            if (close - q >= 2 && close[-1] == ':') {
                int r = posix_class(q + 1, (size_t)(close - q - 2), c);
                if (r < 0)
                    return 0;
                in |= r;
                q = close + 1;
                prev = 256;
                continue;
            }
            /* not "[:name:]": the '[' is an ordinary member */
        }
        in |= c == ch;
        prev = ch;
    }
    if (q == pe)
        return 0;
    *hit = in != neg;
    return (size_t)(q + 1 - p);
}

/* One pattern segment against one path segment (neither holds a '/'). */
static int glob(const char *p, size_t plen, const char *t, size_t tlen)
{
    const char *pe = p + plen, *te = t + tlen;
    const char *star_p = NULL, *star_t = NULL; /* just after the last '*', and where it began */

    while (t < te) {
        size_t n = 1;
        int hit;
        if (p < pe && *p == '*') {
            while (p < pe && *p == '*')
                p++;
            star_p = p, star_t = t;
            continue;
        }
        if (p == pe) {
            hit = 0;
        } else if (*p == '?') {
            hit = 1;
        } else if (*p == '[') {
            if ((n = bracket(p, pe, (unsigned char)*t, &hit)) == 0)
                return 0;
        } else if (*p == '\\') {
            if (p + 1 == pe)
                return 0; /* a lone trailing '\' matches nothing in git either */
            n = 2, hit = p[1] == *t;
        } else {
            hit = *p == *t;
        }
        if (hit) {
            p += n, t++;
        } else if (star_p) {
            p = star_p, t = ++star_t;
        } else {
            return 0;
        }
    }
    while (p < pe && *p == '*')
        p++;
    return p == pe;
}

static int has(const uint64_t *set, size_t i)
{
    return (int)(set[i / 64] >> (i % 64) & 1);
}

static void add(uint64_t *set, size_t i)
{
    set[i / 64] |= (uint64_t)1 << (i % 64);
}

/* State i of anchored rule r: its first i segments match the path so far;
 * state nsegs: r matches it. A "**" that is not last may match no segment,
 * so reaching it also reaches the state after it. */
static void closure(const rule_t *r, uint64_t *set)
{
    for (size_t i = 0; i + 1 < r->nsegs; i++)
        if (r->segs[i].starstar && has(set, r->state + i))
            add(set, r->state + i + 1);
}

/* The states of r in cur, one path segment t later, into next. A "**" takes
 * the segment and stays, ready for more; last, it needs at least one ("a/"
 * + "**" is what is inside a, not a itself). */
static void step(const rule_t *r, const uint64_t *cur, uint64_t *next, const char *t, size_t tlen)
{
    for (size_t i = 0; i < r->nsegs; i++) {
        if (!has(cur, r->state + i))
            continue;
        const seg_t *g = &r->segs[i];
        if (g->starstar) {
            add(next, r->state + i);
            if (i + 1 == r->nsegs)
                add(next, r->state + i + 1);
        } else if (glob(g->pat, g->len, t, tlen)) {
            add(next, r->state + i + 1);
        }
    }
    closure(r, next);
}

/* The verdict of the last rule matching the path up to its segment t, the
 * anchored ones as the states in set say: 1 ignored, 0 not (or no match). */
static int excluded(const at_ignore_t *ig, const uint64_t *set, const char *t, size_t tlen,
                    int is_dir)
{
    for (size_t i = ig->n; i-- > 0;) {
        const rule_t *r = &ig->rules[i];
        if ((r->flags & DIR_ONLY) && !is_dir)
            continue;
        int hit =
            (r->flags & ANCHORED) ? has(set, r->state + r->nsegs) : glob(r->pat, r->len, t, tlen);
        if (hit)
            return !(r->flags & NEGATED);
    }
    return 0;
}

int at_ignore_match(const at_ignore_t *ig, const char *path, int is_dir)
{
    if (!ig || !path || !*path)
        return 0; /* the root itself is never ignored */
    uint64_t a[STATE_WORDS], b[STATE_WORDS], *cur = a, *next = b;
    size_t words = (ig->nstates + 63) / 64;

    memset(cur, 0, words * sizeof *cur);
    for (size_t i = 0; i < ig->n; i++) {
        if (ig->rules[i].flags & ANCHORED) {
            add(cur, ig->rules[i].state);
            closure(&ig->rules[i], cur);
        }
    }
    /* Segment by segment, each directory above path is judged before what
     * is in it: git never looks inside an ignored directory, so no later
     * "!" rule can bring back what is in one. */
    for (const char *t = path;;) {
        const char *slash = strchr(t, '/');
        size_t tlen = slash ? (size_t)(slash - t) : strlen(t);
        memset(next, 0, words * sizeof *next);
        for (size_t i = 0; i < ig->n; i++)
            if (ig->rules[i].flags & ANCHORED)
                step(&ig->rules[i], cur, next, t, tlen);
        uint64_t *swap = cur;
        cur = next, next = swap;
        if (!slash)
            return excluded(ig, cur, t, tlen, is_dir);
        if (excluded(ig, cur, t, tlen, 1))
            return 1;
        t = slash + 1;
    }
}

/* Trailing spaces go unless escaped ("a\ " keeps one); tabs stay, as in git. */
static size_t trim_spaces(const char *s, size_t len)
{
    size_t keep = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '\\' && i + 1 < len)
            keep = ++i + 1;
        else if (s[i] != ' ')
            keep = i + 1;
    }
    return keep;
}

/* The rule on one line (without its '\n'), read as git's dir.c does; 0 when
 * the line holds none (blank, comment, or nothing left but '!' and '/'). */
static int parse_line(const char *s, size_t len, rule_t *r)
{
    if (len > 0 && s[len - 1] == '\r')
        len--;
    if (len == 0 || s[0] == '#')
        return 0;
    len = trim_spaces(s, len);
    r->flags = 0;
    if (len > 0 && s[0] == '!')
        r->flags |= NEGATED, s++, len--;
    if (len > 0 && s[len - 1] == '/')
        r->flags |= DIR_ONLY, len--;
    if (memchr(s, '/', len))
        r->flags |= ANCHORED;
    if (len > 0 && s[0] == '/')
        s++, len--;
    r->pat = s, r->len = len;
    r->nsegs = 0;
    if (r->flags & ANCHORED) {
        r->nsegs = 1;
        for (size_t i = 0; i < len; i++)
            r->nsegs += s[i] == '/';
    }
    return len > 0;
}

/* Copies r's pattern into memory of its own and splits it if anchored. */
static at_err_t compile(rule_t *r)
{
    r->mem = malloc(r->nsegs * sizeof(seg_t) + r->len);
    if (!r->mem)
        return AT_ENOMEM;
    r->segs = r->mem;
    char *pat = (char *)(r->segs + r->nsegs);
    memcpy(pat, r->pat, r->len);
    r->pat = pat;

    const char *s = pat, *end = pat + r->len;
    for (size_t i = 0; i < r->nsegs; i++) {
        const char *slash = memchr(s, '/', (size_t)(end - s));
        seg_t *g = &r->segs[i];
        g->pat = s;
        g->len = slash ? (size_t)(slash - s) : (size_t)(end - s);
        size_t stars = 0;
        while (stars < g->len && s[stars] == '*')
            stars++;
        g->starstar = g->len >= 2 && stars == g->len;
        s += g->len + 1;
    }
    return AT_OK;
}

at_err_t at_ignore_add(at_ignore_t *ig, const char *text, size_t len)
{
    if (!ig)
        return AT_EINVAL;
    if (!text)
        return AT_OK;
    at_err_t err = AT_OK;
    if (len > AT_IGNORE_MAX_TEXT - ig->text) {
        /* Cut after the last whole line: a pattern cut short could ignore
         * far more than the one written. */
        len = AT_IGNORE_MAX_TEXT - ig->text;
        while (len > 0 && text[len - 1] != '\n')
            len--;
        err = AT_ETOOBIG;
    }
    ig->text += len;
    if (len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0)
        text += 3, len -= 3;

    const char *end = text + len;
    while (text < end) {
        const char *nl = memchr(text, '\n', (size_t)(end - text));
        const char *eol = nl ? nl : end;
        rule_t r;
        if (parse_line(text, (size_t)(eol - text), &r)) {
            size_t states = r.nsegs ? r.nsegs + 1 : 0;
            if (ig->n == AT_IGNORE_MAX_RULES || ig->nstates + states > MAX_STATES)
                return AT_ETOOBIG; /* the second cannot happen within the text limit */
            if (ig->n == ig->cap) {
                size_t cap = ig->cap ? ig->cap * 2 : 16;
                rule_t *rules = realloc(ig->rules, cap * sizeof *rules);
                if (!rules)
                    return AT_ENOMEM;
                ig->rules = rules, ig->cap = cap;
            }
            if (compile(&r) != AT_OK)
                return AT_ENOMEM;
            r.state = ig->nstates;
            ig->nstates += states;
            ig->rules[ig->n++] = r;
        }
        if (!nl)
            break;
        text = nl + 1;
    }
    return err;
}

at_ignore_t *at_ignore_new(const char *text, size_t len, int *truncated)
{
    at_ignore_t *ig = calloc(1, sizeof *ig);
    if (!ig)
        return NULL;
    at_err_t err = at_ignore_add(ig, text, len);
    if (err == AT_ENOMEM) {
        at_ignore_free(ig);
        return NULL;
    }
    if (truncated)
        *truncated = err == AT_ETOOBIG;
    return ig;
}

void at_ignore_free(at_ignore_t *ig)
{
    if (!ig)
        return;
    for (size_t i = 0; i < ig->n; i++)
        free(ig->rules[i].mem);
    free(ig->rules);
    free(ig);
}
