/*
 * One asynchronous Redis connection on the process's loop, reconnecting by
 * itself. Commands issued while disconnected fail at once (AT_ECLOSED) and do
 * not call back; commands in flight when the link drops call back with a NULL
 * reply (hiredis' rule).
 */
#ifndef ATELIER_REDIS_H
#define ATELIER_REDIS_H

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <stddef.h>

#include "err.h"
#include "io.h"

typedef struct at_redis at_redis_t;
typedef void at_redis_cb(at_redis_t *r, redisReply *reply, void *arg);
/* Called each time the link comes up (first time and after a reconnect). */
typedef void at_redis_up_cb(at_redis_t *r, void *arg);

/* url: redis://host:port[/db] or unix:///path. name is used in log lines. */
at_redis_t *at_redis_new(at_io_t *io, const char *url, const char *name);
#define AT_REDIS_MAX_HOOKS 8
/* Add a hook run each time the link comes up (at once if it is up now). */
void at_redis_on_up(at_redis_t *r, at_redis_up_cb *cb, void *arg);
void at_redis_off_up(at_redis_t *r, at_redis_up_cb *cb, void *arg);
void at_redis_free(at_redis_t *r);
int at_redis_connected(const at_redis_t *r);

at_err_t at_redis_cmd(at_redis_t *r, at_redis_cb *cb, void *arg, const char *fmt, ...);
at_err_t at_redis_argv(at_redis_t *r, at_redis_cb *cb, void *arg, int argc, const char **argv,
                       const size_t *argvlen);

/* SUBSCRIBE: cb runs for the subscribe confirmation and every message, with
 * a NULL reply when the link drops (then subscribe again from the up hook). */
at_err_t at_redis_subscribe(at_redis_t *r, const char *channel, at_redis_cb *cb, void *arg);

/* A one-line description of an error reply or missing reply, for logs. */
const char *at_redis_reply_error(const redisReply *reply);

/* Blocking connect with a timeout, for start-up checks and tools only. */
redisContext *at_redis_connect_sync(const char *url, int timeout_ms, char *errbuf, size_t errlen);

#endif
