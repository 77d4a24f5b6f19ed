/* GET /api/jobs/{id}: a job's durable record. POST /api/jobs: enqueue a job
 * on a role's queue (admin: X-API-Key), optionally waiting for its reply. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "atelier/log.h"
#include "atelier/queue.h"
#include "atelier/util.h"
#include "auth.h"
#include "records.h"
#include "replies.h"
#include "routes.h"

#define JOB_COLUMNS                                                                                \
    "id::text, kind, role, session, state, attempts, owner, args::text, result::text, error, "     \
    "to_char(enqueued_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), "               \
    "to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), "                \
    "to_char(finished_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"

static json_t *col_json(PGresult *res, int c)
{
    if (PQgetisnull(res, 0, c))
        return json_null();
    json_t *j = json_loads(PQgetvalue(res, 0, c), JSON_DECODE_ANY, NULL);
    return j ? j : json_null();
}

static json_t *col_str(PGresult *res, int c)
{
    return PQgetisnull(res, 0, c) ? json_null() : json_string(PQgetvalue(res, 0, c));
}

static void job_row_done(PGresult *res, const char *err, void *arg)
{
    at_req_t *req = arg;
    if (err) {
        at_error("event=job_lookup_failed req=%s error=\"%s\"", req_id(req), err);
        req_error(req, 503, "Database unavailable");
        return;
    }
    if (PQntuples(res) == 0) {
        req_error(req, 404, "Job not found");
        return;
    }
    json_t *j = json_object();
    static const char *const names[] = {
        "id",   "kind",   "role",  "session",     "state",      "attempts",   "owner",
        "args", "result", "error", "enqueued_at", "started_at", "finished_at"};
    for (int c = 0; c < 13; c++) {
        json_t *v;
        if (c == 5)
            v = json_integer(atoi(PQgetvalue(res, 0, c)));
        else if (c == 7 || c == 8)
            v = col_json(res, c);
        else
            v = col_str(res, c);
        json_object_set_new(j, names[c], v);
    }
    req_json(req, 200, j);
}

void route_job_get(at_req_t *req)
{
    const char *id = req_param(req, 0);
    if (!at_is_uuid(id)) {
        req_error(req, 404, "Job not found");
        return;
    }
    /* a user sees the jobs of their own sessions; admins see every job */
    const principal_t *pr = req_principal(req);
    char scope[24];
    snprintf(scope, sizeof scope, "%lld",
             pr->is_admin || pr->service ? 0LL : (long long)pr->user_id);
    const char *p[] = {id, scope};
    if (at_db_query(req_gw(req)->db,
                    "SELECT " JOB_COLUMNS " FROM jobs WHERE id = $1 AND ($2::bigint = 0 OR "
                    "session IN (SELECT uuid FROM code_sessions WHERE user_id = $2::bigint))",
                    2, p, job_row_done, req) != AT_OK)
        req_error(req, 503, "Database busy");
}

/* ---- POST /api/jobs ------------------------------------------------------ */

typedef struct create {
    at_req_t *req;
    at_job_t job;
    char role[16];
    int wait;
    int64_t timeout_ms;
} create_t;

static void create_free(create_t *c)
{
    at_job_clear(&c->job);
    free(c);
}

static void reply_arrived(json_t *reply, at_err_t err, void *arg)
{
    create_t *c = arg;
    if (!reply)
        req_json(c->req, err == AT_ETIMEOUT ? 202 : 503,
                 json_pack("{s:s, s:s, s:s}", "id", c->job.id, "status", "queued", "detail",
                           err == AT_ETIMEOUT ? "no reply in time; poll GET /api/jobs/{id}"
                                              : at_strerror(err)));
    else
        req_json(c->req, json_is_true(json_object_get(reply, "ok")) ? 200 : 500,
                 json_incref(reply));
    create_free(c);
}

