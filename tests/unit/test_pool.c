/*
 * at_pool: work runs on the pool's threads, done runs on the loop thread in
 * the same process, a full queue says AT_EBUSY, and freeing the pool calls
 * done for everything submitted (ran = 0 for work that never started).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/event.h>
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#include "atelier/io.h"
#include "atelier/pool.h"

typedef struct {
    atomic_int worked;
    int done, dropped;
    pthread_t loop_thread;
    int wrong_thread;
    struct event_base *base;
    int expect;
} state_t;

typedef struct {
    state_t *st;
    int sleep_ms;
} item_t;

static void work(void *arg)
{
    item_t *it = arg;
    if (it->sleep_ms)
        usleep((useconds_t)it->sleep_ms * 1000);
    atomic_fetch_add(&it->st->worked, 1);
}

static void done(void *arg, int ran)
{
    item_t *it = arg;
    state_t *st = it->st;
    if (!pthread_equal(pthread_self(), st->loop_thread))
        st->wrong_thread++;
    if (ran)
        st->done++;
    else
        st->dropped++;
    if (st->base && st->done == st->expect)
        event_base_loopbreak(st->base);
    free(it);
}

static item_t *item(state_t *st, int sleep_ms)
{
    item_t *it = calloc(1, sizeof *it);
    it->st = st;
    it->sleep_ms = sleep_ms;
    return it;
}

static void test_work_then_done_on_loop(void **state)
{
    (void)state;
    state_t st = {.loop_thread = pthread_self(), .expect = 200};
    st.base = event_base_new();
    at_io_t *io = at_io_event_new(st.base);
    at_pool_t *p = at_pool_new(io, 4, 1000);
    assert_non_null(p);
    for (int i = 0; i < 200; i++)
        assert_int_equal(at_pool_submit(p, work, done, item(&st, i % 3)), AT_OK);
    struct timeval tv = {10, 0};
    event_base_loopexit(st.base, &tv);
    event_base_dispatch(st.base);
    assert_int_equal(atomic_load(&st.worked), 200);
    assert_int_equal(st.done, 200);
    assert_int_equal(st.wrong_thread, 0);
    assert_int_equal(at_pool_pending(p), 0);
    at_pool_free(p);
    at_io_free(io);
    event_base_free(st.base);
}

static void test_full_queue_and_free(void **state)
{
    (void)state;
    state_t st = {.loop_thread = pthread_self()};
    struct event_base *base = event_base_new();
    at_io_t *io = at_io_event_new(base);
    at_pool_t *p = at_pool_new(io, 1, 2);
    assert_non_null(p);
    /* one running (slow), two queued, the next refused */
    assert_int_equal(at_pool_submit(p, work, done, item(&st, 200)), AT_OK);
    usleep(50000);
    assert_int_equal(at_pool_submit(p, work, done, item(&st, 0)), AT_OK);
    assert_int_equal(at_pool_submit(p, work, done, item(&st, 0)), AT_OK);
    item_t *extra = item(&st, 0);
    assert_int_equal(at_pool_submit(p, work, done, extra), AT_EBUSY);
    free(extra);
    /* free waits for the running one and drops the queued ones */
    at_pool_free(p);
    assert_int_equal(st.done + st.dropped, 3);
    assert_true(st.done >= 1);
    assert_int_equal(atomic_load(&st.worked), st.done);
    at_io_free(io);
    event_base_free(base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_work_then_done_on_loop),
        cmocka_unit_test(test_full_queue_and_free),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
