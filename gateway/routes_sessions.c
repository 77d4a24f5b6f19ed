/*
 * Sessions: the operations both API families share, and the FastAPI family's
 * handlers (/api/sessions). routes_client.c holds the Client API v3.1
 * handlers (/session, /sessions), which call the same operations and only
 * render their own answer shapes.
 *
 * The runtime is not here: a change is recorded with its jobs row and its
 * audit row in ONE statement, then the job goes onto q:session and the
 * request is answered; nothing waits for the session manager. Every
 * operation answers with the session row's columns (SESSION_COLUMNS) so one
 * set of renderers serves every statement.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "atelier/crypto.h"
#include "atelier/log.h"
#include "atelier/util.h"
#include "records.h"
#include "replies.h"
#include "routes.h"
#include "sessions.h"
#include "ws_policy.h"

#define EXEC_TIMEOUT_S 30       /* default of POST /api/sessions/{uuid}/exec */
#define EXEC_TIMEOUT_MAX_S 600  /* its largest timeout_s */
#define SESSION_LIST_MAX 1000   /* rows one list answer may hold */
#define SESSION_NAME_MAX 255    /* bytes */
#define SESSION_LANGUAGE_MAX 32 /* bytes */

/* A tier's resources (ATELIER_TIERS); 0 for an unknown tier. */
int session_tier(at_req_t *req, const char *name, int *cpu_millis, int *memory_mb)
{
    return at_config_tier(&req_gw(req)->cfg, name, cpu_millis, memory_mb);
}

/* The default file of a new workspace (platform-features.md). */
static const char default_file_name[] = "script.py";
static const char default_file_content[] = "print(\"Hello from Atelier!\")\n";

/* ---- the session row -------------------------------------------------------
 * Every statement answers these columns, in this order; the statements
 * that queue a job add the job's kind, session and args so it can be pushed
 * onto the stream, and some add one more value (C_EXTRA). */
enum {
    C_ID,
    C_UUID,
    C_USER,
    C_NAME,
    C_LANGUAGE,
    C_ACTIVE,
    C_STATUS,
    C_STATUS_MESSAGE,
    C_TIER,
    C_REPLICAS,
    C_CPU,
    C_MEMORY,
    C_WORKSPACE,
    C_CREATED,
    C_UPDATED,
    C_ACTIVITY,
    C_ACTIVITY_KIND, /* what the last activity was: api, exec, terminal, cpu, create */
    C_OOM,           /* processes the kernel killed at the memory limit */
    C_MEMORY_BYTES,  /* cgroup usage at the manager's last look */
    C_DISK_USED,     /* volume bytes used / size at the last look */
    C_DISK_TOTAL,
    C_JOB,      /* the job this answer is about (reads: the newest) */
    C_OWNER,    /* users.external_id, else users.email */
    C_QUEUE,    /* jobs of the session not finished (reads only) */
    C_JOB_KIND, /* non-NULL when the statement inserted a job */
    C_JOB_SESSION,
    C_JOB_ARGS,
    C_EXTRA,
};

/* clang-format off */
#define SESSION_COLUMNS                                                                            \
    "s.id, s.uuid, s.user_id, s.name, s.language, s.is_active, s.status, s.status_message,"        \
    " s.tier, s.replicas, s.cpu_millis, s.memory_mb, s.workspace_id::text, "                       \
    SQL_ISO("s.created_at") ", " SQL_ISO("s.updated_at") ", " SQL_ISO("s.last_activity")    \
    ", s.last_activity_kind, s.oom_kills, s.memory_bytes, s.disk_used_bytes, s.disk_total_bytes"

/* Reads: the newest job, the owner's external id and the open jobs. */
#define SESSION_SELECT                                                                             \
    "SELECT " SESSION_COLUMNS ","                                                                  \
    " (SELECT j.id::text FROM jobs j WHERE j.session = s.uuid"                                     \
    "  ORDER BY j.enqueued_at DESC LIMIT 1),"                                                      \
    " coalesce(u.external_id, u.email),"                                                           \
    " (SELECT count(*) FROM jobs j"                                                                \
    "  WHERE j.session = s.uuid AND j.state IN ('queued', 'running', 'retrying'))"                 \
    " FROM code_sessions s JOIN users u ON u.id = s.user_id "
/* clang-format on */

/* The jobs row of a write: one per row of `from` (which has uuid and
 * workspace_id), id and kind given, args merged with the workspace id. */
#define SQL_JOB(id, kind, args, from)                                                              \
    "INSERT INTO jobs (id, kind, role, session, state, args) SELECT " id "::uuid, " kind           \
    ", 'session', uuid, 'queued', (" args ")::jsonb || jsonb_build_object('workspace_id', "        \
    "workspace_id) FROM " from " RETURNING id, kind, session, args"

/* The tail of a write's answer: job id, owner, no queue length, the job. */
#define WRITE_TAIL(job, owner) ", " job ", " owner ", NULL, j.kind, j.session, j.args::text"

static json_t *col_text(const PGresult *res, int row, int col)
{
    return PQgetisnull(res, row, col) ? json_null() : json_string(PQgetvalue(res, row, col));
}

static json_t *col_int(const PGresult *res, int row, int col)
{
    if (PQgetisnull(res, row, col))
        return json_null();
    return json_integer(strtoll(PQgetvalue(res, row, col), NULL, 10));
}

