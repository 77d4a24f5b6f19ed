/*
 * Terminal jobs (terminals.h): terminal_open, terminal_close and the
 * re-attach of a session's terminals, each a read of the row on the loop,
 * the driver calls on the pool, the outcome recorded on the loop.
 */
#include "terminals_int.h"

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "atelier/log.h"

#define KILL_POLL_MS 20
#define OPENING_STALE_S 300 /* an 'opening' row this old lost its terminal_open job */

/* The shell of every terminal (issue 6): a login bash in the workspace,
 * colours, its history in the volume so it outlives the sandbox. */
static const char *const shell_argv[] = {"/bin/bash", "-l", NULL};
static const char *const shell_env[] = {"TERM=xterm-256color",
                                        "HISTFILE=/workspace/.bash_history",
                                        "HOME=/workspace",
                                        "PATH=/usr/local/bin:/usr/bin:/bin",
                                        "LANG=C.UTF-8",
                                        "USER=user",
                                        "LOGNAME=user",
                                        "SHELL=/bin/bash",
                                        NULL};
#define SHELL_CWD "/workspace"

enum { OPEN, CLOSE, ATTACH };

/* One terminal a job spawns (pid 0) or attaches, and what came of it. */
typedef struct slot {
    char id[AT_UUID_LEN + 1];
    pid_t pid;
    int cols, rows;
    sm_pty_t pty;
    int rc, code;
    char err[SM_ERR_MAX];
} slot_t;

typedef struct tjob {
    int kind;
    char session[AT_JOB_SESSION_MAX + 1];
    char status[32];
    sm_term_done_fn *done;
    void *arg;
    tsess_t *s;
    int want_exits;
    sm_exits_t *exits;
    slot_t *slots;
    size_t n;
    int ready; /* the session is ready (close: its sandbox answers) */
    int64_t t0_us;
} tjob_t;

static const char *kind_name(int kind)
{
    return kind == OPEN ? "terminal_open" : kind == CLOSE ? "terminal_close" : "attach";
}

static void job_finish(tjob_t *j, json_t *result, const char *err, int permanent)
{
    if (err)
        at_warn("event=terminal_job_failed session=%s kind=%s permanent=%d error=\"%s\"",
                j->session, kind_name(j->kind), permanent, err);
    j->done(j->arg, result, err, permanent);
    if (j->s) {
        j->s->busy--;
        sm_term_sess_release(j->s);
    }
    free(j->slots);
    free(j);
}

