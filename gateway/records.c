#include "records.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "atelier/log.h"
#include "atelier/queue.h"
#include "atelier/util.h"

void audit_params(const at_req_t *req, const char *p[3], char uid_buf[24])
{
    const principal_t *pr = req_principal(req);
    uid_buf[0] = '\0';
    if (pr->user_id)
        snprintf(uid_buf, 24, "%lld", (long long)pr->user_id);
    p[0] = pr->actor;
    p[1] = uid_buf;
    p[2] = req_ip(req);
}

typedef struct push {
    gateway_t *gw;
    char id[AT_UUID_LEN + 1];
    enqueue_cb *cb;
    void *arg;
} push_t;

static void pushed(at_err_t err, const char *entry_or_error, void *arg)
{
    push_t *p = arg;
    if (err != AT_OK) {
        at_error("event=job_push_failed job=%s error=\"%s\"", p->id, entry_or_error);
        const char *params[] = {p->id, entry_or_error ? entry_or_error : at_strerror(err)};
        at_db_query(p->gw->db,
                    "UPDATE jobs SET state = 'dead', error = 'enqueue failed: ' || $2, "
                    "updated_at = now() WHERE id = $1",
                    2, params, NULL, NULL);
    }
    if (p->cb)
        p->cb(err, p->arg);
    free(p);
}

static push_t *push_new(gateway_t *gw, const char *id, enqueue_cb *cb, void *arg)
{
    push_t *p = calloc(1, sizeof *p);
    if (!p) {
        if (cb)
            cb(AT_ENOMEM, arg);
        return NULL;
    }
    p->gw = gw;
    snprintf(p->id, sizeof p->id, "%s", id);
    p->cb = cb;
    p->arg = arg;
    return p;
}

void enqueue_push(gateway_t *gw, const char *role, const at_job_t *job, enqueue_cb *cb, void *arg)
{
    push_t *p = push_new(gw, job->id, cb, arg);
    if (!p)
        return;
    const char *stream = at_queue_stream(role);
    at_err_t err =
        stream ? at_queue_push(gw->redis, stream, job, gw->cfg.queue_maxlen, pushed, p) : AT_EINVAL;
    if (err != AT_OK)
        pushed(err, at_strerror(err), p);
}

void enqueue_row(gateway_t *gw, const char *role, const char *id, const char *kind,
                 const char *session, const json_t *args, enqueue_cb *cb, void *arg)
{
    at_job_t job;
    at_err_t err = at_job_init(&job, kind, session, NULL, args);
    if (err != AT_OK) { /* never leave the row queued with nothing on the stream */
        push_t *p = push_new(gw, id, cb, arg);
        if (p)
            pushed(err, at_strerror(err), p);
        return;
    }
    at_strlcpy(job.id, id, sizeof job.id); /* the id of the committed row */
    enqueue_push(gw, role, &job, cb, arg);
    at_job_clear(&job);
}

void req_db_error(at_req_t *req, const char *what, const char *err)
{
    at_error("event=db_failed req=%s what=%s error=\"%s\"", req_id(req), what, err);
    req_error(req, 503, "Database unavailable");
}

const char *db_sqlstate(const PGresult *res)
{
    const char *s = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    return s ? s : "";
}

const char *db_message(const PGresult *res)
{
    const char *s = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    if (!s)
        return "";
    const char *colon = strstr(s, ": ");
    return colon && !strncmp(db_sqlstate(res), "AT", 2) ? colon + 2 : s;
}

void req_db_fail(at_req_t *req, const char *what, const PGresult *res, const char *err)
{
    const char *st = db_sqlstate(res);
    if (!strncmp(st, "AT", 2) && strlen(st) == 5) {
        int status = atoi(st + 2);
        if (status >= 400 && status < 600) {
            req_error(req, status, "%s", db_message(res));
            return;
        }
    }
    req_db_error(req, what, err);
}

int session_id_valid(const char *id)
{
    if (!id)
        return 0;
    if (at_is_uuid(id))
        return 1;
    size_t n = strlen(id);
    return n == 8 && strspn(id, "0123456789abcdef") == 8;
}

int64_t workspace_scope(at_req_t *req, const char **sess, const char **ws)
{
    if (!workspace_ref(req_param(req, 0), sess, ws)) {
        req_error(req, 422, "Invalid workspace id: expected a session uuid or a workspace id");
        return -1;
    }
    return auth_scope(req, req_query(req, "user_id"));
}

int workspace_ref(const char *id, const char **sess, const char **ws)
{
    if (!session_id_valid(id))
        return 0;
    *sess = id;
    *ws = at_is_uuid(id) ? id : NULL;
    return 1;
}
