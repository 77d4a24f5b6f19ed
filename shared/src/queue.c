#include "atelier/queue.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "atelier/log.h"

#define READ_BLOCK_MS 1000 /* bounds how long a stop waits for the read */
#define READ_BATCH_MAX 64

const char *const at_queue_roles[] = {"session", "sync", "backup", NULL};

const char *at_queue_stream(const char *role)
{
    if (!role)
        return NULL;
    if (!strcmp(role, "session"))
        return "q:session";
    if (!strcmp(role, "sync"))
        return "q:sync";
    if (!strcmp(role, "backup"))
        return "q:backup";
    return NULL;
}

int at_queue_role_valid(const char *role)
{
    return at_queue_stream(role) != NULL;
}

typedef struct push_ctx {
    at_queue_push_cb *cb;
    void *arg;
} push_ctx_t;

static void push_done(at_redis_t *r, redisReply *reply, void *arg)
{
    (void)r;
    push_ctx_t *p = arg;
    if (p->cb) {
        if (reply && reply->type == REDIS_REPLY_STRING)
            p->cb(AT_OK, reply->str, p->arg);
        else
            p->cb(AT_EREDIS, at_redis_reply_error(reply), p->arg);
    }
    free(p);
}

at_err_t at_queue_push(at_redis_t *r, const char *stream, const at_job_t *job, int64_t maxlen,
                       at_queue_push_cb *cb, void *arg)
{
    unsigned char *buf;
    size_t len;
    at_err_t err = at_job_encode(job, &buf, &len);
    if (err != AT_OK)
        return err;
    push_ctx_t *p = malloc(sizeof *p);
    if (!p) {
        free(buf);
        return AT_ENOMEM;
    }
    p->cb = cb;
    p->arg = arg;
    char ml[24];
    snprintf(ml, sizeof ml, "%lld", (long long)maxlen);
    const char *argv[] = {"XADD", stream, "MAXLEN", "~", ml, "*", AT_QUEUE_FIELD, (char *)buf};
    size_t lens[] = {4, strlen(stream), 6, 1, strlen(ml), 1, 1, len};
    err = at_redis_argv(r, push_done, p, 8, argv, lens);
    free(buf);
    if (err != AT_OK)
        free(p);
    return err;
}

struct at_consumer {
    at_io_t *io;
    char *stream, *group, *name;
    int64_t claim_timeout_ms;
    int64_t maxlen;
    at_consumer_cb *cb;
    void *arg;
    at_redis_t *rd;    /* blocking XREADGROUP only */
    at_redis_t *cmd;   /* everything else */
    int credit;        /* deliveries allowed, minus those reserved below */
    int read_reserved; /* credit held by the outstanding read */
    int claim_reserved;
    int reading;
    int claiming;
    int stopped;
    int group_ready;
    int claim_due; /* the claim timer fired while the credit was held by a read */
    char claim_cursor[AT_STREAM_ID_MAX];
    at_io_timer_t *claim_timer;
    at_io_timer_t *kick; /* re-issues a read after an error, with a delay */
};

static void issue_read(at_consumer_t *c);
static void try_claim(at_consumer_t *c);

static void kick_cb(void *arg)
{
    issue_read(arg);
}

static void group_created(at_redis_t *r, redisReply *reply, void *arg)
{
    at_consumer_t *c = arg;
    if (!r)
        return;
    if (reply && (reply->type == REDIS_REPLY_STATUS ||
                  (reply->type == REDIS_REPLY_ERROR && strstr(reply->str, "BUSYGROUP")))) {
        c->group_ready = 1;
        issue_read(c);
        return;
    }
    at_warn("event=queue_group_create_failed stream=%s group=%s error=\"%s\"", c->stream, c->group,
            at_redis_reply_error(reply));
    at_io_timer_start(c->kick, 500, 0);
}

static void ensure_group(at_consumer_t *c)
{
    c->group_ready = 0;
    /* "0": jobs pushed before any worker of the role existed are still served */
    if (at_redis_cmd(c->cmd, group_created, c, "XGROUP CREATE %s %s 0 MKSTREAM", c->stream,
                     c->group) != AT_OK)
        at_io_timer_start(c->kick, 500, 0);
}

/* Deliver the entries of an XREADGROUP/XAUTOCLAIM entry array. */
static int deliver(at_consumer_t *c, const redisReply *entries, int reclaimed)
{
    int n = 0;
    for (size_t i = 0; i < entries->elements; i++) {
        const redisReply *e = entries->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
            e->element[0]->type != REDIS_REPLY_STRING)
            continue;
        const char *id = e->element[0]->str;
        const redisReply *fields = e->element[1];
        const unsigned char *payload = NULL;
        size_t len = 0;
        if (fields->type == REDIS_REPLY_ARRAY) {
            for (size_t f = 0; f + 1 < fields->elements; f += 2) {
                const redisReply *k = fields->element[f], *v = fields->element[f + 1];
                if (k->type == REDIS_REPLY_STRING && !strcmp(k->str, AT_QUEUE_FIELD) &&
                    v->type == REDIS_REPLY_STRING) {
                    payload = (const unsigned char *)v->str;
                    len = v->len;
                }
            }
        }
        /* A NIL field list is an entry trimmed away while pending: hand it
         * over with no payload so the owner acks (and reports) it. */
        n++;
        c->credit--; /* before the callback: it may grant and read again */
        c->cb(c, id, payload, len, reclaimed, c->arg);
    }
    return n;
}

