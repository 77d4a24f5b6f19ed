/*
 * The event loop, seen from the shared modules. Workers run libevent, the
 * gateway runs libuv under libwebsockets; db.c, redis.c and friends only need
 * "watch this fd" and "call me in N ms", so they take an at_io_t and work on
 * either loop.
 */
#ifndef ATELIER_IO_H
#define ATELIER_IO_H

#include <stdint.h>

#include "err.h"

struct event_base;
struct uv_loop_s;
struct redisAsyncContext;

typedef struct at_io at_io_t;
typedef struct at_io_watch at_io_watch_t;
typedef struct at_io_timer at_io_timer_t;

enum { AT_IO_READ = 1, AT_IO_WRITE = 2 };

typedef void at_io_fd_cb(int fd, int events, void *arg);
typedef void at_io_timer_cb(void *arg);

at_io_t *at_io_event_new(struct event_base *base);
at_io_t *at_io_uv_new(struct uv_loop_s *loop);
void at_io_free(at_io_t *io);

/* Watch fd for the given events (AT_IO_READ|AT_IO_WRITE, 0 = paused). */
at_io_watch_t *at_io_watch_new(at_io_t *io, int fd, at_io_fd_cb *cb, void *arg);
void at_io_watch_set(at_io_watch_t *w, int events);
void at_io_watch_free(at_io_watch_t *w);

at_io_timer_t *at_io_timer_new(at_io_t *io, at_io_timer_cb *cb, void *arg);
/* (Re)arm: first call after ms, then every repeat_ms (0 = once). */
void at_io_timer_start(at_io_timer_t *t, uint64_t ms, uint64_t repeat_ms);
void at_io_timer_stop(at_io_timer_t *t);
void at_io_timer_free(at_io_timer_t *t);

/* Attach a hiredis async context to this loop (hiredis' own adapters). */
at_err_t at_io_attach_redis(at_io_t *io, struct redisAsyncContext *ac);

#endif
