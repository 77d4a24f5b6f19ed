/*
 * Which volumes this instance watches: every WATCHSET_EVERY_MS, the
 * workspaces with a ready session, each taken with a lease in Redis
 * (syncwatch:{workspace} = this instance's name, WATCHSET_LEASE_MS, renewed each
 * sweep) so that exactly one sync-worker instance takes a volume's changes
 * in. A lease another instance lets lapse (it died) is taken over at the
 * next sweep, and the new watch starts with a rescan: nothing the sandbox
 * wrote in between is missed. Workspaces no longer listed, or whose lease
 * is lost, stop being watched.
 */
#include "watchset.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "atelier/log.h"
#include "atelier/util.h"
#include "sync.h"
#include "watch.h"

#define WATCHSET_EVERY_MS 1000
#define WATCHSET_LEASE_MS 5000

/* 1 when the lease is (now) ours. */
static const char lease_lua[] = "local v = redis.call('GET', KEYS[1]) "
                                "if v == false or v == ARGV[1] then "
                                "  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end "
                                "return 0";

static struct {
    at_io_timer_t *timer;
    char me[96];
    int sweeping;
    int stopped; /* watchset_stop ran: a sweep still in flight starts nothing */
} S;

typedef struct candidate {
    char ws[AT_UUID_LEN + 1];
    char dir[PATH_MAX];
    char sessions[WATCH_SESSIONS_MAX][37];
    int nsessions;
} candidate_t;

typedef struct sweep {
    int pending;
    char (*listed)[AT_UUID_LEN + 1]; /* the workspaces kept this sweep */
    int nlisted;
} sweep_t;

static void sweep_end(sweep_t *sw);

static void stop_unlisted(const char *ws, void *arg)
{
    sweep_t *sw = arg;
    for (int i = 0; i < sw->nlisted; i++)
        if (!strcmp(sw->listed[i], ws))
            return;
    watch_stop(ws);
}

static void sweep_end(sweep_t *sw)
{
    watch_each(stop_unlisted, sw);
    free(sw->listed);
    free(sw);
    S.sweeping = 0;
}

typedef struct lease_req {
    sweep_t *sw;
    candidate_t c;
} lease_req_t;

static void leased(at_redis_t *rc, redisReply *reply, void *arg)
{
    (void)rc;
    lease_req_t *l = arg;
    sweep_t *sw = l->sw;
    if (S.stopped) {
        /* shutting down: the pool is gone, no new watch may start */
    } else if (reply && reply->type == REDIS_REPLY_INTEGER && reply->integer == 1) {
        if (watch_start(l->c.ws, l->c.dir, (const char(*)[37])l->c.sessions, l->c.nsessions) == 0)
            at_strlcpy(sw->listed[sw->nlisted++], l->c.ws, sizeof sw->listed[0]);
    } else if (!reply || reply->type == REDIS_REPLY_ERROR) {
        /* Redis away: keep what we watch (its lease cannot be taken either) */
        if (watch_has(l->c.ws))
            at_strlcpy(sw->listed[sw->nlisted++], l->c.ws, sizeof sw->listed[0]);
    }
    free(l);
    if (--sw->pending == 0)
        sweep_end(sw);
}

static void listed(PGresult *res, const char *err, void *arg)
{
    sweep_t *sw = arg;
    if (err) {
        at_warn("event=watchset_failed error=\"%s\"", err);
        free(sw);
        S.sweeping = 0; /* keep watching what we do; try again next time */
        return;
    }
    int n = PQntuples(res);
    sw->listed = calloc((size_t)n + 1, sizeof *sw->listed);
    if (!sw->listed) {
        free(sw);
        S.sweeping = 0;
        return;
    }
    sw->pending = 1;
    char ttl[16];
    snprintf(ttl, sizeof ttl, "%d", WATCHSET_LEASE_MS);
    for (int r = 0; r < n; r++) {
        lease_req_t *l = calloc(1, sizeof *l);
        if (!l)
            break;
        l->sw = sw;
        at_strlcpy(l->c.ws, PQgetvalue(res, r, 0), sizeof l->c.ws);
        if (sync_volume_dir(PQgetvalue(res, r, 1), l->c.dir, sizeof l->c.dir) != 0) {
            free(l);
            continue;
        }
        char *list = PQgetvalue(res, r, 2), *save = NULL;
        for (char *t = strtok_r(list, ",", &save); t && l->c.nsessions < WATCH_SESSIONS_MAX;
             t = strtok_r(NULL, ",", &save))
            at_strlcpy(l->c.sessions[l->c.nsessions++], t, 37);
        char key[64];
        snprintf(key, sizeof key, "syncwatch:%s", l->c.ws);
        const char *argv[] = {"EVAL", lease_lua, "1", key, S.me, ttl};
        if (at_redis_argv(at_worker_redis(sync_g.w), leased, l, 6, argv, NULL) != AT_OK) {
            if (watch_has(l->c.ws))
                at_strlcpy(sw->listed[sw->nlisted++], l->c.ws, sizeof sw->listed[0]);
            free(l);
            continue;
        }
        sw->pending++;
    }
    if (--sw->pending == 0)
        sweep_end(sw);
}

static void tick(void *arg)
{
    (void)arg;
    if (S.sweeping)
        return;
    sweep_t *sw = calloc(1, sizeof *sw);
    if (!sw)
        return;
    S.sweeping = 1;
    if (at_db_query(at_worker_db(sync_g.w),
                    "SELECT workspace_id, ws_volume_name(workspace_id), "
                    "string_agg(uuid, ',' ORDER BY created_at DESC) FROM code_sessions "
                    "WHERE status = 'ready' AND workspace_id IS NOT NULL GROUP BY workspace_id",
                    0, NULL, listed, sw) != AT_OK) {
        free(sw);
        S.sweeping = 0;
    }
}

int watchset_start(void)
{
    at_strlcpy(S.me, at_worker_config(sync_g.w)->instance, sizeof S.me);
    S.timer = at_io_timer_new(at_worker_io(sync_g.w), tick, NULL);
    if (!S.timer)
        return -1;
    at_io_timer_start(S.timer, 0, WATCHSET_EVERY_MS);
    return 0;
}

void watchset_stop(void)
{
    S.stopped = 1;
    at_io_timer_free(S.timer);
    S.timer = NULL;
}
