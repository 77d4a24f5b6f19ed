/*
 * The gateway's one pub/sub link for WebSocket clients: term:{id} (terminal
 * output) and ev:{session} (session events), subscribed while some
 * connection wants them, by reference count.
 *
 * Its own hiredis context (not at_redis_t, which keeps a record per
 * SUBSCRIBE until the link drops: unbounded with channels coming and
 * going). hiredis 0.14 files a channel's callback at SUBSCRIBE and drops it
 * at the UNSUBSCRIBE reply, so a channel is never subscribed again before
 * its unsubscribe is confirmed (the new callback would be dropped), and one
 * anchor channel stays subscribed so the count never reaches 0 (hiredis
 * then leaves subscribed mode while a SUBSCRIBE may be in flight, and
 * asserts on its reply).
 */
#include <stdlib.h>
#include <string.h>

#include <hiredis/async.h>

#include "atelier/log.h"
#include "ws_internal.h"

#define BUCKETS 4096
#define RECONNECT_MIN_MS 50
#define RECONNECT_MAX_MS 2000
#define ANCHOR "ws:anchor"

typedef enum { CH_IDLE = 0, CH_SUBSCRIBING, CH_SUBSCRIBED, CH_UNSUBSCRIBING } ch_state_t;

typedef struct chan {
    struct chan *next;
    int refs;
    ch_state_t state;
    char name[];
} chan_t;

static struct {
    gateway_t *gw;
    redisAsyncContext *ac;
    int up, closing;
    unsigned backoff_ms;
    at_io_timer_t *retry;
    char host[256];
    char path[512];
    int port;
    chan_t *buckets[BUCKETS];
} ps;

static unsigned hash(const char *s, size_t n)
{
    unsigned h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h % BUCKETS;
}

static chan_t **slot(const char *name, size_t n)
{
    chan_t **pp = &ps.buckets[hash(name, n)];
    while (*pp && (strlen((*pp)->name) != n || memcmp((*pp)->name, name, n)))
        pp = &(*pp)->next;
    return pp;
}

static void chan_free(const char *name)
{
    chan_t **pp = slot(name, strlen(name)), *c = *pp;
    if (c) {
        *pp = c->next;
        free(c);
    }
}

static void on_reply(redisAsyncContext *ac, void *r, void *privdata);

static void send_sub(chan_t *c)
{
    c->state = CH_SUBSCRIBING;
    if (redisAsyncCommand(ps.ac, on_reply, NULL, "SUBSCRIBE %s", c->name) != REDIS_OK)
        c->state = CH_IDLE; /* the link is going down: resubscribed when it is back */
}

static void send_unsub(chan_t *c)
{
    c->state = CH_UNSUBSCRIBING;
    /* no callback of its own: the reply goes to the channel's (on_reply) */
    if (redisAsyncCommand(ps.ac, NULL, NULL, "UNSUBSCRIBE %s", c->name) != REDIS_OK)
        c->state = CH_SUBSCRIBED;
}

static void dispatch_ready(const char *name)
{
    if (!strncmp(name, "term:", 5))
        ws_terms_channel_ready(name + 5);
    else if (!strncmp(name, "ev:", 3))
        ws_events_channel_ready(name + 3);
}

static void dispatch_message(const char *name, const char *payload, size_t len)
{
    if (!strncmp(name, "term:", 5))
        ws_terms_message(name + 5, payload, len);
    else if (!strncmp(name, "ev:", 3))
        ws_events_message(name + 3, payload, len);
}

/* Every reply on the link: ["message", channel, payload], ["subscribe",
 * channel, count], ["unsubscribe", channel, count]. NULL when it drops. */
static void on_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    (void)ac;
    (void)privdata;
    redisReply *reply = r;
    if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != 3 ||
        reply->element[0]->type != REDIS_REPLY_STRING ||
        reply->element[1]->type != REDIS_REPLY_STRING)
        return;
    const char *kind = reply->element[0]->str;
    const char *name = reply->element[1]->str;
    if (!strcmp(kind, "message")) {
        if (reply->element[2]->type == REDIS_REPLY_STRING)
            dispatch_message(name, reply->element[2]->str, reply->element[2]->len);
        return;
    }
    chan_t *c = *slot(name, reply->element[1]->len);
    if (!c) /* the anchor */
        return;
    if (!strcmp(kind, "subscribe")) {
        c->state = CH_SUBSCRIBED;
        if (c->refs == 0)
            send_unsub(c);
        else
            dispatch_ready(c->name);
    } else if (!strcmp(kind, "unsubscribe")) {
        c->state = CH_IDLE;
        if (c->refs > 0)
            send_sub(c);
        else
            chan_free(c->name);
    }
}

void ws_pubsub_ref(const char *name)
{
    size_t n = strlen(name);
    chan_t **pp = slot(name, n), *c = *pp;
    if (!c) {
        c = calloc(1, sizeof *c + n + 1);
        if (!c)
            return; /* unref of a missing channel is a no-op */
        memcpy(c->name, name, n + 1);
        *pp = c;
    }
    if (c->refs++ == 0 && c->state == CH_IDLE && ps.up)
        send_sub(c);
}

