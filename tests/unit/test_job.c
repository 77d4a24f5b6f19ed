/*
 * Job envelope codec: round trips, and rejection of every kind of malformed
 * input a queue may hand a worker. Malformed inputs are built with msgpack's
 * own packer so they are exactly what a buggy or hostile producer would send.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <msgpack.h>

#include "atelier/job.h"

#define UUID "3f2a9c4e-1b2d-4c5e-8f90-a1b2c3d4e5f6"

#if defined(__SANITIZE_ADDRESS__)
/* The codec never needs more than a few tens of MiB for a 1 MiB input; make
 * any attempt at a larger allocation fatal, whatever the machine's overcommit
 * policy, so the huge-header tests below catch it. */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "max_allocation_size_mb=1024";
}
#endif

static char g_err[256];

typedef struct mp {
    msgpack_sbuffer sb;
    msgpack_packer pk;
} mp_t;

static void mp_init(mp_t *m)
{
    msgpack_sbuffer_init(&m->sb);
    msgpack_packer_init(&m->pk, &m->sb, msgpack_sbuffer_write);
}

static void mp_str(mp_t *m, const char *s)
{
    msgpack_pack_str(&m->pk, strlen(s));
    msgpack_pack_str_body(&m->pk, s, strlen(s));
}

/* Decode from an exact-size heap copy, so ASan sees any read past the end. */
static at_err_t decode(const void *buf, size_t len, at_job_t *job)
{
    unsigned char *copy = malloc(len ? len : 1);
    assert_non_null(copy);
    memcpy(copy, buf, len);
    g_err[0] = '\0';
    at_err_t err = at_job_decode(copy, len, job, g_err, sizeof g_err);
    free(copy);
    return err;
}

/* One field of a hand-built envelope: how to pack its value. */
enum { V_DEFAULT, V_OMIT, V_STR, V_INT, V_NIL, V_ARRAY, V_RAW, V_LATER };
typedef struct field {
    const char *key;
    int how;
    const char *s; /* V_STR, V_RAW (s with n bytes) */
    int64_t i;     /* V_INT; n for V_RAW */
} field_t;

static const char *const g_keys[] = {"id",          "kind",     "session", "attempt",
                                     "enqueued_at", "reply_to", "args"};

static void pack_default(mp_t *m, const char *key)
{
    if (!strcmp(key, "id"))
        mp_str(m, UUID);
    else if (!strcmp(key, "kind"))
        mp_str(m, "ping");
    else if (!strcmp(key, "session"))
        mp_str(m, "s-1");
    else if (!strcmp(key, "attempt"))
        msgpack_pack_uint32(&m->pk, 1);
    else if (!strcmp(key, "enqueued_at"))
        msgpack_pack_int64(&m->pk, 1700000000000);
    else if (!strcmp(key, "reply_to"))
        mp_str(m, "r:1");
    else {
        msgpack_pack_map(&m->pk, 1);
        mp_str(m, "a");
        msgpack_pack_int(&m->pk, 1);
    }
}

/* A full envelope with f's field packed as f says; the others valid. */
static void pack_envelope(mp_t *m, const field_t *f)
{
    mp_init(m);
    int omit = f && f->how == V_OMIT;
    msgpack_pack_map(&m->pk, omit ? 6 : 7);
    for (size_t k = 0; k < 7; k++) {
        const char *key = g_keys[k];
        if (!f || strcmp(f->key, key) != 0 || f->how == V_DEFAULT) {
            mp_str(m, key);
            pack_default(m, key);
            continue;
        }
        if (f->how == V_OMIT)
            continue;
        mp_str(m, key);
        switch (f->how) {
        case V_STR: mp_str(m, f->s); break;
        case V_INT: msgpack_pack_int64(&m->pk, f->i); break;
        case V_NIL: msgpack_pack_nil(&m->pk); break;
        case V_ARRAY:
            msgpack_pack_array(&m->pk, 1);
            msgpack_pack_int(&m->pk, 1);
            break;
        case V_RAW:
            msgpack_pack_str(&m->pk, (size_t)f->i);
            msgpack_pack_str_body(&m->pk, f->s, (size_t)f->i);
            break;
        case V_LATER: break; /* the caller packs args, the last field */
        }
    }
}

static const field_t g_args_later = {"args", V_LATER, NULL, 0};

static const char *g_args_json =
    "{\"path\": \"src/main.py\", \"sizes\": [0, 1, -2, 3000000000, -9007199254740993,"
    " 9223372036854775807, -9223372036854775808], \"ratio\": 0.5, \"pi\": 3.141592653589793,"
    " \"neg\": -1.25e-7, \"ok\": true, \"no\": false, \"none\": null,"
    " \"name\": \"h\\u00e9llo w\xc3\xb6rld \\u2713 \\u65e5\\u672c \\ud83d\\ude00\","
    " \"nested\": {\"list\": [{\"a\": [1, [2, [3]]]}, \"x\", null], \"empty\": {},"
    " \"earr\": []}}";

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

static void assert_rejected(const void *buf, size_t len, at_err_t want, const char *why)
{
    at_job_t job;
    at_err_t err = decode(buf, len, &job);
    if (err != want)
        fail_msg("%s: got error %d, want %d (\"%s\")", why, err, want, g_err);
    if (g_err[0] == '\0')
        fail_msg("%s: no error message", why);
    /* the job is left cleared */
    assert_null(job.args);
    assert_string_equal(job.id, "");
    assert_string_equal(job.kind, "");
}

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

/* Run fn in a child: a crash or an allocator abort fails the test, not the
 * whole test program. */
static int isolated(void (*fn)(void))
{
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        fn();
        _exit(0);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return status;
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
    int st = isolated(huge_headers);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fail_msg("decoding a container header that claims 2^32-1 entries in an 8-byte buffer "
                 "%s %d (expected a clean AT_EINVAL without a huge allocation)",
                 WIFEXITED(st) ? "exited with" : "died by signal",
                 WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
}

static void test_msgpack_json(void **state)
{
    (void)state;
    const char *texts[] = {g_args_json, "[1, \"two\", 3.5, [], {}, null, true]", "\"x\"",
                           "null", "-42", "1e300", "{\"k\": {\"j\": [false]}}"};
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
    int st = isolated(empty_strings);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fail_msg("empty strings through msgpack -> JSON: child %s %d",
                 WIFEXITED(st) ? "exited with" : "died by signal",
                 WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
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
    int st = isolated(bad_utf8_key);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fail_msg("at_msgpack_to_json of a map with a non-UTF-8 key: child %s %d",
                 WIFEXITED(st) ? "exited with" : "died by signal",
                 WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_full),  cmocka_unit_test(test_roundtrip_empty),
        cmocka_unit_test(test_truncated),       cmocka_unit_test(test_not_a_map),
        cmocka_unit_test(test_bad_fields),      cmocka_unit_test(test_limits_accepted),
        cmocka_unit_test(test_oversize),        cmocka_unit_test(test_depth),
        cmocka_unit_test(test_huge_headers),    cmocka_unit_test(test_msgpack_json),
        cmocka_unit_test(test_empty_strings),   cmocka_unit_test(test_bad_utf8_key),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
