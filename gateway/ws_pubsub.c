/*
 * The WebSocket side's own Redis links: the pub/sub link for term:{id}
 * (terminal output) and ev:{session} (session events), subscribed while
 * some connection wants them, by reference count; and the input link
 * (XADD term:{id}:in), so a keystroke never waits behind a replay read.
 *
 * Both are raw hiredis contexts on a small adapter of their own: a command
 * is written at the end of the loop turn that made it (a uv_check, as
 * Redis writes its replies before it sleeps) rather than one turn later
 * through a writable watcher, and the poll handle is touched only when
 * what hiredis waits for changes. libuv's uv_poll_start costs an
 * EPOLL_CTL_DEL and an EPOLL_CTL_ADD each time; the stock adapter calls it
 * on every read and twice per command, which is most of the gateway's
 * time per keystroke on a VM where a syscall is dear.
 *
 * Not at_redis_t for pub/sub: it keeps a record per SUBSCRIBE until the
 * link drops (unbounded with channels coming and going). hiredis 0.14
 * files a channel's callback at SUBSCRIBE and drops it at the UNSUBSCRIBE
 * reply, so a channel is never subscribed again before its unsubscribe is
 * confirmed (the new callback would be dropped), and one anchor channel
 * stays subscribed so the count never reaches 0 (hiredis then leaves
 * subscribed mode while a SUBSCRIBE may be in flight, and asserts on its
 * reply).
 */
#include <stdlib.h>
#include <string.h>

#include <hiredis/async.h>
#include <uv.h>

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

/* A hiredis context's events on the loop (the adapter). */
typedef struct link_ev {
    redisAsyncContext *ac; /* NULL once hiredis let go of it */
    uv_poll_t poll;
    int want;     /* UV_READABLE | UV_WRITABLE, as hiredis asks */
    int polling;  /* what the poll handle is started with */
    int dirty;    /* on g_dirty: commands to write before the loop sleeps */
    int flushing; /* being written from the check: what is left waits for POLLOUT */
    struct link_ev *dirty_next;
} link_ev_t;

/* A Redis link kept up with backoff. */
typedef struct link {
    const char *name;
    redisAsyncContext *ac; /* NULL while down */
    int up;
    unsigned backoff_ms;
    at_io_timer_t *retry;
    void (*on_up)(void);
    void (*on_down)(void);
} link_t;

static struct {
    gateway_t *gw;
    int closing;
    char host[256];
    char path[512];
    int port, db;
    link_t sub, input;
    uv_check_t flush;
    int flush_on;
    link_ev_t *dirty;
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
    if (redisAsyncCommand(ps.sub.ac, on_reply, NULL, "SUBSCRIBE %s", c->name) != REDIS_OK)
        c->state = CH_IDLE; /* the link is going down: resubscribed when it is back */
}

static void send_unsub(chan_t *c)
{
    c->state = CH_UNSUBSCRIBING;
    /* no callback of its own: the reply goes to the channel's (on_reply) */
    if (redisAsyncCommand(ps.sub.ac, NULL, NULL, "UNSUBSCRIBE %s", c->name) != REDIS_OK)
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
    if (c->refs++ == 0 && c->state == CH_IDLE && ps.sub.up)
        send_sub(c);
}