/* The FastAPI session object (fastapi-backend.md), from any statement. */
json_t *session_json(const PGresult *res, int row)
{
    static const struct {
        const char *name;
        int col;
        char type; /* s: text, i: integer, b: boolean */
    } fields[] = {
        {"id", C_ID, 'i'},
        {"uuid", C_UUID, 's'},
        {"user_id", C_USER, 'i'},
        {"name", C_NAME, 's'},
        {"language", C_LANGUAGE, 's'},
        {"is_active", C_ACTIVE, 'b'},
        {"status", C_STATUS, 's'},
        {"status_message", C_STATUS_MESSAGE, 's'},
        {"tier", C_TIER, 's'},
        {"replicas", C_REPLICAS, 'i'},
        {"cpu_millis", C_CPU, 'i'},
        {"memory_mb", C_MEMORY, 'i'},
        {"workspace_id", C_WORKSPACE, 's'},
        {"created_at", C_CREATED, 's'},
        {"updated_at", C_UPDATED, 's'},
        {"last_activity", C_ACTIVITY, 's'},
        {"last_activity_kind", C_ACTIVITY_KIND, 's'},
        {"oom_kills", C_OOM, 'i'},
        {"memory_bytes", C_MEMORY_BYTES, 'i'},
        {"disk_used_bytes", C_DISK_USED, 'i'},
        {"disk_total_bytes", C_DISK_TOTAL, 'i'},
        {"job_id", C_JOB, 's'},
    };
    json_t *o = json_object();
    for (size_t i = 0; o && i < sizeof fields / sizeof fields[0]; i++) {
        int c = fields[i].col;
        json_t *v;
        if (fields[i].type == 'i')
            v = col_int(res, row, c);
        else if (fields[i].type == 'b')
            v = json_boolean(PQgetvalue(res, row, c)[0] == 't');
        else
            v = col_text(res, row, c);
        json_object_set_new(o, fields[i].name, v);
    }
    return o;
}

const char *session_owner(const PGresult *res, int row)
{
    return PQgetisnull(res, row, C_OWNER) ? NULL : PQgetvalue(res, row, C_OWNER);
}

long long session_queue_length(const PGresult *res, int row)
{
    return strtoll(PQgetvalue(res, row, C_QUEUE), NULL, 10);
}

/* The statement's extra value (chat: message id; shutdown: workspace id). */
const char *session_extra(const PGresult *res, int row)
{
    if (PQnfields(res) <= C_EXTRA || PQgetisnull(res, row, C_EXTRA))
        return NULL;
    return PQgetvalue(res, row, C_EXTRA);
}

/* ---- running one operation -------------------------------------------------
 * One statement; `check` answers the operation's own errors (no row, a
 * session in the wrong state); then `render` builds the answer; if the
 * statement queued a job, the answer waits until the job is on the stream. */

typedef int check_fn(at_req_t *req, PGresult *res);

#define OP_MAX_PARAMS 18

typedef struct op {
    at_req_t *req;
    const char *what; /* for logs: "session.create" */
    int status;       /* of the success answer */
    check_fn *check;
    session_render_fn *render;
    const void *ctx;
    json_t *answer;          /* waiting for the push, or the 202 answer if no reply comes in time */
    int64_t wait_ms;         /* > 0: answer with the job's reply, not at the push */
    session_reply_fn *reply; /* renders the reply (NULL: its result + job_id) */
    int late_is_202;         /* no reply in time: 202 with `answer` (else 504) */
    /* Set by op_retry_on_conflict: the statement and copies of its
     * parameters, run once more after a unique violation. */
    const char *conflict; /* the answer if the retry conflicts too */
    const char *sql;
    int nparams;
    char *params[OP_MAX_PARAMS];
    int retried;
} op_t;

static op_t *op_new(at_req_t *req, const char *what, int status, check_fn *check,
                    session_render_fn *render, const void *ctx)
{
    op_t *op = calloc(1, sizeof *op);
    if (!op) {
        req_error(req, 503, "Out of memory");
        return NULL;
    }
    op->req = req;
    op->what = what;
    op->status = status;
    op->check = check;
    op->render = render;
    op->ctx = ctx;
    return op;
}

static void op_free(op_t *op)
{
    for (int i = 0; i < op->nparams; i++)
        free(op->params[i]);
    free(op);
}

/* Two statements that both create the same user see no user in their
 * snapshots; ON CONFLICT covers only one of users' unique indexes, so the
 * later one may fail on another (e-mail). Run again, it finds the user the
 * first committed. A second violation is a real conflict: `message`. */
static void op_retry_on_conflict(op_t *op, const char *message)
{
    op->conflict = message;
}

/* A job's push ended; enqueue_row has already marked the jobs row dead
 * and logged if it failed. The record is committed either way, so the
 * answer is the same: GET /api/jobs/{id} tells the job's fate. */
static void op_pushed(at_err_t err, void *arg)
{
    op_t *op = arg;
    if (err != AT_OK)
        at_error("event=session_job_push_failed req=%s what=%s error=\"%s\"", req_id(op->req),
                 op->what, at_strerror(err));
    req_json(op->req, op->status, op->answer);
    op_free(op);
}

/* The reply of a job the request waits for: its result is the answer. A
 * refusal (the manager found the session in a state the job cannot apply
 * to) is 409, a runtime that failed every attempt 502. No reply in time:
 * the job goes on, and the answer says where to follow it (202 with the
 * queued answer, or 504 for exec, whose caller wanted the output). */
static void op_replied(json_t *reply, at_err_t err, void *arg)
{
    op_t *op = arg;
    const char *job_id = json_string_value(json_object_get(op->answer, "job_id"));
    if (!reply && err == AT_ETIMEOUT && op->late_is_202) {
        req_json(op->req, 202, json_incref(op->answer));
    } else if (!reply) {
        req_json(op->req, err == AT_ETIMEOUT ? 504 : 503,
                 json_pack("{s:s, s:s?}", "detail",
                           err == AT_ETIMEOUT ? "No reply in time; poll GET /api/jobs/{job_id}"
                                              : at_strerror(err),
                           "job_id", job_id));
    } else if (!json_is_true(json_object_get(reply, "ok"))) {
        const char *why = json_string_value(json_object_get(reply, "error"));
        int refused = json_is_true(json_object_get(reply, "permanent"));
        req_json(op->req, refused ? 409 : 502,
                 json_pack("{s:s, s:s?}", "detail", why ? why : "job failed", "job_id", job_id));
    } else {
        json_t *result = json_object_get(reply, "result");
        json_t *answer;
        if (op->reply) {
            answer = op->reply(op->req, result, op->answer, op->ctx);
        } else {
            answer = json_is_object(result) ? json_deep_copy(result) : json_object();
            json_object_set_new(answer, "job_id", json_string(job_id ? job_id : ""));
        }
        req_json(op->req, 200, answer);
    }
    json_decref(op->answer);
    op_free(op);
}