void ws_pubsub_unref(const char *name)
{
    chan_t *c = *slot(name, strlen(name));
    if (!c || c->refs <= 0)
        return;
    if (--c->refs > 0)
        return;
    if (c->state == CH_SUBSCRIBED && ps.up)
        send_unsub(c);
    else if (c->state == CH_IDLE)
        chan_free(c->name);
    /* in flight: decided when its reply comes */
}

int ws_pubsub_ready(const char *name)
{
    chan_t *c = *slot(name, strlen(name));
    return c && c->state == CH_SUBSCRIBED;
}

/* ---- the link ------------------------------------------------------------------ */

static void start_connect(void);

static void schedule_retry(void)
{
    if (ps.closing)
        return;
    ps.backoff_ms = ps.backoff_ms ? ps.backoff_ms * 2 : RECONNECT_MIN_MS;
    if (ps.backoff_ms > RECONNECT_MAX_MS)
        ps.backoff_ms = RECONNECT_MAX_MS;
    at_io_timer_start(ps.retry, ps.backoff_ms, 0);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    if (status != REDIS_OK) {
        at_warn("event=redis_connect_failed conn=ws_pubsub error=\"%s\"", ac->errstr);
        ps.ac = NULL;
        schedule_retry();
        return;
    }
    ps.up = 1;
    ps.backoff_ms = 0;
    redisAsyncCommand(ps.ac, on_reply, NULL, "SUBSCRIBE " ANCHOR);
    for (int i = 0; i < BUCKETS; i++)
        for (chan_t *c = ps.buckets[i]; c; c = c->next)
            if (c->refs > 0 && c->state == CH_IDLE)
                send_sub(c);
}

/* Every subscription is gone with the link: live output may have been
 * missed, so terminals read the stream again once resubscribed. */
static void on_disconnect(const redisAsyncContext *ac, int status)
{
    ps.ac = NULL;
    ps.up = 0;
    for (int i = 0; i < BUCKETS; i++) {
        chan_t **pp = &ps.buckets[i];
        while (*pp) {
            chan_t *c = *pp;
            c->state = CH_IDLE;
            if (c->refs == 0) {
                *pp = c->next;
                free(c);
            } else {
                pp = &c->next;
            }
        }
    }
    if (ps.closing)
        return;
    at_warn("event=redis_disconnected conn=ws_pubsub error=\"%s\"",
            status == REDIS_OK ? "closed" : ac->errstr);
    ws_terms_channels_lost();
    schedule_retry();
}

static void start_connect(void)
{
    redisAsyncContext *ac =
        ps.path[0] ? redisAsyncConnectUnix(ps.path) : redisAsyncConnect(ps.host, ps.port);
    if (!ac) {
        schedule_retry();
        return;
    }
    if (ac->err || at_io_attach_redis(ps.gw->io, ac) != AT_OK) {
        at_warn("event=redis_connect_failed conn=ws_pubsub error=\"%s\"",
                ac->err ? ac->errstr : "cannot attach to the loop");
        redisAsyncFree(ac);
        schedule_retry();
        return;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    ps.ac = ac;
}

static void retry_cb(void *arg)
{
    (void)arg;
    start_connect();
}

/* redis://host[:port][/db] or unix:///path (the database number does not
 * matter to pub/sub). */
static int parse_url(const char *url)
{
    if (!strncmp(url, "unix://", 7))
        return at_strlcpy(ps.path, url + 7, sizeof ps.path) || ps.path[0] != '/' ? -1 : 0;
    if (strncmp(url, "redis://", 8) != 0 || strchr(url, '@'))
        return -1;
    const char *p = url + 8, *colon = strrchr(p, ':'), *slash = strchr(p, '/');
    size_t n = colon ? (size_t)(colon - p) : slash ? (size_t)(slash - p) : strlen(p);
    if (n == 0 || n >= sizeof ps.host)
        return -1;
    memcpy(ps.host, p, n);
    ps.host[n] = '\0';
    ps.port = colon ? atoi(colon + 1) : 6379;
    return ps.port > 0 && ps.port < 65536 ? 0 : -1;
}

int ws_pubsub_init(gateway_t *gw)
{
    ps.gw = gw;
    if (parse_url(gw->cfg.redis_url) != 0) {
        at_error("event=redis_bad_url conn=ws_pubsub url=\"%s\"", gw->cfg.redis_url);
        return -1;
    }
    ps.retry = at_io_timer_new(gw->io, retry_cb, NULL);
    if (!ps.retry)
        return -1;
    start_connect();
    return 0;
}

void ws_pubsub_free(void)
{
    ps.closing = 1;
    if (ps.ac) {
        redisAsyncContext *ac = ps.ac;
        ps.ac = NULL;
        redisAsyncFree(ac);
    }
    for (int i = 0; i < BUCKETS; i++) {
        while (ps.buckets[i]) {
            chan_t *c = ps.buckets[i];
            ps.buckets[i] = c->next;
            free(c);
        }
    }
    if (ps.retry)
        at_io_timer_free(ps.retry);
    ps.retry = NULL;
}
