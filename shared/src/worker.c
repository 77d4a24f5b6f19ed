#include "atelier/worker.h"

#include <event2/event.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "atelier/heartbeat.h"
#include "atelier/log.h"
#include "atelier/metrics.h"
#include "atelier/queue.h"
#include "atelier/util.h"

#define DRAIN_CHECK_MS 50
#define MAX_BACKOFF_MS 60000

typedef enum { JOB_STARTING, JOB_RUNNING, JOB_FINISHING, JOB_WAITING_RETRY } job_state_t;

struct at_job_ctx {
    at_worker_t *w;
    struct at_job_ctx *prev, *next;
    char entry_id[AT_STREAM_ID_MAX];
    at_job_t job;
    const at_handler_t *handler;
    json_t *args;
    int attempt;
    int reclaimed;
    job_state_t state;
    int64_t started_us;
    char *error;   /* failure message, kept for the dead letter / retry */
    int permanent; /* at_job_fail said permanent: the reply says so */
    int deferred;  /* at_job_defer: requeued without using an attempt */
    int64_t defer_ms;
    at_io_timer_t *retry_timer;
};

struct at_worker {
    const at_worker_def_t *def;
    at_config_t cfg;
    struct event_base *base;
    at_io_t *io;
    at_db_t *db;
    at_redis_t *ctl; /* replies, heartbeat, metrics */
    at_consumer_t *consumer;
    at_heartbeat_t *hb;
    char stream[32];
    at_job_ctx_t *inflight; /* doubly linked list */
    int ninflight;
    int draining;
    int64_t drain_deadline_us;
    at_io_timer_t *drain_timer;
    at_io_timer_t *touch_timer;
    struct event *sigterm, *sigint;
    unsigned long long done_total, failed_total;
    at_metric_t *m_inflight;
};

/* ---- bookkeeping -------------------------------------------------------- */

static const at_handler_t *find_handler(at_worker_t *w, const char *kind)
{
    for (size_t i = 0; i < w->def->nhandlers; i++)
        if (!strcmp(w->def->handlers[i].kind, kind))
            return &w->def->handlers[i];
    for (size_t i = 0; i < at_common_handlers_count; i++)
        if (!strcmp(at_common_handlers[i].kind, kind))
            return &at_common_handlers[i];
    return NULL;
}

static void link_ctx(at_worker_t *w, at_job_ctx_t *c)
{
    c->next = w->inflight;
    if (w->inflight)
        w->inflight->prev = c;
    w->inflight = c;
    w->ninflight++;
    at_metric_set(w->m_inflight, w->ninflight);
}

/* Forget a job and give its slot back. The stream entry is acked (or left
 * pending for reclaim) by the caller before this. */
static void release(at_job_ctx_t *c)
{
    at_worker_t *w = c->w;
    if (c->prev)
        c->prev->next = c->next;
    else
        w->inflight = c->next;
    if (c->next)
        c->next->prev = c->prev;
    w->ninflight--;
    at_metric_set(w->m_inflight, w->ninflight);
    at_io_timer_free(c->retry_timer);
    json_decref(c->args);
    free(c->error);
    at_job_clear(&c->job);
    free(c);
    if (!w->draining)
        at_consumer_grant(w->consumer, 1);
}

static void count_outcome(at_job_ctx_t *c, const char *outcome)
{
    char labels[160];
    snprintf(labels, sizeof labels, "kind=\"%s\",outcome=\"%s\"", c->job.kind, outcome);
    at_metric_add(
        at_metrics_counter("atelier_jobs_total", "Jobs finished, by kind and outcome", labels), 1);
    if (c->started_us) {
        snprintf(labels, sizeof labels, "kind=\"%s\"", c->job.kind);
        at_metric_observe(at_metrics_histogram("atelier_job_duration_ms",
                                               "Handler time of a job, milliseconds", labels),
                          (double)(at_mono_us() - c->started_us) / 1000.0);
    }
}

static void send_reply(at_job_ctx_t *c, int ok, json_t *result, const char *error)
{
    if (!c->job.reply_to[0])
        return;
    json_t *msg = json_pack("{s:s, s:b, s:s, s:i}", "id", c->job.id, "ok", ok, "instance",
                            c->w->cfg.instance, "attempt", c->attempt);
    if (!msg)
        return;
    if (result)
        json_object_set(msg, "result", result);
    if (error) {
        json_object_set_new(msg, "error", json_string(error));
        /* refused for good (a request that cannot apply), not a failure
         * that used up its attempts: callers answer 409 rather than 502 */
        json_object_set_new(msg, "permanent", json_boolean(c->permanent));
    }
    char *s = json_dumps(msg, JSON_COMPACT);
    json_decref(msg);
    if (s) {
        at_redis_cmd(c->w->ctl, NULL, NULL, "PUBLISH %s %s", c->job.reply_to, s);
        free(s);
    }
}

