#include "atelier/db.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "atelier/log.h"
#include "atelier/util.h"

#define RECONNECT_MIN_MS 100
#define RECONNECT_MAX_MS 5000
/* Statements each connection keeps prepared (by SQL text): parse and plan
 * once, not per query. Past the cap (one-off dynamic SQL) queries run
 * unprepared. */
#define STMT_MAX 256
#define STMT_BUCKETS 512

typedef struct stmt {
    struct stmt *next;
    uint64_t hash;
    char name[16];
    char *sql;
} stmt_t;

typedef struct query {
    struct query *next;
    char *sql;
    int nparams;
    char **params;
    int *lengths;
    int *formats;
    at_db_cb *cb;
    void *arg;
} query_t;

typedef enum { CONN_DOWN, CONN_CONNECTING, CONN_IDLE, CONN_BUSY } conn_state_t;

typedef struct conn {
    at_db_t *db;
    int idx;
    PGconn *pg;
    conn_state_t state;
    at_io_watch_t *watch;
    at_io_timer_t *retry;
    unsigned backoff_ms;
    query_t *q;       /* the query running on this connection */
    PGresult *result; /* last result of the running query */
    char err[512];
    stmt_t *stmts[STMT_BUCKETS];
    int nstmts;
    stmt_t *preparing; /* PQsendPrepare in flight for c->q */
} conn_t;

struct at_db {
    at_io_t *io;
    char *url;
    int n;
    conn_t *conns;
    query_t *head, *tail;
    int queued;
    int queue_max;
    int closing;
};

static void query_free(query_t *q)
{
    if (!q)
        return;
    for (int i = 0; i < q->nparams; i++)
        free(q->params[i]);
    free(q->params);
    free(q->lengths);
    free(q->formats);
    free(q->sql);
    free(q);
}

static void conn_connect(conn_t *c);
static void dispatch(at_db_t *db);

static uint64_t sql_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    while (*s)
        h = (h ^ (unsigned char)*s++) * 1099511628211ull;
    return h;
}

static stmt_t *stmt_find(conn_t *c, const char *sql, uint64_t h)
{
    for (stmt_t *st = c->stmts[h % STMT_BUCKETS]; st; st = st->next)
        if (st->hash == h && !strcmp(st->sql, sql))
            return st;
    return NULL;
}

/* Forget every prepared statement (they die with the server session). */
static void stmts_clear(conn_t *c)
{
    for (int i = 0; i < STMT_BUCKETS; i++) {
        while (c->stmts[i]) {
            stmt_t *st = c->stmts[i];
            c->stmts[i] = st->next;
            free(st->sql);
            free(st);
        }
    }
    c->nstmts = 0;
    if (c->preparing) {
        free(c->preparing->sql);
        free(c->preparing);
        c->preparing = NULL;
    }
}

static void conn_down(conn_t *c, const char *why)
{
    at_db_t *db = c->db;
    if (c->state != CONN_DOWN && !db->closing)
        at_warn("event=db_conn_lost conn=%d error=\"%s\"", c->idx, why);
    at_io_watch_free(c->watch);
    c->watch = NULL;
    if (c->pg) {
        PQfinish(c->pg);
        c->pg = NULL;
    }
    if (c->result) {
        PQclear(c->result);
        c->result = NULL;
    }
    c->state = CONN_DOWN;
    stmts_clear(c);
    query_t *q = c->q;
    c->q = NULL;
    if (q) {
        /* The statement may or may not have run; the caller decides. Jobs
         * that depend on it are idempotent and retried. */
        char msg[600];
        snprintf(msg, sizeof msg, "database connection lost: %s", why);
        if (q->cb)
            q->cb(NULL, msg, q->arg);
        query_free(q);
    }
    if (db->closing)
        return;
    c->backoff_ms = c->backoff_ms ? c->backoff_ms * 2 : RECONNECT_MIN_MS;
    if (c->backoff_ms > RECONNECT_MAX_MS)
        c->backoff_ms = RECONNECT_MAX_MS;
    at_io_timer_start(c->retry, c->backoff_ms, 0);
}

