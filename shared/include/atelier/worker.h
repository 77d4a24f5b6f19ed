/*
 * The runtime every job-consuming process shares (session-manager,
 * sync-worker, backup-worker): config, libevent loop, Redis consumer, the
 * PostgreSQL pool, the `jobs` row of each durable job, replies, retries and
 * dead letters, heartbeat, metrics and graceful SIGTERM. A role's main.c
 * only registers its handlers and calls at_worker_main.
 *
 * Life of a job: delivered -> (durable) jobs row marked running, attempts+1;
 * a job whose row is already done is only acknowledged -> handler ->
 * at_job_done: row done + result, reply, XACK | at_job_fail: retry with
 * backoff (new entry, attempt+1) or, after ATELIER_JOB_MAX_ATTEMPTS or a
 * permanent failure, q:dead + row dead + error reply.
 */
#ifndef ATELIER_WORKER_H
#define ATELIER_WORKER_H

#include <jansson.h>

#include "config.h"
#include "db.h"
#include "io.h"
#include "job.h"
#include "redis.h"

typedef struct at_worker at_worker_t;
typedef struct at_job_ctx at_job_ctx_t;

typedef void at_job_handler_fn(at_job_ctx_t *ctx);

typedef struct at_handler {
    const char *kind;
    at_job_handler_fn *fn;
    int durable; /* mirror in the jobs table (everything but probes) */
} at_handler_t;

typedef struct at_worker_def {
    const char *role; /* "session", "sync", "backup" */
    const char *proc; /* process name in logs */
    const at_handler_t *handlers;
    size_t nhandlers;
    /* Optional: called once the loop, db and redis exist, before consuming. */
    int (*init)(at_worker_t *w);
    void (*shutdown)(at_worker_t *w);
} at_worker_def_t;

/* Runs the process; returns the exit code. */
int at_worker_main(const at_worker_def_t *def, int argc, char **argv);

const at_job_t *at_job_ctx_job(const at_job_ctx_t *ctx);
/* The job's args (borrowed; valid until done/fail). */
json_t *at_job_ctx_args(at_job_ctx_t *ctx);
at_worker_t *at_job_ctx_worker(const at_job_ctx_t *ctx);
/* Attempt number of this run (1-based, counts crashes for durable jobs). */
int at_job_ctx_attempt(const at_job_ctx_t *ctx);

/* Finish: result is stolen (NULL for none). Exactly one of these per job. */
void at_job_done(at_job_ctx_t *ctx, json_t *result);
/* Not for this instance now (another owns the job's session): put the job
 * back on its stream after delay_ms, without using an attempt and without
 * touching its jobs row, for any consumer to take. Ends the job here. */
void at_job_defer(at_job_ctx_t *ctx, int64_t delay_ms);
void at_job_fail(at_job_ctx_t *ctx, int permanent, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

at_io_t *at_worker_io(at_worker_t *w);
at_db_t *at_worker_db(at_worker_t *w);
at_redis_t *at_worker_redis(at_worker_t *w);
const at_config_t *at_worker_config(const at_worker_t *w);
struct event_base *at_worker_base(at_worker_t *w);

/* Handlers every role answers: "ping" (probe round trip) and "selftest"
 * (sleep / fail / an exactly-once effect in audit_log, for tests). */
extern const at_handler_t at_common_handlers[];
extern const size_t at_common_handlers_count;

#endif
