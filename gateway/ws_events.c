/*
 * Session events for WebSocket clients: what the session-manager and the
 * sync-worker publish on ev:{session} (pod_ready, status, oom,
 * file_changed, ...) is passed on verbatim to every connection watching
 * that session.
 *
 * A connection watches a session after {"type":"subscribe"} (ownership
 * checked), at connect (?sessionId=, or the user's newest live sessions),
 * and when it opens a terminal there. pod_ready is sent at once when the
 * session is ready already; a session not ready at the first look is looked
 * at again once the subscription is confirmed, so a pod_ready published in
 * between is never missed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "atelier/log.h"
#include "records.h"
#include "ws_internal.h"

#define BUCKETS 4096

struct ws_watch {
    ws_watch_t *next;  /* the connection's watches */
    ws_watch_t *snext; /* the session's watchers */
    ws_conn_t *conn;
    char session[AT_UUID_LEN + 1];
    int recheck;    /* not ready at the first look: look again when subscribed */
    int ready_sent; /* a pod_ready went out since the watch began */
};

typedef struct sess {
    struct sess *next;
    ws_watch_t *watchers;
    char id[AT_UUID_LEN + 1];
} sess_t;

static sess_t *g_sessions[BUCKETS];

static sess_t **sess_slot(const char *id)
{
    unsigned h = 2166136261u;
    for (const char *p = id; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    sess_t **pp = &g_sessions[h % BUCKETS];
    while (*pp && strcmp((*pp)->id, id))
        pp = &(*pp)->next;
    return pp;
}

static void channel(char out[64], const char *session)
{
    snprintf(out, 64, "ev:%s", session);
}

static ws_watch_t *find_watch(const ws_conn_t *c, const char *session)
{
    for (ws_watch_t *w = c->watch; w; w = w->next)
        if (!strcmp(w->session, session))
            return w;
    return NULL;
}

static void send_pod_ready(ws_watch_t *w)
{
    char ts[32];
    ws_now_iso(ts);
    w->ready_sent = 1;
    ws_send_json(w->conn, json_pack("{s:s, s:s, s:s}", "type", "pod_ready", "sessionId", w->session,
                                    "timestamp", ts));
}

/* Start watching a session the connection owns, whose status was status. */
static ws_watch_t *watch_add(ws_conn_t *c, const char *session, const char *status)
{
    ws_watch_t *w = find_watch(c, session);
    if (w)
        return w;
    sess_t **pp = sess_slot(session), *s = *pp;
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s)
            return NULL;
        at_strlcpy(s->id, session, sizeof s->id);
        *pp = s;
    }
    w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->conn = c;
    at_strlcpy(w->session, session, sizeof w->session);
    w->next = c->watch;
    c->watch = w;
    c->nwatch++;
    w->snext = s->watchers;
    s->watchers = w;
    char ch[64];
    channel(ch, session);
    ws_pubsub_ref(ch);
    if (status && !strcmp(status, "ready"))
        send_pod_ready(w);
    else
        w->recheck = !ws_pubsub_ready(ch);
    return w;
}

static void watch_remove(ws_watch_t *w)
{
    sess_t **pp = sess_slot(w->session), *s = *pp;
    if (s) {
        ws_watch_t **wp = &s->watchers;
        while (*wp && *wp != w)
            wp = &(*wp)->snext;
        if (*wp)
            *wp = w->snext;
        if (!s->watchers) {
            *pp = s->next;
            free(s);
        }
    }
    char ch[64];
    channel(ch, w->session);
    ws_pubsub_unref(ch);
    free(w);
}

void ws_events_conn_closed(ws_conn_t *c)
{
    while (c->watch) {
        ws_watch_t *w = c->watch;
        c->watch = w->next;
        watch_remove(w);
    }
    c->nwatch = 0;
}

/* ---- subscribe ------------------------------------------------------------------- */

typedef struct sub_req {
    ws_conn_t *conn;
    char session[AT_UUID_LEN + 1];
    char id[64];
    int has_id;
} sub_req_t;

static const char owned_sql[] =
    "SELECT status FROM code_sessions WHERE uuid = $1 AND ($2::bigint = 0 OR user_id = "
    "$2::bigint)";

static void subscribed(PGresult *res, const char *err, void *arg)
{
    sub_req_t *r = arg;
    ws_conn_t *c = r->conn;
    const char *id = r->has_id ? r->id : NULL;
    if (!ws_conn_live(c)) {
        /* gone meanwhile */
    } else if (err) {
        at_error("event=ws_db_failed conn=%s what=subscribe error=\"%s\"", c->id, err);
        ws_send_error(c, id, "unavailable", "Database unavailable");
    } else if (PQntuples(res) != 1) {
        ws_send_error(c, id, "session_not_found", "Session %s not found", r->session);
    } else if (c->nwatch >= WS_MAX_WATCH && !find_watch(c, r->session)) {
        ws_send_error(c, id, "too_many_subscriptions", "A connection watches at most %d sessions",
                      WS_MAX_WATCH);
    } else {
        const char *status = PQgetvalue(res, 0, 0);
        ws_watch_t *w = find_watch(c, r->session);
        if (w && !strcmp(status, "ready"))
            send_pod_ready(w); /* asked again: answered again */
        else if (!w && !watch_add(c, r->session, status))
            ws_send_error(c, id, "unavailable", "Out of memory");
    }
    ws_conn_unref(c);
    free(r);
}