void ws_pubsub_unref(const char *name)
{
    chan_t *c = *slot(name, strlen(name));
    if (!c || c->refs <= 0)
        return;
    if (--c->refs > 0)
        return;
    if (c->state == CH_SUBSCRIBED && ps.sub.up)
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

/* ---- the adapter ---------------------------------------------------------------- */

static void ev_poll(uv_poll_t *h, int status, int events);

static void ev_update(link_ev_t *e)
{
    if (e->want == e->polling)
        return;
    e->polling = e->want;
    if (e->want)
        uv_poll_start(&e->poll, e->want, ev_poll);
    else
        uv_poll_stop(&e->poll);
}

static void ev_poll(uv_poll_t *h, int status, int events)
{
    link_ev_t *e = h->data;
    if (status < 0) /* as readiness: hiredis's read or write then sees the error */
        events = e->polling;
    if (e->ac && (events & UV_READABLE))
        redisAsyncHandleRead(e->ac);
    if (e->ac && (events & UV_WRITABLE))
        redisAsyncHandleWrite(e->ac);
}

static void ev_add_read(void *p)
{
    link_ev_t *e = p;
    e->want |= UV_READABLE;
    ev_update(e);
}

static void ev_del_read(void *p)
{
    link_ev_t *e = p;
    e->want &= ~UV_READABLE;
    ev_update(e);
}

/* A command was queued: written by flush_links before the loop sleeps.
 * Until connected, and for what a flush could not write, the socket's
 * POLLOUT tells. */
static void ev_add_write(void *p)
{
    link_ev_t *e = p;
    if (e->flushing || !(e->ac->c.flags & REDIS_CONNECTED)) {
        e->want |= UV_WRITABLE;
        ev_update(e);
    } else if (!e->dirty) {
        e->dirty = 1;
        e->dirty_next = ps.dirty;
        ps.dirty = e;
    }
}

static void ev_del_write(void *p)
{
    link_ev_t *e = p;
    e->want &= ~UV_WRITABLE;
    ev_update(e);
}

static void ev_closed(uv_handle_t *h)
{
    free(h->data);
}

static void ev_cleanup(void *p)
{
    link_ev_t *e = p;
    e->ac = NULL;
    for (link_ev_t **pp = &ps.dirty; *pp; pp = &(*pp)->dirty_next) {
        if (*pp == e) {
            *pp = e->dirty_next;
            break;
        }
    }
    uv_close((uv_handle_t *)&e->poll, ev_closed);
}

static int ev_attach(redisAsyncContext *ac)
{
    link_ev_t *e = calloc(1, sizeof *e);
    if (!e)
        return -1;
    if (uv_poll_init(ps.gw->loop, &e->poll, ac->c.fd) != 0) {
        free(e);
        return -1;
    }
    e->ac = ac;
    e->poll.data = e;
    ac->ev.data = e;
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    ac->ev.cleanup = ev_cleanup;
    return 0;
}

/* The check phase, after this turn's I/O callbacks: queued commands go out. */
static void flush_links(uv_check_t *h)
{
    (void)h;
    while (ps.dirty) {
        link_ev_t *e = ps.dirty;
        ps.dirty = e->dirty_next;
        e->dirty = 0;
        if (!e->ac)
            continue;
        e->flushing = 1;
        redisAsyncHandleWrite(e->ac); /* may free the context: e lives until ev_closed */
        e->flushing = 0;
    }
}

/* ---- the links ------------------------------------------------------------------ */

static void start_connect(link_t *l);

static void schedule_retry(link_t *l)
{
    if (ps.closing)
        return;
    l->backoff_ms = l->backoff_ms ? l->backoff_ms * 2 : RECONNECT_MIN_MS;
    if (l->backoff_ms > RECONNECT_MAX_MS)
        l->backoff_ms = RECONNECT_MAX_MS;
    at_io_timer_start(l->retry, l->backoff_ms, 0);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    link_t *l = ac->data;
    if (status != REDIS_OK) {
        at_warn("event=redis_connect_failed conn=%s error=\"%s\"", l->name, ac->errstr);
        l->ac = NULL; /* hiredis frees the context after this callback */
        schedule_retry(l);
        return;
    }
    l->up = 1;
    l->backoff_ms = 0;
    if (l->on_up)
        l->on_up();
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    link_t *l = ac->data;
    l->ac = NULL;
    l->up = 0;
    if (ps.closing)
        return;
    at_warn("event=redis_disconnected conn=%s error=\"%s\"", l->name,
            status == REDIS_OK ? "closed" : ac->errstr);
    if (l->on_down)
        l->on_down();
    schedule_retry(l);
}

static void start_connect(link_t *l)
{
    redisAsyncContext *ac =
        ps.path[0] ? redisAsyncConnectUnix(ps.path) : redisAsyncConnect(ps.host, ps.port);
    if (!ac) {
        schedule_retry(l);
        return;
    }
    if (ac->err || ev_attach(ac) != 0) {
        at_warn("event=redis_connect_failed conn=%s error=\"%s\"", l->name,
                ac->err ? ac->errstr : "cannot attach to the loop");
        redisAsyncFree(ac);
        schedule_retry(l);
        return;
    }
    ac->data = l;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    l->ac = ac;
}

static void retry_cb(void *arg)
{
    start_connect(arg);
}

static int link_init(link_t *l, const char *name, void (*up)(void), void (*down)(void))
{
    l->name = name;
    l->on_up = up;
    l->on_down = down;
    l->retry = at_io_timer_new(ps.gw->io, retry_cb, l);
    if (!l->retry)
        return -1;
    start_connect(l);
    return 0;
}

static void link_free(link_t *l)
{
    if (l->ac) {
        redisAsyncContext *ac = l->ac;
        l->ac = NULL;
        redisAsyncFree(ac);
    }
    if (l->retry)
        at_io_timer_free(l->retry);
    l->retry = NULL;
}

/* The pub/sub link is up: the anchor, then every channel still wanted. */
static void sub_up(void)
{
    redisAsyncCommand(ps.sub.ac, on_reply, NULL, "SUBSCRIBE " ANCHOR);
    for (int i = 0; i < BUCKETS; i++)
        for (chan_t *c = ps.buckets[i]; c; c = c->next)
            if (c->refs > 0 && c->state == CH_IDLE)
                send_sub(c);
}

/* Every subscription is gone with the link: live output may have been
 * missed, so terminals read the stream again once resubscribed. */
static void sub_down(void)
{
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
    ws_terms_channels_lost();
}

redisAsyncContext *ws_input_link(void)
{
    return ps.input.up ? ps.input.ac : NULL;
}

/* The input link selects the URL's database (the manager reads
 * term:{id}:in there); pub/sub does not depend on it. */
static void input_up(void)
{
    if (ps.db)
        redisAsyncCommand(ps.input.ac, NULL, NULL, "SELECT %d", ps.db);
}

/* redis://host[:port][/db] or unix:///path, as at_redis_t reads them. */
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
    ps.db = slash ? atoi(slash + 1) : 0;
    return ps.port > 0 && ps.port < 65536 ? 0 : -1;
}