static void job_failf(tjob_t *j, int permanent, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void job_failf(tjob_t *j, int permanent, const char *fmt, ...)
{
    char msg[SM_ERR_MAX + 256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    job_finish(j, NULL, msg, permanent);
}

static void close_row(const char *id)
{
    const char *p[] = {id};
    at_db_query(at_worker_db(sm_terms.w),
                "UPDATE terminals SET status = 'closed', closed_at = now() WHERE id = $1"
                " AND status IN ('opening', 'open')",
                1, p, NULL, NULL);
}

static void slots_work(void *arg)
{
    tjob_t *j = arg;
    if (j->want_exits &&
        sm_terms.driver->exits_open(sm_terms.driver->self, j->session, &j->exits, NULL) != 0)
        j->exits = NULL; /* degraded: ends are then found by end of file alone */
    for (size_t i = 0; i < j->n; i++) {
        slot_t *sl = &j->slots[i];
        if (sl->pid) {
            sl->rc = sm_terms.driver->attach_pty(sm_terms.driver->self, j->session, sl->pid,
                                                 &sl->pty, &sl->code, sl->err);
        } else {
            sm_pty_spec_t spec = {.argv = shell_argv,
                                  .env = shell_env,
                                  .cwd = SHELL_CWD,
                                  .cols = sl->cols,
                                  .rows = sl->rows};
            sl->rc = sm_terms.driver->spawn_pty(sm_terms.driver->self, j->session, &spec, &sl->pty,
                                                sl->err);
        }
    }
}

static void open_done(tjob_t *j);
static void attach_done(tjob_t *j);

static void slots_done(void *arg, int ran)
{
    tjob_t *j = arg;
    if (!ran) {
        job_failf(j, 0, "terminals of %s: shutting down before the work ran", j->session);
        return;
    }
    sm_term_exits_install(j->s, j->exits);
    j->exits = NULL;
    if (j->kind == OPEN)
        open_done(j);
    else
        attach_done(j);
}

static void submit_slots(tjob_t *j)
{
    j->want_exits = !j->s->exits;
    at_err_t rc =
        sm_terms.closing ? AT_ECLOSED : at_pool_submit(sm_terms.pool, slots_work, slots_done, j);
    if (rc != AT_OK)
        job_failf(j, 0, "terminals of %s: driver pool: %s", j->session, at_strerror(rc));
}

static tjob_t *job_new(int kind, const char *session, sm_term_done_fn *done, void *arg)
{
    tjob_t *j = calloc(1, sizeof *j);
    if (!j) {
        done(arg, NULL, "out of memory", 0);
        return NULL;
    }
    j->kind = kind;
    at_strlcpy(j->session, session, sizeof j->session);
    j->done = done;
    j->arg = arg;
    j->t0_us = at_mono_us();
    return j;
}

/* -- terminal_open -- */

static void open_recorded(PGresult *res, const char *err, void *arg)
{
    tjob_t *j = arg;
    slot_t *sl = &j->slots[0];
    term_t *t = sm_term_find(sl->id);
    if (err) {
        job_failf(j, 0, "terminal %s: record: %s", sl->id, err);
        return;
    }
    if (PQntuples(res) == 0) { /* it ended (the row says how), or was closed, meanwhile */
        if (t) {
            t->closing = 1;
            sm_term_end(t, -1);
        }
        job_failf(j, 1, "terminal %s of session %s ended while it opened", sl->id, j->session);
        return;
    }
    /* t may have ended already (a shell that exits at once): its exit entry tells */
    at_info("event=terminal_opened terminal=%s session=%s pid=%d ms=%lld", sl->id, j->session,
            (int)sl->pty.pid, (long long)((at_mono_us() - j->t0_us) / 1000));
    job_finish(j, json_pack("{s:s, s:i}", "terminal_id", sl->id, "pid", (int)sl->pty.pid), NULL, 0);
}

/* Row 'open' with the pid and size: also run for a terminal already here (a
 * redelivered job whose first run could not record it). */
static void open_record(tjob_t *j, const term_t *t)
{
    char pid[16], cols[16], rows[16];
    snprintf(pid, sizeof pid, "%d", (int)t->pid);
    snprintf(cols, sizeof cols, "%d", j->slots[0].cols);
    snprintf(rows, sizeof rows, "%d", j->slots[0].rows);
    const char *p[] = {t->id, pid, cols, rows};
    if (at_db_query(
            at_worker_db(sm_terms.w),
            "UPDATE terminals SET status = 'open', pid = $2::int,"
            " cols = coalesce(nullif($3::int, 0), cols), rows = coalesce(nullif($4::int, 0), rows)"
            " WHERE id = $1 AND status IN ('opening', 'open') RETURNING 1",
            4, p, open_recorded, j) != AT_OK)
        open_recorded(NULL, "database queue full", j);
}

static void open_done(tjob_t *j)
{
    slot_t *sl = &j->slots[0];
    if (sl->rc == 1) {
        sm_term_gone(j->s, sl->id, sl->pid, sl->code);
        job_failf(j, 1, "terminal %s has exited (code %d)", sl->id, sl->code);
    } else if (sl->rc != 0) {
        if (!sl->pid)
            close_row(sl->id); /* never ran: it does not count against the limit */
        job_failf(j, 1, "terminal %s: %s", sl->id, sl->err);
    } else {
        term_t *t = sm_term_add(j->s, sl->id, &sl->pty);
        if (!t)
            job_failf(j, 0, "terminal %s: out of memory", sl->id);
        else
            open_record(j, t);
    }
}

/* The terminal row's status (column 0), or NULL with the job failed. */
static const char *row_status(tjob_t *j, PGresult *res, const char *err)
{
    if (err) {
        job_failf(j, 0, "terminal %s: read: %s", j->slots[0].id, err);
        return NULL;
    }
    if (PQntuples(res) != 1) {
        job_failf(j, 1, "terminal %s of session %s not found", j->slots[0].id, j->session);
        return NULL;
    }
    return PQgetvalue(res, 0, 0);
}

static void open_row_read(PGresult *res, const char *err, void *arg)
{
    tjob_t *j = arg;
    slot_t *sl = &j->slots[0];
    const char *status = row_status(j, res, err);
    if (!status)
        return;
    if (strcmp(status, "opening") != 0 && strcmp(status, "open") != 0) {
        job_failf(j, 1, "terminal %s is %s", sl->id, status);
        return;
    }
    sl->pid = !strcmp(status, "open") ? (pid_t)atoi(PQgetvalue(res, 0, 1)) : 0;
    if (!sl->cols)
        sl->cols = atoi(PQgetvalue(res, 0, 2));
    if (!sl->rows)
        sl->rows = atoi(PQgetvalue(res, 0, 3));
    submit_slots(j);
}

/* cols/rows: absent is 0 (the row's), else 1..SIZE_MAX_CELLS. */
static int size_arg(json_t *args, const char *key, int *out)
{
    json_t *v = json_object_get(args, key);
    *out = 0;
    if (!v)
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > SIZE_MAX_CELLS)
        return -1;
    *out = (int)json_integer_value(v);
    return 0;
}

static void job_open(tjob_t *j, json_t *args, const char *id)
{
    int cols, rows;
    if (strcmp(j->status, "ready") != 0) {
        close_row(id);
        job_failf(j, 1, "session %s is %s: a terminal needs a ready session", j->session,
                  j->status);
        return;
    }
    if (size_arg(args, "cols", &cols) != 0 || size_arg(args, "rows", &rows) != 0) {
        job_failf(j, 1, "terminal %s: cols and rows must be integers in 1..%d", id, SIZE_MAX_CELLS);
        return;
    }
    j->s = sm_term_sess_get(j->session);
    if (j->s)
        j->s->busy++;
    j->slots = calloc(1, sizeof *j->slots);
    if (!j->s || !j->slots) {
        job_failf(j, 0, "terminal %s: out of memory", id);
        return;
    }
    j->n = 1;
    at_strlcpy(j->slots[0].id, id, sizeof j->slots[0].id);
    j->slots[0].cols = cols;
    j->slots[0].rows = rows;
    term_t *t = sm_term_find(id);
    if (t && t->s != j->s) {
        job_failf(j, 1, "terminal %s belongs to another session", id);
        return;
    }
    if (t) { /* already here */
        j->slots[0].pty.pid = t->pid;
        open_record(j, t);
        return;
    }
    if (j->s->nterms >= sm_term_cfg()->terminals_per_session) {
        job_failf(j, 1, "session %s has %d terminals open (ATELIER_TERMINALS_PER_SESSION)",
                  j->session, j->s->nterms);
        return;
    }
    const char *p[] = {id, j->session};
    if (at_db_query(at_worker_db(sm_terms.w),
                    "SELECT status, coalesce(pid, 0), cols, rows FROM terminals"
                    " WHERE id = $1 AND session_uuid = $2",
                    2, p, open_row_read, j) != AT_OK)
        open_row_read(NULL, "database queue full", j);
}

/* -- terminal_close -- */

/* SIGHUP to the shell's group; SIGKILL if it is still there after
 * SM_TERM_HANGUP_MS (bash exits on SIGHUP at once, unless it is told not to). */
static void close_work(void *arg)
{
    tjob_t *j = arg;
    slot_t *sl = &j->slots[0];
    sl->rc =
        sm_terms.driver->signal(sm_terms.driver->self, j->session, sl->pid, SIGHUP, 1, sl->err);
    if (sl->rc != 0)
        return; /* gone already (1), or the sandbox does not answer */
    for (int waited = 0; waited < SM_TERM_HANGUP_MS; waited += KILL_POLL_MS) {
        struct timespec ts = {0, KILL_POLL_MS * 1000000L};
        nanosleep(&ts, NULL);
        if (sm_terms.driver->signal(sm_terms.driver->self, j->session, sl->pid, 0, 0, sl->err) != 0)
            return;
    }
    sl->rc =
        sm_terms.driver->signal(sm_terms.driver->self, j->session, sl->pid, SIGKILL, 1, sl->err);
    sl->code = 137;
}

static void close_recorded(PGresult *res, const char *err, void *arg)
{
    (void)res;
    tjob_t *j = arg;
    if (err) {
        job_failf(j, 0, "terminal %s: record: %s", j->slots[0].id, err);
        return;
    }
    at_info("event=terminal_closed terminal=%s session=%s killed=%d ms=%lld", j->slots[0].id,
            j->session, j->slots[0].code == 137, (long long)((at_mono_us() - j->t0_us) / 1000));
    job_finish(j, json_pack("{s:s, s:s}", "terminal_id", j->slots[0].id, "status", "closed"), NULL,
               0);
}

static void close_record(tjob_t *j)
{
    const char *p[] = {j->slots[0].id};
    if (at_db_query(at_worker_db(sm_terms.w),
                    "UPDATE terminals SET status = 'closed', closed_at = now() WHERE id = $1"
                    " AND status IN ('opening', 'open')",
                    1, p, close_recorded, j) != AT_OK)
        close_recorded(NULL, "database queue full", j);
}

static void close_done(void *arg, int ran)
{
    tjob_t *j = arg;
    slot_t *sl = &j->slots[0];
    if (!ran) {
        job_failf(j, 0, "terminal %s: shutting down before the work ran", sl->id);
        return;
    }
    if (sl->rc < 0) /* the row is closed anyway: the shell goes with the sandbox at the latest */
        at_warn("event=terminal_hangup_failed terminal=%s session=%s pid=%d error=\"%s\"", sl->id,
                j->session, (int)sl->pid, sl->err);
    close_record(j);
}

static void close_signal(tjob_t *j)
{
    at_err_t rc =
        sm_terms.closing ? AT_ECLOSED : at_pool_submit(sm_terms.pool, close_work, close_done, j);
    if (rc != AT_OK)
        job_failf(j, 0, "terminal %s: driver pool: %s", j->slots[0].id, at_strerror(rc));
}

static void close_row_read(PGresult *res, const char *err, void *arg)
{
    tjob_t *j = arg;
    slot_t *sl = &j->slots[0];
    const char *status = row_status(j, res, err);
    if (!status)
        return;
    sl->pid = (pid_t)atoi(PQgetvalue(res, 0, 1));
    if (!strcmp(status, "exited") || !strcmp(status, "closed")) {
        job_finish(j, json_pack("{s:s, s:s}", "terminal_id", sl->id, "status", status), NULL, 0);
    } else if (sl->pid > 1 && j->ready) {
        close_signal(j); /* not attached here (yet): its shell all the same */
    } else {
        close_record(j);
    }
}

static void job_close(tjob_t *j, const char *id)
{
    j->slots = calloc(1, sizeof *j->slots);
    if (!j->slots) {
        job_failf(j, 0, "terminal %s: out of memory", id);
        return;
    }
    j->n = 1;
    at_strlcpy(j->slots[0].id, id, sizeof j->slots[0].id);
    j->ready = !strcmp(j->status, "ready");
    term_t *t = sm_term_find(id);
    if (t && strcmp(t->s->uuid, j->session) != 0) {
        job_failf(j, 1, "terminal %s belongs to another session", id);
        return;
    }
    if (t) {
        /* it keeps pumping until the shell's exit shows: the end writes
         * the exit entry, the row stays closed */
        t->closing = 1;
        j->slots[0].pid = t->pid;
        close_signal(j);
        return;
    }
    const char *p[] = {id, j->session};
    if (at_db_query(
            at_worker_db(sm_terms.w),
            "SELECT status, coalesce(pid, 0) FROM terminals WHERE id = $1 AND session_uuid = $2", 2,
            p, close_row_read, j) != AT_OK)
        close_row_read(NULL, "database queue full", j);
}

void sm_term_job(const char *kind, const char *session, const char *status, json_t *args,
                 sm_term_done_fn *done, void *arg)
{
    int k = !strcmp(kind, "terminal_open") ? OPEN : !strcmp(kind, "terminal_close") ? CLOSE : -1;
    tjob_t *j = job_new(k, session, done, arg);
    if (!j)
        return;
    at_strlcpy(j->status, status, sizeof j->status);
    const char *id = json_string_value(json_object_get(args, "terminal_id"));
    if (k < 0) {
        job_failf(j, 1, "%s: not a terminal job", kind);
    } else if (sm_terms.closing) {
        job_failf(j, 0, "%s %s: shutting down", kind, session);
    } else if (!id || !at_is_uuid(id)) {
        job_failf(j, 1, "%s: terminal_id must be a uuid", kind);
    } else if (k == OPEN) {
        job_open(j, args, id);
    } else {
        job_close(j, id);
    }
}

/* -- re-attach -- */

static void attach_done(tjob_t *j)
{
    int attached = 0, exited = 0, failed = 0;
    for (size_t i = 0; i < j->n; i++) {
        slot_t *sl = &j->slots[i];
        if (sl->rc == 0 && sm_term_find(sl->id)) { /* a duplicate job got it first */
            close(sl->pty.master);
        } else if (sl->rc == 0) {
            attached += sm_term_add(j->s, sl->id, &sl->pty) != NULL;
        } else if (sl->rc == 1) {
            exited++;
            sm_term_gone(j->s, sl->id, sl->pid, sl->code);
        } else {
            failed++;
            at_warn("event=terminal_attach_failed terminal=%s session=%s pid=%d error=\"%s\"",
                    sl->id, j->session, (int)sl->pid, sl->err);
        }
    }
    at_info("event=terminals_attached session=%s attached=%d exited=%d failed=%d ms=%lld",
            j->session, attached, exited, failed, (long long)((at_mono_us() - j->t0_us) / 1000));
    job_finish(
        j, json_pack("{s:i, s:i, s:i}", "attached", attached, "exited", exited, "failed", failed),
        NULL, 0);
}

/* Newest first: a pid two rows claim (a stale row of an earlier sandbox,
 * whose numbers start again) belongs to the newer one only. A young
 * 'opening' row is left alone: its terminal_open may be queued behind us. */
static void attach_rows_read(PGresult *res, const char *err, void *arg)
{
    tjob_t *j = arg;
    if (err) {
        job_failf(j, 0, "terminals of %s: read: %s", j->session, err);
        return;
    }
    int rows = PQntuples(res);
    j->slots = calloc(rows ? (size_t)rows : 1, sizeof *j->slots);
    if (!j->slots) {
        job_failf(j, 0, "terminals of %s: out of memory", j->session);
        return;
    }
    for (int r = 0; r < rows; r++) {
        const char *id = PQgetvalue(res, r, 0);
        pid_t pid = (pid_t)atoi(PQgetvalue(res, r, 1));
        int stale = PQgetvalue(res, r, 2)[0] == 't';
        if (sm_term_find(id) || (pid <= 1 && !stale))
            continue;
        int dup = 0;
        for (size_t i = 0; i < j->n; i++)
            dup |= j->slots[i].pid == pid;
        for (const term_t *t = j->s->terms; t; t = t->next)
            dup |= t->pid == pid;
        if (pid <= 1 || dup) { /* never spawned, or superseded */
            at_info("event=terminal_row_closed terminal=%s session=%s reason=%s", id, j->session,
                    dup ? "pid_reused" : "never_opened");
            close_row(id);
            continue;
        }
        slot_t *sl = &j->slots[j->n++];
        at_strlcpy(sl->id, id, sizeof sl->id);
        sl->pid = pid;
    }
    if (!j->n) {
        job_finish(j, json_pack("{s:i, s:i, s:i}", "attached", 0, "exited", 0, "failed", 0), NULL,
                   0);
        return;
    }
    submit_slots(j);
}

void sm_term_attach(const char *session, sm_term_done_fn *done, void *arg)
{
    tjob_t *j = job_new(ATTACH, session, done, arg);
    if (!j)
        return;
    if (sm_terms.closing) {
        job_failf(j, 0, "terminals of %s: shutting down", session);
        return;
    }
    j->s = sm_term_sess_get(session);
    if (!j->s) {
        job_failf(j, 0, "terminals of %s: out of memory", session);
        return;
    }
    j->s->busy++;
    char stale[16];
    snprintf(stale, sizeof stale, "%d", OPENING_STALE_S);
    const char *p[] = {session, stale};
    if (at_db_query(at_worker_db(sm_terms.w),
                    "SELECT id::text, coalesce(pid, 0),"
                    " created_at < now() - $2::int * interval '1 second' FROM terminals"
                    " WHERE session_uuid = $1 AND status IN ('opening', 'open')"
                    " ORDER BY created_at DESC LIMIT 1000",
                    2, p, attach_rows_read, j) != AT_OK)
        attach_rows_read(NULL, "database queue full", j);
}
