/*
 * terminal_open, and the terminal a client that names only the session
 * (the seed's terminal_input) gets on demand: the terminals row is
 * inserted by the statement that checks the session is the caller's, ready
 * and has room (ATELIER_TERMINALS_PER_SESSION), with its jobs and audit
 * rows; then job terminal_open waits for the manager's reply (replies.c):
 * terminal_opened and the output from seq 1, or an error. A terminal whose
 * opener is gone before it learned the id is closed again.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "atelier/job.h"
#include "atelier/log.h"
#include "records.h"
#include "replies.h"
#include "ws_terms.h"

/* An open on its way: the statement, then the manager's reply. */
struct ws_open {
    ws_open_t *next; /* the connection's */
    ws_conn_t *conn;
    char terminal[AT_UUID_LEN + 1];
    char session[AT_UUID_LEN + 1];
    char job[AT_UUID_LEN + 1];
    int cols, rows, binary, is_auto;
    int subscribed; /* term:{id} referenced while the shell starts */
    char id[64];
    int has_id;
    char *input; /* typed meanwhile (opened on demand) */
    size_t input_len;
};

static const char *msg_id(const ws_open_t *op)
{
    return op->has_id ? op->id : NULL;
}

/* Input typed before its terminal is there, bounded. */
int ws_hold_input(char **buf, size_t *len, const char *data, size_t n)
{
    if (*len + n > WS_PENDING_INPUT_MAX)
        return -1;
    char *b = realloc(*buf, *len + n);
    if (!b)
        return -1;
    memcpy(b + *len, data, n);
    *buf = b;
    *len += n;
    return 0;
}

static void open_unlink(ws_open_t *op)
{
    for (ws_open_t **pp = &op->conn->opens; *pp; pp = &(*pp)->next) {
        if (*pp == op) {
            *pp = op->next;
            break;
        }
    }
}

static void open_free(ws_open_t *op)
{
    open_unlink(op);
    if (op->subscribed) {
        char ch[64];
        snprintf(ch, sizeof ch, "term:%s", op->terminal);
        ws_pubsub_unref(ch);
    }
    ws_conn_unref(op->conn);
    free(op->input);
    free(op);
}

static int opens_of(const ws_conn_t *c)
{
    int n = 0;
    for (ws_open_t *op = c->opens; op; op = op->next)
        n++;
    return n;
}

/* ---- open -------------------------------------------------------------------------- */

/* The lock on the session row orders opens of one session, but each
 * statement counts in its own snapshot (READ COMMITTED): opens racing in
 * the same moment can pass the limit together. A guard against runaway,
 * not an exact quota. */
/* clang-format off */
static const char open_sql[] =
    "WITH s AS (SELECT uuid, user_id, status FROM code_sessions"
    "  WHERE uuid = $4 AND ($5::bigint = 0 OR user_id = $5::bigint) FOR NO KEY UPDATE), "
    "n AS (SELECT count(*) AS live FROM terminals"
    "  WHERE session_uuid = $4 AND status IN ('opening', 'open')), "
    "ins AS (INSERT INTO terminals (id, session_uuid, user_id, cols, rows)"
    "  SELECT $6::uuid, s.uuid, s.user_id, $7::int, $8::int FROM s, n"
    "  WHERE s.status = 'ready' AND n.live < $9::int RETURNING id, session_uuid), "
    "u AS (UPDATE code_sessions c SET last_activity = now(), last_activity_kind = 'terminal'"
    "  FROM ins WHERE c.uuid = ins.session_uuid), "
    "j AS (INSERT INTO jobs (id, kind, role, session, state, args)"
    "  SELECT $10::uuid, 'terminal_open', 'session', ins.session_uuid, 'queued',"
    "  jsonb_build_object('terminal_id', ins.id::text, 'cols', $7::int, 'rows', $8::int)"
    "  FROM ins), "
    "a AS (" AUDIT_FROM("terminal.open", "ins.id::text",
                        "jsonb_build_object('session', ins.session_uuid, 'job_id', $10::text,"
                        " 'cols', $7::int, 'rows', $8::int)", "ins") ") "
    "SELECT s.status, n.live, (SELECT count(*) FROM ins) FROM s, n";
