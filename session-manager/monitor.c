/* Leases, usage, activity, culling, recovery and orphans (monitor.h). */
#include "monitor.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "atelier/log.h"
#include "atelier/queue.h"
#include "atelier/util.h"
#include "lifecycle.h"

#define LOOK_MAX 100000 /* sessions (and host objects) one look handles */
#define UUID_TEXT 40    /* code_sessions.uuid is at most 36 characters */

/* One of our sessions, as the row has it and as the host has it. */
typedef struct entry {
    char uuid[UUID_TEXT];
    char status[16];
    long long last_cpu_ns; /* -1: never measured */
    int oom_kills;
    long long idle_s, slept_s, age_s, updated_s; /* slept_s -1: not asleep */
    int have_state;
    sm_state_t st;
} entry_t;

/* A growable list of names (host objects: sandboxes, volumes). */
typedef struct names {
    char **v;
    size_t n, cap;
} names_t;

typedef struct look {
    entry_t *e;
    size_t n;
    names_t sandboxes, volumes;
    int list_failed;
    int64_t started_ms;
} look_t;

static struct {
    at_worker_t *w;
    sm_driver_t *driver;
    at_pool_t *pool;
    at_io_timer_t *lease_timer, *look_timer;
    int running;     /* between start and stop */
    int looking;     /* a look is in flight (one at a time) */
    int64_t prev_ms; /* wall time of the previous look's driver calls, 0: none */
    int leasing;     /* a lease pass is in flight */
} g;

static const at_config_t *cfg(void)
{
    return at_worker_config(g.w);
}

static void names_add(const char *name, void *arg)
{
    names_t *l = arg;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        if (cap > LOOK_MAX)
            return;
        char **v = realloc(l->v, cap * sizeof *v);
        if (!v)
            return;
        l->v = v;
        l->cap = cap;
    }
    char *copy = strdup(name);
    if (copy)
        l->v[l->n++] = copy;
}

static void names_free(names_t *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
}

static void look_free(look_t *lk)
{
    if (!lk)
        return;
    free(lk->e);
    names_free(&lk->sandboxes);
    names_free(&lk->volumes);
    free(lk);
}

/* `{a,b,c}`: a PostgreSQL array literal of names (uuids, volume names:
 * letters, digits, '-' and '/' only, so no quoting). NULL when out of
 * memory. */
static char *array_literal(char *const *v, size_t n)
{
    size_t len = 3;
    for (size_t i = 0; i < n; i++)
        len += strlen(v[i]) + 1;
    char *out = malloc(len);
    if (!out)
        return NULL;
    size_t o = 0;
    out[o++] = '{';
    for (size_t i = 0; i < n; i++) {
        if (i)
            out[o++] = ',';
        size_t l = strlen(v[i]);
        memcpy(out + o, v[i], l);
        o += l;
    }
    out[o++] = '}';
    out[o] = '\0';
    return out;
}

/* ---- queueing jobs --------------------------------------------------------- */

static void pushed(at_err_t err, const char *entry_id, void *arg)
{
    (void)entry_id;
    char *what = arg;
    if (err != AT_OK)
        at_error("event=monitor_push_failed job=\"%s\" error=\"%s\"", what, at_strerror(err));
    free(what);
}

/* A job onto q:session (its jobs row is made when it runs). */
static void push_job(const char *kind, const char *session, json_t *args)
{
    at_job_t job;
    if (!args)
        args = json_object();
    at_err_t rc = args ? at_job_init(&job, kind, session, NULL, args) : AT_ENOMEM;
    json_decref(args);
    if (rc != AT_OK) {
        at_error("event=monitor_push_failed kind=%s session=%s error=\"%s\"", kind, session,
                 at_strerror(rc));
        return;
    }
    char *what = NULL;
    if (asprintf(&what, "%s %s", kind, session) < 0)
        what = NULL;
    rc = at_queue_push(at_worker_redis(g.w), at_queue_stream("session"), &job, cfg()->queue_maxlen,
                       pushed, what);
    if (rc != AT_OK)
        pushed(rc, NULL, what);
    at_job_clear(&job);
}

/* ---- leases ---------------------------------------------------------------- */

