/* GET /health, /api/health/ (liveness), /api/health/detailed (dependencies,
 * live instances of every role, queues; ?probe=1 sends a ping job through
 * each role's queue), /api/health/probe/{role} (one ping round trip). */
#include <stdlib.h>
#include <string.h>

#include "atelier/heartbeat.h"
#include "atelier/log.h"
#include "atelier/queue.h"
#include "atelier/util.h"
#include "replies.h"
#include "routes.h"

#define PROBE_TIMEOUT_MS 5000

static const char *const procs[] = {"gateway", "session-manager", "sync-worker", "backup-worker"};
static const char *const queue_roles[] = {"session", "sync", "backup"};
static const char *const role_procs[] = {"session-manager", "sync-worker", "backup-worker"};

static double ms_since(int64_t t0_us)
{
    return (double)(at_mono_us() - t0_us) / 1000.0;
}

/* Accept a queue role ("sync") or its process name ("sync-worker"). */
static const char *queue_role_of(const char *name)
{
    for (int i = 0; i < 3; i++)
        if (!strcmp(name, queue_roles[i]) || !strcmp(name, role_procs[i]))
            return queue_roles[i];
    return NULL;
}

void route_health(at_req_t *req)
{
    char ts[32];
    at_iso8601(at_wall_ms(), ts);
    req_json(req, 200,
             json_pack("{s:s, s:s, s:s, s:s}", "status", "healthy", "service", "atelier-gateway",
                       "version", ATELIER_VERSION, "timestamp", ts));
}

/* ---- detailed ----------------------------------------------------------- */

typedef struct health {
    at_req_t *req;
    int pending;
    json_t *out;
    json_t *checks, *roles, *queues, *probe;
    int64_t t0;
} health_t;

static void health_step_done(health_t *h)
{
    if (--h->pending > 0)
        return;
    /* depth = entries waiting (never delivered) + delivered but not acked */
    const char *qn;
    json_t *qv;
    json_object_foreach(h->queues, qn, qv)
    {
        if (strcmp(qn, AT_QUEUE_DEAD))
            json_object_set_new(qv, "depth",
                                json_integer(json_integer_value(json_object_get(qv, "lag")) +
                                             json_integer_value(json_object_get(qv, "pending"))));
    }
    int pg_ok = json_is_true(json_object_get(json_object_get(h->checks, "postgres"), "ok"));
    int redis_ok = json_is_true(json_object_get(json_object_get(h->checks, "redis"), "ok"));
    int all_roles = 1;
    for (int i = 0; i < 4; i++)
        if (json_integer_value(json_object_get(json_object_get(h->roles, procs[i]), "alive")) < 1)
            all_roles = 0;
    int probes_ok = 1;
    const char *k;
    json_t *v;
    json_object_foreach(h->probe, k, v)
    {
        if (!json_is_true(json_object_get(v, "ok")))
            probes_ok = 0;
    }
    const char *status = !pg_ok || !redis_ok      ? "unhealthy"
                         : all_roles && probes_ok ? "healthy"
                                                  : "degraded";
    json_object_set_new(h->out, "status", json_string(status));
    json_object_set_new(h->out, "elapsed_ms", json_real(ms_since(h->t0)));
    req_json(h->req, pg_ok && redis_ok ? 200 : 503, h->out);
    free(h);
}

static void check_result(health_t *h, const char *name, const char *error, int64_t t0)
{
    json_t *c = json_pack("{s:b, s:f}", "ok", error == NULL, "rtt_ms", ms_since(t0));
    if (error)
        json_object_set_new(c, "error", json_string(error));
    json_object_set_new(h->checks, name, c);
}

typedef struct timed {
    health_t *h;
    int64_t t0;
    char name[48];
} timed_t;

static timed_t *timed_new(health_t *h, const char *name)
{
    timed_t *t = malloc(sizeof *t);
    if (!t)
        abort();
    t->h = h;
    t->t0 = at_mono_us();
    at_strlcpy(t->name, name, sizeof t->name);
    h->pending++;
    return t;
}

static void pg_done(PGresult *res, const char *err, void *arg)
{
    (void)res;
    timed_t *t = arg;
    check_result(t->h, "postgres", err, t->t0);
    health_step_done(t->h);
    free(t);
}

static void redis_ping_done(at_redis_t *r, redisReply *reply, void *arg)
{
    timed_t *t = arg;
    int ok = r && reply && reply->type == REDIS_REPLY_STATUS;
    check_result(t->h, "redis", ok ? NULL : at_redis_reply_error(reply), t->t0);
    health_step_done(t->h);
    free(t);
}

