/*
 * What WebSocket clients ask of terminals:
 *
 *   terminal_open    ws_term_open.c
 *   terminal_attach  ownership checked, output replayed after lastSeq
 *   terminal_input   through the command policy, XADD term:{id}:in; without
 *                    terminalId (the seed's client) the connection's own
 *                    terminal of that session, opened on demand
 *   terminal_resize  XADD term:{id}:in t resize
 *   terminal_close   job terminal_close (jobs and audit rows)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/async.h>

#include "atelier/log.h"
#include "records.h"
#include "ws_terms.h"

#define INPUT_STREAM_MAXLEN "1000"

/* An attach on its way (ownership checked in PostgreSQL). Input and a
 * resize sent for the terminal meanwhile wait here: a client may type
 * right after terminal_attach. */
struct ws_pending {
    ws_pending_t *next; /* the connection's */
    ws_conn_t *conn;
    char terminal[AT_UUID_LEN + 1];
    long long last;
    int binary;
    char id[64];
    int has_id;
    char *input;
    size_t input_len;
    int cols, rows; /* a resize asked meanwhile (0: none) */
};

static ws_pending_t *pending_find(const ws_conn_t *c, const char *terminal)
{
    for (ws_pending_t *p = c->pending; p; p = p->next)
        if (!strcmp(p->terminal, terminal))
            return p;
    return NULL;
}

static void pending_free(ws_pending_t *p)
{
    for (ws_pending_t **pp = &p->conn->pending; *pp; pp = &(*pp)->next) {
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    }
    ws_conn_unref(p->conn);
    free(p->input);
    free(p);
}

void ws_scope_text(const ws_conn_t *c, char out[24])
{
    snprintf(out, 24, "%lld", (long long)c->who.scope);
}

/* A client's terminal or session id, lower-cased; 0 when malformed. */
int ws_arg_id(json_t *msg, const char *field, char out[AT_UUID_LEN + 1], int session)
{
    const char *raw = json_string_value(json_object_get(msg, field));
    if (!raw || strlen(raw) > AT_UUID_LEN)
        return 0;
    size_t i = 0;
    for (; raw[i]; i++)
        out[i] = (char)(raw[i] >= 'A' && raw[i] <= 'Z' ? raw[i] + 32 : raw[i]);
    out[i] = '\0';
    return session ? session_id_valid(out) : at_is_uuid(out);
}

/* An optional integer field in [lo, hi] (def when absent); -1 when bad. */
long long ws_arg_int(json_t *msg, const char *field, long long def, long long lo, long long hi)
{
    json_t *v = json_object_get(msg, field);
    if (!v)
        return def;
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return -1;
    return json_integer_value(v);
}

/* ---- close ------------------------------------------------------------------------ */

/* clang-format off */
static const char close_sql[] =
    "WITH t AS (SELECT id, session_uuid FROM terminals WHERE id = $4::uuid"
    "  AND ($5::bigint = 0 OR user_id = $5::bigint) AND status IN ('opening', 'open')), "
    "j AS (INSERT INTO jobs (id, kind, role, session, state, args)"
    "  SELECT $6::uuid, 'terminal_close', 'session', t.session_uuid, 'queued',"
    "  jsonb_build_object('terminal_id', t.id::text) FROM t RETURNING id, kind, session, args), "
    "a AS (" AUDIT_FROM("terminal.close", "t.id::text",
                        "jsonb_build_object('session', t.session_uuid, 'job_id', $6::text)", "t") ") "
    "SELECT (SELECT count(*) FROM terminals WHERE id = $4::uuid"
    "  AND ($5::bigint = 0 OR user_id = $5::bigint)), j.id::text, j.kind, j.session, j.args::text"
    " FROM (SELECT 1) one LEFT JOIN j ON true";
/* clang-format on */

typedef struct close_req {
    ws_conn_t *conn;
    char terminal[AT_UUID_LEN + 1];
    char id[64];
    int has_id, quiet;
} close_req_t;

