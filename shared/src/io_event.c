/* at_io on libevent (the workers' loop). */
#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <stdlib.h>

#include "atelier/io.h"
#include "io_impl.h"

static void ev_fd_cb(evutil_socket_t fd, short what, void *arg)
{
    at_io_watch_t *w = arg;
    int events = ((what & EV_READ) ? AT_IO_READ : 0) | ((what & EV_WRITE) ? AT_IO_WRITE : 0);
    w->cb(fd, events, w->arg);
}

static void *ev_watch_new(at_io_t *io, at_io_watch_t *w)
{
    (void)io;
    (void)w;
    return NULL; /* events are created lazily in set, once flags are known */
}

static void ev_watch_set(at_io_watch_t *w, int events)
{
    struct event *ev = w->impl;
    if (ev)
        event_del(ev);
    if (events == 0)
        return;
    short what = EV_PERSIST | ((events & AT_IO_READ) ? EV_READ : 0) |
                 ((events & AT_IO_WRITE) ? EV_WRITE : 0);
    if (!ev) {
        ev = event_new(w->io->loop, w->fd, what, ev_fd_cb, w);
        if (!ev)
            abort(); /* libevent only fails here on allocation failure */
        w->impl = ev;
    } else {
        event_assign(ev, w->io->loop, w->fd, what, ev_fd_cb, w);
    }
    event_add(ev, NULL);
}

static void ev_watch_free(at_io_watch_t *w)
{
    if (w->impl)
        event_free(w->impl);
}

static void ev_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    at_io_timer_t *t = arg;
    if (t->repeat_ms) {
        struct timeval tv = {(time_t)(t->repeat_ms / 1000),
                             (suseconds_t)(t->repeat_ms % 1000) * 1000};
        evtimer_add((struct event *)t->impl, &tv);
    }
    t->cb(t->arg);
}

static void *ev_timer_new(at_io_t *io, at_io_timer_t *t)
{
    return evtimer_new((struct event_base *)io->loop, ev_timer_cb, t);
}

static void ev_timer_start(at_io_timer_t *t, uint64_t ms)
{
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    evtimer_add((struct event *)t->impl, &tv);
}

static void ev_timer_stop(at_io_timer_t *t)
{
    evtimer_del((struct event *)t->impl);
}

static void ev_timer_free(at_io_timer_t *t)
{
    event_free(t->impl);
    free(t);
}

static int ev_attach_redis(at_io_t *io, struct redisAsyncContext *ac)
{
    return redisLibeventAttach(ac, io->loop);
}

static const at_io_ops_t ev_ops = {
    ev_watch_new,   ev_watch_set,  ev_watch_free, ev_timer_new,
    ev_timer_start, ev_timer_stop, ev_timer_free, ev_attach_redis,
};

at_io_t *at_io_event_new(struct event_base *base)
{
    at_io_t *io = calloc(1, sizeof *io);
    if (!io)
        return NULL;
    io->ops = &ev_ops;
    io->loop = base;
    return io;
}