static void instances_done(at_redis_t *r, redisReply *reply, void *arg)
{
    timed_t *t = arg;
    health_t *h = t->h;
    if (r && reply && reply->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i < reply->elements; i++) {
            const redisReply *e = reply->element[i];
            if (e->type != REDIS_REPLY_STRING)
                continue;
            json_t *rec = json_loadb(e->str, e->len, 0, NULL);
            const char *proc = json_string_value(json_object_get(rec, "role"));
            json_t *slot = proc ? json_object_get(h->roles, proc) : NULL;
            if (slot) {
                json_array_append(json_object_get(slot, "instances"), rec);
                json_object_set_new(
                    slot, "alive",
                    json_integer(json_integer_value(json_object_get(slot, "alive")) + 1));
            }
            json_decref(rec);
        }
    }
    health_step_done(h);
    free(t);
}

static void index_done(at_redis_t *r, redisReply *reply, void *arg)
{
    timed_t *t = arg;
    health_t *h = t->h;
    if (r && reply && reply->type == REDIS_REPLY_ARRAY && reply->elements > 0) {
        size_t n = reply->elements;
        const char **argv = calloc(n + 1, sizeof *argv);
        char **keys = calloc(n, sizeof *keys);
        if (argv && keys) {
            argv[0] = "MGET";
            for (size_t i = 0; i < n; i++) {
                keys[i] = malloc(reply->element[i]->len + 4);
                snprintf(keys[i], reply->element[i]->len + 4, "hb:%s", reply->element[i]->str);
                argv[i + 1] = keys[i];
            }
            timed_t *t2 = timed_new(h, "instances");
            if (at_redis_argv(h->req ? req_gw(h->req)->redis : NULL, instances_done, t2, (int)n + 1,
                              argv, NULL) != AT_OK) {
                free(t2);
                h->pending--;
            }
            for (size_t i = 0; i < n; i++)
                free(keys[i]);
        }
        free(argv);
        free(keys);
    }
    health_step_done(h);
    free(t);
}

static void xlen_done(at_redis_t *r, redisReply *reply, void *arg)
{
    timed_t *t = arg;
    json_t *q = json_object_get(t->h->queues, t->name);
    if (r && reply && reply->type == REDIS_REPLY_INTEGER && q)
        json_object_set_new(q, strcmp(t->name, AT_QUEUE_DEAD) ? "length" : "depth",
                            json_integer(reply->integer));
    health_step_done(t->h);
    free(t);
}

/* XINFO GROUPS: [[name, g, consumers, n, pending, n, last-delivered-id, id,
 * entries-read, n, lag, n], ...] (Redis 7). */
static void groups_done(at_redis_t *r, redisReply *reply, void *arg)
{
    timed_t *t = arg;
    json_t *q = json_object_get(t->h->queues, t->name);
    if (r && reply && reply->type == REDIS_REPLY_ARRAY && q) {
        for (size_t g = 0; g < reply->elements; g++) {
            const redisReply *e = reply->element[g];
            for (size_t f = 0; e->type == REDIS_REPLY_ARRAY && f + 1 < e->elements; f += 2) {
                const redisReply *k = e->element[f], *v = e->element[f + 1];
                if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_INTEGER)
                    continue;
                if (!strcmp(k->str, "pending"))
                    json_object_set_new(q, "pending", json_integer(v->integer));
                else if (!strcmp(k->str, "lag"))
                    json_object_set_new(q, "lag", json_integer(v->integer));
                else if (!strcmp(k->str, "consumers"))
                    json_object_set_new(q, "consumers", json_integer(v->integer));
            }
        }
    }
    health_step_done(t->h);
    free(t);
}

static void probe_done(json_t *reply, at_err_t err, void *arg)
{
    timed_t *t = arg;
    json_t *p = json_pack("{s:b, s:f}", "ok", reply && json_is_true(json_object_get(reply, "ok")),
                          "rtt_ms", ms_since(t->t0));
    if (reply)
        json_object_set(p, "instance", json_object_get(reply, "instance"));
    else
        json_object_set_new(
            p, "error", json_string(err == AT_ETIMEOUT ? "no reply in time" : at_strerror(err)));
    json_object_set_new(t->h->probe, t->name, p);
    health_step_done(t->h);
    free(t);
}

