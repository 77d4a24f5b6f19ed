#include "queue_fixture.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

static struct {
    pid_t pid;
    char dir[64];
    char sock[128];
    char url[160];
} g_redis;

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static void stop_redis(void)
{
    if (g_redis.pid > 0) {
        kill(g_redis.pid, SIGTERM);
        int status, reaped = 0;
        for (int i = 0; i < 300 && !reaped; i++) {
            reaped = waitpid(g_redis.pid, &status, WNOHANG) == g_redis.pid;
            if (!reaped)
                usleep(10000);
        }
        if (!reaped) {
            kill(g_redis.pid, SIGKILL);
            waitpid(g_redis.pid, &status, 0);
        }
        g_redis.pid = 0;
    }
    if (g_redis.dir[0])
        nftw(g_redis.dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    g_redis.dir[0] = '\0';
}

int group_setup(void **state)
{
    (void)state;
    strcpy(g_redis.dir, "/tmp/atelier-uq-XXXXXX");
    if (!mkdtemp(g_redis.dir)) {
        g_redis.dir[0] = '\0';
        return -1;
    }
    snprintf(g_redis.sock, sizeof g_redis.sock, "%s/redis.sock", g_redis.dir);
    snprintf(g_redis.url, sizeof g_redis.url, "unix://%s", g_redis.sock);
    char log[128];
    snprintf(log, sizeof log, "%s/redis.log", g_redis.dir);
    pid_t parent = getpid();
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        return stop_redis(), -1;
    if (pid == 0) {
        /* die with the test program even if it cannot run its teardown */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(1);
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execl(ATELIER_REDIS_SERVER, "redis-server", "--port", "0", "--unixsocket", g_redis.sock,
              "--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", g_redis.dir,
              (char *)NULL);
        _exit(127);
    }
    g_redis.pid = pid;
    for (int i = 0; i < LIMIT_MS / 10; i++) {
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            g_redis.pid = 0;
            fprintf(stderr, "redis-server exited at start; see its log above\n");
            return stop_redis(), -1;
        }
        redisContext *c = redisConnectUnix(g_redis.sock);
        redisReply *r = c && !c->err ? redisCommand(c, "PING") : NULL;
        int up = r && r->type == REDIS_REPLY_STATUS && !strcmp(r->str, "PONG");
        if (r)
            freeReplyObject(r);
        if (c)
            redisFree(c);
        if (up)
            return 0;
        usleep(10000);
    }
    fprintf(stderr, "redis-server did not answer on %s within %d ms\n", g_redis.sock, LIMIT_MS);
    return stop_redis(), -1;
}

int group_teardown(void **state)
{
    (void)state;
    stop_redis();
    return 0;
}

static void on_entry(at_consumer_t *c, const char *id, const unsigned char *payload, size_t len,
                     int reclaimed, void *arg)
{
    (void)c;
    sink_t *s = arg;
    assert_true(s->n < 16);
    delivery_t *d = &s->got[s->n++];
    snprintf(d->id, sizeof d->id, "%s", id);
    d->payload = malloc(len ? len : 1);
    if (len) /* an entry trimmed while pending comes with no payload */
        memcpy(d->payload, payload, len);
    d->len = len;
    d->reclaimed = reclaimed;
    d->at_us = at_mono_us();
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg; /* only wakes the loop up */
}

/* Run the loop until done() or ms pass; returns done(). */
int run_until(fx_t *fx, done_fn *done, void *arg, int ms)
{
    int64_t end = at_mono_us() + (int64_t)ms * 1000;
    while (!(done && done(fx, arg)) && at_mono_us() < end)
        event_base_loop(fx->base, EVLOOP_ONCE);
    return done ? done(fx, arg) : 1;
}

void run_for(fx_t *fx, int ms)
{
    run_until(fx, NULL, NULL, ms);
}

static int producer_up(fx_t *fx, void *arg)
{
    (void)arg;
    return at_redis_connected(fx->producer);
}

int setup(void **state)
{
    fx_t *fx = calloc(1, sizeof *fx);
    assert_non_null(fx);
    fx->sync = redisConnectUnix(g_redis.sock);
    assert_true(fx->sync && !fx->sync->err);
    freeReplyObject(redisCommand(fx->sync, "FLUSHALL"));
    fx->base = event_base_new();
    fx->tick = event_new(fx->base, -1, EV_PERSIST, tick_cb, NULL);
    struct timeval tv = {0, 20000};
    event_add(fx->tick, &tv);
    fx->io = at_io_event_new(fx->base);
    fx->producer = at_redis_new(fx->io, g_redis.url, "producer");
    assert_non_null(fx->producer);
    *state = fx;
    if (!run_until(fx, producer_up, NULL, LIMIT_MS))
        fail_msg("producer did not connect to %s", g_redis.url);
    return 0;
}