/* clang-format on */

static void opened_reply(json_t *reply, at_err_t err, void *arg);

static void mark_failed(ws_open_t *op)
{
    const char *p[] = {op->terminal};
    at_db_query(op->conn->gw->db,
                "UPDATE terminals SET status = 'closed', closed_at = now() "
                "WHERE id = $1::uuid AND status = 'opening'",
                1, p, NULL, NULL);
}

static void open_row(PGresult *res, const char *err, void *arg)
{
    ws_open_t *op = arg;
    ws_conn_t *c = op->conn;
    gateway_t *gw = c->gw;
    const char *id = msg_id(op);
    if (err) {
        at_error("event=ws_db_failed conn=%s what=terminal_open error=\"%s\"", c->id, err);
        if (ws_conn_live(c))
            ws_send_error(c, id, "unavailable", "Database unavailable");
    } else if (PQntuples(res) != 1) {
        if (ws_conn_live(c))
            ws_send_error(c, id, "session_not_found", "Session %s not found", op->session);
    } else if (strcmp(PQgetvalue(res, 0, 0), "ready") != 0) {
        if (ws_conn_live(c))
            ws_send_error(c, id, "session_not_ready",
                          "Session %s is %s: terminals open once it is ready", op->session,
                          PQgetvalue(res, 0, 0));
    } else if (!strcmp(PQgetvalue(res, 0, 2), "0")) {
        if (ws_conn_live(c))
            ws_send_error(c, id, "too_many_terminals",
                          "Session %s has %s terminals open (ATELIER_TERMINALS_PER_SESSION=%lld)",
                          op->session, PQgetvalue(res, 0, 1),
                          (long long)gw->cfg.terminals_per_session);
    } else {
        /* subscribed while the shell starts: its first output is not a
         * stream read away when the reply comes */
        char ch[64];
        snprintf(ch, sizeof ch, "term:%s", op->terminal);
        ws_pubsub_ref(ch);
        op->subscribed = 1;
        json_t *args = json_pack("{s:s, s:i, s:i}", "terminal_id", op->terminal, "cols", op->cols,
                                 "rows", op->rows);
        at_job_t job;
        at_err_t e = at_job_init(&job, "terminal_open", op->session, NULL, args);
        json_decref(args);
        if (e == AT_OK) {
            at_strlcpy(job.id, op->job, sizeof job.id); /* the jobs row's */
            e = replies_send(gw->replies, "session", &job, gw->cfg.reply_timeout_ms, opened_reply,
                             op);
            at_job_clear(&job);
        }
        if (e == AT_OK)
            return;
        if (ws_conn_live(c))
            ws_send_error(c, id, "unavailable", "Queue unavailable: %s", at_strerror(e));
        mark_failed(op);
    }
    open_free(op);
}

static void opened_reply(json_t *reply, at_err_t err, void *arg)
{
    ws_open_t *op = arg;
    ws_conn_t *c = op->conn;
    const char *id = msg_id(op);
    int ok = reply && json_is_true(json_object_get(reply, "ok"));
    if (!reply) {
        /* the shell may still start: nobody would know its id, so close it */
        if (ws_conn_live(c))
            ws_send_error(c, id, err == AT_ETIMEOUT ? "timeout" : "unavailable",
                          "Terminal %s did not open in time (%s)", op->terminal, at_strerror(err));
        ws_term_close_id(c, op->terminal, NULL, 1);
    } else if (!ok) {
        const char *why = json_string_value(json_object_get(reply, "error"));
        if (ws_conn_live(c))
            ws_send_error(c, id,
                          json_is_true(json_object_get(reply, "permanent")) ? "open_refused"
                                                                            : "open_failed",
                          "Terminal did not open: %s", why ? why : "job failed");
        mark_failed(op);
    } else if (!ws_conn_live(c) || c->nattach >= WS_MAX_ATTACH) {
        ws_term_close_id(c, op->terminal, NULL, 1);
    } else {
        json_t *m =
            json_pack("{s:s, s:s, s:s, s:i, s:i}", "type", "terminal_opened", "sessionId",
                      op->session, "terminalId", op->terminal, "cols", op->cols, "rows", op->rows);
        if (m && id)
            json_object_set_new(m, "id", json_string(id));
        ws_send_json(c, m);
        ws_attach_t *at = ws_attach_new(c, op->terminal, op->session, op->binary, 0, op->is_auto);
        ws_events_watch(c, op->session);
        if (at && op->input_len)
            ws_term_send_input(at, op->input, op->input_len);
    }
    open_free(op);
}