static void op_wait(op_t *op, PGresult *res)
{
    json_t *args = json_loads(PQgetvalue(res, 0, C_JOB_ARGS), 0, NULL);
    at_job_t job;
    at_err_t e = at_job_init(&job, PQgetvalue(res, 0, C_JOB_KIND),
                             PQgetvalue(res, 0, C_JOB_SESSION), NULL, args);
    json_decref(args);
    if (e == AT_OK) {
        at_strlcpy(job.id, PQgetvalue(res, 0, C_JOB), sizeof job.id); /* the row's id */
        e = replies_send(req_gw(op->req)->replies, "session", &job, op->wait_ms, op_replied, op);
        at_job_clear(&job);
    }
    if (e != AT_OK) {
        req_error(op->req, 503, "Queue unavailable: %s", at_strerror(e));
        json_decref(op->answer);
        op_free(op);
    }
}

/* Push the job the statement inserted (row 0) onto q:session; the jobs
 * row holds the same id, kind, session and args. */
static void op_push(op_t *op, PGresult *res)
{
    if (op->wait_ms > 0) {
        op_wait(op, res);
        return;
    }
    json_t *args = json_loads(PQgetvalue(res, 0, C_JOB_ARGS), 0, NULL);
    enqueue_row(req_gw(op->req), "session", PQgetvalue(res, 0, C_JOB),
                PQgetvalue(res, 0, C_JOB_KIND), PQgetvalue(res, 0, C_JOB_SESSION), args, op_pushed,
                op); /* may answer at once */
    json_decref(args);
}

static void op_done(PGresult *res, const char *err, void *arg)
{
    op_t *op = arg;
    at_req_t *req = op->req;
    if (err) {
        int unique = !strcmp(db_sqlstate(res), "23505");
        if (unique && op->conflict && !op->retried) {
            at_info("event=session_op_retry req=%s what=%s reason=unique_violation", req_id(req),
                    op->what);
            op->retried = 1;
            if (at_db_query(req_gw(req)->db, op->sql, op->nparams, (const char *const *)op->params,
                            op_done, op) == AT_OK)
                return;
            req_error(req, 503, "Database busy");
        } else if (unique && op->conflict) {
            req_error(req, 409, "%s", op->conflict);
        } else {
            req_db_fail(req, op->what, res, err);
        }
        op_free(op);
        return;
    }
    if (op->check && !op->check(req, res)) {
        op_free(op);
        return;
    }
    json_t *answer = op->render(req, res, op->ctx);
    if (!answer) {
        req_error(req, 500, "Out of memory");
        op_free(op);
        return;
    }
    if (PQntuples(res) > 0 && PQnfields(res) > C_JOB_ARGS && !PQgetisnull(res, 0, C_JOB_KIND)) {
        op->answer = answer;
        op_push(op, res);
        return;
    }
    req_json(req, op->status, answer);
    op_free(op);
}

static void op_run(op_t *op, const char *sql, int n, const char *const *params)
{
    if (op->conflict) { /* keep them for the retry */
        op->sql = sql;
        for (int i = 0; i < n && i < OP_MAX_PARAMS; i++, op->nparams++) {
            op->params[i] = params[i] ? strdup(params[i]) : NULL;
            if (params[i] && !op->params[i]) {
                req_error(op->req, 503, "Out of memory");
                op_free(op);
                return;
            }
        }
    }
    if (at_db_query(req_gw(op->req)->db, sql, n, params, op_done, op) != AT_OK) {
        req_error(op->req, 503, "Database busy");
        op_free(op);
    }
}

/* A client's id lower-cased into out (uuids are stored so; hex digits
 * compare case-insensitively); 0 when it is missing or too long for an id. */
static int id_key(const char *raw, char out[AT_UUID_LEN + 1])
{
    size_t n = raw ? strlen(raw) : AT_UUID_LEN + 1;
    if (n > AT_UUID_LEN)
        return 0;
    for (size_t i = 0; i <= n; i++)
        out[i] = (char)tolower((unsigned char)raw[i]);
    return 1;
}

/* Run a change that queues a job. Its statement takes $1..$3 for the audit
 * row (records.h), $4 the caller's scope (0 = any user), $5 the new job's
 * id, then the operation's own parameters from $6. */
static void op_write(op_t *op, int64_t scope, const char *sql, int n, const char *const *own)
{
    char audit_uid[24], sc[24], job_id[AT_UUID_LEN + 1];
    const char *p[OP_MAX_PARAMS];
    if (5 + n > OP_MAX_PARAMS)
        abort(); /* a statement with more parameters than declared is a bug */
    audit_params(op->req, p, audit_uid);
    snprintf(sc, sizeof sc, "%lld", (long long)scope);
    at_uuid4(job_id);
    p[3] = sc;
    p[4] = job_id;
    for (int i = 0; i < n; i++)
        p[5 + i] = own[i];
    op_run(op, sql, 5 + n, p);
}

/* A session uuid from a client, lower-cased, or 0 after answering 422. */
static int session_key(at_req_t *req, const char *raw, char out[AT_UUID_LEN + 1])
{
    if (id_key(raw, out) && session_id_valid(out))
        return 1;
    req_error(req, 422, "Invalid session uuid: expected a UUID or 8 hex digits");
    return 0;
}

/* The check of a statement that answers its one row, or none when what it
 * names is not there (or not the caller's): then status and detail. */
static int one_row(at_req_t *req, PGresult *res, int status, const char *detail)
{
    if (PQntuples(res) == 1)
        return 1;
    req_error(req, status, "%s", detail);
    return 0;
}

