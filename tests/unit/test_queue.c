/*
 * Queue primitives against a real Redis: the group setup starts a private
 * redis-server on a Unix socket in a temporary folder and the group teardown
 * stops it by PID. Each test runs a libevent loop in bounded steps; none can
 * wait longer than LIMIT_MS for anything.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "atelier/queue.h"

#define LIMIT_MS 5000
#define GROUP "workers"
#define STREAM "q:sync"

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
        int status;
        for (int i = 0; i < 300 && waitpid(g_redis.pid, &status, WNOHANG) == 0; i++)
            usleep(10000);
        if (kill(g_redis.pid, 0) == 0) {
            kill(g_redis.pid, SIGKILL);
            waitpid(g_redis.pid, &status, 0);
        }
        g_redis.pid = 0;
    }
    if (g_redis.dir[0])
        nftw(g_redis.dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    g_redis.dir[0] = '\0';
}

static int group_setup(void **state)
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

static int group_teardown(void **state)
{
    (void)state;
    stop_redis();
    return 0;
}

/* What one consumer was handed. */
typedef struct delivery {
    char id[AT_STREAM_ID_MAX];
    unsigned char *payload;
    size_t len;
    int reclaimed;
    int64_t at_us;
} delivery_t;

typedef struct sink {
    delivery_t got[16];
    int n;
} sink_t;

typedef struct fx {
    struct event_base *base;
    struct event *tick;
    at_io_t *io;
    at_redis_t *producer;
    redisContext *sync;
    at_consumer_t *consumers[4];
    sink_t sinks[4];
} fx_t;

static void on_entry(at_consumer_t *c, const char *id, const unsigned char *payload, size_t len,
                     int reclaimed, void *arg)
{
    (void)c;
    sink_t *s = arg;
    assert_true(s->n < 16);
    delivery_t *d = &s->got[s->n++];
    snprintf(d->id, sizeof d->id, "%s", id);
    d->payload = malloc(len ? len : 1);
    memcpy(d->payload, payload, len);
    d->len = len;
    d->reclaimed = reclaimed;
    d->at_us = at_mono_us();
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg; /* only wakes the loop up */
}

typedef int done_fn(fx_t *fx, void *arg);

/* Run the loop until done() or ms pass; returns done(). */
static int run_until(fx_t *fx, done_fn *done, void *arg, int ms)
{
    int64_t end = at_mono_us() + (int64_t)ms * 1000;
    while (!(done && done(fx, arg)) && at_mono_us() < end)
        event_base_loop(fx->base, EVLOOP_ONCE);
    return done ? done(fx, arg) : 1;
}

static void run_for(fx_t *fx, int ms)
{
    run_until(fx, NULL, NULL, ms);
}

static int producer_up(fx_t *fx, void *arg)
{
    (void)arg;
    return at_redis_connected(fx->producer);
}

static int setup(void **state)
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

static int teardown(void **state)
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