static void closed_row(PGresult *res, const char *err, void *arg)
{
    close_req_t *r = arg;
    ws_conn_t *c = r->conn;
    const char *id = r->has_id ? r->id : NULL;
    if (err) {
        at_error("event=ws_db_failed conn=%s what=terminal_close error=\"%s\"", c->id, err);
        if (!r->quiet && ws_conn_live(c))
            ws_send_error(c, id, "unavailable", "Database unavailable");
    } else if (PQntuples(res) == 1 && !strcmp(PQgetvalue(res, 0, 0), "0")) {
        if (!r->quiet && ws_conn_live(c))
            ws_send_error(c, id, "terminal_not_found", "Terminal %s not found", r->terminal);
    } else if (PQntuples(res) == 1 && !PQgetisnull(res, 0, 1)) {
        json_t *args = json_loads(PQgetvalue(res, 0, 4), 0, NULL);
        enqueue_row(c->gw, "session", PQgetvalue(res, 0, 1), PQgetvalue(res, 0, 2),
                    PQgetvalue(res, 0, 3), args, NULL, NULL);
        json_decref(args);
    } /* else closed or exited already: nothing to do */
    ws_conn_unref(c);
    free(r);
}

/* Queue terminal_close for a terminal of c's scope; quiet: no answer
 * (a terminal nobody learned the id of). */
void ws_term_close_id(ws_conn_t *c, const char *terminal, const char *id, int quiet)
{
    close_req_t *r = calloc(1, sizeof *r);
    if (!r)
        return;
    r->conn = c;
    r->quiet = quiet;
    at_strlcpy(r->terminal, terminal, sizeof r->terminal);
    if (id) {
        r->has_id = 1;
        at_strlcpy(r->id, id, sizeof r->id);
    }
    char uid[24], scope[24], job[AT_UUID_LEN + 1];
    const char *p[6];
    ws_audit_params(c, p, uid);
    ws_scope_text(c, scope);
    at_uuid4(job);
    p[3] = r->terminal;
    p[4] = scope;
    p[5] = job;
    ws_conn_ref(c);
    if (at_db_query(c->gw->db, close_sql, 6, p, closed_row, r) != AT_OK) {
        if (!quiet)
            ws_send_error(c, id, "unavailable", "Database busy");
        ws_conn_unref(c);
        free(r);
    }
}

void ws_term_close(ws_conn_t *c, json_t *msg, const char *id)
{
    char terminal[AT_UUID_LEN + 1];
    if (!ws_arg_id(msg, "terminalId", terminal, 0)) {
        ws_send_error(c, id, "bad_message", "terminal_close needs a terminalId (a uuid)");
        return;
    }
    ws_term_close_id(c, terminal, id, 0);
}

/* ---- input ------------------------------------------------------------------------ */

static void input_added(redisAsyncContext *ac, void *r, void *arg)
{
    (void)ac;
    (void)arg;
    const redisReply *reply = r;
    if (reply && reply->type == REDIS_REPLY_ERROR)
        at_warn("event=ws_input_failed error=\"%s\"", reply->str);
}

/* XADD on the input link (ws_pubsub.c): written before the loop sleeps,
 * behind no replay read. */
static int add_input(int argc, const char **argv, const size_t *lens)
{
    redisAsyncContext *ac = ws_input_link();
    return ac && redisAsyncCommandArgv(ac, input_added, NULL, argc, argv, lens) == REDIS_OK ? 0
                                                                                            : -1;
}

/* Bytes typed into at's terminal: the command policy on complete lines,
 * then XADD term:{id}:in. */
void ws_term_send_input(ws_attach_t *at, const char *data, size_t n)
{
    ws_conn_t *c = at->conn;
    if (!n)
        return;
    char *out = malloc(POLICY_KILL_LEN * n);
    if (!out)
        return;
    int blocked = 0;
    char matched[256] = "";
    size_t m = policy_feed(c->gw->cfg.command_policy, &at->line, data, n, out, &blocked, matched,
                           sizeof matched);
    if (blocked) {
        char text[320], ts[32];
        snprintf(text, sizeof text, "\r\n[atelier] command blocked by policy: %s\r\n", matched);
        ws_now_iso(ts);
        ws_attach_message(at, json_pack("{s:s, s:s, s:s, s:s, s:s, s:b}", "type", "terminal_output",
                                        "sessionId", at->session, "terminalId", at->terminal,
                                        "output", text, "timestamp", ts, "notice", 1));
        at_info("event=ws_command_blocked conn=%s actor=%s terminal=%s command=\"%s\"", c->id,
                c->who.actor, at->terminal, matched);
    }
    char key[64];
    snprintf(key, sizeof key, "term:%s:in", at->terminal);
    const char *argv[] = {"XADD", key, "MAXLEN", "~", INPUT_STREAM_MAXLEN,
                          "*",    "t", "in",     "d", out};
    size_t lens[] = {4, strlen(key), 6, 1, strlen(INPUT_STREAM_MAXLEN), 1, 1, 2, 1, m};
    if (m && add_input(10, argv, lens) != 0)
        ws_send_error(c, NULL, "unavailable", "Redis unavailable: input to terminal %s lost",
                      at->terminal);
    free(out);
}

