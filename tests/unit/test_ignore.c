/*
 * at_ignore against gitignore semantics. Every case in the table was checked
 * against real git (2.39, `git check-ignore --no-index` in a scratch repo
 * holding the .gitignore and the files or directories named), except the two
 * marked as chosen divergences.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "atelier/ignore.h"

/* Paths ending in '/' name directories (the '/' is not passed on). */
typedef struct {
    const char *rules;
    const char *ignored[8];
    const char *kept[8];
} case_t;

static const case_t cases[] = {
    /* blank lines and comments; '#' only at the start of a line */
    {"\n\n# comment\n  # not comment\nfoo\n", {"  # not comment", "foo"}, {"# comment", "comment"}},
    /* escapes */
    {"\\#hash\n\\!bang\n", {"#hash", "!bang"}, {"\\#hash", "hash", "bang"}},
    {"\\*\n\\?q\n", {"*", "?q"}, {"x", "aq"}},
    {"x\\ y\n", {"x y"}, {"x", "y"}},
    {"foo\\\n", {0}, {"foo", "foo\\"}}, /* a trailing lone '\' matches nothing */
    /* trailing spaces go unless escaped; tabs stay */
    {"foo  \nbar\\ \nbaz\\  \nqux\t\nsp\\ \\ \n",
     {"foo", "bar ", "baz ", "qux\t", "sp  "},
     {"foo  ", "bar", "baz", "qux", "sp"}},
    /* CRLF line ends */
    {"*.log\r\n!keep.log\r\n\r\nbuild/\r\n", {"x.log", "build/x"}, {"keep.log", "x.log\r"}},
    /* a UTF-8 byte order mark, no final newline */
    {"\xef\xbb\xbf"
     "bom\nnoeol",
     {"bom", "noeol"},
     {0}},
    /* lines that hold no rule */
    {"!\n/\n!/\n#\n", {0}, {"x", "!"}},
    /* negation: the last matching rule wins */
    {"*.log\n!keep.log\n", {"a.log", "d/x.log"}, {"keep.log", "d/keep.log"}},
    {"!keep.log\n*.log\n", {"keep.log", "a.log"}, {0}},
    {"**\n!*.c\n", {"x", "a/b"}, {"y.c"}},
    {"*\n!*/\n!*.c\n", {"x.h", "d/x.h"}, {"x.c", "d/x.c", "d/"}},
    {"d/\n!d/\n", {0}, {"d/x", "d/"}},
    {"d\n!d/\n", {"d"}, {"d/x"}},
    /* a negation cannot bring back what is inside an excluded directory */
    {"build/\n!build/keep.txt\n", {"build/keep.txt", "build/x", "sub/build/keep.txt"}, {0}},
    {"build\n!build/keep.txt\n", {"build/keep.txt", "build/x"}, {0}},
    {"build/*\n!build/keep.txt\n", {"build/x", "build/sub/keep.txt"}, {"build/keep.txt"}},
    {"foo/**\n!foo/keep\n!foo/sub/keep\n", {"foo/x", "foo/sub/keep"}, {"foo/keep", "foo/"}},
    /* a trailing '/': directories only, and what is inside them */
    {"foo/\n", {"foo/", "a/foo/", "a/foo/b"}, {"foo", "a/foo"}},
    {"a/b/\n", {"a/b/", "a/b/c"}, {"a/b", "x/a/b/"}},
    {"a/*/\n", {"a/y/z", "a/y/"}, {"a/x"}},
    {"**/\n", {"d/", "d/x"}, {"x"}},
    /* no '/': the last segment at any depth */
    {"foo\n", {"foo", "foo/", "a/foo/", "x/foo", "foo/x", "a/foo/x"}, {"foo.txt", "afoo"}},
    {"*.txt\n", {"doc/a.txt", "doc/sub/a.txt", ".txt"}, {"a.txt.bak"}},
    /* a leading or middle '/': anchored to the root */
    {"/foo\n", {"foo", "foo/x"}, {"a/foo"}},
    {"a/b\n", {"a/b", "a/b/c"}, {"x/a/b", "a/bc"}},
    {"doc/*.txt\n", {"doc/a.txt"}, {"doc/sub/a.txt", "x/doc/a.txt", "a.txt"}},
    {"*/x\n", {"a/x"}, {"x", "a/b/x"}},
    {"a/*\n", {"a/x", "a/x/y"}, {"b/a/x", "a/"}},
    {"//foo\na//b\nfoo//\n", {0}, {"foo", "a/b", "foo/"}},
    /* '*' and '?' never match a '/' */
    {"a?c\n", {"abc", "x/a.c"}, {"ac", "abbc"}},
    {"a/?/c\n", {"a/b/c"}, {"a/bb/c"}},
    /* [...] classes */
    {"[abc].o\n[!x-z]y\n[^q]w\n", {"a.o", "ay", "aw"}, {"d.o", "xy", "zy", "qw"}},
    {"f[0-9][a-fA-F]\n", {"f1a", "f9F"}, {"fxa", "f1g"}},
    {"[]]x\n[!]]y\n[a-]z\n[\\]]w\n", {"]x", "ay", "az", "-z", "]w"}, {"ax", "]y", "bz"}},
    {"[[:digit:]]d\n[[:alpha:]x]e\n[[:upper:][:digit:]]u\n",
     {"1d", "ae", "xe", "Au", "5u"},
     {"ad", "1e", "au"}},
    /* malformed classes match nothing */
    {"[[:bogus:]]b\n[abc\n[[:x\nok\n", {"ok"}, {"bb", "[abc", "a", "[:x"}},
    /* "**": leading (any depth), trailing (all inside), middle (zero or more dirs) */
    {"**/foo\n", {"foo", "a/foo", "a/b/foo", "a/foo/x"}, {"afoo"}},
    {"**/foo/bar\n", {"foo/bar", "a/foo/bar", "a/b/foo/bar"}, {"foo/x/bar"}},
    {"abc/**\n", {"abc/x", "abc/x/y", "abc/d/"}, {"abc", "abc/", "x/abc/y"}},
    {"a/**/b\n", {"a/b", "a/x/b", "a/x/y/b"}, {"a/xb", "ab", "x/a/b"}},
    {"a/**/b/**/c\n", {"a/b/c", "a/x/b/y/c", "a/x/y/b/c"}, {"a/c", "a/b/x"}},
    {"/**\n", {"x", "a/b"}, {0}},
    {"***/x\na/***\n", {"x", "q/x", "a/x", "a/x/y"}, {"a"}},
    /* "**" inside a segment is a plain '*' */
    {"a**b\n", {"ab", "axxb", "x/axb"}, {"a/b"}},
    {"a/**b\n", {"a/b", "a/xb"}, {"a/x/b"}},
    {"a/b**\n", {"a/b", "a/bx", "a/b/x"}, {"a/c"}},
    /* Chosen divergences. git splits on an escaped '/' and lets a class
     * hold one (it ignores "a/b" and "axb" here); we split at every '/', so
     * such patterns match nothing. */
    {"a\\/b\na[/x]b\n", {0}, {"a/b", "axb"}},
    /* git strips a literal prefix before matching, which turns "b**" + "/x"
     * into "b" then a leading "**" + "/x" (it ignores "bx" and "bq/r/x");
     * we follow man gitignore: that "**" is a plain '*'. */
    {"b**/x\n", {"bq/x"}, {"bx", "bq/r/x"}},
};

