/*
 * Who is calling: every request is authenticated once, before its handler
 * runs (routes.c declares what each route needs), and rate-limited.
 *
 *   Authorization: Bearer <jwt>   a user (HS256, exp; revoked by logout)
 *   X-API-Key: <key>              the bootstrap API_KEY (admin, acts for any
 *                                 user), or a key from /api/keys: a service
 *                                 key (acts for any user it names) or a key
 *                                 bound to one user (acts as that user)
 *   ?user_id= alone               only with ATELIER_AUTH=compat
 *
 * Token and key lookups are cached for a few seconds; logout and key
 * deletion drop the entry on every gateway (PUBLISH auth:revoke).
 */
#ifndef GATEWAY_AUTH_H
#define GATEWAY_AUTH_H

#include <stdint.h>

#include "gateway.h"

typedef struct at_req at_req_t;
typedef struct route route_t;

typedef enum {
    AUTH_PUBLIC = 0, /* no credentials needed (credentials given are still checked) */
    AUTH_USER,       /* a user token, any API key, or compat user_id */
    AUTH_ADMIN,      /* an admin: bootstrap API_KEY, admin key or admin user */
    AUTH_LOGIN,      /* public, but under the login rate limit */
} auth_level_t;

typedef enum { P_NONE = 0, P_USER, P_KEY, P_COMPAT } principal_kind_t;

typedef struct principal {
    principal_kind_t kind;
    int64_t user_id;     /* the user this caller is bound to; 0 for a service key */
    int64_t key_id;      /* api_keys.id; 0 for the bootstrap key */
    int is_admin;        /* may list every user, manage every key */
    int service;         /* may act for any user_id it names */
    char token_hash[65]; /* sha256 of the token's jti (logout revokes it) */
    char cred_key[72];   /* "t:<hash>" / "k:<hash>": what a revocation names ('' for
                            the bootstrap key and compat callers) */
    char actor[48];      /* for audit_log: "user:12", "key:3", "key:bootstrap" */
} principal_t;

/* Load or create the JWT key, subscribe to revocations. */
int auth_init(gateway_t *gw);
void auth_shutdown(gateway_t *gw);

/* Authenticate and rate-limit req for route, then run the route's handler;
 * answers 401/403/429/503 itself when the request may not go on. */
void auth_begin(at_req_t *req, const route_t *route);

const principal_t *req_principal(const at_req_t *req);

/* The user whose records this request may touch: for a user (or a bound
 * key) their own id; for a service key, the user named by `named` (a
 * users.id) or 0 meaning "any user". If `named` differs from the caller's
 * own user, answers 403 and returns -1. Use the result as $scope in SQL:
 * "($scope = 0 OR user_id = $scope)". */
int64_t auth_scope(at_req_t *req, const char *named);

/* A signed bearer token for user_id; *jti_hash gets the hash stored in
 * auth_tokens.token_hash. Returns malloc'd token or NULL. */
char *auth_issue_token(gateway_t *gw, int64_t user_id, int is_admin, int64_t exp_s,
                       char jti_hash[65]);

/* Drop a cached credential ("t:<hash>" or "k:<hash>") here and on every
 * other gateway. */
void auth_revoke(gateway_t *gw, const char *cache_key);

#endif
