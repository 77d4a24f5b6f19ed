/* Job kinds every worker role answers. */
#include <stdlib.h>
#include <string.h>

#include "atelier/log.h"
#include "atelier/util.h"
#include "atelier/worker.h"

/* ping: the probe of /api/health/detailed?probe=1; not durable, answers at once. */
static void handle_ping(at_job_ctx_t *ctx)
{
    const at_config_t *cfg = at_worker_config(at_job_ctx_worker(ctx));
    at_job_done(ctx, json_pack("{s:b, s:s}", "pong", 1, "instance", cfg->instance));
}

/*
 * selftest: a job with controllable behaviour, for the queue's own tests and
 * for operators checking a deployment. Args (all optional):
 *   sleep_ms    wait this long first (on the loop, not blocking it)
 *   fail        fail with this message ...
 *   fail_times  ... only on the first N attempts (0 = always)
 *   permanent   the failure is permanent (straight to q:dead)
 *   effect      write one audit_log row, action "selftest.effect", target =
 *               job id, in the same statement that marks the job done: the
 *               effect exists exactly once however often the job is run
 */
typedef struct selftest {
    at_job_ctx_t *ctx;
    at_io_timer_t *timer;
    int64_t slept_ms;
} selftest_t;

static void selftest_effect_done(PGresult *res, const char *err, void *arg)
{
    selftest_t *st = arg;
    at_job_ctx_t *ctx = st->ctx;
    free(st);
    if (err) {
        at_job_fail(ctx, 0, "selftest effect: %s", err);
        return;
    }
    int inserted = atoi(PQcmdTuples(res));
    at_job_done(ctx, json_pack("{s:i, s:b}", "attempt", at_job_ctx_attempt(ctx), "effect_written",
                               inserted > 0));
}

static void selftest_go(void *arg)
{
    selftest_t *st = arg;
    at_job_ctx_t *ctx = st->ctx;
    at_io_timer_free(st->timer);
    st->timer = NULL;
    json_t *args = at_job_ctx_args(ctx);
    const char *fail = json_string_value(json_object_get(args, "fail"));
    json_int_t fail_times = json_integer_value(json_object_get(args, "fail_times"));
    if (fail && (fail_times <= 0 || at_job_ctx_attempt(ctx) <= fail_times)) {
        int permanent = json_is_true(json_object_get(args, "permanent"));
        free(st);
        at_job_fail(ctx, permanent, "%s", fail);
        return;
    }
    if (json_is_true(json_object_get(args, "effect"))) {
        const at_job_t *job = at_job_ctx_job(ctx);
        const at_config_t *cfg = at_worker_config(at_job_ctx_worker(ctx));
        char attempt[16];
        snprintf(attempt, sizeof attempt, "%d", at_job_ctx_attempt(ctx));
        const char *p[] = {job->id, cfg->instance, attempt};
        if (at_db_query(at_worker_db(at_job_ctx_worker(ctx)),
                        "WITH done AS (UPDATE jobs SET state = 'done', "
                        "result = jsonb_build_object('attempt', $3::int, 'effect_written', true), "
                        "finished_at = now(), updated_at = now() "
                        "WHERE id = $1 AND state <> 'done' RETURNING id) "
                        "INSERT INTO audit_log (actor, action, target, detail) "
                        "SELECT $2, 'selftest.effect', id::text, "
                        "jsonb_build_object('attempt', $3::int) FROM done",
                        3, p, selftest_effect_done, st) != AT_OK) {
            free(st);
            at_job_fail(ctx, 0, "selftest effect: database busy");
        }
        return;
    }
    json_t *res = json_pack("{s:i, s:I}", "attempt", at_job_ctx_attempt(ctx), "slept_ms",
                            (json_int_t)st->slept_ms);
    free(st);
    at_job_done(ctx, res);
}

static void handle_selftest(at_job_ctx_t *ctx)
{
    selftest_t *st = calloc(1, sizeof *st);
    if (!st) {
        at_job_fail(ctx, 0, "selftest: out of memory");
        return;
    }
    st->ctx = ctx;
    json_int_t ms = json_integer_value(json_object_get(at_job_ctx_args(ctx), "sleep_ms"));
    if (ms < 0 || ms > 600000) {
        free(st);
        at_job_fail(ctx, 1, "selftest: sleep_ms %lld out of range [0, 600000]", (long long)ms);
        return;
    }
    st->slept_ms = ms;
    if (ms == 0) {
        selftest_go(st);
        return;
    }
    st->timer = at_io_timer_new(at_worker_io(at_job_ctx_worker(ctx)), selftest_go, st);
    if (!st->timer) {
        selftest_go(st);
        return;
    }
    at_io_timer_start(st->timer, (uint64_t)ms, 0);
}

const at_handler_t at_common_handlers[] = {
    {"ping", handle_ping, 0},
    {"selftest", handle_selftest, 1},
};
const size_t at_common_handlers_count = sizeof at_common_handlers / sizeof at_common_handlers[0];