static void adopted(PGresult *res, const char *err, void *arg)
{
    (void)arg;
    g.leasing = 0;
    if (err) {
        at_warn("event=lease_pass_failed error=\"%s\"", err);
        return;
    }
    for (int i = 0; i < PQntuples(res); i++) {
        const char *uuid = PQgetvalue(res, i, 0);
        at_info("event=session_adopted session=%s status=%s from=%s", uuid, PQgetvalue(res, i, 1),
                PQgetvalue(res, i, 2));
        if (!sm_life_busy(uuid))
            push_job("recover", uuid, NULL);
    }
}

/* Renew ours and take over the expired ones of others, in one statement. */
static void lease_pass(void *arg)
{
    (void)arg;
    if (!g.running || g.leasing)
        return;
    char ttl[24];
    snprintf(ttl, sizeof ttl, "%lld", (long long)cfg()->lease_ttl_ms);
    const char *p[] = {cfg()->instance, ttl};
    g.leasing = 1;
    if (at_db_query(
            at_worker_db(g.w),
            "WITH renew AS (UPDATE code_sessions"
            "   SET owner_lease_until = now() + $2::bigint * interval '1 millisecond'"
            "   WHERE owner_instance = $1 AND status <> 'terminated'), "
            "old AS (SELECT id, owner_instance FROM code_sessions"
            "   WHERE status <> 'terminated' AND owner_instance IS NOT NULL"
            "   AND owner_instance <> $1 AND owner_lease_until < now()"
            "   FOR UPDATE SKIP LOCKED), "
            "take AS (UPDATE code_sessions c SET owner_instance = $1,"
            "   owner_lease_until = now() + $2::bigint * interval '1 millisecond'"
            "   FROM old WHERE c.id = old.id RETURNING c.uuid, c.status, old.owner_instance) "
            "SELECT uuid, status, owner_instance FROM take",
            2, p, adopted, NULL) != AT_OK)
        g.leasing = 0;
}

/* ---- the look: rows -> driver -> decisions ---------------------------------- */

static void look_done(void *arg, int ran);

static void look_work(void *arg)
{
    look_t *lk = arg;
    char err[SM_ERR_MAX];
    for (size_t i = 0; i < lk->n; i++)
        lk->e[i].have_state =
            g.driver->state(g.driver->self, lk->e[i].uuid, &lk->e[i].st, err) == 0;
    if (g.driver->list(g.driver->self, names_add, &lk->sandboxes, err) != 0 ||
        g.driver->volumes(g.driver->self, names_add, &lk->volumes, err) != 0) {
        at_warn("event=monitor_list_failed error=\"%s\"", err);
        lk->list_failed = 1;
    }
}

static void rows_read(PGresult *res, const char *err, void *arg)
{
    (void)arg;
    if (err || !g.running) {
        if (err)
            at_warn("event=monitor_look_failed error=\"%s\"", err);
        g.looking = 0;
        return;
    }
    look_t *lk = calloc(1, sizeof *lk);
    size_t n = (size_t)PQntuples(res);
    if (n > LOOK_MAX)
        n = LOOK_MAX;
    if (lk && n)
        lk->e = calloc(n, sizeof *lk->e);
    if (!lk || (n && !lk->e)) {
        at_error("event=monitor_look_failed error=\"out of memory\"");
        look_free(lk);
        g.looking = 0;
        return;
    }
    for (size_t i = 0; i < n; i++) {
        entry_t *e = &lk->e[i];
        at_strlcpy(e->uuid, PQgetvalue(res, (int)i, 0), sizeof e->uuid);
        at_strlcpy(e->status, PQgetvalue(res, (int)i, 1), sizeof e->status);
        e->last_cpu_ns = atoll(PQgetvalue(res, (int)i, 2));
        e->oom_kills = atoi(PQgetvalue(res, (int)i, 3));
        e->idle_s = atoll(PQgetvalue(res, (int)i, 4));
        e->slept_s = atoll(PQgetvalue(res, (int)i, 5));
        e->age_s = atoll(PQgetvalue(res, (int)i, 6));
        e->updated_s = atoll(PQgetvalue(res, (int)i, 7));
    }
    lk->n = n;
    lk->started_ms = at_wall_ms();
    if (at_pool_submit(g.pool, look_work, look_done, lk) != AT_OK) {
        at_warn("event=monitor_look_skipped reason=\"driver pool full\"");
        look_free(lk);
        g.looking = 0;
    }
}

