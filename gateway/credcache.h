/* Credentials checked against PostgreSQL recently, by "t:<jti hash>" or
 * "k:<key hash>": valid ones for CREDCACHE_TTL_MS, invalid ones for less.
 * Bounded: at most CREDCACHE_MAX entries. */
#ifndef GATEWAY_CREDCACHE_H
#define GATEWAY_CREDCACHE_H

#include <stdint.h>

#include "atelier/db.h"

#define CREDCACHE_TTL_MS 10000
#define CREDCACHE_NEG_TTL_MS 2000
#define CREDCACHE_MAX 65536
#define CREDCACHE_KEY_MAX 72

typedef struct cred {
    int valid;
    int64_t user_id; /* 0: a service key */
    int64_t key_id;
    int is_admin;
    int64_t expires_ms; /* the credential's own expiry (0: none); caps the cache entry */
} cred_t;

/* 1 and *out filled if key is cached and fresh, else 0. */
int credcache_get(const char *key, int64_t now_ms, cred_t *out);
void credcache_put(const char *key, const cred_t *c, int64_t now_ms);
void credcache_drop(const char *key);
void credcache_clear(void);

/* The credential a cache key names ("t:<jti hash>": a bearer token, "k:<key
 * hash>": an API key), from the cache or else from its row in PostgreSQL,
 * which is then cached. cb runs once, from within this call when cached;
 * err is set when the database could not answer. */
typedef void credcache_cb(const cred_t *c, const char *err, void *arg);
at_err_t credcache_fetch(at_db_t *db, const char *key, credcache_cb *cb, void *arg);

#endif