static int found_or_404(at_req_t *req, PGresult *res)
{
    return one_row(req, res, 404, "Session not found");
}

/* ---- create ---------------------------------------------------------------- */

/* The user: by id (user_id > 0, and then external_id if given must be that
 * user's external id or e-mail), or by external id or e-mail, created when
 * missing (only then is $6, the new user's e-mail, set). The workspace: a
 * new one, or the user's default, created when missing; a new workspace
 * gets the default file. ON CONFLICT ... DO UPDATE (not DO NOTHING) so that
 * a concurrent create of the same user or workspace still returns the row;
 * xmax = 0 tells a row this statement inserted from one it only locked. */
/* clang-format off */
static const char create_sql[] =
    "WITH found AS (SELECT id, coalesce(external_id, email) AS ext FROM users"
    "  WHERE CASE WHEN $4::bigint > 0"
    "    THEN id = $4::bigint AND ($5::text IS NULL OR external_id = $5::text"
    "                              OR lower(email) = lower($5::text))"
    "    ELSE external_id = $5::text OR lower(email) = lower($5::text) END"
    "  ORDER BY (external_id IS NOT DISTINCT FROM $5::text) DESC LIMIT 1), "
    "nu AS (INSERT INTO users (username, email, external_id)"
    "  SELECT $5::text, $6::text, $5::text"
    "  WHERE $4::bigint = 0 AND $6::text IS NOT NULL AND NOT EXISTS (SELECT 1 FROM found)"
    "  ON CONFLICT (external_id) WHERE external_id IS NOT NULL"
    "  DO UPDATE SET updated_at = users.updated_at"
    "  RETURNING id, external_id AS ext, (xmax = 0) AS created), "
    "u AS (SELECT id, ext FROM found UNION ALL SELECT id, ext FROM nu), "
    "ws AS (INSERT INTO workspaces (user_id, name) SELECT id, $7::text FROM u"
    "  ON CONFLICT (user_id, name) DO UPDATE SET updated_at = now()"
    "  RETURNING id, user_id, (xmax = 0) AS created), "
    "f AS (INSERT INTO workspace_items (workspace_id, name, path, type, content, size, sha256)"
    "  SELECT id, $15::text, $15::text, 'file', $16::text, $17::bigint, $18::text"
    "  FROM ws WHERE created), "
    "s AS (INSERT INTO code_sessions (uuid, user_id, workspace_id, name, language, status,"
    "                                 status_message, tier, replicas, cpu_millis, memory_mb)"
    "  SELECT $8::text, user_id, id, $9::text, $10::text, 'initializing', 'Start queued',"
    "         $11::text, 1, $12::int, $13::int FROM ws"
    "  RETURNING *), "
    "j AS (" SQL_JOB("$14", "'start'",
                     "jsonb_build_object('tier', tier, 'cpu_millis', cpu_millis,"
                     " 'memory_mb', memory_mb, 'user_id', user_id)", "s") "), "
    "au AS (" AUDIT_FROM("user.create", "nu.id::text",
                         "jsonb_build_object('external_id', nu.ext, 'via', 'session.create')",
                         "nu WHERE nu.created") "), "
    "a AS (" AUDIT_FROM("session.create", "s.uuid",
                        "jsonb_build_object('user_id', s.user_id, 'workspace_id', s.workspace_id,"
                        " 'workspace_created', (SELECT created FROM ws), 'tier', s.tier,"
                        " 'job_id', $14::text)", "s") ") "
    "SELECT " SESSION_COLUMNS WRITE_TAIL("j.id::text", "u.ext") " FROM s, u, j";
/* clang-format on */

/* No row: the user named does not exist. */
static int user_or_404(at_req_t *req, PGresult *res)
{
    return one_row(req, res, 404, "User not found");
}

/* No row, for a user creating for itself by external id: not its own. */
static int own_or_403(at_req_t *req, PGresult *res)
{
    return one_row(req, res, 403, "user_id does not match the authenticated user");
}

/* The e-mail of a user the Client API creates: its user_id when that looks
 * like an address, else a reserved-domain address nobody can receive. */
static void new_user_email(const char *external_id, char *out, size_t cap)
{
    const char *at = strchr(external_id, '@');
    int looks = at && at != external_id && !strchr(at + 1, '@') && strchr(at + 1, '.') &&
                at[1] != '.' && external_id[strlen(external_id) - 1] != '.' &&
                !strpbrk(external_id, " \t\r\n");
    snprintf(out, cap, looks ? "%s" : "%s@users.invalid", external_id);
}

void session_create(at_req_t *req, int64_t user_id, const char *external_id,
                    const char *workspace_name, const char *tier, const char *name,
                    const char *language, session_render_fn *render)
{
    int cpu_millis, memory_mb;
    if (!session_tier(req, tier, &cpu_millis, &memory_mb)) {
        at_error("event=session_create_failed req=%s error=\"unknown tier %s\"", req_id(req), tier);
        req_error(req, 500, "Unknown tier %s", tier);
        return;
    }
    check_fn *check = user_id > 0 && external_id ? own_or_403 : user_or_404;
    op_t *op = op_new(req, "session.create", 201, check, render, NULL);
    if (!op)
        return;
    op_retry_on_conflict(op, "user_id conflicts with an existing user's e-mail or username");

    char uuid[AT_UUID_LEN + 1], job_id[AT_UUID_LEN + 1], ws_name[64];
    at_uuid4(uuid);
    at_uuid4(job_id);
    if (!workspace_name) /* a workspace of its own */
        snprintf(ws_name, sizeof ws_name, "session-%s", uuid);
    else
        at_strlcpy(ws_name, workspace_name, sizeof ws_name);
    char uid[24], cpu[16], mem[16], size[24], email[300], sha[AT_SHA256_HEX + 1];
    snprintf(uid, sizeof uid, "%lld", (long long)user_id);
    snprintf(cpu, sizeof cpu, "%d", cpu_millis);
    snprintf(mem, sizeof mem, "%d", memory_mb);
    size_t len = sizeof default_file_content - 1;
    snprintf(size, sizeof size, "%zu", len);
    at_sha256_hex(default_file_content, len, sha);
    if (user_id == 0 && external_id)
        new_user_email(external_id, email, sizeof email);

    char audit_uid[24];
    const char *p[18];
    audit_params(req, p, audit_uid);
    p[3] = uid;
    p[4] = external_id;
    p[5] = user_id == 0 && external_id ? email : NULL;
    p[6] = ws_name;
    p[7] = uuid;
    p[8] = name ? name : "";
    p[9] = language ? language : "python";
    p[10] = tier;
    p[11] = cpu;
    p[12] = mem;
    p[13] = job_id;
    p[14] = default_file_name;
    p[15] = default_file_content;
    p[16] = size;
    p[17] = sha;
    op_run(op, create_sql, 18, p);
}