static void look_start(void *arg)
{
    (void)arg;
    if (!g.running || g.looking)
        return;
    g.looking = 1;
    const char *p[] = {cfg()->instance};
    if (at_db_query(at_worker_db(g.w),
                    "SELECT uuid, status, coalesce(last_cpu_ns, -1), oom_kills,"
                    " extract(epoch FROM now() - last_activity)::bigint,"
                    " coalesce(extract(epoch FROM now() - slept_at)::bigint, -1),"
                    " extract(epoch FROM now() - created_at)::bigint,"
                    " extract(epoch FROM now() - updated_at)::bigint"
                    " FROM code_sessions WHERE owner_instance = $1"
                    " AND status NOT IN ('terminating', 'terminated')",
                    1, p, rows_read, NULL) != AT_OK)
        g.looking = 0;
}

/* -- usage and activity -- */

static int is_running_status(const char *s)
{
    return !strcmp(s, "ready") || !strcmp(s, "loading_files");
}

/* CPU use since the previous look above the threshold counts as activity;
 * the first look of this process only records the figure. */
static int cpu_active(const entry_t *e, int64_t elapsed_ms)
{
    if (!e->have_state || !e->st.running || e->last_cpu_ns < 0 || elapsed_ms <= 0)
        return 0;
    long long used = (long long)e->st.cpu_usage_ns - e->last_cpu_ns;
    long long threshold = (long long)cfg()->idle_cpu_millis * elapsed_ms * 1000;
    return used > threshold;
}

static void usage_recorded(PGresult *res, const char *err, void *arg)
{
    (void)res;
    (void)arg;
    if (err)
        at_warn("event=monitor_usage_failed error=\"%s\"", err);
}

/* One UPDATE for every session measured, from parallel arrays. */
static void record_usage(look_t *lk, const int *active)
{
    size_t cap = lk->n * 128 + 16;
    char *a[7];
    for (int k = 0; k < 7; k++)
        a[k] = malloc(cap);
    size_t o[7] = {0};
    int ok = 1;
    for (int k = 0; k < 7; k++)
        ok = ok && a[k];
    for (int k = 0; ok && k < 7; k++)
        a[k][o[k]++] = '{';
    size_t measured = 0;
    for (size_t i = 0; ok && i < lk->n; i++) {
        const entry_t *e = &lk->e[i];
        if (!e->have_state)
            continue;
        const char *sep = measured++ ? "," : "";
        o[0] += (size_t)snprintf(a[0] + o[0], cap - o[0], "%s%s", sep, e->uuid);
        o[1] +=
            (size_t)snprintf(a[1] + o[1], cap - o[1], "%s%lld", sep, (long long)e->st.cpu_usage_ns);
        o[2] +=
            (size_t)snprintf(a[2] + o[2], cap - o[2], "%s%lld", sep, (long long)e->st.memory_bytes);
        o[3] += (size_t)snprintf(a[3] + o[3], cap - o[3], "%s%d", sep, e->st.oom_kills);
        o[4] += (size_t)snprintf(a[4] + o[4], cap - o[4], "%s%lld", sep,
                                 (long long)e->st.disk_used_bytes);
        o[5] += (size_t)snprintf(a[5] + o[5], cap - o[5], "%s%lld", sep,
                                 (long long)e->st.disk_total_bytes);
        o[6] += (size_t)snprintf(a[6] + o[6], cap - o[6], "%s%s", sep, active[i] ? "t" : "f");
    }
    for (int k = 0; ok && k < 7; k++) {
        a[k][o[k]++] = '}';
        a[k][o[k]] = '\0';
    }
    if (ok && measured)
        at_db_query(at_worker_db(g.w),
                    "UPDATE code_sessions c SET last_cpu_ns = v.cpu, memory_bytes = v.mem,"
                    " oom_kills = greatest(c.oom_kills, v.oom),"
                    " disk_used_bytes = CASE WHEN v.total > 0 THEN v.used END,"
                    " disk_total_bytes = nullif(v.total, 0),"
                    " last_activity = CASE WHEN v.active THEN now() ELSE c.last_activity END,"
                    " last_activity_kind = CASE WHEN v.active THEN 'cpu'"
                    "   ELSE c.last_activity_kind END "
                    "FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::int[],"
                    "   $5::bigint[], $6::bigint[], $7::boolean[])"
                    "   AS v(uuid, cpu, mem, oom, used, total, active) "
                    "WHERE c.uuid = v.uuid",
                    7, (const char *const *)a, usage_recorded, NULL);
    else if (!ok)
        at_error("event=monitor_usage_failed error=\"out of memory\"");
    for (int k = 0; k < 7; k++)
        free(a[k]);
}