int ws_pubsub_init(gateway_t *gw)
{
    ps.gw = gw;
    if (parse_url(gw->cfg.redis_url) != 0) {
        at_error("event=redis_bad_url conn=ws_pubsub url=\"%s\"", gw->cfg.redis_url);
        return -1;
    }
    if (uv_check_init(gw->loop, &ps.flush) != 0)
        return -1;
    ps.flush_on = 1;
    uv_check_start(&ps.flush, flush_links);
    uv_unref((uv_handle_t *)&ps.flush); /* the loop runs for the sockets, not for this */
    if (link_init(&ps.sub, "ws_pubsub", sub_up, sub_down) != 0 ||
        link_init(&ps.input, "ws_input", input_up, NULL) != 0)
        return -1;
    return 0;
}

void ws_pubsub_free(void)
{
    ps.closing = 1;
    link_free(&ps.sub);
    link_free(&ps.input);
    for (int i = 0; i < BUCKETS; i++) {
        while (ps.buckets[i]) {
            chan_t *c = ps.buckets[i];
            ps.buckets[i] = c->next;
            free(c);
        }
    }
    if (ps.flush_on) {
        uv_check_stop(&ps.flush);
        uv_close((uv_handle_t *)&ps.flush, NULL);
        ps.flush_on = 0;
    }
}
