/*
 * The session lifecycle: job handlers of the session-manager (lifecycle.h).
 *
 * Every job goes through the same small state machine:
 *
 *   enter ──(session busy)──> waits in the session's FIFO
 *     │
 *   begin: SELECT the session's row ──> plan (kind): refuse, nothing to do,
 *     │                                   or records only (loaded)
 *   work (kind) on a pool thread: the driver call
 *     │
 *   after (kind) on the loop: UPDATE the row, push a load job, publish
 *     │                        events
 *   finish: at_job_done / at_job_fail, then the next job of the session
 */
#include "lifecycle.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "atelier/events.h"
#include "atelier/log.h"
#include "atelier/path.h"
#include "atelier/queue.h"
#include "atelier/util.h"
#include "terminals.h"

#define SESS_BUCKETS 1024
#define STATUS_MAX 32
#define TIER_MAX 32
#define VOLUME_MAX 128

typedef struct op op_t;

/* plan's answer: run the kind's work on the pool, or the op is finished
 * (or waiting for its own records) already. */
enum { PLAN_WORK = 0, PLAN_HANDLED = 1 };

typedef struct kind_ops {
    const char *kind;
    int (*plan)(op_t *op);   /* loop: the row is read */
    void (*work)(op_t *op);  /* pool thread: driver calls only */
    void (*after)(op_t *op); /* loop: records, events, finish */
} kind_ops_t;

/* The jobs of one session: the one running and those waiting for it. */
typedef struct sess {
    char uuid[AT_JOB_SESSION_MAX + 1];
    struct sess *next; /* hash chain */
    op_t *running;
    op_t *wait_head, *wait_tail;
} sess_t;

struct op {
    at_job_ctx_t *ctx;
    const kind_ops_t *k;
    sess_t *s;
    op_t *next_wait;
    json_t *args; /* borrowed from ctx until finish */
    const char *session;
    /* the row */
    char status[STATUS_MAX];
    long long user_id;
    char workspace_id[AT_UUID_LEN + 1];
    char tier[TIER_MAX];
    int cpu_millis, memory_mb;
    int others_live;    /* other live sessions of the same workspace */
    int others_running; /* ... of which running or starting: they use the volume */
    int mine;           /* this instance holds the session's lease */
    char owner[128];    /* the holder otherwise */
    /* driver call: inputs (set on the loop before work) and outputs */
    char volume[VOLUME_MAX];
    sm_spec_t spec;
    sm_limits_t limits;
    sm_exec_t exec;
    sm_volume_action_t volume_action;
    int oom_before;
    const char *recovered; /* recover: attached, restarted, stopped, lost */
    sm_state_t state;
    sm_exec_result_t res;
    int rc;
    char err[SM_ERR_MAX];
    int64_t t0_us;
    int64_t work_ms;
};

static struct {
    at_worker_t *w;
    sm_driver_t *driver;
    at_pool_t *pool;
    int closing; /* sm_life_close ran: no new driver work, no next jobs */
    sess_t *buckets[SESS_BUCKETS];
} g;

static void begin(op_t *op);

/* The prefix of a statement that ends a session's sandbox (sleep, delete,
 * a sandbox replaced or lost): its terminals' rows ($1 the session) close
 * in the same statement (terminals.h). */
#define CLOSE_TERMINALS                                                                            \
    "WITH closed_terminals AS (UPDATE terminals SET status = 'closed', closed_at = now()"          \
    " WHERE session_uuid = $1 AND status IN ('opening', 'open')) "

/* ---- per-session order -------------------------------------------------- */

static unsigned hash(const char *s)
{
    unsigned h = 2166136261u; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h % SESS_BUCKETS;
}

static sess_t *sess_get(const char *uuid)
{
    unsigned b = hash(uuid);
    for (sess_t *s = g.buckets[b]; s; s = s->next)
        if (!strcmp(s->uuid, uuid))
            return s;
    sess_t *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    at_strlcpy(s->uuid, uuid, sizeof s->uuid);
    s->next = g.buckets[b];
    g.buckets[b] = s;
    return s;
}

int sm_life_busy(const char *uuid)
{
    for (sess_t *s = g.buckets[hash(uuid)]; s; s = s->next)
        if (!strcmp(s->uuid, uuid))
            return 1;
    return 0;
}

static void sess_drop(sess_t *s)
{
    for (sess_t **p = &g.buckets[hash(s->uuid)]; *p; p = &(*p)->next) {
        if (*p == s) {
            *p = s->next;
            free(s);
            return;
        }
    }
}

static void op_free(op_t *op)
{
    free(op->res.out);
    free(op->res.err);
    free(op);
}

