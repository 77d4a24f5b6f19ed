/*
 * Job envelope codec, the well-formed side: round trips of full and empty
 * jobs, the size limits that must still be accepted, and the JSON <-> msgpack
 * conversion used for args and replies.
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

static void test_roundtrip_full(void **state)
{
    (void)state;
    json_t *args = json_loads(g_args_json, 0, NULL);
    assert_non_null(args);
    at_job_t job, back;
    assert_int_equal(at_job_init(&job, "sync.push", "sess-42", "reply:gw-1:7", args), AT_OK);
    assert_true(at_is_uuid(job.id));
    assert_int_equal(job.attempt, 1);
    job.attempt = 3;
    job.enqueued_at = 1767225600123;
    unsigned char *buf = NULL;
    size_t len = 0;
    assert_int_equal(at_job_encode(&job, &buf, &len), AT_OK);
    assert_int_equal(decode(buf, len, &back), AT_OK);
    assert_string_equal(back.id, job.id);
    assert_string_equal(back.kind, "sync.push");
    assert_string_equal(back.session, "sess-42");
    assert_string_equal(back.reply_to, "reply:gw-1:7");
    assert_int_equal(back.attempt, 3);
    assert_int_equal(back.enqueued_at, 1767225600123);
    json_t *got = at_job_args_json(&back);
    assert_non_null(got);
    if (!json_equal(got, args)) {
        char *s = json_dumps(got, JSON_SORT_KEYS);
        fail_msg("args differ after round trip: %s", s);
    }
    /* re-encoding what was decoded gives the same bytes */
    unsigned char *buf2 = NULL;
    size_t len2 = 0;
    assert_int_equal(at_job_encode(&back, &buf2, &len2), AT_OK);
    assert_int_equal(len2, len);
    assert_memory_equal(buf2, buf, len);
    free(buf);
    free(buf2);
    json_decref(got);
    json_decref(args);
    at_job_clear(&job);
    at_job_clear(&back);
}

static void test_roundtrip_empty(void **state)
{
    (void)state;
    at_job_t job, back;
    assert_int_equal(at_job_init(&job, "ping", NULL, "", NULL), AT_OK);
    unsigned char *buf = NULL;
    size_t len = 0;
    assert_int_equal(at_job_encode(&job, &buf, &len), AT_OK);
    assert_int_equal(decode(buf, len, &back), AT_OK);
    assert_string_equal(back.session, "");
    assert_string_equal(back.reply_to, "");
    assert_string_equal(back.kind, "ping");
    json_t *args = at_job_args_json(&back);
    assert_true(json_is_object(args) && json_object_size(args) == 0);
    json_decref(args);
    free(buf);
    at_job_clear(&back);

    /* nil args and unknown extra keys are accepted */
    mp_t m;
    field_t nil_args = {"args", V_NIL, NULL, 0};
    pack_envelope(&m, &nil_args);
    assert_int_equal(decode(m.sb.data, m.sb.size, &back), AT_OK);
    assert_null(back.args);
    msgpack_sbuffer_destroy(&m.sb);
    pack_envelope(&m, NULL);
    m.sb.data[0] = (char)0x88; /* fixmap of 8 */
    mp_str(&m, "future_field");
    msgpack_pack_int(&m.pk, 9);
    assert_int_equal(decode(m.sb.data, m.sb.size, &back), AT_OK);
    assert_string_equal(back.session, "s-1");
    msgpack_sbuffer_destroy(&m.sb);
    at_job_clear(&back);
}

static void test_limits_accepted(void **state)
{
    (void)state;
    char k32[33], s64[65];
    memset(k32, 'k', 32), k32[32] = '\0';
    memset(s64, 's', 64), s64[64] = '\0';
    mp_t m;
    at_job_t job;
    field_t kind = {"kind", V_STR, k32, 0}, session = {"session", V_STR, s64, 0};
    pack_envelope(&m, &kind);
    assert_int_equal(decode(m.sb.data, m.sb.size, &job), AT_OK);
    assert_string_equal(job.kind, k32);
    at_job_clear(&job);
    msgpack_sbuffer_destroy(&m.sb);
    pack_envelope(&m, &session);
    assert_int_equal(decode(m.sb.data, m.sb.size, &job), AT_OK);
    assert_string_equal(job.session, s64);
    at_job_clear(&job);
    msgpack_sbuffer_destroy(&m.sb);
    /* the producer side refuses what the consumer would refuse */
    char k33[34];
    memset(k33, 'k', 33), k33[33] = '\0';
    assert_int_equal(at_job_init(&job, k33, NULL, NULL, NULL), AT_EINVAL);
    at_job_clear(&job);
    assert_int_equal(at_job_init(&job, "", NULL, NULL, NULL), AT_EINVAL);
    at_job_clear(&job);
}