static void pushed(at_err_t err, const char *entry_or_error, void *arg)
{
    create_t *c = arg;
    if (err != AT_OK) {
        at_error("event=job_push_failed job=%s error=\"%s\"", c->job.id, entry_or_error);
        const char *p[] = {c->job.id, entry_or_error};
        at_db_query(
            req_gw(c->req)->db,
            "UPDATE jobs SET state = 'dead', error = 'enqueue failed: ' || $2 WHERE id = $1", 2, p,
            NULL, NULL);
        req_error(c->req, 503, "Queue unavailable");
    } else {
        req_json(c->req, 202,
                 json_pack("{s:s, s:s, s:s}", "id", c->job.id, "status", "queued", "stream_id",
                           entry_or_error));
    }
    create_free(c);
}

static void row_inserted(PGresult *res, const char *err, void *arg)
{
    (void)res;
    create_t *c = arg;
    gateway_t *gw = req_gw(c->req);
    if (err) {
        at_error("event=job_insert_failed job=%s error=\"%s\"", c->job.id, err);
        req_error(c->req, 503, "Database unavailable");
        create_free(c);
        return;
    }
    at_err_t e;
    if (c->wait)
        e = replies_send(gw->replies, c->role, &c->job, c->timeout_ms, reply_arrived, c);
    else
        e = at_queue_push(gw->redis, at_queue_stream(c->role), &c->job, gw->cfg.queue_maxlen,
                          pushed, c);
    if (e != AT_OK) {
        req_error(c->req, 503, "Queue unavailable: %s", at_strerror(e));
        create_free(c);
    }
}

void route_job_create(at_req_t *req)
{
    json_t *body = req_json_body(req);
    if (!body)
        return;
    const char *role = json_string_value(json_object_get(body, "role"));
    const char *kind = json_string_value(json_object_get(body, "kind"));
    const char *session = json_string_value(json_object_get(body, "session"));
    json_t *args = json_object_get(body, "args");
    json_t *timeout = json_object_get(body, "timeout_ms");
    if (!role || !at_queue_role_valid(role)) {
        req_error(req, 422, "role must be one of session, sync, backup");
    } else if (!kind || !*kind || strlen(kind) > AT_JOB_KIND_MAX) {
        req_error(req, 422, "kind must be a string of 1..%d characters", AT_JOB_KIND_MAX);
    } else if (args && !json_is_object(args)) {
        req_error(req, 422, "args must be an object");
    } else if (timeout && (!json_is_integer(timeout) || json_integer_value(timeout) < 1 ||
                           json_integer_value(timeout) > 600000)) {
        req_error(req, 422, "timeout_ms must be an integer in [1, 600000]");
    } else {
        create_t *c = calloc(1, sizeof *c);
        at_err_t err = c ? at_job_init(&c->job, kind, session, NULL, args) : AT_ENOMEM;
        if (err != AT_OK) {
            req_error(req, err == AT_ETOOBIG ? 413 : 422, "invalid job: %s", at_strerror(err));
            free(c);
            json_decref(body);
            return;
        }
        c->req = req;
        at_strlcpy(c->role, role, sizeof c->role);
        c->wait = json_is_true(json_object_get(body, "wait"));
        c->timeout_ms = timeout ? json_integer_value(timeout) : req_gw(req)->cfg.reply_timeout_ms;
        char *args_text = args ? json_dumps(args, JSON_COMPACT) : strdup("{}");
        char uid[24];
        const char *p[8];
        audit_params(req, p, uid);
        p[3] = c->job.id;
        p[4] = kind;
        p[5] = role;
        p[6] = session ? session : "";
        p[7] = args_text;
        if (at_db_query(req_gw(req)->db,
                        "WITH j AS (INSERT INTO jobs (id, kind, role, session, state, args) "
                        "VALUES ($4, $5, $6, NULLIF($7, ''), 'queued', $8::jsonb) "
                        "RETURNING id, kind, role), "
                        "a AS (" AUDIT_FROM("job.enqueue", "j.id::text",
                                            "json_build_object('kind', j.kind, 'role', j.role)",
                                            "j") ") "
                                                 "SELECT 1",
                        8, p, row_inserted, c) != AT_OK) {
            req_error(req, 503, "Database busy");
            create_free(c);
        }
        free(args_text);
    }
    json_decref(body);
}