void route_health_detailed(at_req_t *req)
{
    gateway_t *gw = req_gw(req);
    health_t *h = calloc(1, sizeof *h);
    if (!h) {
        req_error(req, 500, "out of memory");
        return;
    }
    h->req = req;
    h->t0 = at_mono_us();
    h->pending = 1; /* held until every step is issued */
    char ts[32];
    at_iso8601(at_wall_ms(), ts);
    h->checks = json_object();
    h->roles = json_object();
    h->queues = json_object();
    h->out = json_pack("{s:s, s:s, s:s, s:I, s:o, s:o, s:o}", "timestamp", ts, "version",
                       ATELIER_VERSION, "instance", gw->cfg.instance, "uptime_s",
                       (json_int_t)((at_wall_ms() - gw->started_ms) / 1000), "checks", h->checks,
                       "roles", h->roles, "queues", h->queues);
    for (int i = 0; i < 4; i++)
        json_object_set_new(h->roles, procs[i], json_pack("{s:i, s:[]}", "alive", 0, "instances"));

    timed_t *t = timed_new(h, "postgres");
    if (at_db_query(gw->db, "SELECT 1", 0, NULL, pg_done, t) != AT_OK) {
        check_result(h, "postgres", "database queue full", t->t0);
        h->pending--;
        free(t);
    }

    if (!at_redis_connected(gw->redis)) {
        check_result(h, "redis", "not connected", at_mono_us());
    } else {
        at_redis_cmd(gw->redis, redis_ping_done, timed_new(h, "redis"), "PING");
        char now[24];
        snprintf(now, sizeof now, "%lld", (long long)at_wall_ms());
        at_redis_cmd(gw->redis, NULL, NULL, "ZREMRANGEBYSCORE %s -inf %s", AT_HEARTBEAT_INDEX, now);
        at_redis_cmd(gw->redis, index_done, timed_new(h, "index"), "ZRANGEBYSCORE %s %s +inf",
                     AT_HEARTBEAT_INDEX, now);
        for (int i = 0; i < 3; i++) {
            const char *stream = at_queue_stream(queue_roles[i]);
            json_object_set_new(h->queues, stream,
                                json_pack("{s:i, s:i, s:i, s:i, s:i}", "depth", 0, "length", 0,
                                          "pending", 0, "lag", 0, "consumers", 0));
            at_redis_cmd(gw->redis, xlen_done, timed_new(h, stream), "XLEN %s", stream);
            at_redis_cmd(gw->redis, groups_done, timed_new(h, stream), "XINFO GROUPS %s", stream);
        }
        json_object_set_new(h->queues, AT_QUEUE_DEAD, json_pack("{s:i}", "depth", 0));
        at_redis_cmd(gw->redis, xlen_done, timed_new(h, AT_QUEUE_DEAD), "XLEN %s", AT_QUEUE_DEAD);
    }

    const char *probe = req_query(req, "probe");
    if (probe && (!strcmp(probe, "1") || !strcmp(probe, "true"))) {
        h->probe = json_object();
        json_object_set_new(h->out, "probe", h->probe);
        for (int i = 0; i < 3; i++) {
            at_job_t job;
            if (at_job_init(&job, "ping", NULL, NULL, NULL) != AT_OK)
                continue;
            timed_t *pt = timed_new(h, role_procs[i]);
            at_err_t err =
                replies_send(gw->replies, queue_roles[i], &job, PROBE_TIMEOUT_MS, probe_done, pt);
            at_job_clear(&job);
            if (err != AT_OK)
                probe_done(NULL, err, pt);
        }
    }
    health_step_done(h);
}

/* ---- one probe (also the queue benchmark's endpoint) -------------------- */

typedef struct probe_req {
    at_req_t *req;
    int64_t t0;
    const char *role;
} probe_req_t;

static void single_probe_done(json_t *reply, at_err_t err, void *arg)
{
    probe_req_t *p = arg;
    double ms = ms_since(p->t0);
    if (!reply) {
        req_error(p->req, err == AT_ETIMEOUT ? 504 : 503, "probe of %s failed: %s", p->role,
                  err == AT_ETIMEOUT ? "no reply in time" : at_strerror(err));
    } else {
        json_t *out = json_pack("{s:s, s:b, s:f}", "role", p->role, "ok",
                                json_is_true(json_object_get(reply, "ok")), "rtt_ms", ms);
        json_object_set(out, "instance", json_object_get(reply, "instance"));
        req_json(p->req, 200, out);
    }
    free(p);
}

void route_health_probe(at_req_t *req)
{
    const char *role = queue_role_of(req_param(req, 0));
    if (!role) {
        req_error(req, 404, "Unknown role \"%s\": expected session, sync or backup",
                  req_param(req, 0));
        return;
    }
    probe_req_t *p = malloc(sizeof *p);
    at_job_t job;
    if (!p || at_job_init(&job, "ping", NULL, NULL, NULL) != AT_OK) {
        free(p);
        req_error(req, 500, "out of memory");
        return;
    }
    p->req = req;
    p->t0 = at_mono_us();
    p->role = role;
    at_err_t err =
        replies_send(req_gw(req)->replies, role, &job, PROBE_TIMEOUT_MS, single_probe_done, p);
    at_job_clear(&job);
    if (err != AT_OK)
        single_probe_done(NULL, err, p);
}