void ws_term_input(ws_conn_t *c, json_t *msg, const char *id)
{
    json_t *in = json_object_get(msg, "input");
    if (!json_is_string(in)) {
        ws_send_error(c, id, "bad_message", "terminal_input needs an input string");
        return;
    }
    const char *data = json_string_value(in);
    size_t n = json_string_length(in);
    char terminal[AT_UUID_LEN + 1], session[AT_UUID_LEN + 1];
    if (json_object_get(msg, "terminalId")) {
        int ok = ws_arg_id(msg, "terminalId", terminal, 0);
        ws_attach_t *at = ok ? ws_attach_find(c, terminal) : NULL;
        ws_pending_t *p = ok && !at ? pending_find(c, terminal) : NULL;
        if (p) {
            if (ws_hold_input(&p->input, &p->input_len, data, n) != 0)
                ws_send_error(c, id, "input_overflow",
                              "More than %d bytes typed before the terminal was attached",
                              WS_PENDING_INPUT_MAX);
            return;
        }
        if (!at)
            ws_send_error(c, id, "not_attached",
                          "Terminal %.40s is not open on this connection: terminal_open or "
                          "terminal_attach it first",
                          json_string_value(json_object_get(msg, "terminalId")));
        else
            ws_term_send_input(at, data, n);
        return;
    }
    if (!ws_arg_id(msg, "sessionId", session, 1)) {
        ws_send_error(c, id, "bad_message", "terminal_input needs a terminalId or a sessionId");
        return;
    }
    ws_attach_t *at = ws_attach_auto(c, session);
    if (at) {
        ws_term_send_input(at, data, n);
        return;
    }
    ws_term_auto_input(c, session, data, n, id);
}

void ws_term_input_binary(ws_conn_t *c, const char *data, size_t len)
{
    char terminal[AT_UUID_LEN + 1];
    if (len < AT_UUID_LEN) {
        ws_send_error(c, NULL, "bad_message",
                      "A binary message is a terminal id (36 bytes) followed by input bytes");
        return;
    }
    memcpy(terminal, data, AT_UUID_LEN);
    terminal[AT_UUID_LEN] = '\0';
    ws_attach_t *at = ws_attach_find(c, terminal);
    if (!at)
        ws_send_error(c, NULL, "not_attached", "Terminal %s is not open on this connection",
                      at_is_uuid(terminal) ? terminal : "(bad id)");
    else
        ws_term_send_input(at, data + AT_UUID_LEN, len - AT_UUID_LEN);
}

static void send_resize(ws_conn_t *c, const char *terminal, int cols, int rows, const char *id)
{
    char key[64], cs[24], rs[24];
    snprintf(key, sizeof key, "term:%s:in", terminal);
    snprintf(cs, sizeof cs, "%d", cols);
    snprintf(rs, sizeof rs, "%d", rows);
    const char *argv[] = {"XADD", key, "MAXLEN", "~", INPUT_STREAM_MAXLEN, "*", "t", "resize",
                          "cols", cs,  "rows",   rs};
    size_t lens[12];
    for (int i = 0; i < 12; i++)
        lens[i] = strlen(argv[i]);
    if (add_input(12, argv, lens) != 0)
        ws_send_error(c, id, "unavailable", "Redis unavailable");
}

