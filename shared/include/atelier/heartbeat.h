/*
 * Instance registry in Redis: each process instance keeps
 * hb:{role}:{instance} (a JSON record: role, instance, pid, version,
 * started_at, ...) alive with a TTL and indexes it in the sorted set hb:index
 * scored by expiry, so the gateway lists live instances without SCAN.
 */
#ifndef ATELIER_HEARTBEAT_H
#define ATELIER_HEARTBEAT_H

#include <jansson.h>
#include <stdint.h>

#include "io.h"
#include "redis.h"

#define AT_HEARTBEAT_INDEX "hb:index"

typedef struct at_heartbeat at_heartbeat_t;

/* Fills the record's variable part (e.g. in-flight job count); may be NULL. */
typedef void at_heartbeat_fill_cb(json_t *record, void *arg);

at_heartbeat_t *at_heartbeat_start(at_io_t *io, at_redis_t *r, const char *role,
                                   const char *instance, int64_t ttl_ms, at_heartbeat_fill_cb *fill,
                                   void *arg);
/* Extra key refreshed with the same TTL on every beat (worker metrics). */
void at_heartbeat_attach(at_heartbeat_t *hb, const char *key, char *(*render)(void *), void *arg);
/* Delete the record at once (graceful exit) and stop. */
void at_heartbeat_stop(at_heartbeat_t *hb);

#endif
