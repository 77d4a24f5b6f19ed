#include "ratelimit.h"

#include <stdio.h>
#include <stdlib.h>

#include "atelier/log.h"
#include "atelier/metrics.h"

/* KEYS[1] bucket; ARGV rate (tokens/s), burst. Returns {allowed, retry_ms}. */
static const char script[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])\n"
    "local b = redis.call('HMGET', KEYS[1], 'v', 't')\n"
    "local v, last = tonumber(b[1]) or burst, tonumber(b[2]) or now\n"
    "if now > last then v = math.min(burst, v + (now - last) * rate / 1000) end\n"
    "local ok, wait = 0, 0\n"
    "if v >= 1 then v = v - 1; ok = 1 else wait = math.ceil((1 - v) * 1000 / rate) end\n"
    "redis.call('HSET', KEYS[1], 'v', tostring(v), 't', now)\n"
    "redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)\n"
    "return {ok, wait}\n";

typedef struct take {
    ratelimit_cb *cb;
    void *arg;
} take_t;

static at_metric_t *m_errors, *m_limited;

static void taken(at_redis_t *rc, redisReply *reply, void *arg)
{
    (void)rc;
    take_t *t = arg;
    if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
        reply->element[0]->type != REDIS_REPLY_INTEGER) {
        at_warn("event=ratelimit_failed error=\"%s\"", at_redis_reply_error(reply));
        at_metric_add(m_errors, 1);
        t->cb(1, 0, t->arg);
    } else {
        int ok = reply->element[0]->integer == 1;
        if (!ok)
            at_metric_add(m_limited, 1);
        t->cb(ok, reply->element[1]->integer, t->arg);
    }
    free(t);
}

void ratelimit_take(gateway_t *gw, const char *key, double rate, int64_t burst, ratelimit_cb *cb,
                    void *arg)
{
    if (!m_errors) {
        m_errors = at_metrics_counter("atelier_ratelimit_errors_total",
                                      "Rate-limit checks Redis could not answer (allowed)", NULL);
        m_limited = at_metrics_counter("atelier_ratelimit_limited_total",
                                       "Requests refused with 429", NULL);
    }
    take_t *t = malloc(sizeof *t);
    if (!t) {
        cb(1, 0, arg);
        return;
    }
    t->cb = cb;
    t->arg = arg;
    char r[32], b[32];
    snprintf(r, sizeof r, "%.6f", rate);
    snprintf(b, sizeof b, "%lld", (long long)burst);
    const char *argv[] = {"EVAL", script, "1", key, r, b};
    if (at_redis_argv(gw->redis, taken, t, 6, argv, NULL) != AT_OK) {
        at_metric_add(m_errors, 1);
        free(t);
        cb(1, 0, arg);
    }
}