static at_consumer_t *consumer(fx_t *fx, int slot, const char *name, int64_t claim_ms)
{
    at_consumer_opts_t o = {.redis_url = g_redis.url, .stream = STREAM, .group = GROUP,
                            .consumer = name, .claim_timeout_ms = claim_ms, .maxlen = 10000,
                            .cb = on_entry, .arg = &fx->sinks[slot]};
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
static void push(fx_t *fx, const at_job_t *job, char id[AT_STREAM_ID_MAX])
{
    pushed_t p = {0};
    assert_int_equal(at_queue_push(fx->producer, STREAM, job, 10000, push_cb, &p), AT_OK);
    if (!run_until(fx, push_done, &p, LIMIT_MS))
        fail_msg("XADD got no reply within %d ms", LIMIT_MS);
    assert_int_equal(p.err, AT_OK);
    snprintf(id, AT_STREAM_ID_MAX, "%s", p.id);
}

static void make_job(at_job_t *job, const char *kind)
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

static void wait_for(fx_t *fx, int slot, int n, const char *what)
{
    int want[2] = {slot, n};
    if (!run_until(fx, got_at_least, want, LIMIT_MS))
        fail_msg("%s: consumer %d got %d entries within %d ms, want %d", what, slot,
                 fx->sinks[slot].n, LIMIT_MS, n);
}

static long long sync_int(fx_t *fx, const char *fmt, const char *a, const char *b)
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

static long long pending(fx_t *fx)
{
    return sync_int(fx, "XPENDING %s %s", STREAM, GROUP);
}

/* Owner and idle time of one pending entry; 0 if it is not pending. */
static int pending_entry(fx_t *fx, const char *id, char owner[64], long long *idle_ms)
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

static void assert_same_job(const delivery_t *d, const at_job_t *want)
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

static void test_push_consume(void **state)
{
    fx_t *fx = *state;
    at_consumer_grant(consumer(fx, 0, "A", 30000), 1);
    at_job_t job;
    make_job(&job, "ping");
    char id[AT_STREAM_ID_MAX];
    push(fx, &job, id);
    wait_for(fx, 0, 1, "push then consume");
    assert_string_equal(fx->sinks[0].got[0].id, id);
    assert_int_equal(fx->sinks[0].got[0].reclaimed, 0);
    assert_same_job(&fx->sinks[0].got[0], &job);
    at_job_clear(&job);
}

static int none_pending(fx_t *fx, void *arg)
{
    (void)arg;
    return pending(fx) == 0;
}

static void test_ack(void **state)
{
    fx_t *fx = *state;
    at_consumer_t *a = consumer(fx, 0, "A", 30000);
    at_consumer_grant(a, 1);
    at_job_t job;
    make_job(&job, "ping");
    char id[AT_STREAM_ID_MAX];
    push(fx, &job, id);
    wait_for(fx, 0, 1, "ack");
    assert_int_equal(pending(fx), 1);
    assert_int_equal(at_consumer_ack(a, fx->sinks[0].got[0].id), AT_OK);
    if (!run_until(fx, none_pending, NULL, LIMIT_MS))
        fail_msg("entry still pending %d ms after XACK", LIMIT_MS);
    /* acknowledged, not deleted */
    assert_int_equal(sync_int(fx, "XLEN %s", STREAM, NULL), 1);
    at_job_clear(&job);
}

static void test_reclaim(void **state)
{
    fx_t *fx = *state;
    at_consumer_grant(consumer(fx, 0, "A", 200), 1);
    at_job_t job;
    make_job(&job, "sync.push");
    char id[AT_STREAM_ID_MAX];
    push(fx, &job, id);
    wait_for(fx, 0, 1, "first delivery");
    /* A dies without acknowledging */
    at_consumer_free(fx->consumers[0]);
    fx->consumers[0] = NULL;
    char owner[64];
    long long idle;
    assert_true(pending_entry(fx, id, owner, &idle));
    assert_string_equal(owner, "A");

    at_consumer_grant(consumer(fx, 1, "B", 200), 1);
    wait_for(fx, 1, 1, "reclaim of a dead consumer's entry");
    const delivery_t *d = &fx->sinks[1].got[0];
    assert_string_equal(d->id, id);
    assert_int_equal(d->reclaimed, 1);
    assert_same_job(d, &job);
    /* not before the claim timeout */
    assert_true(d->at_us - fx->sinks[0].got[0].at_us >= 200 * 1000);
    assert_true(pending_entry(fx, id, owner, &idle));
    assert_string_equal(owner, "B");
    at_job_clear(&job);
}

typedef struct toucher {
    at_consumer_t *c;
    const char *id;
    int n;
} toucher_t;

static void touch_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    toucher_t *t = arg;
    const char *ids[] = {t->id};
    assert_int_equal(at_consumer_touch(t->c, ids, 1), AT_OK);
    t->n++;
}