/* -- culling, timeouts -- */

static void culled(PGresult *res, const char *err, void *arg)
{
    char *reason = arg;
    if (err)
        at_warn("event=cull_failed reason=%s error=\"%s\"", reason, err);
    for (int i = 0; !err && i < PQntuples(res); i++) {
        at_info("event=session_culled session=%s reason=%s", PQgetvalue(res, i, 0), reason);
        push_job("delete", PQgetvalue(res, i, 0), json_pack("{s:s}", "reason", reason));
    }
    free(reason);
}

/* terminating + an audit row, then (culled) the delete job. */
static void cull_delete(const char *uuid, const char *reason, const char *message)
{
    char *r = strdup(reason);
    const char *p[] = {uuid, cfg()->instance, reason, message};
    if (!r || at_db_query(at_worker_db(g.w),
                          "WITH t AS (UPDATE code_sessions SET status = 'terminating',"
                          "   is_active = false, status_message = $4, updated_at = now()"
                          "   WHERE uuid = $1 AND status NOT IN ('terminating', 'terminated')"
                          "   RETURNING uuid, user_id), "
                          "a AS (INSERT INTO audit_log (actor, user_id, action, target, detail)"
                          "   SELECT 'session-manager:' || $2, user_id, 'session.cull', uuid,"
                          "   jsonb_build_object('reason', $3::text) FROM t) "
                          "SELECT uuid FROM t",
                          4, p, culled, r) != AT_OK)
        free(r);
}

static void cull_sleep(const char *uuid, long long idle_s)
{
    char detail[64];
    snprintf(detail, sizeof detail, "%lld", idle_s);
    const char *p[] = {uuid, cfg()->instance, detail};
    at_db_query(at_worker_db(g.w),
                "INSERT INTO audit_log (actor, user_id, action, target, detail)"
                " SELECT 'session-manager:' || $2, user_id, 'session.cull', uuid,"
                " jsonb_build_object('reason', 'idle_sleep', 'idle_s', $3::bigint)"
                " FROM code_sessions WHERE uuid = $1",
                3, p, NULL, NULL);
    at_info("event=session_culled session=%s reason=idle_sleep idle_s=%lld", uuid, idle_s);
    push_job("sleep", uuid, json_pack("{s:s}", "reason", "idle"));
}

static void load_timed_out(const char *uuid)
{
    char msg[128];
    snprintf(msg, sizeof msg, "Loading files timed out after %lld s",
             (long long)cfg()->load_timeout_s);
    const char *p[] = {uuid, msg};
    at_warn("event=session_load_timeout session=%s", uuid);
    at_db_query(at_worker_db(g.w),
                "UPDATE code_sessions SET status = 'error', status_message = $2, updated_at = now()"
                " WHERE uuid = $1 AND status = 'loading_files'",
                2, p, NULL, NULL);
}

