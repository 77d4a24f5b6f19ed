/* GET /metrics: this gateway's metrics plus those every live worker and
 * gateway instance publishes to Redis (metrics:{role}:{instance}), merged
 * into one Prometheus text exposition. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "atelier/heartbeat.h"
#include "atelier/metrics.h"
#include "atelier/util.h"
#include "replies.h"
#include "routes.h"

static char *own_metrics(gateway_t *gw)
{
    char labels[256];
    snprintf(labels, sizeof labels, "role=\"gateway\",instance=\"%s\"", gw->cfg.instance);
    at_metric_set(at_metrics_gauge("atelier_replies_waiting", "Jobs waiting for a reply", NULL),
                  replies_waiting(gw->replies));
    return at_metrics_render(labels);
}

static void answer(at_req_t *req, const char *const *others, size_t n)
{
    gateway_t *gw = req_gw(req);
    const char **texts = calloc(n + 1, sizeof *texts);
    char *own = own_metrics(gw);
    char *merged = NULL;
    if (texts) {
        texts[0] = own ? own : "";
        for (size_t i = 0; i < n; i++)
            texts[i + 1] = others[i];
        merged = at_metrics_merge(texts, n + 1);
    }
    free(texts);
    free(own);
    if (!merged) {
        req_error(req, 500, "cannot render metrics");
        return;
    }
    req_send(req, 200, "text/plain; version=0.0.4", merged, strlen(merged));
}

static void values_done(at_redis_t *r, redisReply *reply, void *arg)
{
    at_req_t *req = arg;
    const char **texts = NULL;
    size_t n = 0;
    if (r && reply && reply->type == REDIS_REPLY_ARRAY) {
        texts = calloc(reply->elements + 1, sizeof *texts);
        for (size_t i = 0; texts && i < reply->elements; i++)
            if (reply->element[i]->type == REDIS_REPLY_STRING)
                texts[n++] = reply->element[i]->str;
    }
    answer(req, texts, n);
    free(texts);
}

static void members_done(at_redis_t *r, redisReply *reply, void *arg)
{
    at_req_t *req = arg;
    gateway_t *gw = req_gw(req);
    if (!r || !reply || reply->type != REDIS_REPLY_ARRAY || reply->elements == 0) {
        answer(req, NULL, 0);
        return;
    }
    size_t n = reply->elements;
    const char **argv = calloc(n + 1, sizeof *argv);
    char **keys = calloc(n, sizeof *keys);
    size_t k = 0;
    if (argv && keys) {
        argv[0] = "MGET";
        for (size_t i = 0; i < n; i++) {
            const redisReply *e = reply->element[i];
            /* skip ourselves: our own registry is rendered fresh */
            if (e->type != REDIS_REPLY_STRING ||
                (!strncmp(e->str, "gateway:", 8) && !strcmp(e->str + 8, gw->cfg.instance)))
                continue;
            size_t len = e->len + 16;
            keys[k] = malloc(len);
            snprintf(keys[k], len, "metrics:%s", e->str);
            argv[k + 1] = keys[k];
            k++;
        }
    }
    if (k == 0 || at_redis_argv(gw->redis, values_done, req, (int)k + 1, argv, NULL) != AT_OK)
        answer(req, NULL, 0);
    for (size_t i = 0; i < k; i++)
        free(keys[i]);
    free(keys);
    free(argv);
}

void route_metrics(at_req_t *req)
{
    gateway_t *gw = req_gw(req);
    char now[24];
    snprintf(now, sizeof now, "%lld", (long long)at_wall_ms());
    if (at_redis_cmd(gw->redis, members_done, req, "ZRANGEBYSCORE %s %s +inf", AT_HEARTBEAT_INDEX,
                     now) != AT_OK)
        answer(req, NULL, 0);
}
