/*
 * SQL fragments every record handler shares.
 *
 * Audit convention: a statement that changes state takes the caller as its
 * first three parameters, $1 actor ("user:12"), $2 acting user id or '' and
 * $3 client IP (filled by audit_params), and writes its audit_log row in the
 * same statement with AUDIT_FROM, so the change and its record commit
 * together or not at all:
 *
 *   WITH d AS (DELETE FROM ... RETURNING ...),
 *        a AS (AUDIT_FROM("file.delete", "d.path", "NULL", "d"))
 *   SELECT ... FROM d
 */
#ifndef GATEWAY_RECORDS_H
#define GATEWAY_RECORDS_H

#include <stdint.h>

#include "atelier/job.h"
#include "gateway.h"
#include "http.h"

/* A timestamp column as ISO 8601 UTC with milliseconds. */
#define SQL_ISO(col) "to_char((" col ") AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"

/* One audit_log row per row of `from` (a CTE or table expression). */
#define AUDIT_FROM(action, target, detail, from)                                                   \
    "INSERT INTO audit_log (actor, user_id, action, target, detail, ip) SELECT $1, "               \
    "NULLIF($2, '')::bigint, '" action "', " target ", " detail ", $3 FROM " from

/*
 * A client's {id} for a workspace: a session uuid or a workspace id.
 * workspace_ref splits it into two parameters, the session uuid and the
 * workspace uuid (NULL when id is not UUID-shaped); SQL_WORKSPACE(s, w,
 * scope) is the workspace it names, if the scope (0 = any user) owns it.
 */
#define SQL_WORKSPACE(sess, ws, scope)                                                             \
    "(SELECT w.id FROM workspaces w WHERE w.id = coalesce((SELECT s.workspace_id FROM "            \
    "code_sessions s WHERE s.uuid = " sess "), " ws "::uuid) AND (" scope "::bigint = 0 OR "       \
    "w.user_id = " scope "::bigint))"
/* 1 if id is a UUID or an 8-hex-digit short session uuid; fills the two
 * parameters for SQL_WORKSPACE (*ws NULL when id is not a UUID). */
int workspace_ref(const char *id, const char **sess, const char **ws);
/* 1 if id has the shape of a session uuid (UUID or 8 hex digits). */
int session_id_valid(const char *id);
/* Route parameter 0 as a workspace {id} (workspace_ref into *sess, *ws) and
 * the scope of ?user_id= (auth_scope); answers 422 (malformed id) or 403
 * and returns -1 when refused. */
int64_t workspace_scope(at_req_t *req, const char **sess, const char **ws);

/* $1..$3 for AUDIT_FROM; uid_buf holds the user id text. */
void audit_params(const at_req_t *req, const char *p[3], char uid_buf[24]);

/* Push a job whose jobs row the caller has committed onto role's stream.
 * On failure the row is marked dead with the error. cb may be NULL. */
typedef void enqueue_cb(at_err_t err, void *arg);
void enqueue_push(gateway_t *gw, const char *role, const at_job_t *job, enqueue_cb *cb, void *arg);
/* The same for a jobs row the caller's statement returned: id, kind,
 * session (NULL for none) and args (a JSON object, NULL for none). A job
 * that cannot be built from them fails like a push: row marked dead, cb
 * called with the error. */
void enqueue_row(gateway_t *gw, const char *role, const char *id, const char *kind,
                 const char *session, const json_t *args, enqueue_cb *cb, void *arg);

/* SQLSTATE of a failed statement ("23505"), "" if unknown. */
const char *db_sqlstate(const PGresult *res);
/* Primary message of a failed statement (the "detail" part after "code: "
 * for the AT class raised by shared/sql functions), "" if unknown. */
const char *db_message(const PGresult *res);
/* For a statement failure: answer the AT-class errors of shared/sql
 * (AT404 -> 404, AT409 -> 409, AT412 -> 412, AT507 -> 507) with their
 * message, anything else with 503 (logged). */
void req_db_fail(at_req_t *req, const char *what, const PGresult *res, const char *err);

/* Answer 503 for a database error, logging it with the request id. */
void req_db_error(at_req_t *req, const char *what, const char *err);

#endif