/* What one session needs, if anything (one action per look). */
static void decide(const entry_t *e, int active)
{
    const at_config_t *c = cfg();
    const char *s = e->status;
    long long idle = active ? 0 : e->idle_s;
    if (sm_life_busy(e->uuid))
        return; /* its jobs decide; look again next time */
    if (c->max_lifetime_s > 0 && e->age_s > c->max_lifetime_s) {
        cull_delete(e->uuid, "max_lifetime", "Deleted: maximum lifetime reached");
    } else if (c->idle_delete_s > 0 && idle > c->idle_delete_s) {
        cull_delete(e->uuid, "idle_delete", "Deleted after being idle");
    } else if (!strcmp(s, "sleeping") && c->sleep_delete_s > 0 && e->slept_s > c->sleep_delete_s) {
        cull_delete(e->uuid, "asleep_delete", "Deleted after sleeping too long");
    } else if (e->have_state && is_running_status(s) && !e->st.running) {
        at_warn("event=sandbox_missing session=%s status=%s", e->uuid, s);
        push_job("recover", e->uuid, NULL);
    } else if (e->have_state && !strcmp(s, "sleeping") && e->st.running) {
        at_warn("event=sandbox_running_while_asleep session=%s", e->uuid);
        push_job("recover", e->uuid, NULL);
    } else if (!strcmp(s, "loading_files") && e->updated_s > c->load_timeout_s) {
        load_timed_out(e->uuid);
    } else if (!strcmp(s, "ready") && c->idle_sleep_s > 0 && idle > c->idle_sleep_s) {
        cull_sleep(e->uuid, idle);
    }
}

/* -- orphans -- */

typedef struct orphan_work {
    names_t names; /* sandboxes to destroy, or volumes to unmount */
    int volumes;   /* which of the two */
} orphan_work_t;

static void orphan_run(void *arg)
{
    orphan_work_t *ow = arg;
    char err[SM_ERR_MAX];
    for (size_t i = 0; i < ow->names.n; i++) {
        const char *name = ow->names.v[i];
        int rc = ow->volumes
                     ? g.driver->unmount(g.driver->self, name, err)
                     : g.driver->destroy(g.driver->self, name, NULL, SM_VOLUME_KEEP_MOUNTED, err);
        if (rc != 0)
            at_warn("event=orphan_cleanup_failed %s=%s error=\"%s\"",
                    ow->volumes ? "volume" : "session", name, err);
        else
            at_info("event=orphan_removed %s=%s", ow->volumes ? "volume" : "session", name);
    }
}

static void orphan_done(void *arg, int ran)
{
    (void)ran;
    orphan_work_t *ow = arg;
    names_free(&ow->names);
    free(ow);
}

/* Rows returned are the names still in use; the others go. */
static void orphans_found(PGresult *res, const char *err, void *arg)
{
    orphan_work_t *ow = arg;
    if (err || !g.running) {
        if (err)
            at_warn("event=orphan_check_failed error=\"%s\"", err);
        orphan_done(ow, 0);
        return;
    }
    size_t keep = 0;
    for (size_t i = 0; i < ow->names.n; i++) {
        int used = 0;
        for (int r = 0; r < PQntuples(res) && !used; r++)
            used = !strcmp(PQgetvalue(res, r, 0), ow->names.v[i]);
        if (used)
            free(ow->names.v[i]);
        else
            ow->names.v[keep++] = ow->names.v[i];
    }
    ow->names.n = keep;
    if (!keep || at_pool_submit(g.pool, orphan_run, orphan_done, ow) != AT_OK)
        orphan_done(ow, 0);
}

/* Sandboxes: used while their session's row is not terminated. Volumes
 * (named by ws_volume_name, shared/sql/003_runtime.sql): used while any session of the workspace is
 * not terminated. A sleeping or failed session's volume left mounted by a
 * crash stays so (its wake, perhaps running right now on some instance,
 * mounts it anyway); only a volume no session will use again is unmounted.
 * A new session's row exists before its start job mounts anything, so a
 * mount is never taken away from a session being created. Both checks run
 * against every instance's rows. */
static void check_orphans(names_t *found, int volumes)
{
    if (!found->n)
        return;
    orphan_work_t *ow = calloc(1, sizeof *ow);
    char *list = ow ? array_literal(found->v, found->n) : NULL;
    if (!list) {
        free(ow);
        return;
    }
    ow->names = *found; /* moved */
    ow->volumes = volumes;
    *found = (names_t){0};
    const char *p[] = {list};
    at_err_t rc = at_db_query(
        at_worker_db(g.w),
        volumes ? "SELECT v FROM (SELECT DISTINCT ws_volume_name(workspace_id) AS v"
                  " FROM code_sessions WHERE status <> 'terminated') u WHERE v = ANY ($1::text[])"
                : "SELECT uuid FROM code_sessions WHERE uuid = ANY ($1::text[])"
                  " AND status <> 'terminated'",
        1, p, orphans_found, ow);
    free(list);
    if (rc != AT_OK)
        orphan_done(ow, 0);
}

