#include "atelier/redis.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "atelier/log.h"

#define RECONNECT_MIN_MS 50
#define RECONNECT_MAX_MS 2000

struct at_redis {
    at_io_t *io;
    char *name;
    char host[256];
    char path[512];
    int port;
    int db;
    redisAsyncContext *ac;
    int up;
    int closing;
    unsigned backoff_ms;
    at_io_timer_t *retry;
    struct {
        at_redis_up_cb *cb;
        void *arg;
    } hooks[AT_REDIS_MAX_HOOKS];
    struct call *subs; /* persistent callbacks of SUBSCRIBE, freed with the link */
};

typedef struct call {
    at_redis_t *r;
    at_redis_cb *cb;
    void *arg;
    int persistent;
    struct call *next;
} call_t;

static void free_subs(at_redis_t *r)
{
    while (r->subs) {
        call_t *c = r->subs;
        r->subs = c->next;
        free(c);
    }
}

static int parse_url(at_redis_t *r, const char *url)
{
    if (strncmp(url, "unix://", 7) == 0) {
        if (strlen(url + 7) >= sizeof r->path)
            return -1;
        strcpy(r->path, url + 7);
        return r->path[0] == '/' ? 0 : -1;
    }
    if (strncmp(url, "redis://", 8) != 0)
        return -1;
    const char *p = url + 8;
    const char *at = strchr(p, '@'); /* credentials are not supported yet */
    if (at)
        return -1;
    const char *colon = strrchr(p, ':');
    const char *slash = strchr(p, '/');
    size_t hostlen = colon ? (size_t)(colon - p) : slash ? (size_t)(slash - p) : strlen(p);
    if (hostlen == 0 || hostlen >= sizeof r->host)
        return -1;
    memcpy(r->host, p, hostlen);
    r->host[hostlen] = '\0';
    r->port = colon ? atoi(colon + 1) : 6379;
    r->db = slash ? atoi(slash + 1) : 0;
    return r->port > 0 && r->port < 65536 ? 0 : -1;
}

static void start_connect(at_redis_t *r);

static void schedule_retry(at_redis_t *r)
{
    if (r->closing)
        return;
    r->backoff_ms = r->backoff_ms ? r->backoff_ms * 2 : RECONNECT_MIN_MS;
    if (r->backoff_ms > RECONNECT_MAX_MS)
        r->backoff_ms = RECONNECT_MAX_MS;
    at_io_timer_start(r->retry, r->backoff_ms, 0);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    at_redis_t *r = ac->data;
    if (status != REDIS_OK) {
        at_warn("event=redis_connect_failed conn=%s error=\"%s\"", r->name, ac->errstr);
        r->ac = NULL; /* hiredis frees the context after this callback */
        schedule_retry(r);
        return;
    }
    r->up = 1;
    r->backoff_ms = 0;
    at_debug("event=redis_connected conn=%s", r->name);
    if (r->db)
        redisAsyncCommand(r->ac, NULL, NULL, "SELECT %d", r->db);
    for (int i = 0; i < AT_REDIS_MAX_HOOKS; i++)
        if (r->hooks[i].cb)
            r->hooks[i].cb(r, r->hooks[i].arg);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    at_redis_t *r = ac->data;
    r->ac = NULL;
    r->up = 0;
    free_subs(r);
    if (r->closing)
        return;
    at_warn("event=redis_disconnected conn=%s error=\"%s\"", r->name,
            status == REDIS_OK ? "closed" : ac->errstr);
    schedule_retry(r);
}

static void retry_cb(void *arg)
{
    start_connect(arg);
}