/* ---- dead letters and retries ------------------------------------------ */

static void to_dead(at_worker_t *w, const char *entry_id, const unsigned char *payload, size_t len,
                    const char *error, int attempts)
{
    char att[16], at[24];
    snprintf(att, sizeof att, "%d", attempts);
    snprintf(at, sizeof at, "%lld", (long long)at_wall_ms());
    const char *extra[] = {"role", w->def->role, "error", error, "attempts", att, "failed_at", at};
    at_err_t err = at_consumer_move(w->consumer, entry_id, AT_QUEUE_DEAD, payload, len, 8, extra);
    if (err != AT_OK)
        at_error("event=dead_letter_failed entry=%s error=\"%s\"", entry_id, at_strerror(err));
    at_metric_add(at_metrics_counter("atelier_jobs_dead_total", "Jobs moved to q:dead", NULL), 1);
}

static void dead_row_done(PGresult *res, const char *err, void *arg)
{
    (void)res;
    at_job_ctx_t *c = arg;
    if (err) {
        /* the row could not be marked: leave the entry pending, another
         * delivery will find attempts exhausted and try again */
        at_error("event=job_dead_record_failed job=%s error=\"%s\"", c->job.id, err);
        release(c);
        return;
    }
    unsigned char *buf;
    size_t len;
    if (at_job_encode(&c->job, &buf, &len) == AT_OK) {
        to_dead(c->w, c->entry_id, buf, len, c->error, c->attempt);
        free(buf);
    }
    send_reply(c, 0, NULL, c->error);
    at_warn("event=job_dead job=%s kind=%s attempts=%d error=\"%s\"", c->job.id, c->job.kind,
            c->attempt, c->error);
    count_outcome(c, "dead");
    release(c);
}

static void go_dead(at_job_ctx_t *c)
{
    c->state = JOB_FINISHING;
    if (!c->handler || !c->handler->durable) {
        dead_row_done(NULL, NULL, c);
        return;
    }
    const char *p[] = {c->job.id, c->error};
    if (at_db_query(c->w->db,
                    "UPDATE jobs SET state = 'dead', error = $2, finished_at = now(), "
                    "updated_at = now() WHERE id = $1 AND state <> 'done'",
                    2, p, dead_row_done, c) != AT_OK)
        dead_row_done(NULL, "database queue full", c);
}

static void requeue_now(void *arg)
{
    at_job_ctx_t *c = arg;
    c->job.attempt = (uint32_t)c->attempt + (c->deferred ? 0 : 1);
    unsigned char *buf;
    size_t len;
    if (at_job_encode(&c->job, &buf, &len) == AT_OK) {
        at_consumer_move(c->w->consumer, c->entry_id, c->w->stream, buf, len, 0, NULL);
        free(buf);
    }
    count_outcome(c, c->deferred ? "deferred" : "retry");
    release(c);
}

/* Back onto the stream after delay_ms, same attempt, jobs row untouched. */
static void wait_then_requeue(at_job_ctx_t *c, int64_t delay)
{
    c->state = JOB_WAITING_RETRY;
    if (delay == 0 || c->w->draining) {
        requeue_now(c);
        return;
    }
    c->retry_timer = at_io_timer_new(c->w->io, requeue_now, c);
    if (!c->retry_timer) {
        requeue_now(c);
        return;
    }
    at_io_timer_start(c->retry_timer, (uint64_t)delay, 0);
}

static void defer_row_done(PGresult *res, const char *err, void *arg)
{
    (void)res;
    at_job_ctx_t *c = arg;
    if (err)
        at_warn("event=job_defer_record_failed job=%s error=\"%s\"", c->job.id, err);
    wait_then_requeue(c, c->defer_ms);
}

/* The start counted a delivery on the jobs row: this one was no attempt. */
void at_job_defer(at_job_ctx_t *c, int64_t delay_ms)
{
    c->deferred = 1;
    c->defer_ms = delay_ms < 0 ? 0 : delay_ms;
    c->state = JOB_FINISHING;
    const char *p[] = {c->job.id};
    if (!c->handler->durable ||
        at_db_query(c->w->db,
                    "UPDATE jobs SET state = 'queued', attempts = greatest(attempts - 1, 0), "
                    "updated_at = now() WHERE id = $1 AND state = 'running'",
                    1, p, defer_row_done, c) != AT_OK)
        defer_row_done(NULL, NULL, c);
}