static void look_done(void *arg, int ran)
{
    look_t *lk = arg;
    g.looking = 0;
    if (!ran || !g.running) {
        look_free(lk);
        return;
    }
    int64_t elapsed = g.prev_ms ? lk->started_ms - g.prev_ms : 0;
    g.prev_ms = lk->started_ms;
    int *active = calloc(lk->n ? lk->n : 1, sizeof *active);
    if (!active) {
        look_free(lk);
        return;
    }
    for (size_t i = 0; i < lk->n; i++) {
        entry_t *e = &lk->e[i];
        active[i] = cpu_active(e, elapsed);
        if (e->have_state && e->st.oom_kills > e->oom_kills)
            at_warn("event=session_oom session=%s oom_kills=%d", e->uuid, e->st.oom_kills);
    }
    record_usage(lk, active);
    for (size_t i = 0; i < lk->n; i++)
        decide(&lk->e[i], active[i]);
    free(active);
    if (!lk->list_failed) {
        check_orphans(&lk->sandboxes, 0);
        check_orphans(&lk->volumes, 1);
    }
    look_free(lk);
}

/* ---- terminals at start ------------------------------------------------------ */

static void terminals_found(PGresult *res, const char *err, void *arg)
{
    (void)arg;
    if (err) {
        at_warn("event=terminal_reattach_check_failed error=\"%s\"", err);
        return;
    }
    for (int i = 0; g.running && i < PQntuples(res); i++) {
        const char *uuid = PQgetvalue(res, i, 0);
        at_info("event=terminals_reattach session=%s", uuid);
        if (!sm_life_busy(uuid))
            push_job("recover", uuid, NULL);
    }
}

/* A restarted instance (same ATELIER_INSTANCE) still holds its sessions, so
 * nothing is adopted: their open terminals are re-attached by a `recover`
 * (its sandbox runs: attached, terminals.h), in each session's order. */
static void reattach_terminals(void)
{
    const char *p[] = {cfg()->instance};
    at_db_query(at_worker_db(g.w),
                "SELECT DISTINCT t.session_uuid FROM terminals t"
                " JOIN code_sessions s ON s.uuid = t.session_uuid"
                " WHERE s.owner_instance = $1 AND s.status = 'ready'"
                " AND t.status IN ('opening', 'open')",
                1, p, terminals_found, NULL);
}

/* ---- start / stop ---------------------------------------------------------- */

int sm_monitor_start(at_worker_t *w, sm_driver_t *driver, at_pool_t *pool)
{
    g.w = w;
    g.driver = driver;
    g.pool = pool;
    g.lease_timer = at_io_timer_new(at_worker_io(w), lease_pass, NULL);
    g.look_timer = at_io_timer_new(at_worker_io(w), look_start, NULL);
    if (!g.lease_timer || !g.look_timer) {
        sm_monitor_stop();
        return -1;
    }
    g.running = 1;
    const at_config_t *c = at_worker_config(w);
    uint64_t lease_every = (uint64_t)c->lease_ttl_ms / 3;
    at_io_timer_start(g.lease_timer, 0, lease_every ? lease_every : 1);
    /* the first look after the first lease pass has adopted what it can */
    at_io_timer_start(g.look_timer, 50, (uint64_t)c->cull_interval_ms);
    reattach_terminals();
    at_info("event=monitor_started lease_ttl_ms=%lld cull_interval_ms=%lld idle_sleep_s=%lld "
            "sleep_delete_s=%lld idle_delete_s=%lld max_lifetime_s=%lld",
            (long long)c->lease_ttl_ms, (long long)c->cull_interval_ms, (long long)c->idle_sleep_s,
            (long long)c->sleep_delete_s, (long long)c->idle_delete_s,
            (long long)c->max_lifetime_s);
    return 0;
}

void sm_monitor_stop(void)
{
    g.running = 0;
    at_io_timer_free(g.lease_timer);
    at_io_timer_free(g.look_timer);
    g.lease_timer = NULL;
    g.look_timer = NULL;
}
