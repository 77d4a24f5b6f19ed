/* Private: the loop-specific half of at_io. */
#ifndef ATELIER_IO_IMPL_H
#define ATELIER_IO_IMPL_H

#include <stdint.h>

#include "atelier/io.h"

typedef struct at_io_ops {
    void *(*watch_new)(at_io_t *io, at_io_watch_t *w);
    void (*watch_set)(at_io_watch_t *w, int events);
    void (*watch_free)(at_io_watch_t *w); /* frees impl; the generic part frees w */
    void *(*timer_new)(at_io_t *io, at_io_timer_t *t);
    void (*timer_start)(at_io_timer_t *t, uint64_t ms);
    void (*timer_stop)(at_io_timer_t *t);
    void (*timer_free)(at_io_timer_t *t); /* frees impl and t (possibly later) */
    int (*attach_redis)(at_io_t *io, struct redisAsyncContext *ac);
} at_io_ops_t;

struct at_io {
    const at_io_ops_t *ops;
    void *loop;
};

struct at_io_watch {
    at_io_t *io;
    int fd;
    int events;
    at_io_fd_cb *cb;
    void *arg;
    void *impl;
};

struct at_io_timer {
    at_io_t *io;
    at_io_timer_cb *cb;
    void *arg;
    uint64_t repeat_ms;
    void *impl;
};

#endif