static void retry_row_done(PGresult *res, const char *err, void *arg)
{
    (void)res;
    at_job_ctx_t *c = arg;
    if (err)
        at_warn("event=job_retry_record_failed job=%s error=\"%s\"", c->job.id, err);
    int64_t delay = c->w->cfg.job_retry_backoff_ms;
    for (int i = 1; i < c->attempt && delay < MAX_BACKOFF_MS; i++)
        delay *= 2;
    if (delay > MAX_BACKOFF_MS)
        delay = MAX_BACKOFF_MS;
    wait_then_requeue(c, delay);
}

void at_job_fail(at_job_ctx_t *c, int permanent, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    free(c->error);
    c->error = strdup(msg);
    c->permanent = permanent;
    c->w->failed_total++;
    if (permanent || c->attempt >= c->w->cfg.job_max_attempts) {
        go_dead(c);
        return;
    }
    at_info("event=job_failed job=%s kind=%s attempt=%d error=\"%s\"", c->job.id, c->job.kind,
            c->attempt, msg);
    c->state = JOB_FINISHING;
    if (!c->handler->durable) {
        retry_row_done(NULL, NULL, c);
        return;
    }
    const char *p[] = {c->job.id, c->error};
    if (at_db_query(c->w->db,
                    "UPDATE jobs SET state = 'retrying', error = $2, updated_at = now() "
                    "WHERE id = $1 AND state NOT IN ('done', 'dead')",
                    2, p, retry_row_done, c) != AT_OK)
        retry_row_done(NULL, "database queue full", c);
}

/* ---- success ------------------------------------------------------------ */

typedef struct done_ctx {
    at_job_ctx_t *c;
    json_t *result;
} done_ctx_t;

static void finish_ok(at_job_ctx_t *c, json_t *result)
{
    send_reply(c, 1, result, NULL);
    at_consumer_ack(c->w->consumer, c->entry_id);
    c->w->done_total++;
    count_outcome(c, "done");
    at_debug("event=job_done job=%s kind=%s attempt=%d", c->job.id, c->job.kind, c->attempt);
    json_decref(result);
    release(c);
}

static void done_row_done(PGresult *res, const char *err, void *arg)
{
    (void)res;
    done_ctx_t *d = arg;
    at_job_ctx_t *c = d->c;
    json_t *result = d->result;
    free(d);
    if (err) {
        /* Not durable, so not acknowledged: the entry is reclaimed and the
         * (idempotent) handler runs again. */
        at_error("event=job_done_record_failed job=%s error=\"%s\"", c->job.id, err);
        json_decref(result);
        release(c);
        return;
    }
    finish_ok(c, result);
}