/* The prepare of c->preparing finished with res: keep the statement and
 * send the query, or report the error (a bad statement) as the query's. */
static int prepared_or_failed(conn_t *c, PGresult *res)
{
    stmt_t *st = c->preparing;
    c->preparing = NULL;
    if (res && PQresultStatus(res) == PGRES_COMMAND_OK) {
        unsigned b = (unsigned)(st->hash % STMT_BUCKETS);
        st->next = c->stmts[b];
        c->stmts[b] = st;
        c->nstmts++;
        PQclear(res);
        c->result = NULL;
        query_t *q = c->q;
        if (!PQsendQueryPrepared(c->pg, st->name, q->nparams, (const char *const *)q->params,
                                 q->lengths, q->formats, 0))
            return -1;
        int f = PQflush(c->pg);
        if (f < 0)
            return -1;
        at_io_watch_set(c->watch, f == 1 ? (AT_IO_READ | AT_IO_WRITE) : AT_IO_READ);
        return 1;
    }
    free(st->sql);
    free(st);
    return 0; /* finish_query reports c->result */
}

static void finish_query(conn_t *c)
{
    query_t *q = c->q;
    PGresult *res = c->result;
    c->q = NULL;
    c->result = NULL;
    c->state = CONN_IDLE;
    at_io_watch_set(c->watch, AT_IO_READ);
    const char *err = NULL;
    char msg[1024];
    if (!res) {
        snprintf(msg, sizeof msg, "query returned no result");
        err = msg;
    } else {
        ExecStatusType st = PQresultStatus(res);
        if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
            const char *m = PQresultErrorMessage(res);
            size_t n = strlen(m);
            while (n > 0 && (m[n - 1] == '\n' || m[n - 1] == ' '))
                n--;
            snprintf(msg, sizeof msg, "%.*s", (int)n, m);
            err = msg;
        }
    }
    if (q->cb)
        q->cb(res, err, q->arg);
    else if (err)
        at_warn("event=db_query_failed error=\"%s\"", err); /* fire-and-forget query */
    if (res)
        PQclear(res);
    query_free(q);
}

static void on_io(int fd, int events, void *arg)
{
    (void)fd;
    conn_t *c = arg;
    if (c->state == CONN_CONNECTING) {
        switch (PQconnectPoll(c->pg)) {
        case PGRES_POLLING_READING:
            at_io_watch_set(c->watch, AT_IO_READ);
            return;
        case PGRES_POLLING_WRITING:
            at_io_watch_set(c->watch, AT_IO_WRITE);
            return;
        case PGRES_POLLING_OK:
            if (PQsetnonblocking(c->pg, 1) != 0) {
                conn_down(c, "cannot set non-blocking");
                return;
            }
            c->state = CONN_IDLE;
            c->backoff_ms = 0;
            at_io_watch_set(c->watch, AT_IO_READ);
            at_debug("event=db_connected conn=%d", c->idx);
            dispatch(c->db);
            return;
        default: {
            char why[512];
            snprintf(why, sizeof why, "%s", PQerrorMessage(c->pg));
            why[strcspn(why, "\n")] = '\0';
            conn_down(c, why);
            return;
        }
        }
    }
    if (events & AT_IO_WRITE) {
        int f = PQflush(c->pg);
        if (f < 0) {
            conn_down(c, PQerrorMessage(c->pg));
            return;
        }
        at_io_watch_set(c->watch, f == 1 ? (AT_IO_READ | AT_IO_WRITE) : AT_IO_READ);
    }
    if (events & AT_IO_READ) {
        if (!PQconsumeInput(c->pg)) {
            char why[512];
            snprintf(why, sizeof why, "%s", PQerrorMessage(c->pg));
            why[strcspn(why, "\n")] = '\0';
            conn_down(c, why);
            return;
        }
        if (c->state != CONN_BUSY) {
            PGnotify *n;
            while ((n = PQnotifies(c->pg)))
                PQfreemem(n);
            return;
        }
        while (!PQisBusy(c->pg)) {
            PGresult *res = PQgetResult(c->pg);
            if (!res && c->preparing) {
                int sent = prepared_or_failed(c, c->result);
                if (sent < 0) {
                    conn_down(c, PQerrorMessage(c->pg));
                    return;
                }
                if (sent > 0)
                    continue;
            }
            if (!res) {
                finish_query(c);
                dispatch(c->db);
                return;
            }
            if (c->result)
                PQclear(c->result);
            c->result = res;
        }
    }
}