static void test_touch(void **state)
{
    fx_t *fx = *state;
    at_consumer_t *a = consumer(fx, 0, "A", 200);
    at_consumer_grant(a, 1);
    at_job_t job;
    make_job(&job, "ping");
    char id[AT_STREAM_ID_MAX];
    push(fx, &job, id);
    wait_for(fx, 0, 1, "delivery");
    at_consumer_grant(consumer(fx, 1, "B", 200), 1);

    toucher_t t = {a, fx->sinks[0].got[0].id, 0};
    struct event *ev = event_new(fx->base, -1, EV_PERSIST, touch_cb, &t);
    struct timeval every = {0, 50000};
    event_add(ev, &every);
    run_for(fx, 800);
    event_free(ev);
    assert_true(t.n >= 8);

    char owner[64];
    long long idle;
    assert_true(pending_entry(fx, id, owner, &idle));
    assert_string_equal(owner, "A");
    assert_true(idle < 200);
    assert_int_equal(fx->sinks[1].n, 0);

    /* without the touches the entry does age (so the touches were the cause) */
    at_consumer_free(fx->consumers[1]);
    fx->consumers[1] = NULL;
    run_for(fx, 300);
    assert_true(pending_entry(fx, id, owner, &idle));
    assert_true(idle >= 250);
    at_job_clear(&job);
}

static int moved(fx_t *fx, void *arg)
{
    (void)arg;
    return sync_int(fx, "XLEN %s", AT_QUEUE_DEAD, NULL) == 1 && pending(fx) == 0;
}

static void test_move_dead(void **state)
{
    fx_t *fx = *state;
    at_consumer_t *a = consumer(fx, 0, "A", 30000);
    at_consumer_grant(a, 1);
    at_job_t job;
    make_job(&job, "backup.run");
    char id[AT_STREAM_ID_MAX];
    push(fx, &job, id);
    wait_for(fx, 0, 1, "delivery");
    const delivery_t *d = &fx->sinks[0].got[0];
    const char *extra[] = {"error", "write /var/ws/3f2a: No space left", "attempts", "5"};
    assert_int_equal(at_consumer_move(a, d->id, AT_QUEUE_DEAD, d->payload, d->len, 4, extra),
                     AT_OK);
    if (!run_until(fx, moved, NULL, LIMIT_MS))
        fail_msg("after move: %lld entries in %s, %lld pending; want 1 and 0",
                 sync_int(fx, "XLEN %s", AT_QUEUE_DEAD, NULL), AT_QUEUE_DEAD, pending(fx));

    redisReply *r = redisCommand(fx->sync, "XRANGE %s - +", AT_QUEUE_DEAD);
    assert_true(r && r->type == REDIS_REPLY_ARRAY && r->elements == 1);
    redisReply *f = r->element[0]->element[1];
    assert_int_equal(f->elements, 6);
    assert_string_equal(f->element[0]->str, AT_QUEUE_FIELD);
    assert_int_equal(f->element[1]->len, d->len);
    assert_memory_equal(f->element[1]->str, d->payload, d->len);
    for (int i = 0; i < 4; i++)
        assert_string_equal(f->element[2 + i]->str, extra[i]);
    freeReplyObject(r);
    at_job_clear(&job);
}

static void test_credit(void **state)
{
    fx_t *fx = *state;
    /* pushed before any consumer (or group) exists: still served */
    at_job_t jobs[5];
    char ids[5][AT_STREAM_ID_MAX];
    for (int i = 0; i < 5; i++) {
        make_job(&jobs[i], "ping");
        push(fx, &jobs[i], ids[i]);
    }
    at_consumer_t *a = consumer(fx, 0, "A", 30000);
    at_consumer_grant(a, 2);
    wait_for(fx, 0, 2, "credit 2");
    run_for(fx, 500);
    assert_int_equal(fx->sinks[0].n, 2);
    at_consumer_grant(a, 1);
    wait_for(fx, 0, 3, "one more credit");
    run_for(fx, 300);
    assert_int_equal(fx->sinks[0].n, 3);
    at_consumer_grant(a, 10);
    wait_for(fx, 0, 5, "the rest");
    run_for(fx, 100);
    assert_int_equal(fx->sinks[0].n, 5);
    for (int i = 0; i < 5; i++) {
        assert_string_equal(fx->sinks[0].got[i].id, ids[i]);
        assert_same_job(&fx->sinks[0].got[i], &jobs[i]);
        at_job_clear(&jobs[i]);
    }
    assert_int_equal(pending(fx), 5);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_push_consume, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ack, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reclaim, setup, teardown),
        cmocka_unit_test_setup_teardown(test_touch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_move_dead, setup, teardown),
        cmocka_unit_test_setup_teardown(test_credit, setup, teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
