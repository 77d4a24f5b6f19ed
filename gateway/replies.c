#include "replies.h"

#include <stdlib.h>
#include <string.h>

#include "atelier/log.h"
#include "atelier/queue.h"

#define NBUCKETS 1024

typedef struct waiter {
    struct waiter *next;
    replies_t *owner;
    char id[AT_UUID_LEN + 1];
    at_io_timer_t *timer;
    reply_cb *cb;
    void *arg;
} waiter_t;

struct replies {
    gateway_t *gw;
    waiter_t *buckets[NBUCKETS];
    int n;
};

static unsigned hash(const char *s)
{
    unsigned h = 2166136261u;
    while (*s)
        h = (h ^ (unsigned char)*s++) * 16777619u;
    return h % NBUCKETS;
}

static waiter_t *unlink_waiter(replies_t *r, const char *id)
{
    waiter_t **pp = &r->buckets[hash(id)];
    for (; *pp; pp = &(*pp)->next) {
        if (!strcmp((*pp)->id, id)) {
            waiter_t *w = *pp;
            *pp = w->next;
            r->n--;
            return w;
        }
    }
    return NULL;
}

static void finish(waiter_t *w, json_t *reply, at_err_t err)
{
    at_io_timer_free(w->timer);
    w->cb(reply, err, w->arg);
    free(w);
}

static void on_timeout(void *arg)
{
    waiter_t *w = arg;
    if (unlink_waiter(w->owner, w->id) == w)
        finish(w, NULL, AT_ETIMEOUT);
}

/* Messages on reply:{instance}: ["message", channel, payload]. */
static void on_message(at_redis_t *rc, redisReply *reply, void *arg)
{
    replies_t *r = arg;
    if (!rc || !reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != 3)
        return;
    if (reply->element[0]->type != REDIS_REPLY_STRING || strcmp(reply->element[0]->str, "message"))
        return;
    json_error_t jerr;
    json_t *msg = json_loadb(reply->element[2]->str, reply->element[2]->len, 0, &jerr);
    const char *id = json_string_value(json_object_get(msg, "id"));
    waiter_t *w = id ? unlink_waiter(r, id) : NULL;
    if (w)
        finish(w, msg, AT_OK);
    json_decref(msg);
}

static void sub_up(at_redis_t *rc, void *arg)
{
    replies_t *r = arg;
    if (at_redis_subscribe(rc, r->gw->reply_channel, on_message, r) != AT_OK)
        at_error("event=reply_subscribe_failed channel=%s", r->gw->reply_channel);
}

replies_t *replies_new(gateway_t *gw)
{
    replies_t *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->gw = gw;
    at_redis_on_up(gw->sub, sub_up, r);
    return r;
}

void replies_cancel(replies_t *r)
{
    at_redis_off_up(r->gw->sub, sub_up, r);
    for (int i = 0; i < NBUCKETS; i++) {
        while (r->buckets[i]) {
            waiter_t *w = r->buckets[i];
            r->buckets[i] = w->next;
            finish(w, NULL, AT_ECLOSED);
        }
    }
}

void replies_free(replies_t *r)
{
    free(r);
}

int replies_waiting(const replies_t *r)
{
    return r->n;
}

/* The XADD reply can arrive after the job's reply (two connections), so the
 * push callback finds its waiter by id, never by pointer. */
typedef struct push_ref {
    replies_t *r;
    char id[AT_UUID_LEN + 1];
} push_ref_t;

static void pushed(at_err_t err, const char *entry_or_error, void *arg)
{
    push_ref_t *ref = arg;
    if (err != AT_OK) {
        at_warn("event=job_push_failed job=%s error=\"%s\"", ref->id, entry_or_error);
        waiter_t *w = unlink_waiter(ref->r, ref->id);
        if (w)
            finish(w, NULL, err);
    }
    free(ref);
}

at_err_t replies_send(replies_t *r, const char *role, at_job_t *job, int64_t timeout_ms,
                      reply_cb *cb, void *arg)
{
    const char *stream = at_queue_stream(role);
    if (!stream)
        return AT_EINVAL;
    if (!at_redis_connected(r->gw->sub))
        return AT_ECLOSED; /* no reply could reach us */
    memcpy(job->reply_to, r->gw->reply_channel, sizeof job->reply_to);
    waiter_t *w = calloc(1, sizeof *w);
    if (!w)
        return AT_ENOMEM;
    w->owner = r;
    memcpy(w->id, job->id, sizeof w->id);
    w->cb = cb;
    w->arg = arg;
    w->timer = at_io_timer_new(r->gw->io, on_timeout, w);
    if (!w->timer) {
        free(w);
        return AT_ENOMEM;
    }
    push_ref_t *ref = malloc(sizeof *ref);
    if (!ref) {
        at_io_timer_free(w->timer);
        free(w);
        return AT_ENOMEM;
    }
    ref->r = r;
    memcpy(ref->id, job->id, sizeof ref->id);
    at_err_t err = at_queue_push(r->gw->redis, stream, job, r->gw->cfg.queue_maxlen, pushed, ref);
    if (err != AT_OK) {
        free(ref);
        at_io_timer_free(w->timer);
        free(w);
        return err;
    }
    unsigned h = hash(w->id);
    w->next = r->buckets[h];
    r->buckets[h] = w;
    r->n++;
    at_io_timer_start(w->timer, (uint64_t)timeout_ms, 0);
    return AT_OK;
}