static void conn_connect(conn_t *c)
{
    c->pg = PQconnectStart(c->db->url);
    if (!c->pg || PQstatus(c->pg) == CONNECTION_BAD) {
        char why[512];
        snprintf(why, sizeof why, "%s", c->pg ? PQerrorMessage(c->pg) : "out of memory");
        why[strcspn(why, "\n")] = '\0';
        c->state = CONN_CONNECTING; /* so conn_down logs it */
        conn_down(c, why);
        return;
    }
    c->state = CONN_CONNECTING;
    c->watch = at_io_watch_new(c->db->io, PQsocket(c->pg), on_io, c);
    at_io_watch_set(c->watch, AT_IO_WRITE);
}

static void retry_cb(void *arg)
{
    conn_connect(arg);
}

/* Run q: as a prepared statement when this connection has (or can make)
 * one for its SQL, else unnamed. A missing statement is prepared first; the
 * query is sent when the prepare completes (prepared_or_failed). */
static int conn_send(conn_t *c, query_t *q)
{
    uint64_t h = sql_hash(q->sql);
    stmt_t *st = stmt_find(c, q->sql, h);
    int ok;
    if (st) {
        ok = PQsendQueryPrepared(c->pg, st->name, q->nparams, (const char *const *)q->params,
                                 q->lengths, q->formats, 0);
    } else if (c->nstmts < STMT_MAX && (st = calloc(1, sizeof *st)) && (st->sql = strdup(q->sql))) {
        st->hash = h;
        snprintf(st->name, sizeof st->name, "s%d", c->nstmts);
        ok = PQsendPrepare(c->pg, st->name, q->sql, q->nparams, NULL);
        c->preparing = st;
    } else {
        free(st);
        ok = PQsendQueryParams(c->pg, q->sql, q->nparams, NULL, (const char *const *)q->params,
                               q->lengths, q->formats, 0);
    }
    if (!ok)
        return -1;
    c->q = q;
    c->state = CONN_BUSY;
    int f = PQflush(c->pg);
    if (f < 0)
        return -1;
    at_io_watch_set(c->watch, f == 1 ? (AT_IO_READ | AT_IO_WRITE) : AT_IO_READ);
    return 0;
}

static void dispatch(at_db_t *db)
{
    for (int i = 0; i < db->n && db->head; i++) {
        conn_t *c = &db->conns[i];
        if (c->state != CONN_IDLE)
            continue;
        query_t *q = db->head;
        db->head = q->next;
        if (!db->head)
            db->tail = NULL;
        db->queued--;
        q->next = NULL;
        if (conn_send(c, q) != 0) {
            /* put it back first so the reconnect runs it */
            q->next = db->head;
            db->head = q;
            if (!db->tail)
                db->tail = q;
            db->queued++;
            c->q = NULL;
            conn_down(c, PQerrorMessage(c->pg));
        }
    }
}

