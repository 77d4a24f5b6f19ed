/*
 * Job envelope and its msgpack codec. A job on a queue is a msgpack map
 * {id, kind, session, attempt, enqueued_at, reply_to, args}; args is itself a
 * map, kept encoded so a worker only decodes what its handler reads.
 */
#ifndef ATELIER_JOB_H
#define ATELIER_JOB_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "util.h"

#define AT_JOB_MAX_ENCODED (1u << 20) /* whole envelope, bytes */
#define AT_JOB_KIND_MAX 32
#define AT_JOB_SESSION_MAX 64
#define AT_JOB_REPLY_MAX 128
#define AT_JOB_MAX_DEPTH 16 /* nesting inside args */

typedef struct at_job {
    char id[AT_UUID_LEN + 1];
    char kind[AT_JOB_KIND_MAX + 1];
    char session[AT_JOB_SESSION_MAX + 1]; /* "" when the job is not about a session */
    uint32_t attempt;                     /* 1 on first delivery */
    int64_t enqueued_at;                  /* wall clock, ms */
    char reply_to[AT_JOB_REPLY_MAX + 1];  /* reply channel, "" for none */
    unsigned char *args;                  /* msgpack map, owned; NULL means {} */
    size_t args_len;
} at_job_t;

/* Fill a new job: fresh id, attempt 1, enqueued now, args from a JSON object
 * (NULL for none). Returns AT_EINVAL for a kind/session/reply_to too long or
 * args that are not an object. */
at_err_t at_job_init(at_job_t *job, const char *kind, const char *session, const char *reply_to,
                     const json_t *args);
void at_job_clear(at_job_t *job);

/* Encode into a malloc'd buffer the caller frees. */
at_err_t at_job_encode(const at_job_t *job, unsigned char **out, size_t *out_len);
/* Decode; on error the job is left cleared and errbuf says what was wrong. */
at_err_t at_job_decode(const unsigned char *buf, size_t len, at_job_t *job, char *errbuf,
                       size_t errlen);

/* args as a new JSON object (empty object when none); NULL on malformed args. */
json_t *at_job_args_json(const at_job_t *job);

/* JSON value <-> msgpack bytes (malloc'd). Used for args and replies. */
at_err_t at_msgpack_from_json(const json_t *v, unsigned char **out, size_t *out_len);
json_t *at_msgpack_to_json(const unsigned char *buf, size_t len);

#endif
