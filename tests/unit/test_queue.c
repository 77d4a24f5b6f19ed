/*
 * Queue primitives against a real Redis (see queue_fixture.h): push and
 * consume, ack, reclaim of a dead consumer's entry, touch, move to q:dead,
 * and credit. Every wait is bounded by LIMIT_MS.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/event.h>

#include "queue_fixture.h"

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

/* Reclaimed entries count against the credit like new ones: a consumer granted
 * 2 that finds 2 idle entries of a dead consumer and 2 new ones takes 2. */
static void test_credit_with_reclaim(void **state)
{
    fx_t *fx = *state;
    at_job_t jobs[4];
    char ids[4][AT_STREAM_ID_MAX];
    at_consumer_grant(consumer(fx, 0, "A", 200), 2);
    for (int i = 0; i < 2; i++) {
        make_job(&jobs[i], "ping");
        push(fx, &jobs[i], ids[i]);
    }
    wait_for(fx, 0, 2, "delivery to A");
    at_consumer_free(fx->consumers[0]); /* dies with both pending */
    fx->consumers[0] = NULL;
    at_consumer_grant(consumer(fx, 1, "B", 200), 2);
    run_for(fx, 500); /* A's entries are now idle past the claim timeout */
    for (int i = 2; i < 4; i++) {
        make_job(&jobs[i], "ping");
        push(fx, &jobs[i], ids[i]);
    }
    run_for(fx, 1500); /* longer than one blocking read */
    for (int i = 0; i < 4; i++)
        at_job_clear(&jobs[i]);
    int reclaimed = 0;
    for (int i = 0; i < fx->sinks[1].n; i++)
        reclaimed += fx->sinks[1].got[i].reclaimed;
    if (fx->sinks[1].n != 2)
        fail_msg("granted 2, consumer B received %d entries (%d reclaimed)", fx->sinks[1].n,
                 reclaimed);
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
        cmocka_unit_test_setup_teardown(test_credit_with_reclaim, setup, teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