int teardown(void **state)
{
    fx_t *fx = *state;
    for (int i = 0; i < 4; i++) {
        at_consumer_free(fx->consumers[i]);
        for (int k = 0; k < fx->sinks[i].n; k++)
            free(fx->sinks[i].got[k].payload);
    }
    at_redis_free(fx->producer);
    event_free(fx->tick);
    at_io_free(fx->io);
    event_base_free(fx->base);
    redisFree(fx->sync);
    free(fx);
    return 0;
}

at_consumer_t *consumer(fx_t *fx, int slot, const char *name, int64_t claim_ms)
{
    at_consumer_opts_t o = {.redis_url = g_redis.url,
                            .stream = STREAM,
                            .group = GROUP,
                            .consumer = name,
                            .claim_timeout_ms = claim_ms,
                            .maxlen = 10000,
                            .cb = on_entry,
                            .arg = &fx->sinks[slot]};
    fx->consumers[slot] = at_consumer_new(fx->io, &o);
    assert_non_null(fx->consumers[slot]);
    return fx->consumers[slot];
}

typedef struct pushed {
    int done;
    at_err_t err;
    char id[AT_STREAM_ID_MAX];
} pushed_t;

static void push_cb(at_err_t err, const char *entry_id, void *arg)
{
    pushed_t *p = arg;
    p->done = 1;
    p->err = err;
    snprintf(p->id, sizeof p->id, "%s", entry_id ? entry_id : "");
}

static int push_done(fx_t *fx, void *arg)
{
    (void)fx;
    return ((pushed_t *)arg)->done;
}

/* Push a job to STREAM and wait for its entry id. */
void push(fx_t *fx, const at_job_t *job, char id[AT_STREAM_ID_MAX])
{
    pushed_t p = {0};
    assert_int_equal(at_queue_push(fx->producer, STREAM, job, 10000, push_cb, &p), AT_OK);
    if (!run_until(fx, push_done, &p, LIMIT_MS))
        fail_msg("XADD got no reply within %d ms", LIMIT_MS);
    assert_int_equal(p.err, AT_OK);
    snprintf(id, AT_STREAM_ID_MAX, "%s", p.id);
}

void make_job(at_job_t *job, const char *kind)
{
    json_t *args = json_pack("{s:s, s:i, s:[b, n]}", "path", "src/main.py", "n", -3, "l", 1);
    assert_int_equal(at_job_init(job, kind, "sess-1", "reply:gw:1", args), AT_OK);
    json_decref(args);
}

static int got_at_least(fx_t *fx, void *arg)
{
    const int *want = arg; /* {slot, n} */
    return fx->sinks[want[0]].n >= want[1];
}

void wait_for(fx_t *fx, int slot, int n, const char *what)
{
    int want[2] = {slot, n};
    if (!run_until(fx, got_at_least, want, LIMIT_MS))
        fail_msg("%s: consumer %d got %d entries within %d ms, want %d", what, slot,
                 fx->sinks[slot].n, LIMIT_MS, n);
}

long long sync_int(fx_t *fx, const char *fmt, const char *a, const char *b)
{
    redisReply *r = redisCommand(fx->sync, fmt, a, b);
    assert_non_null(r);
    long long v = -1;
    if (r->type == REDIS_REPLY_INTEGER)
        v = r->integer;
    else if (r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
             r->element[0]->type == REDIS_REPLY_INTEGER)
        v = r->element[0]->integer; /* XPENDING summary: count first */
    freeReplyObject(r);
    return v;
}

long long pending(fx_t *fx)
{
    return sync_int(fx, "XPENDING %s %s", STREAM, GROUP);
}

/* Owner and idle time of one pending entry; 0 if it is not pending. */
int pending_entry(fx_t *fx, const char *id, char owner[64], long long *idle_ms)
{
    redisReply *r = redisCommand(fx->sync, "XPENDING %s %s %s %s 1", STREAM, GROUP, id, id);
    assert_non_null(r);
    int found = r->type == REDIS_REPLY_ARRAY && r->elements == 1;
    if (found) {
        redisReply *e = r->element[0];
        snprintf(owner, 64, "%s", e->element[1]->str);
        *idle_ms = e->element[2]->integer;
    }
    freeReplyObject(r);
    return found;
}

void assert_same_job(const delivery_t *d, const at_job_t *want)
{
    at_job_t job;
    char err[128];
    assert_int_equal(at_job_decode(d->payload, d->len, &job, err, sizeof err), AT_OK);
    assert_string_equal(job.id, want->id);
    assert_string_equal(job.kind, want->kind);
    assert_string_equal(job.session, want->session);
    assert_string_equal(job.reply_to, want->reply_to);
    assert_int_equal(job.enqueued_at, want->enqueued_at);
    json_t *a = at_job_args_json(&job), *b = at_job_args_json(want);
    assert_true(json_equal(a, b));
    json_decref(a);
    json_decref(b);
    at_job_clear(&job);
}
