/*
 * Job envelope codec, the hostile side: every prefix of a valid encoding,
 * trailing bytes, wrong shapes and types, oversize and over-deep input, and
 * container headers that promise more entries than the buffer holds. Inputs
 * are built with msgpack's own packer: what a buggy or hostile producer sends.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "job_fixture.h"

static void test_truncated(void **state)
{
    (void)state;
    json_t *args = json_loads(g_args_json, 0, NULL);
    at_job_t job;
    assert_int_equal(at_job_init(&job, "sync.push", "sess-42", "r:1", args), AT_OK);
    unsigned char *buf = NULL;
    size_t len = 0;
    assert_int_equal(at_job_encode(&job, &buf, &len), AT_OK);
    for (size_t n = 0; n < len; n++)
        assert_rejected(buf, n, AT_EINVAL, "truncated");
    /* and one byte too many */
    unsigned char *more = malloc(len + 1);
    memcpy(more, buf, len);
    more[len] = 0xc0;
    assert_rejected(more, len + 1, AT_EINVAL, "trailing byte");
    assert_non_null(strstr(g_err, "trailing"));
    free(more);
    free(buf);
    json_decref(args);
    at_job_clear(&job);
}

static void test_not_a_map(void **state)
{
    (void)state;
    mp_t m;
    mp_init(&m);
    msgpack_pack_array(&m.pk, 2);
    mp_str(&m, "id");
    mp_str(&m, UUID);
    assert_rejected(m.sb.data, m.sb.size, AT_EINVAL, "array");
    msgpack_sbuffer_clear(&m.sb);
    msgpack_pack_int(&m.pk, 7);
    assert_rejected(m.sb.data, m.sb.size, AT_EINVAL, "int");
    msgpack_sbuffer_clear(&m.sb);
    mp_str(&m, "{\"id\":1}");
    assert_rejected(m.sb.data, m.sb.size, AT_EINVAL, "string");
    msgpack_sbuffer_clear(&m.sb);
    msgpack_pack_nil(&m.pk);
    assert_rejected(m.sb.data, m.sb.size, AT_EINVAL, "nil");
    const unsigned char reserved = 0xc1; /* never used in msgpack */
    assert_rejected(&reserved, 1, AT_EINVAL, "reserved byte");
    msgpack_sbuffer_destroy(&m.sb);
}

