/* Helpers shared by the job codec tests: hand-built msgpack envelopes,
 * decoding from exact-size copies, and running a check in a child process. */
#ifndef ATELIER_TEST_JOB_FIXTURE_H
#define ATELIER_TEST_JOB_FIXTURE_H

#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#include "atelier/job.h"

#define UUID "3f2a9c4e-1b2d-4c5e-8f90-a1b2c3d4e5f6"

extern char g_err[256];               /* message of the last decode() */
extern const char *const g_args_json; /* args exercising every JSON type */

typedef struct mp {
    msgpack_sbuffer sb;
    msgpack_packer pk;
} mp_t;

void mp_init(mp_t *m);
void mp_str(mp_t *m, const char *s);

/* One field of a hand-built envelope: how to pack its value. */
enum { V_DEFAULT, V_OMIT, V_STR, V_INT, V_NIL, V_ARRAY, V_RAW, V_LATER };
typedef struct field {
    const char *key;
    int how;
    const char *s; /* V_STR, V_RAW (s with n bytes) */
    int64_t i;     /* V_INT; n for V_RAW */
} field_t;

/* args packed by the caller right after pack_envelope (it is the last key) */
extern const field_t g_args_later;

/* A full envelope (m initialised here) with f's field packed as f says and
 * the others valid; f NULL for a valid envelope. */
void pack_envelope(mp_t *m, const field_t *f);

/* at_job_decode from an exact-size heap copy, so ASan sees any overread. */
at_err_t decode(const void *buf, size_t len, at_job_t *job);
/* Decoding fails with want, says why, and leaves the job cleared. */
void assert_rejected(const void *buf, size_t len, at_err_t want, const char *why);

/* Run fn in a child process and fail the test (not the whole program) if it
 * crashes, aborts or exits non-zero. fn must not use cmocka asserts. */
void expect_isolated_ok(void (*fn)(void), const char *what);

#endif
