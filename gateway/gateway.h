/* The gateway's process-wide state: one instance, owned by main.c. */
#ifndef GATEWAY_H
#define GATEWAY_H

#include <libwebsockets.h>
#include <stdint.h>
#include <uv.h>

#include "atelier/config.h"
#include "atelier/db.h"
#include "atelier/heartbeat.h"
#include "atelier/io.h"
#include "atelier/job.h"
#include "atelier/redis.h"

typedef struct replies replies_t;

typedef struct gateway {
    at_config_t cfg;
    uv_loop_t *loop;
    at_io_t *io;
    struct lws_context *lws;
    at_db_t *db;
    at_redis_t *redis;    /* commands */
    at_redis_t *sub;      /* SUBSCRIBE reply:{instance} */
    at_redis_t *ws_redis; /* WebSocket terminals: input, replay reads, tickets */
    replies_t *replies;   /* jobs waiting for a reply */
    at_heartbeat_t *hb;
    char reply_channel[AT_JOB_REPLY_MAX + 1];
    char jwt_key[128]; /* HS256 key of bearer tokens */
    int64_t started_ms;
    int draining;
} gateway_t;

#endif