static void open_start(ws_conn_t *c, const char *session, int cols, int rows, int binary,
                       int is_auto, const char *id, const char *input, size_t input_len)
{
    if (c->nattach + opens_of(c) >= WS_MAX_ATTACH) {
        ws_send_error(c, id, "too_many_terminals", "A connection drives at most %d terminals",
                      WS_MAX_ATTACH);
        return;
    }
    ws_open_t *op = calloc(1, sizeof *op);
    if (!op)
        return;
    op->conn = c;
    ws_conn_ref(c);
    at_strlcpy(op->session, session, sizeof op->session);
    at_uuid4(op->terminal);
    at_uuid4(op->job);
    op->cols = cols;
    op->rows = rows;
    op->binary = binary;
    op->is_auto = is_auto;
    if (id) {
        op->has_id = 1;
        at_strlcpy(op->id, id, sizeof op->id);
    }
    if (input_len && (op->input = malloc(input_len))) {
        memcpy(op->input, input, input_len);
        op->input_len = input_len;
    }
    op->next = c->opens;
    c->opens = op;
    char uid[24], scope[24], cs[16], rs[16], limit[24];
    const char *p[10];
    ws_audit_params(c, p, uid);
    ws_scope_text(c, scope);
    snprintf(cs, sizeof cs, "%d", cols);
    snprintf(rs, sizeof rs, "%d", rows);
    snprintf(limit, sizeof limit, "%lld", (long long)c->gw->cfg.terminals_per_session);
    p[3] = op->session;
    p[4] = scope;
    p[5] = op->terminal;
    p[6] = cs;
    p[7] = rs;
    p[8] = limit;
    p[9] = op->job;
    if (at_db_query(c->gw->db, open_sql, 10, p, open_row, op) != AT_OK) {
        ws_send_error(c, id, "unavailable", "Database busy");
        open_free(op);
    }
}

void ws_term_open(ws_conn_t *c, json_t *msg, const char *id)
{
    char session[AT_UUID_LEN + 1];
    long long cols = ws_arg_int(msg, "cols", 80, 1, WS_TERM_SIZE_MAX);
    long long rows = ws_arg_int(msg, "rows", 24, 1, WS_TERM_SIZE_MAX);
    json_t *bin = json_object_get(msg, "binary");
    if (!ws_arg_id(msg, "sessionId", session, 1))
        ws_send_error(c, id, "bad_message", "terminal_open needs a sessionId (a session uuid)");
    else if (cols < 0 || rows < 0)
        ws_send_error(c, id, "bad_message", "cols and rows must be integers in [1, %d]",
                      WS_TERM_SIZE_MAX);
    else if (bin && !json_is_boolean(bin))
        ws_send_error(c, id, "bad_message", "binary must be true or false");
    else
        open_start(c, session, (int)cols, (int)rows, json_is_true(bin), 0, id, NULL, 0);
}

void ws_term_auto_input(ws_conn_t *c, const char *session, const char *data, size_t n,
                        const char *id)
{
    for (ws_open_t *op = c->opens; op; op = op->next) {
        if (op->is_auto && !strcmp(op->session, session)) { /* still opening */
            if (ws_hold_input(&op->input, &op->input_len, data, n) != 0)
                ws_send_error(c, id, "input_overflow",
                              "More than %d bytes typed before the terminal opened",
                              WS_PENDING_INPUT_MAX);
            return;
        }
    }
    open_start(c, session, 80, 24, 0, 1, id, data, n);
}
