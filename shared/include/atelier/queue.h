/*
 * Job queues on Redis Streams: one stream per consumer role (q:session,
 * q:sync, q:backup), one consumer group per role, one consumer per process
 * instance. Delivery is at-least-once: an entry stays in the consumer's
 * pending list until acknowledged; entries a dead instance left pending are
 * taken over with XAUTOCLAIM once idle longer than the claim timeout.
 * Live consumers keep their in-flight entries fresh (at_consumer_touch) so
 * only the dead lose them.
 */
#ifndef ATELIER_QUEUE_H
#define ATELIER_QUEUE_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "io.h"
#include "job.h"
#include "redis.h"

#define AT_QUEUE_DEAD "q:dead"
#define AT_QUEUE_FIELD "j" /* stream entry field holding the msgpack job */
#define AT_STREAM_ID_MAX 48

/* Roles that consume jobs, and their streams. */
const char *at_queue_stream(const char *role); /* NULL for an unknown role */
int at_queue_role_valid(const char *role);
extern const char *const at_queue_roles[]; /* NULL-terminated */

typedef void at_queue_push_cb(at_err_t err, const char *entry_id, void *arg);

/* XADD stream MAXLEN ~ maxlen * j <job>. cb may be NULL. */
at_err_t at_queue_push(at_redis_t *r, const char *stream, const at_job_t *job, int64_t maxlen,
                       at_queue_push_cb *cb, void *arg);

typedef struct at_consumer at_consumer_t;

/* One delivered entry; payload is valid during the call only. */
typedef void at_consumer_cb(at_consumer_t *c, const char *entry_id, const unsigned char *payload,
                            size_t len, int reclaimed, void *arg);

typedef struct at_consumer_opts {
    const char *redis_url;
    const char *stream;
    const char *group;
    const char *consumer;
    int64_t claim_timeout_ms;
    int64_t maxlen; /* for requeues */
    at_consumer_cb *cb;
    void *arg;
} at_consumer_opts_t;

at_consumer_t *at_consumer_new(at_io_t *io, const at_consumer_opts_t *opts);
void at_consumer_free(at_consumer_t *c);

/* Allow n more deliveries (the caller's free job slots). */
void at_consumer_grant(at_consumer_t *c, int n);
/* Stop reading and reclaiming (graceful shutdown); acks still work. */
void at_consumer_stop(at_consumer_t *c);
/* True while a read is outstanding (a stopped consumer may still deliver the
 * entries that read returns). */
int at_consumer_reading(const at_consumer_t *c);

/* Acknowledge: the entry's effect is durable. */
at_err_t at_consumer_ack(at_consumer_t *c, const char *entry_id);
/* Atomically add payload to stream `to` (extra field/value pairs appended)
 * and acknowledge entry_id: used for retries (to = own stream) and dead
 * letters (to = q:dead). */
at_err_t at_consumer_move(at_consumer_t *c, const char *entry_id, const char *to,
                          const unsigned char *payload, size_t len, int nextra,
                          const char *const *extra);
/* Reset the idle time of entries this consumer still works on. */
at_err_t at_consumer_touch(at_consumer_t *c, const char *const *ids, int n);

/* The command connection (for replies and other small commands). */
at_redis_t *at_consumer_redis(at_consumer_t *c);

#endif