static void read_done(at_redis_t *r, redisReply *reply, void *arg)
{
    at_consumer_t *c = arg;
    if (!r)
        return;
    c->reading = 0;
    int reserved = c->read_reserved;
    c->read_reserved = 0;
    c->credit += reserved;
    if (!reply || reply->type == REDIS_REPLY_ERROR) {
        const char *err = at_redis_reply_error(reply);
        if (reply && strstr(err, "NOGROUP")) {
            ensure_group(c);
            return;
        }
        at_warn("event=queue_read_failed stream=%s error=\"%s\"", c->stream, err);
        at_io_timer_start(c->kick, 200, 0);
        return;
    }
    /* [[stream, [[id, [f, v, ...]], ...]]] or nil on timeout */
    if (reply->type == REDIS_REPLY_ARRAY) {
        for (size_t s = 0; s < reply->elements; s++) {
            const redisReply *st = reply->element[s];
            if (st->type == REDIS_REPLY_ARRAY && st->elements == 2 &&
                st->element[1]->type == REDIS_REPLY_ARRAY)
                deliver(c, st->element[1], 0);
        }
    }
    try_claim(c);
    issue_read(c);
}

static void issue_read(at_consumer_t *c)
{
    if (c->stopped || c->reading || c->credit <= 0 || !at_redis_connected(c->rd))
        return;
    if (!c->group_ready) {
        ensure_group(c);
        return;
    }
    int count = c->credit < READ_BATCH_MAX ? c->credit : READ_BATCH_MAX;
    if (at_redis_cmd(c->rd, read_done, c, "XREADGROUP GROUP %s %s COUNT %d BLOCK %d STREAMS %s >",
                     c->group, c->name, count, READ_BLOCK_MS, c->stream) == AT_OK) {
        c->reading = 1;
        c->read_reserved = count;
        c->credit -= count;
    } else
        at_io_timer_start(c->kick, 200, 0);
}

static void claim_done(at_redis_t *r, redisReply *reply, void *arg)
{
    at_consumer_t *c = arg;
    if (!r)
        return;
    c->claiming = 0;
    c->credit += c->claim_reserved;
    c->claim_reserved = 0;
    /* [next-cursor, [entries], [deleted-ids]] */
    if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements < 2) {
        if (reply && reply->type == REDIS_REPLY_ERROR && strstr(reply->str, "NOGROUP"))
            ensure_group(c);
        else
            at_warn("event=queue_reclaim_failed stream=%s error=\"%s\"", c->stream,
                    at_redis_reply_error(reply));
        at_io_timer_start(c->kick, 200, 0); /* the read waited for this claim */
        return;
    }
    if (reply->element[0]->type == REDIS_REPLY_STRING)
        snprintf(c->claim_cursor, sizeof c->claim_cursor, "%s", reply->element[0]->str);
    if (c->stopped) {
        /* claimed while stopping: leave them pending for the next owner */
        return;
    }
    int n = deliver(c, reply->element[1], 1);
    if (n > 0)
        at_info("event=jobs_reclaimed stream=%s count=%d", c->stream, n);
    issue_read(c);
}

static void claim_tick(void *arg)
{
    at_consumer_t *c = arg;
    c->claim_due = 1;
    try_claim(c);
}

static void try_claim(at_consumer_t *c)
{
    if (!c->claim_due || c->stopped || c->claiming || c->credit <= 0 || !c->group_ready)
        return;
    char idle[24];
    int count = c->credit < READ_BATCH_MAX ? c->credit : READ_BATCH_MAX;
    snprintf(idle, sizeof idle, "%lld", (long long)c->claim_timeout_ms);
    if (at_redis_cmd(c->cmd, claim_done, c, "XAUTOCLAIM %s %s %s %s %s COUNT %d", c->stream,
                     c->group, c->name, idle, c->claim_cursor, count) == AT_OK) {
        c->claim_due = 0;
        c->claiming = 1;
        c->claim_reserved = count;
        c->credit -= count;
    }
}

static void rd_up(at_redis_t *r, void *arg)
{
    (void)r;
    issue_read(arg);
}

static void cmd_up(at_redis_t *r, void *arg)
{
    (void)r;
    ensure_group(arg);
}

