/* at_io on libuv (the gateway's loop, shared with libwebsockets). */
#include <hiredis/adapters/libuv.h>
#include <stdlib.h>
#include <uv.h>

#include "atelier/io.h"
#include "io_impl.h"

static void uv_fd_cb(uv_poll_t *h, int status, int what)
{
    at_io_watch_t *w = h->data;
    int events = ((what & UV_READABLE) ? AT_IO_READ : 0) | ((what & UV_WRITABLE) ? AT_IO_WRITE : 0);
    if (status < 0) /* report errors as readiness: the owner's read sees the error */
        events = w->events;
    w->cb(w->fd, events, w->arg);
}

static void *uv_watch_new(at_io_t *io, at_io_watch_t *w)
{
    uv_poll_t *h = malloc(sizeof *h);
    if (!h)
        return NULL;
    if (uv_poll_init(io->loop, h, w->fd) != 0) {
        free(h);
        return NULL;
    }
    h->data = w;
    return h;
}

static void uv_watch_set(at_io_watch_t *w, int events)
{
    uv_poll_t *h = w->impl;
    if (events == 0) {
        uv_poll_stop(h);
        return;
    }
    int what =
        ((events & AT_IO_READ) ? UV_READABLE : 0) | ((events & AT_IO_WRITE) ? UV_WRITABLE : 0);
    uv_poll_start(h, what, uv_fd_cb);
}

static void close_free(uv_handle_t *h)
{
    free(h);
}

static void uv_watch_free(at_io_watch_t *w)
{
    uv_poll_t *h = w->impl;
    uv_poll_stop(h);
    h->data = NULL;
    uv_close((uv_handle_t *)h, close_free);
}

static void uv_timer_fire(uv_timer_t *h)
{
    at_io_timer_t *t = h->data;
    t->cb(t->arg);
}

static void *uv_timer_new_(at_io_t *io, at_io_timer_t *t)
{
    uv_timer_t *h = malloc(sizeof *h);
    if (!h)
        return NULL;
    uv_timer_init(io->loop, h);
    h->data = t;
    return h;
}

static void uv_timer_start_(at_io_timer_t *t, uint64_t ms)
{
    uv_timer_start(t->impl, uv_timer_fire, ms, t->repeat_ms);
}

static void uv_timer_stop_(at_io_timer_t *t)
{
    uv_timer_stop(t->impl);
}

static void uv_timer_free_(at_io_timer_t *t)
{
    uv_timer_t *h = t->impl;
    uv_timer_stop(h);
    h->data = NULL;
    uv_close((uv_handle_t *)h, close_free);
    free(t);
}

static int uv_attach_redis(at_io_t *io, struct redisAsyncContext *ac)
{
    return redisLibuvAttach(ac, io->loop);
}

static const at_io_ops_t uv_ops = {
    uv_watch_new,    uv_watch_set,   uv_watch_free,  uv_timer_new_,
    uv_timer_start_, uv_timer_stop_, uv_timer_free_, uv_attach_redis,
};

at_io_t *at_io_uv_new(struct uv_loop_s *loop)
{
    at_io_t *io = calloc(1, sizeof *io);
    if (!io)
        return NULL;
    io->ops = &uv_ops;
    io->loop = loop;
    return io;
}
