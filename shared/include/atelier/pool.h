/*
 * A bounded pool of worker threads for the work a loop must not wait for
 * (bcrypt, mkfs and mount, archive extraction, process launches). work runs
 * on a pool thread and must not touch loop state; done runs afterwards on
 * the loop thread with the same arg. Jobs wait in a bounded FIFO when every
 * thread is busy.
 */
#ifndef ATELIER_POOL_H
#define ATELIER_POOL_H

#include "err.h"
#include "io.h"

typedef struct at_pool at_pool_t;

typedef void at_pool_work_fn(void *arg);
/* ran is 0 only for work dropped by at_pool_free before it started. */
typedef void at_pool_done_fn(void *arg, int ran);

at_pool_t *at_pool_new(at_io_t *io, int threads, int queue_max);
/* Waits for running work; work not started yet is dropped, and every
 * submitted item's done is still called (on the caller's thread), so
 * whoever submitted it can free what it owns. */
void at_pool_free(at_pool_t *p);
/* AT_EBUSY when the queue is full. */
at_err_t at_pool_submit(at_pool_t *p, at_pool_work_fn *work, at_pool_done_fn *done, void *arg);
/* Jobs submitted and not yet done (queued + running + finished, waiting for done). */
int at_pool_pending(const at_pool_t *p);

#endif