void at_job_done(at_job_ctx_t *c, json_t *result)
{
    c->state = JOB_FINISHING;
    if (!c->handler->durable) {
        finish_ok(c, result);
        return;
    }
    done_ctx_t *d = malloc(sizeof *d);
    char *text = result ? json_dumps(result, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    if (!d) {
        free(text);
        json_decref(result);
        release(c);
        return;
    }
    d->c = c;
    d->result = result;
    const char *p[] = {c->job.id, text};
    if (at_db_query(c->w->db,
                    "UPDATE jobs SET state = 'done', result = $2::jsonb, error = NULL, "
                    "finished_at = now(), updated_at = now() WHERE id = $1 AND state <> 'done'",
                    2, p, done_row_done, d) != AT_OK)
        done_row_done(NULL, "database queue full", d);
    free(text);
}

/* ---- start -------------------------------------------------------------- */

static void run_handler(at_job_ctx_t *c)
{
    c->state = JOB_RUNNING;
    c->started_us = at_mono_us();
    at_debug("event=job_start job=%s kind=%s attempt=%d reclaimed=%d", c->job.id, c->job.kind,
             c->attempt, c->reclaimed);
    c->handler->fn(c);
}

static void start_row_done(PGresult *res, const char *err, void *arg)
{
    at_job_ctx_t *c = arg;
    if (err || PQntuples(res) != 1) {
        /* Leave the entry pending (not touched any more): it is reclaimed
         * after the claim timeout, by this instance or another. */
        at_error("event=job_start_record_failed job=%s error=\"%s\"", c->job.id,
                 err ? err : "no row");
        release(c);
        return;
    }
    const char *state = PQgetvalue(res, 0, 0);
    c->attempt = atoi(PQgetvalue(res, 0, 1));
    if (!strcmp(state, "done")) {
        /* Effect already durable (a previous owner died before its ack). */
        json_t *result = PQgetisnull(res, 0, 2)
                             ? NULL
                             : json_loads(PQgetvalue(res, 0, 2), JSON_DECODE_ANY, NULL);
        at_info("event=job_already_done job=%s kind=%s", c->job.id, c->job.kind);
        finish_ok(c, result);
        return;
    }
    if (!strcmp(state, "dead")) {
        at_consumer_ack(c->w->consumer, c->entry_id);
        release(c);
        return;
    }
    if (c->attempt > c->w->cfg.job_max_attempts) {
        char msg[1200];
        snprintf(msg, sizeof msg, "gave up after %d attempts: %s", c->attempt - 1,
                 PQgetisnull(res, 0, 3) ? "worker died during the job" : PQgetvalue(res, 0, 3));
        c->attempt--;
        c->error = strdup(msg);
        go_dead(c);
        return;
    }
    run_handler(c);
}

static void on_entry(at_consumer_t *cons, const char *entry_id, const unsigned char *payload,
                     size_t len, int reclaimed, void *arg)
{
    at_worker_t *w = arg;
    (void)cons;
    if (!payload) {
        at_warn("event=job_entry_missing entry=%s stream=%s", entry_id, w->stream);
        at_consumer_ack(w->consumer, entry_id);
        at_consumer_grant(w->consumer, 1);
        return;
    }
    at_job_ctx_t *c = calloc(1, sizeof *c);
    if (!c) {
        at_consumer_grant(w->consumer, 1); /* stays pending: reclaimed later */
        return;
    }
    c->w = w;
    c->reclaimed = reclaimed;
    snprintf(c->entry_id, sizeof c->entry_id, "%s", entry_id);
    link_ctx(w, c);
    char why[256];
    if (at_job_decode(payload, len, &c->job, why, sizeof why) != AT_OK) {
        at_warn("event=job_malformed entry=%s error=\"%s\"", entry_id, why);
        to_dead(w, entry_id, payload, len, why, 0);
        release(c);
        return;
    }
    c->attempt = (int)c->job.attempt;
    c->handler = find_handler(w, c->job.kind);
    if (!c->handler) {
        c->error = malloc(128);
        snprintf(c->error, 128, "unknown job kind \"%s\" for role %s", c->job.kind, w->def->role);
        /* unknown kinds are not durable to us, but mark a row if one exists */
        const char *p[] = {c->job.id, c->error};
        at_db_query(w->db,
                    "UPDATE jobs SET state = 'dead', error = $2, updated_at = now() WHERE id = $1",
                    2, p, NULL, NULL);
        go_dead(c);
        return;
    }
    if (!c->handler->durable) {
        run_handler(c);
        return;
    }
    json_t *args = at_job_args_json(&c->job);
    char *args_text = args ? json_dumps(args, JSON_COMPACT) : NULL;
    json_decref(args);
    char enq[32];
    snprintf(enq, sizeof enq, "%lld", (long long)c->job.enqueued_at);
    const char *p[] = {c->job.id,       c->job.kind, w->def->role, c->job.session,
                       w->cfg.instance, args_text,   enq};
    at_err_t err = at_db_query(
        w->db,
        "INSERT INTO jobs (id, kind, role, session, state, attempts, owner, args, enqueued_at, "
        "started_at) VALUES ($1, $2, $3, NULLIF($4, ''), 'running', 1, $5, $6::jsonb, "
        "to_timestamp($7::double precision / 1000), now()) "
        "ON CONFLICT (id) DO UPDATE SET "
        "state = CASE WHEN jobs.state IN ('done', 'dead') THEN jobs.state ELSE 'running' END, "
        "attempts = CASE WHEN jobs.state IN ('done', 'dead') THEN jobs.attempts "
        "ELSE jobs.attempts + 1 END, "
        "owner = CASE WHEN jobs.state IN ('done', 'dead') THEN jobs.owner ELSE EXCLUDED.owner END, "
        "started_at = now(), updated_at = now() "
        "RETURNING state, attempts, result::text, error",
        7, p, start_row_done, c);
    free(args_text);
    if (err != AT_OK) {
        at_warn("event=job_start_deferred job=%s error=\"%s\"", c->job.id, at_strerror(err));
        release(c);
    }
}

/* ---- timers, signals ---------------------------------------------------- */

static void touch_tick(void *arg)
{
    at_worker_t *w = arg;
    if (w->ninflight == 0)
        return;
    const char **ids = malloc(sizeof *ids * (size_t)w->ninflight);
    if (!ids)
        return;
    int n = 0;
    for (at_job_ctx_t *c = w->inflight; c; c = c->next)
        ids[n++] = c->entry_id;
    at_consumer_touch(w->consumer, ids, n);
    free(ids);
}

static void drain_tick(void *arg)
{
    at_worker_t *w = arg;
    int64_t now = at_mono_us();
    if (w->ninflight == 0 && !at_consumer_reading(w->consumer)) {
        at_info("event=drained");
        at_io_timer_stop(w->drain_timer);
        event_base_loopexit(w->base, NULL);
        return;
    }
    if (now >= w->drain_deadline_us) {
        at_warn("event=drain_timeout inflight=%d note=\"left pending for reclaim\"", w->ninflight);
        at_io_timer_stop(w->drain_timer);
        event_base_loopexit(w->base, NULL);
    }
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    at_worker_t *w = arg;
    if (w->draining) {
        at_warn("event=second_signal signal=%d note=\"exiting now\"", (int)sig);
        event_base_loopexit(w->base, NULL);
        return;
    }
    w->draining = 1;
    at_info("event=draining signal=%d inflight=%d timeout_ms=%lld", (int)sig, w->ninflight,
            (long long)w->cfg.shutdown_timeout_ms);
    at_consumer_stop(w->consumer);
    /* jobs waiting for a retry go back to the stream now */
    for (at_job_ctx_t *c = w->inflight, *next; c; c = next) {
        next = c->next;
        if (c->state == JOB_WAITING_RETRY && c->retry_timer) {
            at_io_timer_stop(c->retry_timer);
            requeue_now(c);
        }
    }
    w->drain_deadline_us = at_mono_us() + w->cfg.shutdown_timeout_ms * 1000;
    at_io_timer_start(w->drain_timer, DRAIN_CHECK_MS, DRAIN_CHECK_MS);
}

static void hb_fill(json_t *rec, void *arg)
{
    at_worker_t *w = arg;
    json_object_set_new(rec, "inflight", json_integer(w->ninflight));
    json_object_set_new(rec, "jobs_done", json_integer((json_int_t)w->done_total));
    json_object_set_new(rec, "jobs_failed", json_integer((json_int_t)w->failed_total));
    json_object_set_new(rec, "draining", json_boolean(w->draining));
    json_object_set_new(rec, "db_connections", json_integer(at_db_connected(w->db)));
}

static char *render_metrics(void *arg)
{
    at_worker_t *w = arg;
    char labels[256];
    snprintf(labels, sizeof labels, "role=\"%s\",instance=\"%s\"", w->def->proc, w->cfg.instance);
    return at_metrics_render(labels);
}

/* ---- accessors ---------------------------------------------------------- */

const at_job_t *at_job_ctx_job(const at_job_ctx_t *c)
{
    return &c->job;
}

json_t *at_job_ctx_args(at_job_ctx_t *c)
{
    if (!c->args)
        c->args = at_job_args_json(&c->job);
    if (!c->args)
        c->args = json_object();
    return c->args;
}

at_worker_t *at_job_ctx_worker(const at_job_ctx_t *c)
{
    return c->w;
}

int at_job_ctx_attempt(const at_job_ctx_t *c)
{
    return c->attempt;
}

at_io_t *at_worker_io(at_worker_t *w)
{
    return w->io;
}

at_db_t *at_worker_db(at_worker_t *w)
{
    return w->db;
}

at_redis_t *at_worker_redis(at_worker_t *w)
{
    return w->ctl;
}

const at_config_t *at_worker_config(const at_worker_t *w)
{
    return &w->cfg;
}

struct event_base *at_worker_base(at_worker_t *w)
{
    return w->base;
}

/* ---- main --------------------------------------------------------------- */

int at_worker_main(const at_worker_def_t *def, int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--version")) {
            printf("%s %s\n", def->proc, ATELIER_VERSION);
            return 0;
        }
        fprintf(stderr,
                "usage: %s [--version]  (configured by environment: see "
                "docs/configuration.md)\n",
                def->proc);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    at_worker_t *w = calloc(1, sizeof *w);
    if (!w)
        return 1;
    w->def = def;
    char err[512];
    at_log_init(def->proc, AT_LOG_INFO);
    if (at_config_load(&w->cfg, err, sizeof err) != AT_OK) {
        at_error("event=config_invalid error=\"%s\"", err);
        free(w);
        return 1;
    }
    at_log_level_t lvl = AT_LOG_INFO;
    at_log_parse_level(w->cfg.log_level, &lvl);
    at_log_init(def->proc, lvl);
    snprintf(w->stream, sizeof w->stream, "%s", at_queue_stream(def->role));

    int applied = 0;
    if (at_db_migrate(w->cfg.database_url, &applied, err, sizeof err) != AT_OK) {
        at_error("event=migrate_failed error=\"%s\"", err);
        at_config_free(&w->cfg);
        free(w);
        return 1;
    }

    w->base = event_base_new();
    w->io = at_io_event_new(w->base);
    w->db =
        at_db_new(w->io, w->cfg.database_url, (int)w->cfg.db_pool_size, (int)w->cfg.db_queue_max);
    w->ctl = at_redis_new(w->io, w->cfg.redis_url, "ctl");
    w->drain_timer = at_io_timer_new(w->io, drain_tick, w);
    w->touch_timer = at_io_timer_new(w->io, touch_tick, w);
    char group[48];
    snprintf(group, sizeof group, "g:%s", def->role);
    at_consumer_opts_t co = {
        .redis_url = w->cfg.redis_url,
        .stream = w->stream,
        .group = group,
        .consumer = w->cfg.instance,
        .claim_timeout_ms = w->cfg.job_claim_timeout_ms,
        .maxlen = w->cfg.queue_maxlen,
        .cb = on_entry,
        .arg = w,
    };
    w->consumer = at_consumer_new(w->io, &co);
    if (!w->base || !w->io || !w->db || !w->ctl || !w->consumer || !w->drain_timer ||
        !w->touch_timer) {
        at_error("event=start_failed error=\"cannot set up loop, database or redis\"");
        return 1;
    }
    w->m_inflight = at_metrics_gauge("atelier_jobs_inflight", "Jobs being handled now", NULL);
    if (def->init && def->init(w) != 0) {
        at_error("event=init_failed role=%s", def->role);
        return 1;
    }
    w->hb = at_heartbeat_start(w->io, w->ctl, def->proc, w->cfg.instance, w->cfg.heartbeat_ttl_ms,
                               hb_fill, w);
    char mkey[256];
    snprintf(mkey, sizeof mkey, "metrics:%s:%s", def->proc, w->cfg.instance);
    at_heartbeat_attach(w->hb, mkey, render_metrics, w);
    uint64_t touch_every = (uint64_t)(w->cfg.job_claim_timeout_ms / 3);
    at_io_timer_start(w->touch_timer, touch_every, touch_every);

    w->sigterm = evsignal_new(w->base, SIGTERM, on_signal, w);
    w->sigint = evsignal_new(w->base, SIGINT, on_signal, w);
    event_add(w->sigterm, NULL);
    event_add(w->sigint, NULL);

    at_info("event=started role=%s instance=%s stream=%s concurrency=%lld migrations_applied=%d",
            def->role, w->cfg.instance, w->stream, (long long)w->cfg.worker_concurrency, applied);
    at_consumer_grant(w->consumer, (int)w->cfg.worker_concurrency);

    event_base_dispatch(w->base);

    /* Shutdown: anything still in flight stays pending in Redis for reclaim. */
    if (def->shutdown)
        def->shutdown(w);
    at_heartbeat_stop(w->hb);
    w->draining = 1;
    /* let the goodbye commands (and acks of jobs just finished) reach Redis */
    struct timeval tv = {0, 100 * 1000};
    event_base_loopexit(w->base, &tv);
    event_base_dispatch(w->base);
    if (w->ninflight > 0) {
        /* Handlers still own these jobs' state; their entries stay pending and
         * are reclaimed by another instance. Leave without unwinding them. */
        at_warn("event=exit_with_inflight inflight=%d", w->ninflight);
        fflush(NULL);
        _exit(0);
    }
    at_consumer_free(w->consumer);
    at_redis_free(w->ctl);
    at_db_free(w->db);
    at_io_timer_free(w->drain_timer);
    at_io_timer_free(w->touch_timer);
    event_free(w->sigterm);
    event_free(w->sigint);
    at_io_free(w->io);
    event_base_free(w->base);
    at_info("event=exit");
    at_config_free(&w->cfg);
    at_metrics_reset();
    free(w);
    return 0;
}