/* ---- reads ------------------------------------------------------------------ */

void session_find(at_req_t *req, const char *raw_uuid, int64_t scope, session_render_fn *render,
                  const void *ctx)
{
    char uuid[AT_UUID_LEN + 1], sc[24];
    if (!session_key(req, raw_uuid, uuid))
        return;
    op_t *op = op_new(req, "session.get", 200, found_or_404, render, ctx);
    if (!op)
        return;
    snprintf(sc, sizeof sc, "%lld", (long long)scope);
    const char *p[] = {uuid, sc};
    op_run(op, SESSION_SELECT "WHERE s.uuid = $1 AND ($2::bigint = 0 OR s.user_id = $2::bigint)", 2,
           p);
}

void session_list(at_req_t *req, int64_t scope, int include_terminated, int limit, int offset,
                  session_render_fn *render, const void *ctx)
{
    op_t *op = op_new(req, "session.list", 200, NULL, render, ctx);
    if (!op)
        return;
    char sc[24], lim[16], off[16];
    snprintf(sc, sizeof sc, "%lld", (long long)scope);
    snprintf(lim, sizeof lim, "%d", limit);
    snprintf(off, sizeof off, "%d", offset);
    const char *p[] = {sc, include_terminated ? "true" : "false", lim, off};
    op_run(op,
           SESSION_SELECT "WHERE ($1::bigint = 0 OR s.user_id = $1::bigint) AND ($2::boolean OR "
                          "s.status <> 'terminated') ORDER BY s.created_at DESC, s.id DESC "
                          "LIMIT $3::int OFFSET $4::int",
           4, p);
}

/* ---- delete ----------------------------------------------------------------- */

/* terminating + a delete job (the manager stops it, the backup worker zips
 * the volume, then it is removed); the workspace and its files stay. A
 * session already terminating gets no second job: the answer names the
 * one queued before. The row lock serialises concurrent deletes and the
 * actions below (which take a share lock). */
/* clang-format off */
static const char delete_sql[] =
    "WITH cur AS (SELECT * FROM code_sessions"
    "  WHERE uuid = $6 AND ($4::bigint = 0 OR user_id = $4::bigint) AND status <> 'terminated'"
    "  FOR UPDATE), "
    "upd AS (UPDATE code_sessions c SET status = 'terminating', is_active = false,"
    "    status_message = 'Deletion queued: backup, then cleanup', updated_at = now()"
    "  FROM cur WHERE c.id = cur.id AND cur.status <> 'terminating' RETURNING c.*), "
    "s AS (SELECT * FROM upd UNION ALL SELECT * FROM cur WHERE status = 'terminating'), "
    "j AS (" SQL_JOB("$5", "'delete'", "'{\"backup\": true}'", "upd") "), "
    "a AS (" AUDIT_FROM("session.delete", "upd.uuid",
                        "jsonb_build_object('job_id', $5::text, 'workspace_id', upd.workspace_id)",
                        "upd") ") "
    "SELECT " SESSION_COLUMNS
    WRITE_TAIL("coalesce(j.id::text, (SELECT id::text FROM jobs WHERE session = s.uuid"
               " AND kind = 'delete' ORDER BY enqueued_at DESC LIMIT 1))",
               "coalesce(u.external_id, u.email)")
    " FROM s JOIN users u ON u.id = s.user_id LEFT JOIN j ON true";
/* clang-format on */

static json_t *delete_render(at_req_t *req, PGresult *res, const void *ctx)
{
    (void)req;
    return json_pack("{s:s, s:s, s:o, s:s}", "uuid", PQgetvalue(res, 0, C_UUID), "status",
                     "terminating", "job_id", col_text(res, 0, C_JOB), "message",
                     (const char *)ctx);
}

/* message: the family's wording, a string with static lifetime. */
void session_delete(at_req_t *req, const char *raw_uuid, int64_t scope, const char *message)
{
    char uuid[AT_UUID_LEN + 1];
    if (!session_key(req, raw_uuid, uuid))
        return;
    op_t *op = op_new(req, "session.delete", 202, found_or_404, delete_render, message);
    if (!op)
        return;
    const char *own[] = {uuid};
    op_write(op, scope, delete_sql, 1, own);
}

/* ---- actions: sleep, wake, scale, chat -------------------------------------- */

/* A job for a live session (not terminating or terminated); chat also
 * records the message ($9 non-NULL) and names it in the job's args. The
 * share lock makes a concurrent delete wait or be seen. */