static void test_bad_fields(void **state)
{
    (void)state;
    char k33[34], s65[66], r129[130];
    memset(k33, 'k', 33), k33[33] = '\0';
    memset(s65, 's', 65), s65[65] = '\0';
    memset(r129, 'r', 129), r129[129] = '\0';
    static const char nul_kind[] = {'p', 'i', '\0', 'g'};
    const struct {
        field_t f;
        const char *msg; /* substring of the error */
    } cases[] = {
        {{"id", V_OMIT, NULL, 0}, "missing id"},
        {{"kind", V_OMIT, NULL, 0}, "missing kind"},
        {{"id", V_STR, "not-a-uuid", 0}, "id"},
        {{"id", V_STR, "3f2a9c4e-1b2d-4c5e-8f90-a1b2c3d4e5fg", 0}, "id"},
        {{"id", V_STR, UUID "0", 0}, "id"},
        {{"id", V_STR, "3f2a9c4e1b2d4c5e8f90a1b2c3d4e5f6abcd", 0}, "id"},
        {{"id", V_INT, NULL, 42}, "id"},
        {{"id", V_NIL, NULL, 0}, "id"},
        {{"kind", V_INT, NULL, 3}, "kind"},
        {{"kind", V_STR, "", 0}, "kind"},
        {{"kind", V_STR, k33, 0}, "kind"},
        {{"kind", V_RAW, nul_kind, 4}, "kind"},
        {{"attempt", V_INT, NULL, 0}, "attempt"},
        {{"attempt", V_INT, NULL, -1}, "attempt"},
        {{"attempt", V_STR, "1", 0}, "attempt"},
        {{"args", V_ARRAY, NULL, 0}, "args"},
        {{"args", V_STR, "{}", 0}, "args"},
        {{"args", V_INT, NULL, 1}, "args"},
        {{"session", V_STR, s65, 0}, "session"},
        {{"session", V_INT, NULL, 1}, "session"},
        {{"reply_to", V_STR, r129, 0}, "reply_to"},
        {{"enqueued_at", V_STR, "now", 0}, "enqueued_at"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        mp_t m;
        pack_envelope(&m, &cases[i].f);
        char why[64];
        snprintf(why, sizeof why, "case %zu (%s)", i, cases[i].f.key);
        assert_rejected(m.sb.data, m.sb.size, AT_EINVAL, why);
        if (!strstr(g_err, cases[i].msg))
            fail_msg("%s: error \"%s\" does not mention \"%s\"", why, g_err, cases[i].msg);
        msgpack_sbuffer_destroy(&m.sb);
    }
}

static void test_oversize(void **state)
{
    (void)state;
    size_t big = AT_JOB_MAX_ENCODED + 16;
    char *blob = malloc(big + 1);
    memset(blob, 'x', big);
    blob[big] = '\0';
    json_t *args = json_pack("{s:s}", "blob", blob);
    assert_non_null(args);
    at_job_t job;
    unsigned char *out = NULL;
    size_t len = 0;
    assert_int_equal(at_msgpack_from_json(args, &out, &len), AT_ETOOBIG);
    assert_int_equal(at_job_init(&job, "ping", NULL, NULL, args), AT_ETOOBIG);
    at_job_clear(&job);

    /* a well-formed envelope that is only too big */
    mp_t m;
    pack_envelope(&m, &g_args_later);
    msgpack_pack_map(&m.pk, 1);
    mp_str(&m, "blob");
    mp_str(&m, blob);
    assert_true(m.sb.size > AT_JOB_MAX_ENCODED);
    assert_rejected(m.sb.data, m.sb.size, AT_ETOOBIG, "oversize envelope");
    msgpack_sbuffer_destroy(&m.sb);
    json_decref(args);
    free(blob);
}

/* {"a": [[...[1]...]]} with n arrays; the innermost 1 sits at depth n + 1. */
static json_t *nested_json(int n)
{
    json_t *v = json_integer(1);
    for (int i = 0; i < n; i++) {
        json_t *a = json_array();
        json_array_append_new(a, v);
        v = a;
    }
    return json_pack("{s:o}", "a", v);
}

static void test_depth(void **state)
{
    (void)state;
    for (int n = AT_JOB_MAX_DEPTH - 1; n <= AT_JOB_MAX_DEPTH; n++) {
        int ok = n + 1 <= AT_JOB_MAX_DEPTH;
        json_t *args = nested_json(n);
        unsigned char *enc = NULL;
        size_t enc_len = 0;
        assert_int_equal(at_msgpack_from_json(args, &enc, &enc_len), ok ? AT_OK : AT_EINVAL);
        /* the decoder applies the same limit to what another producer sent */
        mp_t m;
        pack_envelope(&m, &g_args_later);
        if (ok) {
            msgpack_sbuffer_write(&m.sb, (const char *)enc, enc_len);
        } else {
            msgpack_pack_map(&m.pk, 1);
            mp_str(&m, "a");
            for (int i = 0; i < n; i++)
                msgpack_pack_array(&m.pk, 1);
            msgpack_pack_int(&m.pk, 1);
        }
        at_job_t job;
        if (ok) {
            assert_int_equal(decode(m.sb.data, m.sb.size, &job), AT_OK);
            json_t *back = at_job_args_json(&job);
            assert_true(json_equal(back, args));
            json_decref(back);
            at_job_clear(&job);
        } else {
            assert_rejected(m.sb.data, m.sb.size, AT_EINVAL, "args too deep");
        }
        free(enc);
        msgpack_sbuffer_destroy(&m.sb);
        json_decref(args);
    }
    /* very deep input fails cleanly on both sides */
    json_t *deep = nested_json(5000);
    unsigned char *enc = NULL;
    size_t enc_len = 0;
    assert_int_equal(at_msgpack_from_json(deep, &enc, &enc_len), AT_EINVAL);
    json_decref(deep);
    unsigned char raw[4000];
    memset(raw, 0x91, sizeof raw); /* fixarray of 1, nested */
    raw[sizeof raw - 1] = 0x01;
    assert_null(at_msgpack_to_json(raw, sizeof raw));
    assert_rejected(raw, sizeof raw, AT_EINVAL, "deeply nested arrays");
}

static void huge_headers(void)
{
    /* containers whose counts promise far more than the buffer holds */
    static const unsigned char map32[] = {0xdf, 0xff, 0xff, 0xff, 0xff, 0xa1, 'a', 0x01};
    static const unsigned char arr32[] = {0xdd, 0xff, 0xff, 0xff, 0xff, 0x01, 0x02};
    static const unsigned char str32[] = {0xdb, 0xff, 0xff, 0xff, 0xff, 'i', 'd'};
    const struct {
        const unsigned char *p;
        size_t n;
    } in[] = {{map32, sizeof map32}, {arr32, sizeof arr32}, {str32, sizeof str32}};
    for (size_t i = 0; i < 3; i++) {
        at_job_t job;
        char err[128];
        if (at_job_decode(in[i].p, in[i].n, &job, err, sizeof err) == AT_OK)
            _exit(10 + (int)i);
        if (at_msgpack_to_json(in[i].p, in[i].n) != NULL)
            _exit(20 + (int)i);
    }
    /* the same inside an otherwise valid envelope, as args */
    mp_t m;
    pack_envelope(&m, &g_args_later);
    msgpack_sbuffer_write(&m.sb, (const char *)map32, 5);
    at_job_t job;
    char err[128];
    if (at_job_decode((unsigned char *)m.sb.data, m.sb.size, &job, err, sizeof err) == AT_OK)
        _exit(30);
    msgpack_sbuffer_destroy(&m.sb);
}

static void test_huge_headers(void **state)
{
    (void)state;
    expect_isolated_ok(huge_headers, "decoding container headers that claim 2^32-1 entries in "
                                     "a few bytes (want AT_EINVAL, no huge allocation)");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_truncated),  cmocka_unit_test(test_not_a_map),
        cmocka_unit_test(test_bad_fields), cmocka_unit_test(test_oversize),
        cmocka_unit_test(test_depth),      cmocka_unit_test(test_huge_headers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
