/* Fixture of the queue tests: a private redis-server (started by the group
 * setup, stopped by PID in the group teardown) and, per test, a libevent loop
 * with a producer connection, up to four consumers and what each received. */
#ifndef ATELIER_TEST_QUEUE_FIXTURE_H
#define ATELIER_TEST_QUEUE_FIXTURE_H

#include <hiredis/hiredis.h>
#include <stdint.h>

#include "atelier/queue.h"

#define LIMIT_MS 5000 /* longest wait for anything */
#define GROUP "workers"
#define STREAM "q:sync"

struct event_base;
struct event;

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

typedef int done_fn(fx_t *fx, void *arg);

int group_setup(void **state);
int group_teardown(void **state);
int setup(void **state); /* *state = a new fx_t */
int teardown(void **state);

/* Run the loop until done() (never if NULL) or ms pass; returns done(). */
int run_until(fx_t *fx, done_fn *done, void *arg, int ms);
void run_for(fx_t *fx, int ms);

/* A consumer of STREAM/GROUP in fx->consumers[slot], delivering to sinks[slot]. */
at_consumer_t *consumer(fx_t *fx, int slot, const char *name, int64_t claim_ms);
void make_job(at_job_t *job, const char *kind);
/* Push a job to STREAM and wait for its entry id. */
void push(fx_t *fx, const at_job_t *job, char id[AT_STREAM_ID_MAX]);
/* Wait until sinks[slot] holds n entries; fail after LIMIT_MS. */
void wait_for(fx_t *fx, int slot, int n, const char *what);
void assert_same_job(const delivery_t *d, const at_job_t *want);

/* Through a blocking connection: an integer reply (or the first element of
 * an array reply), the pending count of GROUP, one pending entry. */
long long sync_int(fx_t *fx, const char *fmt, const char *a, const char *b);
long long pending(fx_t *fx);
int pending_entry(fx_t *fx, const char *id, char owner[64], long long *idle_ms);

#endif