/* clang-format off */
#define ACTION_SQL(audit)                                                                          \
    "WITH s AS (SELECT * FROM code_sessions"                                                       \
    "  WHERE uuid = $6 AND ($4::bigint = 0 OR user_id = $4::bigint) FOR SHARE), "                  \
    "live AS (SELECT * FROM s WHERE status NOT IN ('terminating', 'terminated')"                   \
    "  AND status <> ALL (string_to_array($10::text, ','))), "                                     \
    "m AS (INSERT INTO chat_messages (session_uuid, user_id, role, message, job_id)"               \
    "  SELECT uuid, user_id, 'user', $9::text, $5::uuid FROM live WHERE $9::text IS NOT NULL"      \
    "  RETURNING id), "                                                                            \
    "l AS (SELECT live.uuid, live.workspace_id,"                                                   \
    "    CASE WHEN m.id IS NULL THEN $8::jsonb"                                                    \
    "         ELSE $8::jsonb || jsonb_build_object('message_id', m.id) END AS args"                \
    "  FROM live LEFT JOIN m ON true), "                                                           \
    "t AS (UPDATE code_sessions c SET last_activity = now(), last_activity_kind = 'api'"          \
    "  FROM l WHERE c.uuid = l.uuid AND $7::text <> 'sleep'), "                                    \
    "j AS (" SQL_JOB("$5", "$7::text", "l.args", "l") "), "                                        \
    "a AS (" AUDIT_FROM(audit, "l.uuid", "l.args || jsonb_build_object('job_id', $5::text)",       \
                        "l") ") "                                                                  \
    "SELECT " SESSION_COLUMNS WRITE_TAIL("j.id::text", "coalesce(u.external_id, u.email)")         \
    ", (SELECT id::text FROM m)"                                                                   \
    " FROM s JOIN users u ON u.id = s.user_id LEFT JOIN j ON true"
/* clang-format on */

/* Each action: its job, its audit action, the statuses (besides going
 * away) that refuse it with 409 before any job is queued, and whether the
 * request waits for the job's reply. The manager checks again when the job
 * runs (a job queued behind another may find the state changed). */
static const struct action {
    const char *kind;    /* the job's */
    const char *audit;   /* the audit_log action */
    const char *refused; /* comma-separated statuses */
    int wait;            /* answer with the job's outcome */
    const char *sql;
} actions[] = {
    {"sleep", "session.sleep", "", 1, ACTION_SQL("session.sleep")},
    {"wake", "session.wake", "", 1, ACTION_SQL("session.wake")},
    {"scale", "session.scale", "sleeping,error", 1, ACTION_SQL("session.scale")},
    {"chat", "session.chat", "", 0, ACTION_SQL("session.chat")},
    {"exec", "session.exec", "initializing,loading_files,sleeping,error", 1,
     ACTION_SQL("session.exec")},
};

/* A session that is going away, or in a state the action cannot apply to,
 * takes no job. */
static int live_or_409(at_req_t *req, PGresult *res)
{
    if (!found_or_404(req, res))
        return 0;
    if (PQgetisnull(res, 0, C_JOB_KIND)) {
        const char *status = PQgetvalue(res, 0, C_STATUS);
        req_error(req, 409, "Session %s is %s%s", PQgetvalue(res, 0, C_UUID), status,
                  !strcmp(status, "sleeping") ? ": wake it first"
                  : !strcmp(status, "error")  ? ": wake it to restart it"
                  : strcmp(status, "terminated") && strcmp(status, "terminating")
                      ? ": not ready yet, try again when its status is ready"
                      : "");
        return 0;
    }
    return 1;
}

/* kind: sleep, wake, scale or chat; args: the job's args (the workspace id
 * is added); chat_message: the chat text, NULL for the others. */
void session_action(at_req_t *req, const char *raw_uuid, int64_t scope, const char *kind,
                    const json_t *args, const char *chat_message, session_render_fn *render,
                    session_reply_fn *reply, const void *ctx)
{
    const struct action *act = NULL;
    for (size_t i = 0; i < sizeof actions / sizeof actions[0]; i++)
        if (!strcmp(actions[i].kind, kind))
            act = &actions[i];
    char uuid[AT_UUID_LEN + 1];
    if (!act) {
        req_error(req, 500, "Unknown session action %s", kind);
        return;
    }
    if (!session_key(req, raw_uuid, uuid))
        return;
    char *args_text = args ? json_dumps(args, JSON_COMPACT) : strdup("{}");
    op_t *op = args_text ? op_new(req, act->audit, 202, live_or_409, render, ctx) : NULL;
    if (!op) {
        if (!args_text)
            req_error(req, 503, "Out of memory");
        free(args_text);
        return;
    }
    if (!strcmp(kind, "exec")) { /* the answer is the command's result */
        op->wait_ms = (json_integer_value(json_object_get(args, "timeout_s")) + 10) * 1000;
    } else if (act->wait) {
        op->wait_ms = req_gw(req)->cfg.reply_timeout_ms;
        op->late_is_202 = 1;
    }
    op->reply = reply;
    const char *own[] = {uuid, act->kind, args_text, chat_message, act->refused};
    op_write(op, scope, act->sql, 5, own);
    free(args_text); /* the pool copied the parameters */
}

/* ---- workspace shutdown ----------------------------------------------------- */

/* {id} names a session or a workspace; the job goes to the live session
 * of that workspace (the one named, if it is live, else the newest). The
 * answer always has one row: C_EXTRA is the workspace (NULL: not found or
 * not the caller's), C_UUID NULL when no session is live. */
/* clang-format off */
static const char shutdown_sql[] =
    "WITH w AS (SELECT " SQL_WORKSPACE("$6::text", "$7", "$4") " AS id), "
    "s AS (SELECT c.* FROM code_sessions c, w"
    "  WHERE c.workspace_id = w.id AND c.status NOT IN ('terminating', 'terminated')"
    "  ORDER BY (c.uuid = $6::text) DESC, c.created_at DESC LIMIT 1 FOR SHARE OF c), "
    "j AS (" SQL_JOB("$5", "'shutdown'", "'{}'", "s") "), "
    "a AS (" AUDIT_FROM("workspace.shutdown", "s.workspace_id::text",
                        "jsonb_build_object('session', s.uuid, 'job_id', $5::text)", "s") ") "
    "SELECT " SESSION_COLUMNS WRITE_TAIL("j.id::text", "coalesce(u.external_id, u.email)")
    ", w.id::text"
    " FROM w LEFT JOIN s ON true LEFT JOIN users u ON u.id = s.user_id LEFT JOIN j ON true";
/* clang-format on */