/* Whether path is ignored by ig; a trailing '/' marks a directory. */
static int ignored(const at_ignore_t *ig, const char *path)
{
    char buf[4096];
    size_t len = strlen(path);
    assert_true(len < sizeof buf);
    memcpy(buf, path, len + 1);
    int is_dir = len > 0 && buf[len - 1] == '/';
    if (is_dir)
        buf[len - 1] = '\0';
    return at_ignore_match(ig, buf, is_dir);
}

static void test_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const case_t *c = &cases[i];
        int truncated = -1;
        at_ignore_t *ig = at_ignore_new(c->rules, strlen(c->rules), &truncated);
        assert_non_null(ig);
        assert_int_equal(truncated, 0);
        for (size_t j = 0; j < 8 && c->ignored[j]; j++)
            if (!ignored(ig, c->ignored[j]))
                fail_msg("case %zu: \"%s\" should be ignored", i, c->ignored[j]);
        for (size_t j = 0; j < 8 && c->kept[j]; j++)
            if (ignored(ig, c->kept[j]))
                fail_msg("case %zu: \"%s\" should not be ignored", i, c->kept[j]);
        at_ignore_free(ig);
    }
}

static void test_defaults(void **state)
{
    (void)state;
    at_ignore_t *ig = at_ignore_new(AT_IGNORE_DEFAULTS, strlen(AT_IGNORE_DEFAULTS), NULL);
    assert_non_null(ig);
    const char *yes[] = {".git/config", "a/__pycache__/x.pyc", "node_modules/x/y.js",
                         "x.pyc",       "a/b/c.pyc",           "a/__pycache__/m.txt",
                         ".git/",       "a/b/node_modules/"};
    const char *no[] = {"src/app.py", "gitfile", ".gitignore", "x.pycx", "pyc", ".git", "src/"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
        if (!ignored(ig, yes[i]))
            fail_msg("\"%s\" should be ignored", yes[i]);
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
        if (ignored(ig, no[i]))
            fail_msg("\"%s\" should not be ignored", no[i]);
    at_ignore_free(ig);
}

/* The workspace's rules come after the defaults and win over them, except
 * inside a directory the defaults exclude. */
static void test_add(void **state)
{
    (void)state;
    at_ignore_t *ig = at_ignore_new(AT_IGNORE_DEFAULTS, strlen(AT_IGNORE_DEFAULTS), NULL);
    assert_non_null(ig);
    const char *mine = "!*.pyc\n!.git/config\ndist/\n";
    assert_int_equal(at_ignore_add(ig, mine, strlen(mine)), AT_OK);
    assert_false(ignored(ig, "x.pyc"));
    assert_true(ignored(ig, "a/__pycache__/x.pyc"));
    assert_true(ignored(ig, ".git/config"));
    assert_true(ignored(ig, "dist/app.js"));
    assert_int_equal(at_ignore_add(ig, NULL, 0), AT_OK);
    assert_int_equal(at_ignore_add(NULL, mine, strlen(mine)), AT_EINVAL);
    at_ignore_free(ig);

    /* no rules at all */
    ig = at_ignore_new(NULL, 0, NULL);
    assert_non_null(ig);
    assert_false(ignored(ig, "x.pyc"));
    at_ignore_free(ig);
    ig = at_ignore_new("*\n", 2, NULL);
    assert_false(at_ignore_match(ig, "", 1)); /* the root is never ignored */
    assert_false(at_ignore_match(ig, NULL, 0));
    assert_false(at_ignore_match(NULL, "x", 0));
    at_ignore_free(ig);
    at_ignore_free(NULL);
}

static void test_rule_limit(void **state)
{
    (void)state;
    /* rule i is "r<i>"; comments do not count */
    static char text[32 * (AT_IGNORE_MAX_RULES + 2)];
    size_t len = 0;
    for (int i = 0; i < AT_IGNORE_MAX_RULES + 1; i++)
        len += (size_t)snprintf(text + len, sizeof text - len, "# rule %d\nr%d\n", i, i);

    int truncated = -1;
    size_t len1024 = (size_t)(strstr(text, "# rule 1024\n") - text);
    at_ignore_t *ig = at_ignore_new(text, len1024, &truncated);
    assert_int_equal(truncated, 0);
    assert_true(ignored(ig, "r1023"));
    at_ignore_free(ig);

    ig = at_ignore_new(text, len, &truncated);
    assert_int_equal(truncated, 1);
    assert_true(ignored(ig, "r0"));
    assert_true(ignored(ig, "r1023"));
    assert_false(ignored(ig, "r1024"));
    assert_int_equal(at_ignore_add(ig, "x\n", 2), AT_ETOOBIG);
    assert_false(ignored(ig, "x"));
    at_ignore_free(ig);
}

static void test_text_limit(void **state)
{
    (void)state;
    /* A comment line, then "abcdef" across the limit: the cut falls at the
     * line before it, so neither "abcdef" nor "abc" becomes a rule. */
    static char text[AT_IGNORE_MAX_TEXT + 16];
    memset(text, '#', AT_IGNORE_MAX_TEXT - 4);
    text[AT_IGNORE_MAX_TEXT - 4] = '\n';
    memcpy(text + AT_IGNORE_MAX_TEXT - 3, "abcdef\n", 7);
    size_t len = AT_IGNORE_MAX_TEXT + 4;

    int truncated = -1;
    at_ignore_t *ig = at_ignore_new(text, len, &truncated);
    assert_int_equal(truncated, 1);
    assert_false(ignored(ig, "abcdef"));
    assert_false(ignored(ig, "abc"));
    at_ignore_free(ig);

    /* The limit is for all texts together: after the defaults, the same
     * text is cut earlier and at_ignore_add says so. */
    ig = at_ignore_new(AT_IGNORE_DEFAULTS, strlen(AT_IGNORE_DEFAULTS), &truncated);
    assert_int_equal(truncated, 0);
    memcpy(text, "kept\n", 5);
    assert_int_equal(at_ignore_add(ig, text, len), AT_ETOOBIG);
    assert_true(ignored(ig, "kept"));
    assert_true(ignored(ig, "x.pyc"));
    assert_false(ignored(ig, "abcdef"));
    at_ignore_free(ig);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Patterns that make naive recursive matchers exponential finish at once. */
static void test_pathological(void **state)
{
    (void)state;
    char rules[512], path[4096];
    size_t n = 0;
    for (int i = 0; i < 40; i++)
        n += (size_t)snprintf(rules + n, sizeof rules - n, "*a");
    n += (size_t)snprintf(rules + n, sizeof rules - n, "*b\n");
    for (int i = 0; i < 10; i++)
        n += (size_t)snprintf(rules + n, sizeof rules - n, "**/a/");
    snprintf(rules + n, sizeof rules - n, "**/b\n");

    at_ignore_t *ig = at_ignore_new(rules, strlen(rules), NULL);
    assert_non_null(ig);
    double t0 = now();
    memset(path, 'a', 250);
    path[250] = '\0';
    assert_false(ignored(ig, path));
    path[249] = 'b';
    assert_true(ignored(ig, path));
    /* 2000 segments "a/a/.../a": every directory above is checked too */
    for (int i = 0; i < 2000; i++)
        memcpy(path + 2 * i, "a/", 2);
    path[3999] = '\0';
    assert_false(ignored(ig, path));
    path[3998] = 'b';
    assert_true(ignored(ig, path));
    at_ignore_free(ig);

    /* 200 such rules, none matching */
    static char many[200 * 40];
    n = 0;
    for (int i = 0; i < 200; i++)
        n += (size_t)snprintf(many + n, sizeof many - n, "**/a/**/a/**/a/**/a/**/x%d\n", i);
    ig = at_ignore_new(many, n, NULL);
    assert_non_null(ig);
    assert_false(ignored(ig, path));
    double secs = now() - t0;
    if (secs > 1.0)
        fail_msg("pathological patterns took %.2f s", secs);
    at_ignore_free(ig);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),      cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_add),        cmocka_unit_test(test_rule_limit),
        cmocka_unit_test(test_text_limit), cmocka_unit_test(test_pathological),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