at_db_t *at_db_new(at_io_t *io, const char *url, int pool_size, int queue_max)
{
    at_db_t *db = calloc(1, sizeof *db);
    if (!db)
        return NULL;
    db->io = io;
    db->url = strdup(url);
    db->n = pool_size;
    db->queue_max = queue_max;
    db->conns = calloc((size_t)pool_size, sizeof *db->conns);
    if (!db->url || !db->conns) {
        free(db->url);
        free(db->conns);
        free(db);
        return NULL;
    }
    for (int i = 0; i < pool_size; i++) {
        conn_t *c = &db->conns[i];
        c->db = db;
        c->idx = i;
        c->retry = at_io_timer_new(io, retry_cb, c);
        conn_connect(c);
    }
    return db;
}

void at_db_free(at_db_t *db)
{
    if (!db)
        return;
    db->closing = 1;
    while (db->head) {
        query_t *q = db->head;
        db->head = q->next;
        if (q->cb)
            q->cb(NULL, "database pool shutting down", q->arg);
        query_free(q);
    }
    for (int i = 0; i < db->n; i++) {
        conn_down(&db->conns[i], "shutting down");
        at_io_timer_free(db->conns[i].retry);
    }
    free(db->conns);
    free(db->url);
    free(db);
}

int at_db_connected(const at_db_t *db)
{
    int up = 0;
    for (int i = 0; i < db->n; i++)
        if (db->conns[i].state == CONN_IDLE || db->conns[i].state == CONN_BUSY)
            up++;
    return up;
}

at_err_t at_db_query_bin(at_db_t *db, const char *sql, int nparams, const char *const *params,
                         const int *lengths, const int *formats, at_db_cb *cb, void *arg)
{
    if (db->closing)
        return AT_ECLOSED;
    if (db->queued >= db->queue_max)
        return AT_EBUSY;
    query_t *q = calloc(1, sizeof *q);
    if (!q)
        return AT_ENOMEM;
    q->sql = strdup(sql);
    q->nparams = nparams;
    q->cb = cb;
    q->arg = arg;
    if (nparams > 0) {
        q->params = calloc((size_t)nparams, sizeof *q->params);
        if (lengths || formats) {
            q->lengths = calloc((size_t)nparams, sizeof *q->lengths);
            q->formats = calloc((size_t)nparams, sizeof *q->formats);
        }
    }
    if (!q->sql || (nparams > 0 && !q->params) ||
        ((lengths || formats) && (!q->lengths || !q->formats))) {
        query_free(q);
        return AT_ENOMEM;
    }
    for (int i = 0; i < nparams; i++) {
        if (!params[i])
            continue;
        int bin = formats && formats[i];
        size_t len = bin ? (size_t)lengths[i] : strlen(params[i]);
        q->params[i] = malloc(len + 1);
        if (!q->params[i]) {
            query_free(q);
            return AT_ENOMEM;
        }
        memcpy(q->params[i], params[i], len);
        q->params[i][len] = '\0';
        if (q->lengths) {
            q->lengths[i] = (int)len;
            q->formats[i] = bin;
        }
    }
    if (db->tail)
        db->tail->next = q;
    else
        db->head = q;
    db->tail = q;
    db->queued++;
    dispatch(db);
    return AT_OK;
}

at_err_t at_db_query(at_db_t *db, const char *sql, int nparams, const char *const *params,
                     at_db_cb *cb, void *arg)
{
    return at_db_query_bin(db, sql, nparams, params, NULL, NULL, cb, arg);
}

PGconn *at_db_connect_sync(const char *url, int timeout_ms, char *errbuf, size_t errlen)
{
    int64_t deadline = at_mono_us() + (int64_t)timeout_ms * 1000;
    for (;;) {
        PGconn *pg = PQconnectdb(url);
        if (PQstatus(pg) == CONNECTION_OK)
            return pg;
        snprintf(errbuf, errlen, "connect %s: %s", url, PQerrorMessage(pg));
        errbuf[strcspn(errbuf, "\n")] = '\0';
        PQfinish(pg);
        if (at_mono_us() >= deadline)
            return NULL;
        usleep(200 * 1000);
    }
}