static void start_connect(at_redis_t *r)
{
    redisAsyncContext *ac =
        r->path[0] ? redisAsyncConnectUnix(r->path) : redisAsyncConnect(r->host, r->port);
    if (!ac) {
        schedule_retry(r);
        return;
    }
    if (ac->err) {
        at_warn("event=redis_connect_failed conn=%s error=\"%s\"", r->name, ac->errstr);
        redisAsyncFree(ac);
        schedule_retry(r);
        return;
    }
    ac->data = r;
    if (at_io_attach_redis(r->io, ac) != AT_OK) {
        redisAsyncFree(ac);
        schedule_retry(r);
        return;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    r->ac = ac;
}

at_redis_t *at_redis_new(at_io_t *io, const char *url, const char *name)
{
    at_redis_t *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->io = io;
    r->name = strdup(name);
    if (!r->name || parse_url(r, url) != 0) {
        at_error("event=redis_bad_url conn=%s url=\"%s\"", name, url);
        free(r->name);
        free(r);
        return NULL;
    }
    r->retry = at_io_timer_new(io, retry_cb, r);
    if (!r->retry) {
        free(r->name);
        free(r);
        return NULL;
    }
    start_connect(r);
    return r;
}

void at_redis_on_up(at_redis_t *r, at_redis_up_cb *cb, void *arg)
{
    for (int i = 0; i < AT_REDIS_MAX_HOOKS; i++) {
        if (!r->hooks[i].cb) {
            r->hooks[i].cb = cb;
            r->hooks[i].arg = arg;
            if (r->up)
                cb(r, arg);
            return;
        }
    }
    abort(); /* more hooks than AT_REDIS_MAX_HOOKS: a programming error */
}

void at_redis_off_up(at_redis_t *r, at_redis_up_cb *cb, void *arg)
{
    for (int i = 0; i < AT_REDIS_MAX_HOOKS; i++)
        if (r->hooks[i].cb == cb && r->hooks[i].arg == arg)
            r->hooks[i].cb = NULL;
}

void at_redis_free(at_redis_t *r)
{
    if (!r)
        return;
    r->closing = 1;
    if (r->ac) {
        redisAsyncContext *ac = r->ac;
        r->ac = NULL;
        /* pending callbacks run now with NULL replies; they must not use r */
        redisAsyncFree(ac);
    }
    free_subs(r);
    at_io_timer_free(r->retry);
    free(r->name);
    free(r);
}

int at_redis_connected(const at_redis_t *r)
{
    return r->up;
}

static void trampoline(redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)ac;
    call_t *c = privdata;
    if (c->cb && !c->r->closing)
        c->cb(c->r, reply, c->arg);
    else if (c->cb)
        c->cb(NULL, NULL, c->arg);
    if (!c->persistent)
        free(c);
}

/* A call record for one command; NULL when the link is down (err says why). */
static call_t *call_new(at_redis_t *r, at_redis_cb *cb, void *arg, int persistent, at_err_t *err)
{
    if (!r->up || !r->ac) {
        *err = AT_ECLOSED;
        return NULL;
    }
    call_t *c = calloc(1, sizeof *c);
    if (!c) {
        *err = AT_ENOMEM;
        return NULL;
    }
    c->r = r;
    c->cb = cb;
    c->arg = arg;
    c->persistent = persistent;
    return c;
}

/* rc is hiredis' answer to queueing the command that owns c. */
static at_err_t call_queued(call_t *c, int rc)
{
    if (rc != REDIS_OK) {
        free(c);
        return AT_EREDIS;
    }
    if (c->persistent) {
        c->next = c->r->subs;
        c->r->subs = c;
    }
    return AT_OK;
}

at_err_t at_redis_subscribe(at_redis_t *r, const char *channel, at_redis_cb *cb, void *arg)
{
    at_err_t err;
    call_t *c = call_new(r, cb, arg, 1, &err);
    if (!c)
        return err;
    return call_queued(c, redisAsyncCommand(r->ac, trampoline, c, "SUBSCRIBE %s", channel));
}

at_err_t at_redis_argv(at_redis_t *r, at_redis_cb *cb, void *arg, int argc, const char **argv,
                       const size_t *argvlen)
{
    at_err_t err;
    call_t *c = call_new(r, cb, arg, 0, &err);
    if (!c)
        return err;
    return call_queued(c, redisAsyncCommandArgv(r->ac, trampoline, c, argc, argv, argvlen));
}

at_err_t at_redis_cmd(at_redis_t *r, at_redis_cb *cb, void *arg, const char *fmt, ...)
{
    at_err_t err;
    call_t *c = call_new(r, cb, arg, 0, &err);
    if (!c)
        return err;
    va_list ap;
    va_start(ap, fmt);
    int rc = redisvAsyncCommand(r->ac, trampoline, c, fmt, ap);
    va_end(ap);
    return call_queued(c, rc);
}

const char *at_redis_reply_error(const redisReply *reply)
{
    if (!reply)
        return "connection lost";
    if (reply->type == REDIS_REPLY_ERROR)
        return reply->str;
    return "unexpected reply";
}

redisContext *at_redis_connect_sync(const char *url, int timeout_ms, char *errbuf, size_t errlen)
{
    at_redis_t tmp;
    memset(&tmp, 0, sizeof tmp);
    if (parse_url(&tmp, url) != 0) {
        snprintf(errbuf, errlen, "REDIS_URL=\"%s\": cannot parse", url);
        return NULL;
    }
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    redisContext *c = tmp.path[0] ? redisConnectUnixWithTimeout(tmp.path, tv)
                                  : redisConnectWithTimeout(tmp.host, tmp.port, tv);
    if (!c || c->err) {
        snprintf(errbuf, errlen, "connect %s: %s", url, c ? c->errstr : "out of memory");
        if (c)
            redisFree(c);
        return NULL;
    }
    if (tmp.db) {
        redisReply *rep = redisCommand(c, "SELECT %d", tmp.db);
        if (rep)
            freeReplyObject(rep);
    }
    return c;
}