at_consumer_t *at_consumer_new(at_io_t *io, const at_consumer_opts_t *o)
{
    at_consumer_t *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->io = io;
    c->stream = strdup(o->stream);
    c->group = strdup(o->group);
    c->name = strdup(o->consumer);
    c->claim_timeout_ms = o->claim_timeout_ms;
    c->maxlen = o->maxlen;
    c->cb = o->cb;
    c->arg = o->arg;
    strcpy(c->claim_cursor, "0-0");
    c->kick = at_io_timer_new(io, kick_cb, c);
    c->claim_timer = at_io_timer_new(io, claim_tick, c);
    char label[96];
    snprintf(label, sizeof label, "%s-read", o->stream);
    c->rd = at_redis_new(io, o->redis_url, label);
    snprintf(label, sizeof label, "%s-cmd", o->stream);
    c->cmd = at_redis_new(io, o->redis_url, label);
    if (!c->stream || !c->group || !c->name || !c->kick || !c->claim_timer || !c->rd || !c->cmd) {
        at_consumer_free(c);
        return NULL;
    }
    at_redis_on_up(c->cmd, cmd_up, c);
    at_redis_on_up(c->rd, rd_up, c);
    uint64_t every = (uint64_t)(c->claim_timeout_ms / 2);
    if (every < 50)
        every = 50;
    at_io_timer_start(c->claim_timer, every, every);
    return c;
}

void at_consumer_free(at_consumer_t *c)
{
    if (!c)
        return;
    c->stopped = 1;
    at_redis_free(c->rd);
    at_redis_free(c->cmd);
    at_io_timer_free(c->kick);
    at_io_timer_free(c->claim_timer);
    free(c->stream);
    free(c->group);
    free(c->name);
    free(c);
}

void at_consumer_grant(at_consumer_t *c, int n)
{
    c->credit += n;
    issue_read(c);
}

void at_consumer_stop(at_consumer_t *c)
{
    c->stopped = 1;
    at_io_timer_stop(c->claim_timer);
    at_io_timer_stop(c->kick);
}

int at_consumer_reading(const at_consumer_t *c)
{
    return c->reading;
}

at_redis_t *at_consumer_redis(at_consumer_t *c)
{
    return c->cmd;
}

static void log_failure(at_redis_t *r, redisReply *reply, void *arg)
{
    const char *what = arg;
    if (!r)
        return;
    if (!reply || reply->type == REDIS_REPLY_ERROR)
        at_warn("event=queue_cmd_failed cmd=%s error=\"%s\"", what, at_redis_reply_error(reply));
}

at_err_t at_consumer_ack(at_consumer_t *c, const char *entry_id)
{
    return at_redis_cmd(c->cmd, log_failure, "XACK", "XACK %s %s %s", c->stream, c->group,
                        entry_id);
}

at_err_t at_consumer_move(at_consumer_t *c, const char *entry_id, const char *to,
                          const unsigned char *payload, size_t len, int nextra,
                          const char *const *extra)
{
    if (nextra > 16)
        return AT_EINVAL;
    const char *argv[8 + 16];
    size_t lens[8 + 16];
    char ml[24];
    snprintf(ml, sizeof ml, "%lld", (long long)c->maxlen);
    int n = 0;
    argv[n] = "XADD", lens[n++] = 4;
    argv[n] = to, lens[n++] = strlen(to);
    argv[n] = "MAXLEN", lens[n++] = 6;
    argv[n] = "~", lens[n++] = 1;
    argv[n] = ml, lens[n++] = strlen(ml);
    argv[n] = "*", lens[n++] = 1;
    argv[n] = AT_QUEUE_FIELD, lens[n++] = 1;
    argv[n] = (const char *)payload, lens[n++] = len;
    for (int i = 0; i < nextra; i++)
        argv[n] = extra[i], lens[n++] = strlen(extra[i]);
    /* MULTI/EXEC: the copy and the ack land together or not at all. */
    at_err_t err = at_redis_cmd(c->cmd, log_failure, "MULTI", "MULTI");
    if (err != AT_OK)
        return err;
    at_redis_argv(c->cmd, NULL, NULL, n, argv, lens);
    at_redis_cmd(c->cmd, NULL, NULL, "XACK %s %s %s", c->stream, c->group, entry_id);
    return at_redis_cmd(c->cmd, log_failure, "EXEC", "EXEC");
}

at_err_t at_consumer_touch(at_consumer_t *c, const char *const *ids, int n)
{
    if (n <= 0)
        return AT_OK;
    const char **argv = malloc(sizeof *argv * (size_t)(n + 6));
    if (!argv)
        return AT_ENOMEM;
    int k = 0;
    argv[k++] = "XCLAIM";
    argv[k++] = c->stream;
    argv[k++] = c->group;
    argv[k++] = c->name;
    argv[k++] = "0";
    for (int i = 0; i < n; i++)
        argv[k++] = ids[i];
    argv[k++] = "JUSTID";
    at_err_t err = at_redis_argv(c->cmd, log_failure, "XCLAIM", k, argv, NULL);
    free(argv);
    return err;
}
