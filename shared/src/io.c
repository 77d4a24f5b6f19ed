/* The loop-independent half of at_io: allocation and bookkeeping. */
#include <stdlib.h>

#include "atelier/io.h"
#include "io_impl.h"

void at_io_free(at_io_t *io)
{
    free(io);
}

at_io_watch_t *at_io_watch_new(at_io_t *io, int fd, at_io_fd_cb *cb, void *arg)
{
    at_io_watch_t *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->io = io;
    w->fd = fd;
    w->cb = cb;
    w->arg = arg;
    w->impl = io->ops->watch_new(io, w);
    return w;
}

void at_io_watch_set(at_io_watch_t *w, int events)
{
    if (w->events == events)
        return;
    w->events = events;
    w->io->ops->watch_set(w, events);
}

void at_io_watch_free(at_io_watch_t *w)
{
    if (!w)
        return;
    w->io->ops->watch_free(w);
    free(w);
}

at_io_timer_t *at_io_timer_new(at_io_t *io, at_io_timer_cb *cb, void *arg)
{
    at_io_timer_t *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->io = io;
    t->cb = cb;
    t->arg = arg;
    t->impl = io->ops->timer_new(io, t);
    if (!t->impl) {
        free(t);
        return NULL;
    }
    return t;
}

void at_io_timer_start(at_io_timer_t *t, uint64_t ms, uint64_t repeat_ms)
{
    t->repeat_ms = repeat_ms;
    t->io->ops->timer_start(t, ms);
}

void at_io_timer_stop(at_io_timer_t *t)
{
    t->io->ops->timer_stop(t);
}

void at_io_timer_free(at_io_timer_t *t)
{
    if (t)
        t->io->ops->timer_free(t);
}

at_err_t at_io_attach_redis(at_io_t *io, struct redisAsyncContext *ac)
{
    return io->ops->attach_redis(io, ac) == 0 ? AT_OK : AT_EREDIS;
}