static int shutdown_check(at_req_t *req, PGresult *res)
{
    if (PQntuples(res) != 1 || !session_extra(res, 0)) {
        req_error(req, 404, "Workspace not found");
        return 0;
    }
    if (PQgetisnull(res, 0, C_UUID)) {
        req_error(req, 409, "Workspace %s has no live session to shut down", session_extra(res, 0));
        return 0;
    }
    return 1;
}

void session_shutdown(at_req_t *req, const char *id, int64_t scope, session_render_fn *render,
                      session_reply_fn *reply)
{
    char key[AT_UUID_LEN + 1];
    const char *sess, *ws;
    if (!id_key(id, key) || !workspace_ref(key, &sess, &ws)) {
        req_error(req, 422, "Invalid workspace id: expected a session uuid or a workspace id");
        return;
    }
    op_t *op = op_new(req, "workspace.shutdown", 202, shutdown_check, render, NULL);
    if (!op)
        return;
    op->wait_ms = req_gw(req)->cfg.reply_timeout_ms;
    op->late_is_202 = 1;
    op->reply = reply;
    const char *own[] = {sess, ws};
    op_write(op, scope, shutdown_sql, 2, own);
}

/* ---- FastAPI family: /api/sessions ------------------------------------------ */

/* 1 if s is a string of 1..max bytes without control characters. */
static int plain_text(const char *s, size_t max)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > max)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return 0;
    return 1;
}