static void test_msgpack_json(void **state)
{
    (void)state;
    const char *texts[] = {g_args_json,
                           "[1, \"two\", 3.5, [], {}, null, true]",
                           "\"x\"",
                           "null",
                           "-42",
                           "1e300",
                           "{\"k\": {\"j\": [false]}}"};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        json_t *v = json_loads(texts[i], JSON_DECODE_ANY, NULL);
        assert_non_null(v);
        unsigned char *buf = NULL;
        size_t len = 0;
        assert_int_equal(at_msgpack_from_json(v, &buf, &len), AT_OK);
        json_t *back = at_msgpack_to_json(buf, len);
        if (!back || !json_equal(back, v))
            fail_msg("round trip of %s failed", texts[i]);
        /* truncated or extended, it is refused */
        assert_null(at_msgpack_to_json(buf, len - 1));
        unsigned char *more = malloc(len + 1);
        memcpy(more, buf, len);
        more[len] = 0xc0;
        assert_null(at_msgpack_to_json(more, len + 1));
        free(more);
        free(buf);
        json_decref(back);
        json_decref(v);
    }
    /* msgpack that has no JSON form */
    static const unsigned char int_key[] = {0x81, 0x01, 0x02};
    static const unsigned char big_uint[] = {0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    static const unsigned char bad_utf8[] = {0xa2, 0xc3, 0x28};
    assert_null(at_msgpack_to_json(int_key, sizeof int_key));
    assert_null(at_msgpack_to_json(big_uint, sizeof big_uint));
    assert_null(at_msgpack_to_json(bad_utf8, sizeof bad_utf8));
}

/* Empty strings are ordinary values (an empty file's content, a blank line),
 * also as map keys. Runs in a child: the failure seen so far is a sanitizer
 * abort (memcpy from NULL), which would end the whole test program. */
static void empty_strings(void)
{
    const char *texts[] = {"{\"k\": \"\"}", "\"\"", "[\"\"]", "{\"lines\": [\"a\", \"\", \"b\"]}",
                           "{\"\": {\"\": [false]}}"};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        json_t *v = json_loads(texts[i], JSON_DECODE_ANY, NULL);
        unsigned char *buf = NULL;
        size_t len = 0;
        if (!v || at_msgpack_from_json(v, &buf, &len) != AT_OK)
            _exit(2);
        json_t *back = at_msgpack_to_json(buf, len);
        if (!back || !json_equal(back, v)) {
            fprintf(stderr, "msgpack -> JSON of %s: %s\n", texts[i], back ? "differs" : "NULL");
            _exit(3);
        }
        json_decref(back);
        json_decref(v);
        free(buf);
    }
    /* and through a job, as a worker reads its args */
    json_t *args = json_pack("{s:s, s:[s]}", "content", "", "lines", "");
    at_job_t job, back;
    unsigned char *buf = NULL;
    size_t len = 0;
    char err[128];
    if (at_job_init(&job, "files.write", "s", NULL, args) != AT_OK ||
        at_job_encode(&job, &buf, &len) != AT_OK ||
        at_job_decode(buf, len, &back, err, sizeof err) != AT_OK)
        _exit(4);
    json_t *got = at_job_args_json(&back);
    if (!got || !json_equal(got, args)) {
        fprintf(stderr, "job args {\"content\": \"\", \"lines\": [\"\"]}: %s\n",
                got ? "differ" : "NULL (malformed)");
        _exit(5);
    }
}

static void test_empty_strings(void **state)
{
    (void)state;
    expect_isolated_ok(empty_strings, "empty strings through msgpack -> JSON");
}

static void bad_utf8_key(void)
{
    /* {"\xc3\x28": 1000}: a key jansson refuses, with a heap-allocated value */
    static const unsigned char in[] = {0x81, 0xa2, 0xc3, 0x28, 0xcd, 0x03, 0xe8};
    if (at_msgpack_to_json(in, sizeof in) != NULL)
        _exit(2);
}

static void test_bad_utf8_key(void **state)
{
    (void)state;
    expect_isolated_ok(bad_utf8_key, "at_msgpack_to_json of a map with a non-UTF-8 key");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_full),  cmocka_unit_test(test_roundtrip_empty),
        cmocka_unit_test(test_limits_accepted), cmocka_unit_test(test_msgpack_json),
        cmocka_unit_test(test_empty_strings),   cmocka_unit_test(test_bad_utf8_key),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