void ws_term_resize(ws_conn_t *c, json_t *msg, const char *id)
{
    char terminal[AT_UUID_LEN + 1];
    long long cols = ws_arg_int(msg, "cols", -1, 1, WS_TERM_SIZE_MAX);
    long long rows = ws_arg_int(msg, "rows", -1, 1, WS_TERM_SIZE_MAX);
    int ok = ws_arg_id(msg, "terminalId", terminal, 0);
    ws_attach_t *at = ok ? ws_attach_find(c, terminal) : NULL;
    if (cols < 0 || rows < 0) {
        ws_send_error(c, id, "bad_message", "terminal_resize needs cols and rows in [1, %d]",
                      WS_TERM_SIZE_MAX);
        return;
    }
    ws_pending_t *p = at || !ok ? NULL : pending_find(c, terminal);
    if (p) {
        p->cols = (int)cols;
        p->rows = (int)rows;
        return;
    }
    if (!at) {
        ws_send_error(c, id, "not_attached",
                      "terminal_resize needs the terminalId of a terminal "
                      "open on this connection");
        return;
    }
    send_resize(c, terminal, (int)cols, (int)rows, id);
}

/* ---- attach ------------------------------------------------------------------------ */

static void attach_row(PGresult *res, const char *err, void *arg)
{
    ws_pending_t *r = arg;
    ws_conn_t *c = r->conn;
    const char *id = r->has_id ? r->id : NULL;
    if (!ws_conn_live(c)) {
        /* gone meanwhile */
    } else if (err) {
        at_error("event=ws_db_failed conn=%s what=terminal_attach error=\"%s\"", c->id, err);
        ws_send_error(c, id, "unavailable", "Database unavailable");
    } else if (PQntuples(res) != 1) {
        ws_send_error(c, id, "terminal_not_found", "Terminal %s not found", r->terminal);
    } else if (!strcmp(PQgetvalue(res, 0, 1), "closed")) {
        ws_send_error(c, id, "terminal_closed", "Terminal %s is closed", r->terminal);
    } else if (c->nattach >= WS_MAX_ATTACH) {
        ws_send_error(c, id, "too_many_terminals", "A connection drives at most %d terminals",
                      WS_MAX_ATTACH);
    } else {
        const char *session = PQgetvalue(res, 0, 0);
        ws_attach_t *old = ws_attach_find(c, r->terminal);
        int is_auto = old && old->is_auto;
        if (old)
            ws_attach_detach(old);
        json_t *m = json_pack("{s:s, s:s, s:s, s:I, s:s}", "type", "terminal_attached", "sessionId",
                              session, "terminalId", r->terminal, "lastSeq", (json_int_t)r->last,
                              "status", PQgetvalue(res, 0, 1));
        if (m && id)
            json_object_set_new(m, "id", json_string(id));
        ws_send_json(c, m);
        ws_attach_t *at = ws_attach_new(c, r->terminal, session, r->binary, r->last, is_auto);
        ws_events_watch(c, session);
        if (at && r->input_len)
            ws_term_send_input(at, r->input, r->input_len);
        if (at && r->cols)
            send_resize(c, r->terminal, r->cols, r->rows, NULL);
    }
    pending_free(r);
}

void ws_term_attach(ws_conn_t *c, json_t *msg, const char *id)
{
    ws_pending_t *r = calloc(1, sizeof *r);
    if (!r)
        return;
    json_t *bin = json_object_get(msg, "binary");
    r->last = ws_arg_int(msg, "lastSeq", 0, 0, INT64_MAX / 2);
    r->binary = json_is_true(bin);
    if (!ws_arg_id(msg, "terminalId", r->terminal, 0) || r->last < 0 ||
        (bin && !json_is_boolean(bin))) {
        ws_send_error(c, id, "bad_message",
                      "terminal_attach needs a terminalId (a uuid), and lastSeq an integer >= 0");
        free(r);
        return;
    }
    if (id) {
        r->has_id = 1;
        at_strlcpy(r->id, id, sizeof r->id);
    }
    r->conn = c;
    ws_conn_ref(c);
    r->next = c->pending;
    c->pending = r;
    char scope[24];
    ws_scope_text(c, scope);
    const char *p[] = {r->terminal, scope};
    if (at_db_query(c->gw->db,
                    "SELECT session_uuid, status FROM terminals WHERE id = $1::uuid "
                    "AND ($2::bigint = 0 OR user_id = $2::bigint)",
                    2, p, attach_row, r) != AT_OK) {
        ws_send_error(c, id, "unavailable", "Database busy");
        pending_free(r);
    }
}