/* A language name: 1..SESSION_LANGUAGE_MAX of letters, digits, + # . _ - */
static int language_ok(const char *s)
{
    static const char allowed[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                  "0123456789+#._-";
    return s && plain_text(s, SESSION_LANGUAGE_MAX) && strspn(s, allowed) == strlen(s);
}

static json_t *render_session(at_req_t *req, PGresult *res, const void *ctx)
{
    (void)req;
    (void)ctx;
    return session_json(res, 0);
}

static json_t *render_session_array(at_req_t *req, PGresult *res, const void *ctx)
{
    (void)req;
    (void)ctx;
    json_t *a = json_array();
    for (int i = 0; a && i < PQntuples(res); i++)
        json_array_append_new(a, session_json(res, i));
    return a;
}

/* ?name= as a boolean (true/false/1/0), *out unchanged when absent. */
static int query_bool(at_req_t *req, const char *name, int *out)
{
    const char *v = req_query(req, name);
    if (!v)
        return 1;
    if (!strcmp(v, "true") || !strcmp(v, "1"))
        *out = 1;
    else if (!strcmp(v, "false") || !strcmp(v, "0"))
        *out = 0;
    else {
        req_error(req, 422, "%s must be true or false", name);
        return 0;
    }
    return 1;
}

/* ?name= as an integer in [min, max], *out unchanged when absent. */
static int query_int(at_req_t *req, const char *name, int min, int max, int *out)
{
    const char *v = req_query(req, name);
    if (!v)
        return 1;
    char *end;
    long long n = strtoll(v, &end, 10);
    if (!*v || *end || n < min || n > max) {
        req_error(req, 422, "%s must be an integer in [%d, %d]", name, min, max);
        return 0;
    }
    *out = (int)n;
    return 1;
}

/* GET /api/sessions?user_id=&include_terminated=&limit=&offset= */
void route_session_list(at_req_t *req)
{
    int include_terminated = 0, limit = SESSION_LIST_MAX, offset = 0;
    if (!query_bool(req, "include_terminated", &include_terminated) ||
        !query_int(req, "limit", 1, SESSION_LIST_MAX, &limit) ||
        !query_int(req, "offset", 0, 1000000000, &offset))
        return;
    int64_t scope = auth_scope(req, req_query(req, "user_id"));
    if (scope < 0)
        return;
    session_list(req, scope, include_terminated, limit, offset, render_session_array, NULL);
}

/* GET /api/sessions/{uuid}/terminals: the session's live terminals (opening
 * or open), oldest first, for a client to attach to (WS terminal_attach)
 * instead of opening more shells: [{"id", "status", "cols", "rows",
 * "created_at"}]. Another user's session, or none, answers 404. */
static void terminals_listed(PGresult *res, const char *err, void *arg)
{
    at_req_t *req = arg;
    if (err) {
        req_db_error(req, "terminal_list", err);
        return;
    }
    if (PQgetisnull(res, 0, 0)) {
        req_error(req, 404, "Session not found");
        return;
    }
    const char *text = PQgetvalue(res, 0, 1);
    req_send(req, 200, NULL, strdup(text), strlen(text));
}

void route_session_terminals(at_req_t *req)
{
    char uuid[AT_UUID_LEN + 1], sc[24];
    int64_t scope = auth_scope(req, req_query(req, "user_id"));
    if (scope < 0 || !session_key(req, req_param(req, 0), uuid))
        return;
    snprintf(sc, sizeof sc, "%lld", (long long)scope);
    const char *p[] = {uuid, sc};
    if (at_db_query(
            req_gw(req)->db,
            "SELECT (SELECT 1 FROM code_sessions s WHERE s.uuid = $1 AND ($2::bigint = 0 OR "
            "s.user_id = $2::bigint)), (SELECT coalesce(json_agg(json_build_object('id', "
            "t.id, 'status', t.status, 'cols', t.cols, 'rows', t.rows, 'created_at', " SQL_ISO(
                "t.created_at") ") ORDER BY t.created_at, t.id), '[]') FROM terminals t "
                                "WHERE t.session_uuid = $1 AND t.status IN ('opening', "
                                "'open'))::text",
            2, p, terminals_listed, req) != AT_OK)
        req_error(req, 503, "Database busy");
}

/* GET /api/tiers: the sizes a session can have (ATELIER_TIERS, in its
 * order), for a create form to offer: [{"name", "cpu_millis", "memory_mb"}]. */
void route_tiers(at_req_t *req)
{
    const char *list = req_gw(req)->cfg.tiers;
    json_t *out = json_array();
    for (const char *p = list; out && p && *p;) {
        size_t len = strcspn(p, ","), nlen = strcspn(p, "=,");
        char name[64];
        int cpu, mem;
        if (nlen < len && nlen < sizeof name) {
            memcpy(name, p, nlen);
            name[nlen] = '\0';
            if (session_tier(req, name, &cpu, &mem))
                json_array_append_new(out, json_pack("{s:s, s:i, s:i}", "name", name, "cpu_millis",
                                                     cpu, "memory_mb", mem));
        }
        p += len + (p[len] == ',');
    }
    if (!out)
        req_error(req, 503, "Out of memory");
    else
        req_json(req, 200, out);
}

/* POST /api/sessions {"user_id"?, "name"?, "language"?, "tier"?}: a
 * session with a new workspace of its own, on the given tier (default
 * small). user_id must be the caller's (a service key must name one). */
void route_session_create(at_req_t *req)
{
    json_t *body = req_json_body_optional(req);
    if (!body)
        return;
    json_t *juid = json_object_get(body, "user_id");
    json_t *jname = json_object_get(body, "name");
    json_t *jlang = json_object_get(body, "language");
    json_t *jtier = json_object_get(body, "tier");
    const char *name = json_string_value(jname), *language = json_string_value(jlang);
    const char *tier = jtier && !json_is_null(jtier) ? json_string_value(jtier) : "small";
    int tier_cpu, tier_mem;
    char named[24] = "";
    if (juid && !json_is_null(juid) && (!json_is_integer(juid) || json_integer_value(juid) <= 0)) {
        req_error(req, 422, "user_id must be a positive integer");
    } else if (jname && !json_is_null(jname) &&
               (!name || (*name && !plain_text(name, SESSION_NAME_MAX)))) {
        req_error(req, 422, "name must be a string of at most %d characters, no control characters",
                  SESSION_NAME_MAX);
    } else if (jlang && !json_is_null(jlang) && !language_ok(language)) {
        req_error(req, 422, "language must be a name of 1..%d letters, digits or +#._-",
                  SESSION_LANGUAGE_MAX);
    } else if (!tier || !session_tier(req, tier, &tier_cpu, &tier_mem)) {
        req_error(req, 422, "tier must be one of the configured tiers (small, standard, large)");
    } else {
        if (json_is_integer(juid))
            snprintf(named, sizeof named, "%lld", (long long)json_integer_value(juid));
        int64_t scope = auth_scope(req, named);
        if (scope == 0)
            req_error(req, 422, "user_id is required when acting with a service key");
        else if (scope > 0)
            session_create(req, scope, NULL, NULL, tier, name, language, render_session);
    }
    json_decref(body);
}

/* GET /api/sessions/{uuid}?user_id= */
void route_session_get(at_req_t *req)
{
    int64_t scope = auth_scope(req, req_query(req, "user_id"));
    if (scope >= 0)
        session_find(req, req_param(req, 0), scope, render_session, NULL);
}

/* DELETE /api/sessions/{uuid}?user_id= */
void route_session_delete(at_req_t *req)
{
    int64_t scope = auth_scope(req, req_query(req, "user_id"));
    if (scope >= 0)
        session_delete(req, req_param(req, 0), scope, "Session deletion queued");
}

/* What exec knows before the reply: the job it waits for. */
static json_t *render_exec(at_req_t *req, PGresult *res, const void *ctx)
{
    (void)req;
    (void)ctx;
    return json_pack("{s:s}", "job_id", PQgetvalue(res, 0, C_JOB));
}

/* POST /api/sessions/{uuid}/exec {"command", "timeout_s"?, "stdin"?}: run a
 * command in the session's sandbox (bash -lc, in /workspace) and answer its
 * result: {exit_code, stdout, stderr, duration_ms, timed_out,
 * stdout_truncated, stderr_truncated, job_id}. A command that
 * ATELIER_COMMAND_POLICY refuses is answered 403 and never queued. */
void route_session_exec(at_req_t *req)
{
    int64_t scope = auth_scope(req, req_query(req, "user_id"));
    if (scope < 0)
        return;
    json_t *body = req_json_body(req);
    if (!body)
        return;
    const char *key;
    json_t *v;
    json_object_foreach(body, key, v)
    {
        if (strcmp(key, "command") && strcmp(key, "timeout_s") && strcmp(key, "stdin")) {
            req_error(req, 422, "Unknown field %s (expected command, timeout_s, stdin)", key);
            json_decref(body);
            return;
        }
    }
    json_t *cmd = json_object_get(body, "command"), *to = json_object_get(body, "timeout_s");
    json_t *in = json_object_get(body, "stdin");
    char blocked[256];
    if (!json_is_string(cmd) || json_string_length(cmd) == 0) {
        req_error(req, 422, "command must be a non-empty string");
    } else if (to && (!json_is_integer(to) || json_integer_value(to) < 1 ||
                      json_integer_value(to) > EXEC_TIMEOUT_MAX_S)) {
        req_error(req, 422, "timeout_s must be an integer in [1, %d]", EXEC_TIMEOUT_MAX_S);
    } else if (in && !json_is_string(in)) {
        req_error(req, 422, "stdin must be a string");
    } else if (policy_check(req_gw(req)->cfg.command_policy, json_string_value(cmd),
                            json_string_length(cmd), blocked, sizeof blocked)) {
        /* 403: well-formed, refused by ATELIER_COMMAND_POLICY (a courtesy;
         * the sandbox is what protects the host) */
        req_error(req, 403, "Command blocked by policy: %s", blocked);
    } else {
        json_t *args = json_pack("{s:O, s:I}", "command", cmd, "timeout_s",
                                 (json_int_t)(to ? json_integer_value(to) : EXEC_TIMEOUT_S));
        if (in)
            json_object_set(args, "stdin", in);
        session_action(req, req_param(req, 0), scope, "exec", args, NULL, render_exec, NULL, NULL);
        json_decref(args);
    }
    json_decref(body);
}
