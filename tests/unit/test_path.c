/*
 * at_path_confine against a table of hostile and ordinary inputs: every
 * refused path says why, every accepted one comes out normalised.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "atelier/path.h"

typedef struct {
    const char *in;
    size_t len;      /* 0: strlen(in) */
    const char *out; /* NULL: refused */
} case_t;

static const case_t cases[] = {
    /* accepted, normalised */
    {"main.py", 0, "main.py"},
    {"src/app/main.py", 0, "src/app/main.py"},
    {"a//b///c", 0, "a/b/c"},
    {"./a/./b/.", 0, "a/b"},
    {"a/b/", 0, "a/b"},
    {".hidden", 0, ".hidden"},
    {"..foo", 0, "..foo"},
    {"foo..", 0, "foo.."},
    {"...", 0, "..."},
    {"dir/.../x", 0, "dir/.../x"},
    {"caf\xc3\xa9/\xe6\x97\xa5\xe6\x9c\xac.txt", 0, "caf\xc3\xa9/\xe6\x97\xa5\xe6\x9c\xac.txt"},
    {"emoji-\xf0\x9f\x98\x80.md", 0, "emoji-\xf0\x9f\x98\x80.md"},
    {"with space.py", 0, "with space.py"},
    /* refused */
    {"", 0, NULL},
    {".", 0, NULL},
    {"./", 0, NULL},
    {"//", 0, NULL},
    {"..", 0, NULL},
    {"../etc/passwd", 0, NULL},
    {"a/../../b", 0, NULL},
    {"a/..", 0, NULL},
    {"a/b/../c", 0, NULL},
    {"/etc/passwd", 0, NULL},
    {"/", 0, NULL},
    {"a\\b", 0, NULL},
    {"..\\..\\windows", 0, NULL},
    {"C:\\x", 0, NULL},
    {"a\x00"
     "b",
     3, NULL},
    {"a\nb", 0, NULL},
    {"a\rb", 0, NULL},
    {"a\tb", 0, NULL},
    {"bell\x07", 0, NULL},
    {"del\x7f", 0, NULL},
    {"bad\xff", 0, NULL},
    {"overlong\xc0\xaf", 0, NULL},       /* overlong '/' */
    {"overlong\xe0\x80\xaf", 0, NULL},   /* overlong '/' */
    {"surrogate\xed\xa0\x80", 0, NULL},  /* U+D800 */
    {"toobig\xf4\x90\x80\x80", 0, NULL}, /* U+110000 */
    {"truncated\xe6\x97", 0, NULL},
    {"lonecont\x80", 0, NULL},
};

static void test_table(void **state)
{
    (void)state;
    char out[AT_PATH_MAX + 1];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const case_t *c = &cases[i];
        size_t len = c->len ? c->len : strlen(c->in);
        const char *why = NULL;
        at_err_t err = at_path_confine(c->in, len, out, sizeof out, &why);
        if (c->out) {
            if (err != AT_OK)
                fail_msg("case %zu \"%s\" refused: %s", i, c->in, why);
            assert_string_equal(out, c->out);
        } else {
            if (err == AT_OK)
                fail_msg("case %zu accepted as \"%s\"", i, out);
            assert_non_null(why);
        }
    }
}

static void test_lengths(void **state)
{
    (void)state;
    static char in[AT_PATH_MAX + 16], out[AT_PATH_MAX + 1];
    const char *why;
    /* one 255-byte segment is fine, 256 is not */
    memset(in, 'a', 255);
    in[255] = '\0';
    assert_int_equal(at_path_confine(in, 255, out, sizeof out, &why), AT_OK);
    memset(in, 'a', 256);
    assert_int_equal(at_path_confine(in, 256, out, sizeof out, &why), AT_EINVAL);
    assert_non_null(strstr(why, "255"));
    /* 4096 bytes in total is fine, 4097 is not */
    for (size_t i = 0; i < AT_PATH_MAX; i++)
        in[i] = (i % 100 == 99) ? '/' : 'b';
    in[AT_PATH_MAX - 1] = 'b';
    assert_int_equal(at_path_confine(in, AT_PATH_MAX, out, sizeof out, &why), AT_OK);
    assert_int_equal(strlen(out), AT_PATH_MAX);
    in[AT_PATH_MAX] = 'b';
    assert_int_equal(at_path_confine(in, AT_PATH_MAX + 1, out, sizeof out, &why), AT_EINVAL);
    /* an output buffer too small is refused, never overrun */
    char small[8];
    assert_int_equal(at_path_confine("abcdefghij", 10, small, sizeof small, &why), AT_EINVAL);
}

static void test_base(void **state)
{
    (void)state;
    assert_string_equal(at_path_base("a/b/c.py"), "c.py");
    assert_string_equal(at_path_base("c.py"), "c.py");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_lengths),
        cmocka_unit_test(test_base),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
