#include "job_fixture.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#if defined(__SANITIZE_ADDRESS__)
/* The codec never needs more than a few tens of MiB for a 1 MiB input; make
 * any larger allocation fatal, whatever the machine's overcommit policy, so
 * the huge-header tests catch an attempt at one. */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "max_allocation_size_mb=1024";
}
#endif

char g_err[256];

const char *const g_args_json =
    "{\"path\": \"src/main.py\", \"sizes\": [0, 1, -2, 3000000000, -9007199254740993,"
    " 9223372036854775807, -9223372036854775808], \"ratio\": 0.5, \"pi\": 3.141592653589793,"
    " \"neg\": -1.25e-7, \"ok\": true, \"no\": false, \"none\": null,"
    " \"name\": \"h\\u00e9llo w\xc3\xb6rld \\u2713 \\u65e5\\u672c \\ud83d\\ude00\","
    " \"nested\": {\"list\": [{\"a\": [1, [2, [3]]]}, \"x\", null], \"empty\": {},"
    " \"earr\": []}}";

const field_t g_args_later = {"args", V_LATER, NULL, 0};

void mp_init(mp_t *m)
{
    msgpack_sbuffer_init(&m->sb);
    msgpack_packer_init(&m->pk, &m->sb, msgpack_sbuffer_write);
}

void mp_str(mp_t *m, const char *s)
{
    msgpack_pack_str(&m->pk, strlen(s));
    msgpack_pack_str_body(&m->pk, s, strlen(s));
}

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

void pack_envelope(mp_t *m, const field_t *f)
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
        case V_STR:
            mp_str(m, f->s);
            break;
        case V_INT:
            msgpack_pack_int64(&m->pk, f->i);
            break;
        case V_NIL:
            msgpack_pack_nil(&m->pk);
            break;
        case V_ARRAY:
            msgpack_pack_array(&m->pk, 1);
            msgpack_pack_int(&m->pk, 1);
            break;
        case V_RAW:
            msgpack_pack_str(&m->pk, (size_t)f->i);
            msgpack_pack_str_body(&m->pk, f->s, (size_t)f->i);
            break;
        case V_LATER:
            break; /* the caller packs args, the last field */
        }
    }
}

at_err_t decode(const void *buf, size_t len, at_job_t *job)
{
    unsigned char *copy = malloc(len ? len : 1);
    assert_non_null(copy);
    memcpy(copy, buf, len);
    g_err[0] = '\0';
    at_err_t err = at_job_decode(copy, len, job, g_err, sizeof g_err);
    free(copy);
    return err;
}

void assert_rejected(const void *buf, size_t len, at_err_t want, const char *why)
{
    at_job_t job;
    at_err_t err = decode(buf, len, &job);
    if (err != want)
        fail_msg("%s: got error %d, want %d (\"%s\")", why, err, want, g_err);
    if (g_err[0] == '\0')
        fail_msg("%s: no error message", why);
    assert_null(job.args);
    assert_string_equal(job.id, "");
    assert_string_equal(job.kind, "");
}

void expect_isolated_ok(void (*fn)(void), const char *what)
{
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        fn();
        _exit(0);
    }
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fail_msg("%s: child %s %d", what, WIFEXITED(st) ? "exited with" : "died by signal",
                 WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
}