/* The op's job is finished (or handed back to the queue): free it and
 * start the session's next job. */
static void release(op_t *op)
{
    sess_t *s = op->s;
    op_free(op);
    s->running = NULL;
    op_t *next = s->wait_head;
    if (!next) {
        sess_drop(s);
        return;
    }
    if (g.closing) /* its job stays in flight: reclaimed after the restart */
        return;
    s->wait_head = next->next_wait;
    if (!s->wait_head)
        s->wait_tail = NULL;
    next->next_wait = NULL;
    begin(next);
}

static void finish_ok(op_t *op, json_t *result)
{
    at_info("event=session_job_done session=%s kind=%s ms=%lld", op->session, op->k->kind,
            (long long)((at_mono_us() - op->t0_us) / 1000));
    at_job_done(op->ctx, result);
    release(op);
}

static void finish_fail(op_t *op, int permanent, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void finish_fail(op_t *op, int permanent, const char *fmt, ...)
{
    char msg[SM_ERR_MAX + 256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    at_warn("event=session_job_failed session=%s kind=%s permanent=%d error=\"%s\"", op->session,
            op->k->kind, permanent, msg);
    at_job_fail(op->ctx, permanent, "%s", msg);
    release(op);
}

/* ---- events ------------------------------------------------------------- */

static void publish(const char *session, json_t *ev)
{
    at_event_publish(at_worker_redis(g.w), session, ev);
}

static void publish_status(const char *session, const char *status, const char *message)
{
    publish(session,
            json_pack("{s:s, s:s, s:s?}", "type", "status", "status", status, "message", message));
}

/* ---- records ------------------------------------------------------------ */

/* 1 if the UPDATE ... RETURNING touched a row; on a database error the job
 * is failed (retried) and 0 returned with *failed set. */
static int updated(op_t *op, PGresult *res, const char *err, int *failed)
{
    *failed = 0;
    if (err) {
        *failed = 1;
        finish_fail(op, 0, "session %s: record: %s", op->session, err);
        return 0;
    }
    return PQntuples(res) > 0;
}

static void query(op_t *op, const char *sql, int n, const char *const *p, at_db_cb *cb)
{
    if (at_db_query(at_worker_db(g.w), sql, n, p, cb, op) != AT_OK)
        cb(NULL, "database queue full", op);
}

/* ---- start and wake: the sandbox runs, files load ----------------------- */

static void load_pushed(at_err_t err, const char *entry_id, void *arg)
{
    (void)entry_id;
    op_t *op = arg;
    if (err != AT_OK) {
        finish_fail(op, 0, "session %s: push load job: %s", op->session, at_strerror(err));
        return;
    }
    publish_status(op->session, "loading_files", "Loading files");
    finish_ok(op, json_pack("{s:s, s:s, s:I}", "status", "loading_files", "root", op->state.root,
                            "driver_ms", (json_int_t)op->work_ms));
}

/* The sync-worker fills the mounted volume and then sends `loaded`. A plain
 * push: the worker runtime upserts the jobs row of a job it has no row for. */
static void push_load(op_t *op)
{
    json_t *args = json_pack("{s:s, s:s, s:i, s:i}", "workspace_id", op->workspace_id, "root",
                             op->state.root, "uid", SM_SANDBOX_UID, "gid", SM_SANDBOX_UID);
    at_job_t job;
    at_err_t rc = args ? at_job_init(&job, "load", op->session, NULL, args) : AT_ENOMEM;
    json_decref(args);
    if (rc == AT_OK) {
        rc = at_queue_push(at_worker_redis(g.w), at_queue_stream("sync"), &job,
                           at_worker_config(g.w)->queue_maxlen, load_pushed, op);
        at_job_clear(&job);
    }
    if (rc != AT_OK) /* no callback comes */
        load_pushed(rc, NULL, op);
}

static void loading_recorded(PGresult *res, const char *err, void *arg)
{
    op_t *op = arg;
    int failed;
    if (updated(op, res, err, &failed)) {
        push_load(op);
    } else if (!failed) {
        /* deleted meanwhile: its delete job (queued behind us) tears it down */
        finish_ok(op, json_pack("{s:s}", "skipped", "session is terminating"));
    }
}

static void error_recorded(PGresult *res, const char *err, void *arg)
{
    (void)res;
    op_t *op = arg;
    if (err)
        at_error("event=session_error_record_failed session=%s error=\"%s\"", op->session, err);
    publish_status(op->session, "error", op->err);
    finish_fail(op, 1, "session %s: %s: %s", op->session, op->k->kind, op->err);
}

static void fill_spec(op_t *op, int cpu_millis, int memory_mb)
{
    op->spec = (sm_spec_t){.session = op->session,
                           .workspace_id = op->workspace_id,
                           .user_id = op->user_id,
                           .volume = op->volume,
                           .limits = {.cpu_millis = cpu_millis, .memory_mb = memory_mb}};
}

static int arg_int(op_t *op, const char *key, int fallback)
{
    json_t *v = json_object_get(op->args, key);
    return json_is_integer(v) && json_integer_value(v) > 0 ? (int)json_integer_value(v) : fallback;
}

static int is(const op_t *op, const char *status)
{
    return !strcmp(op->status, status);
}

static int gone(const op_t *op)
{
    return is(op, "terminating") || is(op, "terminated");
}

static int plan_start(op_t *op)
{
    if (gone(op)) {
        finish_fail(op, 1, "session %s is %s: not started", op->session, op->status);
        return PLAN_HANDLED;
    }
    if (is(op, "ready") || is(op, "sleeping")) { /* a redelivered start */
        finish_ok(op, json_pack("{s:s}", "status", op->status));
        return PLAN_HANDLED;
    }
    fill_spec(op, arg_int(op, "cpu_millis", op->cpu_millis),
              arg_int(op, "memory_mb", op->memory_mb));
    return PLAN_WORK;
}

static void work_start(op_t *op)
{
    op->rc = g.driver->create(g.driver->self, &op->spec, &op->state, op->err);
    if (op->rc == 0)
        op->rc = g.driver->start(g.driver->self, &op->spec, &op->state, op->err);
}

/* start and wake end the same way: loading_files + a load job, or error. */
static void after_start(op_t *op)
{
    sm_term_session_end(op->session); /* those of a sandbox this one replaces */
    if (op->rc != 0) {
        const char *p[] = {op->session, op->err};
        query(op,
              CLOSE_TERMINALS
              "UPDATE code_sessions SET status = 'error', status_message = $2, updated_at = now() "
              "WHERE uuid = $1 AND status NOT IN ('terminating', 'terminated')",
              2, p, error_recorded);
        return;
    }
    const char *p[] = {op->session, op->k->kind};
    query(op,
          CLOSE_TERMINALS
          "UPDATE code_sessions SET status = 'loading_files', status_message = 'Loading files', "
          "replicas = 1, last_activity = now(), last_activity_kind = $2, slept_at = NULL, "
          "updated_at = now() "
          "WHERE uuid = $1 AND status NOT IN ('terminating', 'terminated') RETURNING 1",
          2, p, loading_recorded);
}

static int plan_wake(op_t *op)
{
    if (is(op, "ready") || is(op, "loading_files")) {
        finish_ok(op, json_pack("{s:s}", "status", op->status));
        return PLAN_HANDLED;
    }
    if (!is(op, "sleeping") && !is(op, "error")) {
        finish_fail(op, 1, "session %s is %s: only a sleeping session wakes", op->session,
                    op->status);
        return PLAN_HANDLED;
    }
    fill_spec(op, op->cpu_millis, op->memory_mb);
    return PLAN_WORK;
}

static void work_wake(op_t *op)
{
    op->rc = g.driver->start(g.driver->self, &op->spec, &op->state, op->err);
}

/* ---- loaded: files are in, the session is ready ------------------------- */

static void ready_recorded(PGresult *res, const char *err, void *arg)
{
    op_t *op = arg;
    int failed;
    if (updated(op, res, err, &failed)) {
        publish_status(op->session, "ready", "Ready");
        publish(op->session, json_pack("{s:s}", "type", "pod_ready"));
        finish_ok(op, json_pack("{s:s}", "status", "ready"));
    } else if (!failed) {
        /* slept, deleted or failed while loading: the files stay, no event */
        finish_ok(op, json_pack("{s:s, s:b}", "status", op->status, "stale", 1));
    }
}

static int plan_loaded(op_t *op)
{
    const char *p[] = {op->session};
    query(op,
          "UPDATE code_sessions SET status = 'ready', status_message = 'Ready', replicas = 1, "
          "updated_at = now() WHERE uuid = $1 AND status = 'loading_files' RETURNING 1",
          1, p, ready_recorded);
    return PLAN_HANDLED;
}

/* ---- sleep -------------------------------------------------------------- */

static void sleeping_recorded(PGresult *res, const char *err, void *arg)
{
    op_t *op = arg;
    int failed;
    if (updated(op, res, err, &failed)) {
        publish_status(op->session, "sleeping", "Sleeping");
        finish_ok(op, json_pack("{s:s, s:I}", "status", "sleeping", "driver_ms",
                                (json_int_t)op->work_ms));
    } else if (!failed) {
        finish_ok(op, json_pack("{s:s}", "skipped", "session is terminating"));
    }
}

/* Any live session sleeps (one still loading its files too: the late
 * `loaded` finds it asleep and changes nothing). */
static int plan_sleep(op_t *op)
{
    if (is(op, "sleeping")) {
        finish_ok(op, json_pack("{s:s}", "status", op->status));
        return PLAN_HANDLED;
    }
    if (gone(op)) {
        finish_fail(op, 1, "session %s is %s: it does not sleep", op->session, op->status);
        return PLAN_HANDLED;
    }
    sm_term_session_end(op->session);
    return PLAN_WORK;
}

static void work_sleep(op_t *op)
{
    op->rc = g.driver->stop(g.driver->self, op->session, op->others_running == 0, op->err);
}

static void after_sleep(op_t *op)
{
    if (op->rc != 0) {
        finish_fail(op, 0, "session %s: sleep: %s", op->session, op->err);
        return;
    }
    const char *reason = json_string_value(json_object_get(op->args, "reason"));
    const char *p[] = {op->session,
                       reason && !strcmp(reason, "idle") ? "Sleeping (idle)" : "Sleeping"};
    query(op,
          CLOSE_TERMINALS
          "UPDATE code_sessions SET status = 'sleeping', status_message = $2, "
          "replicas = 0, slept_at = now(), memory_bytes = 0, updated_at = now() "
          "WHERE uuid = $1 AND status NOT IN ('terminating', 'terminated') RETURNING 1",
          2, p, sleeping_recorded);
}

/* ---- scale -------------------------------------------------------------- */

static void scale_recorded(PGresult *res, const char *err, void *arg)
{
    op_t *op = arg;
    int failed;
    if (updated(op, res, err, &failed) || !failed)
        finish_ok(op, json_pack("{s:i, s:i, s:s}", "cpu_millis", op->limits.cpu_millis, "memory_mb",
                                op->limits.memory_mb, "tier", op->tier));
}

static int plan_scale(op_t *op)
{
    if (!is(op, "ready") && !is(op, "loading_files")) {
        finish_fail(op, 1, "session %s is %s: only a running session scales", op->session,
                    op->status);
        return PLAN_HANDLED;
    }
    int cpu = arg_int(op, "cpu_millis", 0), mem = arg_int(op, "memory_mb", 0);
    if (cpu <= 0 || mem <= 0) {
        finish_fail(op, 1, "session %s: scale needs cpu_millis and memory_mb > 0", op->session);
        return PLAN_HANDLED;
    }
    const char *tier = json_string_value(json_object_get(op->args, "tier"));
    if (tier)
        at_strlcpy(op->tier, tier, sizeof op->tier);
    op->limits = (sm_limits_t){.cpu_millis = cpu, .memory_mb = mem};
    return PLAN_WORK;
}

static void work_scale(op_t *op)
{
    op->rc = g.driver->scale(g.driver->self, op->session, &op->limits, op->err);
}

static void after_scale(op_t *op)
{
    if (op->rc != 0) {
        finish_fail(op, 0, "session %s: scale: %s", op->session, op->err);
        return;
    }
    char cpu[16], mem[16];
    snprintf(cpu, sizeof cpu, "%d", op->limits.cpu_millis);
    snprintf(mem, sizeof mem, "%d", op->limits.memory_mb);
    const char *p[] = {op->session, op->tier, cpu, mem};
    query(op,
          "UPDATE code_sessions SET tier = $2, cpu_millis = $3::int, memory_mb = $4::int, "
          "updated_at = now() WHERE uuid = $1 RETURNING 1",
          4, p, scale_recorded);
}

/* ---- delete and shutdown ------------------------------------------------ */

static void terminated_recorded(PGresult *res, const char *err, void *arg)
{
    op_t *op = arg;
    int failed;
    if (updated(op, res, err, &failed) || !failed) {
        publish_status(op->session, "terminated", "Terminated");
        finish_ok(op, json_pack("{s:s, s:b, s:I}", "status", "terminated", "volume_kept",
                                op->volume_action != SM_VOLUME_REMOVE, "driver_ms",
                                (json_int_t)op->work_ms));
    }
}

static int plan_destroy(op_t *op)
{
    if (is(op, "terminated")) {
        finish_ok(op, json_pack("{s:s}", "status", op->status));
        return PLAN_HANDLED;
    }
    /* The last session of a workspace takes its volume along (the files
     * stay in the database; shutdown is the seed's name for that). One
     * that others still use stays, mounted while any of them runs. */
    op->volume_action = op->others_running > 0 ? SM_VOLUME_KEEP_MOUNTED
                        : op->others_live > 0  ? SM_VOLUME_UNMOUNT
                                               : SM_VOLUME_REMOVE;
    sm_term_session_end(op->session);
    return PLAN_WORK;
}

static void work_destroy(op_t *op)
{
    op->rc = g.driver->destroy(g.driver->self, op->session, op->volume, op->volume_action, op->err);
}

static void after_destroy(op_t *op)
{
    if (op->rc != 0) {
        finish_fail(op, 0, "session %s: %s: %s", op->session, op->k->kind, op->err);
        return;
    }
    const char *p[] = {op->session};
    query(op,
          CLOSE_TERMINALS
          "UPDATE code_sessions SET status = 'terminated', status_message = 'Terminated', "
          "is_active = false, replicas = 0, terminated_at = now(), updated_at = now() "
          "WHERE uuid = $1 RETURNING 1",
          1, p, terminated_recorded);
}

/* ---- exec --------------------------------------------------------------- */

/* Output as a JSON string PostgreSQL's jsonb accepts: invalid UTF-8 and NUL
 * bytes become U+FFFD. */
static json_t *text_json(const char *buf, size_t len)
{
    if (!memchr(buf, '\0', len) && at_utf8_valid(buf, len))
        return json_stringn(buf, len);
    char *out = malloc(len * 3 + 1); /* each byte at worst becomes 3 */
    if (!out)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        unsigned char c = (unsigned char)buf[i];
        size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (c == 0 || n == 0 || i + n > len || !at_utf8_valid(buf + i, n)) {
            memcpy(out + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i++;
        } else {
            memcpy(out + o, buf + i, n);
            o += n;
            i += n;
        }
    }
    json_t *j = json_stringn(out, o);
    free(out);
    return j;
}

static int plan_exec(op_t *op)
{
    if (!is(op, "ready")) {
        finish_fail(op, 1, "session %s is %s: exec needs a ready session", op->session, op->status);
        return PLAN_HANDLED;
    }
    const char *cmd = json_string_value(json_object_get(op->args, "command"));
    json_t *t = json_object_get(op->args, "timeout_s");
    json_t *in = json_object_get(op->args, "stdin");
    json_int_t timeout = json_is_integer(t) ? json_integer_value(t) : SM_EXEC_TIMEOUT_DEFAULT_S;
    if (!cmd || !cmd[0]) {
        finish_fail(op, 1, "session %s: exec needs a command (string)", op->session);
        return PLAN_HANDLED;
    }
    if ((t && !json_is_integer(t)) || timeout < 1 || timeout > SM_EXEC_TIMEOUT_MAX_S) {
        finish_fail(op, 1, "session %s: timeout_s must be an integer in 1..%d", op->session,
                    SM_EXEC_TIMEOUT_MAX_S);
        return PLAN_HANDLED;
    }
    if (in && !json_is_string(in)) {
        finish_fail(op, 1, "session %s: stdin must be a string", op->session);
        return PLAN_HANDLED;
    }
    /* the strings stay owned by the job's args, which live until finish */
    op->exec = (sm_exec_t){.command = cmd,
                           .stdin_data = in ? json_string_value(in) : NULL,
                           .stdin_len = in ? json_string_length(in) : 0,
                           .timeout_ms = (int)timeout * 1000,
                           .output_max = (size_t)at_worker_config(g.w)->exec_output_max};
    return PLAN_WORK;
}

/* The cgroup's OOM count before and after tells whether the kernel killed
 * something of this command at the memory limit; the state after also has
 * the disk figures the API's 507 check reads. */
static void work_exec(op_t *op)
{
    char ignore[SM_ERR_MAX];
    if (g.driver->state(g.driver->self, op->session, &op->state, ignore) == 0)
        op->oom_before = op->state.oom_kills;
    op->rc = g.driver->exec(g.driver->self, op->session, &op->exec, &op->res, op->err);
    if (g.driver->state(g.driver->self, op->session, &op->state, ignore) != 0)
        op->state.oom_kills = op->oom_before;
}

/* Usage figures of a state onto the row (best effort: the monitor writes
 * them again at its next look). */
static void record_usage(const char *session, const sm_state_t *st, const char *activity)
{
    char oom[16], mem[24], used[24], total[24];
    snprintf(oom, sizeof oom, "%d", st->oom_kills);
    snprintf(mem, sizeof mem, "%lld", (long long)st->memory_bytes);
    snprintf(used, sizeof used, "%lld", (long long)st->disk_used_bytes);
    snprintf(total, sizeof total, "%lld", (long long)st->disk_total_bytes);
    const char *p[] = {session, oom, mem, used, total, activity};
    at_db_query(at_worker_db(g.w),
                "UPDATE code_sessions SET oom_kills = greatest(oom_kills, $2::int), "
                "memory_bytes = $3::bigint, "
                "disk_used_bytes = CASE WHEN $5::bigint > 0 THEN $4::bigint END, "
                "disk_total_bytes = nullif($5::bigint, 0), "
                "last_activity = CASE WHEN $6::text IS NULL THEN last_activity ELSE now() END, "
                "last_activity_kind = coalesce($6::text, last_activity_kind) WHERE uuid = $1",
                6, p, NULL, NULL);
}

static void publish_oom(const char *session, int kills)
{
    publish(session, json_pack("{s:s, s:i, s:s}", "type", "oom", "oom_kills", kills, "message",
                               "A process was killed at the session's memory limit"));
}

static void after_exec(op_t *op)
{
    if (op->rc != 0) {
        finish_fail(op, 0, "session %s: exec: %s", op->session, op->err);
        return;
    }
    int oom = op->state.oom_kills > op->oom_before;
    record_usage(op->session, &op->state, "exec");
    if (oom)
        publish_oom(op->session, op->state.oom_kills);
    json_t *out = text_json(op->res.out ? op->res.out : "", op->res.out_len);
    json_t *err = text_json(op->res.err ? op->res.err : "", op->res.err_len);
    json_t *r =
        json_pack("{s:i, s:o*, s:o*, s:I, s:b, s:b, s:b, s:b}", "exit_code", op->res.exit_code,
                  "stdout", out, "stderr", err, "duration_ms", (json_int_t)op->res.duration_ms,
                  "timed_out", op->res.timed_out, "stdout_truncated", op->res.out_truncated,
                  "stderr_truncated", op->res.err_truncated, "oom_killed", oom);
    if (r && op->res.signal)
        json_object_set_new(r, "signal", json_integer(op->res.signal));
    if (!r) {
        finish_fail(op, 0, "session %s: exec: out of memory for the result", op->session);
        return;
    }
    finish_ok(op, r);
}

/* ---- recover: the host's sandbox made to match the record ---------------
 * Queued by the monitor (monitor.h) for a session of ours whose sandbox
 * does not match its status: adopted from a dead instance, found after a
 * restart, or vanished (host reboot, init killed). A running session whose
 * sandbox answers is re-attached as it is; one whose sandbox is gone is
 * started again (files loaded again) or, with ATELIER_RESTART_LOST=false,
 * marked error; a sleeping one whose sandbox still runs is stopped. */

static int plan_recover(op_t *op)
{
    if (gone(op) || is(op, "error")) {
        finish_ok(op, json_pack("{s:s}", "status", op->status));
        return PLAN_HANDLED;
    }
    fill_spec(op, op->cpu_millis, op->memory_mb);
    return PLAN_WORK;
}

static void work_recover(op_t *op)
{
    char ignore[SM_ERR_MAX];
    sm_state_t st;
    int running = g.driver->state(g.driver->self, op->session, &st, ignore) == 0 && st.running;
    op->rc = 0;
    if (is(op, "sleeping")) {
        op->recovered = running ? "stopped" : "asleep";
        if (running)
            op->rc = g.driver->stop(g.driver->self, op->session, op->others_running == 0, op->err);
    } else if (running) {
        op->recovered = "attached";
        op->state = st;
    } else if (at_worker_config(g.w)->restart_lost) {
        op->recovered = "restarted";
        work_start(op);
    } else {
        op->recovered = "lost";
    }
}

static void lost_recorded(PGresult *res, const char *err, void *arg)
{
    op_t *op = arg;
    int failed;
    if (updated(op, res, err, &failed)) {
        publish_status(op->session, "error", op->err);
        finish_ok(op, json_pack("{s:s, s:s}", "status", "error", "recovered", "lost"));
    } else if (!failed) {
        finish_ok(op, json_pack("{s:s}", "skipped", "session is terminating"));
    }
}

/* The sandbox is attached: so are its terminals (a failure there is
 * logged; the session itself is recovered). */
static void terminals_attached(void *arg, json_t *result, const char *err, int permanent)
{
    (void)err;
    (void)permanent;
    op_t *op = arg;
    finish_ok(op, json_pack("{s:s, s:s, s:o*}", "status", op->status, "recovered", op->recovered,
                            "terminals", result));
}

static void after_recover(op_t *op)
{
    at_info("event=session_recovered session=%s status=%s outcome=%s rc=%d", op->session,
            op->status, op->recovered, op->rc);
    if (!strcmp(op->recovered, "attached")) {
        sm_term_attach(op->session, terminals_attached, op);
        return;
    }
    if (!strcmp(op->recovered, "restarted")) {
        after_start(op); /* loading_files + load, or error */
        return;
    }
    sm_term_session_end(op->session); /* lost, stopped or asleep: no shell runs */
    if (op->rc != 0) {
        finish_fail(op, 0, "session %s: recover: %s", op->session, op->err);
        return;
    }
    if (!strcmp(op->recovered, "lost")) {
        snprintf(op->err, sizeof op->err,
                 "The sandbox stopped outside the session manager's control "
                 "(ATELIER_RESTART_LOST=false); wake the session to start it again");
        const char *p[] = {op->session, op->err};
        query(op,
              CLOSE_TERMINALS
              "UPDATE code_sessions SET status = 'error', status_message = $2, replicas = 0, "
              "updated_at = now() WHERE uuid = $1 AND status NOT IN ('terminating', 'terminated') "
              "RETURNING 1",
              2, p, lost_recorded);
        return;
    }
    finish_ok(op, json_pack("{s:s, s:s}", "status", op->status, "recovered", op->recovered));
}

/* ---- terminals: terminals.c runs them, in the session's order ----------- */

static void terminal_done(void *arg, json_t *result, const char *err, int permanent)
{
    op_t *op = arg;
    if (err)
        finish_fail(op, permanent, "session %s: %s", op->session, err);
    else
        finish_ok(op, result);
}

static int plan_terminal(op_t *op)
{
    sm_term_job(op->k->kind, op->session, op->status, op->args, terminal_done, op);
    return PLAN_HANDLED;
}

/* ---- the machine -------------------------------------------------------- */

static const kind_ops_t kinds[] = {
    {"start", plan_start, work_start, after_start},
    {"loaded", plan_loaded, NULL, NULL},
    {"sleep", plan_sleep, work_sleep, after_sleep},
    {"wake", plan_wake, work_wake, after_start},
    {"scale", plan_scale, work_scale, after_scale},
    {"delete", plan_destroy, work_destroy, after_destroy},
    {"shutdown", plan_destroy, work_destroy, after_destroy},
    {"exec", plan_exec, work_exec, after_exec},
    {"recover", plan_recover, work_recover, after_recover},
    {"terminal_open", plan_terminal, NULL, NULL},
    {"terminal_close", plan_terminal, NULL, NULL},
};

static void work_run(void *arg)
{
    op_t *op = arg;
    int64_t t0 = at_mono_us();
    op->err[0] = '\0';
    op->k->work(op);
    op->work_ms = (at_mono_us() - t0) / 1000;
}

static void work_done(void *arg, int ran)
{
    op_t *op = arg;
    if (!ran) {
        finish_fail(op, 0, "session %s: %s: shutting down before it ran", op->session, op->k->kind);
        return;
    }
    at_info("event=driver_call session=%s kind=%s rc=%d ms=%lld", op->session, op->k->kind, op->rc,
            (long long)op->work_ms);
    op->k->after(op);
}

static void row_read(PGresult *res, const char *err, void *arg)
{
    op_t *op = arg;
    if (err) {
        finish_fail(op, 0, "session %s: read: %s", op->session, err);
        return;
    }
    if (PQntuples(res) != 1) {
        finish_fail(op, 1, "session %s not found", op->session);
        return;
    }
    at_strlcpy(op->status, PQgetvalue(res, 0, 0), sizeof op->status);
    op->user_id = atoll(PQgetvalue(res, 0, 1));
    at_strlcpy(op->workspace_id, PQgetvalue(res, 0, 2), sizeof op->workspace_id);
    at_strlcpy(op->tier, PQgetvalue(res, 0, 3), sizeof op->tier);
    op->cpu_millis = atoi(PQgetvalue(res, 0, 4));
    op->memory_mb = atoi(PQgetvalue(res, 0, 5));
    op->others_live = atoi(PQgetvalue(res, 0, 6));
    op->others_running = atoi(PQgetvalue(res, 0, 7));
    op->mine = PQgetvalue(res, 0, 8)[0] == 't';
    at_strlcpy(op->owner, PQgetvalue(res, 0, 9), sizeof op->owner);
    at_strlcpy(op->volume, PQgetvalue(res, 0, 10), sizeof op->volume);
    if (!op->mine) {
        /* another live instance holds the session: its job, not ours */
        at_debug("event=session_job_deferred session=%s kind=%s owner=%s", op->session, op->k->kind,
                 op->owner);
        at_job_defer(op->ctx, SM_DEFER_MS);
        release(op);
        return;
    }
    if (op->k->plan(op) != PLAN_WORK)
        return;
    at_err_t rc = g.closing ? AT_ECLOSED : at_pool_submit(g.pool, work_run, work_done, op);
    if (rc != AT_OK)
        finish_fail(op, 0, "session %s: %s: driver pool: %s", op->session, op->k->kind,
                    at_strerror(rc));
}

static void begin(op_t *op)
{
    op->s->running = op;
    op->t0_us = at_mono_us();
    op->args = at_job_ctx_args(op->ctx);
    char ttl[24];
    snprintf(ttl, sizeof ttl, "%lld", (long long)at_worker_config(g.w)->lease_ttl_ms);
    const char *p[] = {op->session, at_worker_config(g.w)->instance, ttl};
    /* The row, and the session's lease taken (or renewed) in the same
     * statement; the lease condition is evaluated on the row as locked, so
     * two instances never both get it. */
    query(op,
          "WITH c AS (UPDATE code_sessions SET owner_instance = $2,"
          "   owner_lease_until = now() + $3::bigint * interval '1 millisecond'"
          " WHERE uuid = $1 AND (owner_instance IS NULL OR owner_instance = $2"
          "   OR owner_lease_until IS NULL OR owner_lease_until < now()) RETURNING 1) "
          "SELECT s.status, s.user_id, s.workspace_id::text, s.tier, coalesce(s.cpu_millis, 0),"
          " coalesce(s.memory_mb, 0),"
          " (SELECT count(*) FROM code_sessions o WHERE o.workspace_id = s.workspace_id"
          "   AND o.uuid <> s.uuid AND o.status NOT IN ('terminating', 'terminated')),"
          " (SELECT count(*) FROM code_sessions o WHERE o.workspace_id = s.workspace_id"
          "   AND o.uuid <> s.uuid AND o.status IN ('initializing', 'loading_files', 'ready')),"
          " EXISTS (SELECT 1 FROM c), coalesce(s.owner_instance, ''),"
          " coalesce(ws_volume_name(s.workspace_id), '')"
          " FROM code_sessions s WHERE s.uuid = $1",
          3, p, row_read);
}

/* Every handler: find the kind, then run now or queue behind the session's
 * running job. */
static void enter(at_job_ctx_t *ctx)
{
    const at_job_t *job = at_job_ctx_job(ctx);
    const kind_ops_t *k = NULL;
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (!strcmp(kinds[i].kind, job->kind))
            k = &kinds[i];
    if (!k || !job->session[0]) {
        at_job_fail(ctx, 1, "%s: the job names no session", job->kind);
        return;
    }
    op_t *op = calloc(1, sizeof *op);
    sess_t *s = op ? sess_get(job->session) : NULL;
    if (!s) {
        free(op);
        at_job_fail(ctx, 0, "%s %s: out of memory", job->kind, job->session);
        return;
    }
    op->ctx = ctx;
    op->k = k;
    op->s = s;
    op->session = s->uuid;
    if (s->running) {
        if (s->wait_tail)
            s->wait_tail->next_wait = op;
        else
            s->wait_head = op;
        s->wait_tail = op;
        at_debug("event=session_job_waits session=%s kind=%s", s->uuid, k->kind);
        return;
    }
    begin(op);
}

const at_handler_t sm_life_handlers[] = {
    {"start", enter, 1},         {"loaded", enter, 1},         {"sleep", enter, 1},
    {"wake", enter, 1},          {"scale", enter, 1},          {"delete", enter, 1},
    {"shutdown", enter, 1},      {"exec", enter, 1},           {"recover", enter, 1},
    {"terminal_open", enter, 1}, {"terminal_close", enter, 1},
};
const size_t sm_life_handlers_count = sizeof sm_life_handlers / sizeof sm_life_handlers[0];

int sm_life_init(at_worker_t *w, sm_driver_t *driver, at_pool_t *pool)
{
    if (!w || !driver || !pool)
        return -1;
    g.w = w;
    g.driver = driver;
    g.pool = pool;
    return 0;
}

void sm_life_close(void)
{
    g.closing = 1;
}

/* Ops still here belong to jobs in flight, whose database callbacks may
 * yet run: the worker runtime leaves such a process with _exit and their
 * entries are reclaimed, so they are left alone. Only empty state goes. */
void sm_life_free(void)
{
    size_t busy = 0;
    for (size_t b = 0; b < SESS_BUCKETS; b++)
        for (sess_t *s = g.buckets[b]; s; s = s->next)
            busy++;
    if (busy)
        at_warn("event=lifecycle_exit_busy sessions=%zu", busy);
}