static void start_subscribe(ws_conn_t *c, const char *session, const char *id)
{
    sub_req_t *r = calloc(1, sizeof *r);
    if (!r)
        return;
    r->conn = c;
    at_strlcpy(r->session, session, sizeof r->session);
    if (id) {
        r->has_id = 1;
        at_strlcpy(r->id, id, sizeof r->id);
    }
    char scope[24];
    snprintf(scope, sizeof scope, "%lld", (long long)c->who.scope);
    const char *params[] = {r->session, scope};
    ws_conn_ref(c);
    if (at_db_query(c->gw->db, owned_sql, 2, params, subscribed, r) != AT_OK) {
        ws_send_error(c, id, "unavailable", "Database busy");
        ws_conn_unref(c);
        free(r);
    }
}

/* A session id from a client, lower-cased; 0 when malformed. */
static int session_arg(const char *raw, char out[AT_UUID_LEN + 1])
{
    if (!raw || strlen(raw) > AT_UUID_LEN)
        return 0;
    size_t i = 0;
    for (; raw[i]; i++)
        out[i] = (char)(raw[i] >= 'A' && raw[i] <= 'Z' ? raw[i] + 32 : raw[i]);
    out[i] = '\0';
    return session_id_valid(out);
}

void ws_events_subscribe(ws_conn_t *c, json_t *msg, const char *id)
{
    char session[AT_UUID_LEN + 1];
    if (!session_arg(json_string_value(json_object_get(msg, "sessionId")), session)) {
        ws_send_error(c, id, "bad_message", "subscribe needs a sessionId (a session uuid)");
        return;
    }
    start_subscribe(c, session, id);
}

void ws_events_watch(ws_conn_t *c, const char *session)
{
    if (c->nwatch < WS_MAX_WATCH && !find_watch(c, session))
        watch_add(c, session, NULL);
}

/* ---- at connect ----------------------------------------------------------------- */

static void live_sessions(PGresult *res, const char *err, void *arg)
{
    ws_conn_t *c = arg;
    if (ws_conn_live(c) && err)
        at_error("event=ws_db_failed conn=%s what=sessions_at_connect error=\"%s\"", c->id, err);
    else if (ws_conn_live(c))
        for (int i = 0; i < PQntuples(res) && c->nwatch < WS_MAX_WATCH; i++)
            watch_add(c, PQgetvalue(res, i, 0), PQgetvalue(res, i, 1));
    ws_conn_unref(c);
}

void ws_events_connect(ws_conn_t *c)
{
    char session[AT_UUID_LEN + 1];
    if (c->session_hint[0]) {
        if (session_arg(c->session_hint, session))
            start_subscribe(c, session, NULL);
        else
            ws_send_error(c, NULL, "session_not_found", "Session %s not found", c->session_hint);
        return;
    }
    if (c->who.scope == 0) /* a service key acting for nobody in particular */
        return;
    char scope[24];
    snprintf(scope, sizeof scope, "%lld", (long long)c->who.scope);
    char limit[16];
    snprintf(limit, sizeof limit, "%d", WS_AUTO_WATCH);
    const char *params[] = {scope, limit};
    ws_conn_ref(c);
    if (at_db_query(c->gw->db,
                    "SELECT uuid, status FROM code_sessions WHERE user_id = $1::bigint AND status "
                    "NOT IN ('terminating', 'terminated') ORDER BY created_at DESC LIMIT $2::int",
                    2, params, live_sessions, c) != AT_OK)
        ws_conn_unref(c);
}

/* ---- from the pub/sub link --------------------------------------------------------- */

void ws_events_message(const char *session, const char *payload, size_t len)
{
    sess_t *s = *sess_slot(session);
    if (!s)
        return;
    int pod_ready = memmem(payload, len, "\"type\":\"pod_ready\"", 18) != NULL;
    for (ws_watch_t *w = s->watchers; w; w = w->snext) {
        if (pod_ready)
            w->ready_sent = 1;
        ws_send_text(w->conn, payload, len);
    }
}

typedef struct recheck {
    ws_conn_t *conn;
    char session[AT_UUID_LEN + 1];
} recheck_t;

static void rechecked(PGresult *res, const char *err, void *arg)
{
    recheck_t *r = arg;
    ws_watch_t *w = ws_conn_live(r->conn) ? find_watch(r->conn, r->session) : NULL;
    if (w && !err && PQntuples(res) == 1 && !strcmp(PQgetvalue(res, 0, 0), "ready") &&
        !w->ready_sent)
        send_pod_ready(w);
    ws_conn_unref(r->conn);
    free(r);
}

void ws_events_channel_ready(const char *session)
{
    sess_t *s = *sess_slot(session);
    for (ws_watch_t *w = s ? s->watchers : NULL; w; w = w->snext) {
        if (!w->recheck)
            continue;
        w->recheck = 0;
        recheck_t *r = calloc(1, sizeof *r);
        if (!r)
            continue;
        r->conn = w->conn;
        at_strlcpy(r->session, session, sizeof r->session);
        const char *params[] = {r->session};
        ws_conn_ref(r->conn);
        if (at_db_query(r->conn->gw->db, "SELECT status FROM code_sessions WHERE uuid = $1", 1,
                        params, rechecked, r) != AT_OK) {
            ws_conn_unref(r->conn);
            free(r);
        }
    }
}

void ws_events_shutdown(void)
{
    for (int i = 0; i < BUCKETS; i++) {
        while (g_sessions[i]) {
            sess_t *s = g_sessions[i];
            g_sessions[i] = s->next;
            free(s);
        }
    }
}
