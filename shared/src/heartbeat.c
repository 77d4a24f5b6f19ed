#include "atelier/heartbeat.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "atelier/log.h"
#include "atelier/util.h"

#ifndef ATELIER_VERSION
#define ATELIER_VERSION "dev"
#endif

struct at_heartbeat {
    at_redis_t *r;
    at_io_timer_t *timer;
    char key[256];
    char member[256];
    char role[32];
    char instance[128];
    int64_t ttl_ms;
    int64_t started_at;
    at_heartbeat_fill_cb *fill;
    void *arg;
    char extra_key[256];
    char *(*render)(void *);
    void *render_arg;
};

static void beat(void *arg)
{
    at_heartbeat_t *hb = arg;
    if (!at_redis_connected(hb->r))
        return;
    json_t *rec =
        json_pack("{s:s, s:s, s:i, s:s, s:I, s:I}", "role", hb->role, "instance", hb->instance,
                  "pid", (int)getpid(), "version", ATELIER_VERSION, "started_at",
                  (json_int_t)hb->started_at, "beat_at", (json_int_t)at_wall_ms());
    if (!rec)
        return;
    if (hb->fill)
        hb->fill(rec, hb->arg);
    char *s = json_dumps(rec, JSON_COMPACT);
    json_decref(rec);
    if (!s)
        return;
    int64_t now = at_wall_ms();
    at_redis_cmd(hb->r, NULL, NULL, "SET %s %s PX %lld", hb->key, s, (long long)hb->ttl_ms);
    at_redis_cmd(hb->r, NULL, NULL, "ZADD %s %lld %s", AT_HEARTBEAT_INDEX,
                 (long long)(now + hb->ttl_ms), hb->member);
    free(s);
    if (hb->render) {
        char *text = hb->render(hb->render_arg);
        if (text) {
            at_redis_cmd(hb->r, NULL, NULL, "SET %s %s PX %lld", hb->extra_key, text,
                         (long long)hb->ttl_ms);
            free(text);
        }
    }
}

static void up(at_redis_t *r, void *arg)
{
    (void)r;
    beat(arg);
}

at_heartbeat_t *at_heartbeat_start(at_io_t *io, at_redis_t *r, const char *role,
                                   const char *instance, int64_t ttl_ms, at_heartbeat_fill_cb *fill,
                                   void *arg)
{
    at_heartbeat_t *hb = calloc(1, sizeof *hb);
    if (!hb)
        return NULL;
    hb->r = r;
    hb->ttl_ms = ttl_ms;
    hb->started_at = at_wall_ms();
    hb->fill = fill;
    hb->arg = arg;
    snprintf(hb->role, sizeof hb->role, "%s", role);
    snprintf(hb->instance, sizeof hb->instance, "%s", instance);
    snprintf(hb->key, sizeof hb->key, "hb:%s:%s", role, instance);
    snprintf(hb->member, sizeof hb->member, "%s:%s", role, instance);
    hb->timer = at_io_timer_new(io, beat, hb);
    if (!hb->timer) {
        free(hb);
        return NULL;
    }
    uint64_t every = (uint64_t)(ttl_ms / 3);
    at_io_timer_start(hb->timer, every, every);
    at_redis_on_up(r, up, hb);
    return hb;
}

void at_heartbeat_attach(at_heartbeat_t *hb, const char *key, char *(*render)(void *), void *arg)
{
    snprintf(hb->extra_key, sizeof hb->extra_key, "%s", key);
    hb->render = render;
    hb->render_arg = arg;
}

void at_heartbeat_stop(at_heartbeat_t *hb)
{
    if (!hb)
        return;
    at_redis_off_up(hb->r, up, hb);
    at_redis_cmd(hb->r, NULL, NULL, "DEL %s", hb->key);
    at_redis_cmd(hb->r, NULL, NULL, "ZREM %s %s", AT_HEARTBEAT_INDEX, hb->member);
    if (hb->render)
        at_redis_cmd(hb->r, NULL, NULL, "DEL %s", hb->extra_key);
    at_io_timer_free(hb->timer);
    free(hb);
}
