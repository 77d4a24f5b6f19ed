#include "auth.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "atelier/crypto.h"
#include "atelier/log.h"
#include "atelier/util.h"
#include "credcache.h"
#include "http.h"
#include "ratelimit.h"
#include "routes.h"
#include "ws.h"

#define REVOKE_CHANNEL "auth:revoke"

/* ---- the JWT key ---------------------------------------------------------- */

/* JWT_SECRET, or a random key made once in $ATELIER_DATA_DIR/secret/jwt
 * (O_EXCL, so gateways starting together agree on one). */
static int load_key(gateway_t *gw)
{
    if (gw->cfg.jwt_secret[0]) {
        at_strlcpy(gw->jwt_key, gw->cfg.jwt_secret, sizeof gw->jwt_key);
        return 0;
    }
    char dir[4096], path[4200];
    snprintf(dir, sizeof dir, "%s/secret", gw->cfg.data_dir);
    snprintf(path, sizeof path, "%s/jwt", dir);
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        at_error("event=jwt_key_failed path=%s error=\"%s\"", dir, strerror(errno));
        return -1;
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    if (fd >= 0) {
        char key[80];
        at_random_token("", 48, key, sizeof key);
        size_t n = strlen(key);
        int ok = write(fd, key, n) == (ssize_t)n && fsync(fd) == 0;
        close(fd);
        if (!ok) {
            unlink(path);
            at_error("event=jwt_key_failed path=%s error=\"%s\"", path, strerror(errno));
            return -1;
        }
        at_info("event=jwt_key_created path=%s", path);
    }
    for (int tries = 0; tries < 50; tries++) { /* another gateway may be writing it */
        FILE *f = fopen(path, "r");
        if (!f) {
            at_error("event=jwt_key_failed path=%s error=\"%s\"", path, strerror(errno));
            return -1;
        }
        size_t n = fread(gw->jwt_key, 1, sizeof gw->jwt_key - 1, f);
        fclose(f);
        gw->jwt_key[n] = '\0';
        if (n >= 32)
            return 0;
        usleep(20000);
    }
    at_error("event=jwt_key_failed path=%s error=\"key shorter than 32 bytes\"", path);
    return -1;
}

/* ---- revocations from other gateways -------------------------------------- */

static void on_revoke(at_redis_t *rc, redisReply *reply, void *arg)
{
    (void)rc;
    (void)arg;
    if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != 3 ||
        reply->element[0]->type != REDIS_REPLY_STRING ||
        strcmp(reply->element[0]->str, "message") != 0 ||
        reply->element[2]->type != REDIS_REPLY_STRING)
        return;
    credcache_drop(reply->element[2]->str);
    ws_revoked(reply->element[2]->str); /* its open WebSockets close too */
}

static void sub_up(at_redis_t *rc, void *arg)
{
    (void)arg;
    credcache_clear(); /* revocations may have been missed while down */
    if (at_redis_subscribe(rc, REVOKE_CHANNEL, on_revoke, NULL) != AT_OK)
        at_error("event=revoke_subscribe_failed channel=" REVOKE_CHANNEL);
}

int auth_init(gateway_t *gw)
{
    if (load_key(gw) != 0)
        return -1;
    at_redis_on_up(gw->sub, sub_up, gw);
    return 0;
}

void auth_shutdown(gateway_t *gw)
{
    at_redis_off_up(gw->sub, sub_up, gw);
    credcache_clear();
}

void auth_revoke(gateway_t *gw, const char *cache_key)
{
    credcache_drop(cache_key);
    const char *argv[] = {"PUBLISH", REVOKE_CHANNEL, cache_key};
    if (at_redis_argv(gw->redis, NULL, NULL, 3, argv, NULL) != AT_OK)
        at_warn("event=revoke_publish_failed key=%s", cache_key);
}

char *auth_issue_token(gateway_t *gw, int64_t user_id, int is_admin, int64_t exp_s,
                       char jti_hash[65])
{
    char jti[64], sub[24];
    at_random_token("", 24, jti, sizeof jti);
    at_sha256_hex(jti, strlen(jti), jti_hash);
    snprintf(sub, sizeof sub, "%lld", (long long)user_id);
    json_t *claims =
        json_pack("{s:s, s:s, s:I, s:I, s:b}", "sub", sub, "jti", jti, "iat",
                  (json_int_t)(at_wall_ms() / 1000), "exp", (json_int_t)exp_s, "adm", is_admin);
    char *tok = claims ? at_jwt_sign(gw->jwt_key, claims) : NULL;
    json_decref(claims);
    return tok;
}

/* ---- the pipeline: credentials -> level -> rate limit -> handler ---------- */

typedef struct pending {
    at_req_t *req;
    const route_t *route;
    char cache_key[CREDCACHE_KEY_MAX];
    int64_t sub; /* user id claimed by a token */
} pending_t;

static void unauthorized(at_req_t *req, const char *detail)
{
    req_add_header(req, "www-authenticate", "Bearer");
    req_error(req, 401, "%s", detail);
}

static void limited(int allowed, int64_t retry_ms, void *arg);

static void run_handler(pending_t *p)
{
    at_req_t *req = p->req;
    const route_t *route = p->route;
    free(p);
    route->fn(req);
}

/* Level check, then the rate limit. */
static void authorize(pending_t *p)
{
    at_req_t *req = p->req;
    const principal_t *pr = req_principal(req);
    gateway_t *gw = req_gw(req);
    if (p->route->auth == AUTH_USER && pr->kind == P_NONE) {
        unauthorized(req, "Not authenticated: send Authorization: Bearer <token> or X-API-Key");
        free(p);
        return;
    }
    if (p->route->auth == AUTH_ADMIN && !pr->is_admin) {
        if (pr->kind == P_NONE)
            unauthorized(req, "Not authenticated: this endpoint needs an admin token or API key");
        else
            req_error(req, 403, "This endpoint needs an admin token or API key");
        free(p);
        return;
    }
    char key[160];
    double rate = (double)gw->cfg.rate_limit_rps;
    int64_t burst = gw->cfg.rate_limit_burst;
    if (p->route->auth == AUTH_LOGIN && pr->kind == P_NONE) {
        if (gw->cfg.login_rate_per_min == 0) {
            run_handler(p);
            return;
        }
        snprintf(key, sizeof key, "rl:login:ip:%s", req_ip(req));
        rate = (double)gw->cfg.login_rate_per_min / 60.0;
        burst = gw->cfg.login_rate_per_min;
    } else if (pr->kind == P_NONE || rate == 0) {
        run_handler(p); /* anonymous reads of public routes: health, docs */
        return;
    } else if (pr->kind == P_KEY) {
        snprintf(key, sizeof key, "rl:key:%lld", (long long)pr->key_id);
    } else {
        snprintf(key, sizeof key, "rl:user:%lld", (long long)pr->user_id);
    }
    ratelimit_take(gw, key, rate, burst, limited, p);
}

static void limited(int allowed, int64_t retry_ms, void *arg)
{
    pending_t *p = arg;
    if (allowed) {
        run_handler(p);
        return;
    }
    req_too_many(p->req, retry_ms, "Too many requests");
    free(p);
}

static void fill_from_cred(principal_t *pr, const cred_t *c, int is_key)
{
    pr->kind = is_key ? P_KEY : P_USER;
    pr->user_id = c->user_id;
    pr->key_id = c->key_id;
    pr->is_admin = c->is_admin;
    pr->service = is_key && c->user_id == 0;
    if (is_key)
        snprintf(pr->actor, sizeof pr->actor, "key:%lld", (long long)c->key_id);
    else
        snprintf(pr->actor, sizeof pr->actor, "user:%lld", (long long)c->user_id);
}

/* The credential's row came back (or the cache had it). */
static void credential_known(pending_t *p, const cred_t *c)
{
    int is_key = p->cache_key[0] == 'k';
    if (!c->valid || (!is_key && c->user_id != p->sub)) {
        if (is_key)
            req_error(p->req, 401, "Invalid API key");
        else
            unauthorized(p->req, "Token revoked or user disabled");
        free(p);
        return;
    }
    fill_from_cred(req_principal_mut(p->req), c, is_key);
    authorize(p);
}

static void credential_fetched(const cred_t *c, const char *err, void *arg)
{
    pending_t *p = arg;
    if (err) {
        at_error("event=credential_lookup_failed req=%s error=\"%s\"", req_id(p->req), err);
        req_error(p->req, 503, "Database unavailable");
        free(p);
        return;
    }
    credential_known(p, c);
}

static void lookup(pending_t *p)
{
    if (credcache_fetch(req_gw(p->req)->db, p->cache_key, credential_fetched, p) != AT_OK) {
        req_error(p->req, 503, "Database busy");
        free(p);
    }
}

void auth_begin(at_req_t *req, const route_t *route)
{
    gateway_t *gw = req_gw(req);
    principal_t *pr = req_principal_mut(req);
    memset(pr, 0, sizeof *pr);
    at_strlcpy(pr->actor, "anonymous", sizeof pr->actor);
    pending_t *p = calloc(1, sizeof *p);
    if (!p) {
        req_error(req, 503, "Out of memory");
        return;
    }
    p->req = req;
    p->route = route;
    const char *key = req_header(req, "x-api-key");
    const char *authz = req_header(req, "authorization");
    if (key && *key) {
        if (gw->cfg.api_key[0] && at_const_eq(key, gw->cfg.api_key)) {
            pr->kind = P_KEY;
            pr->is_admin = pr->service = 1;
            at_strlcpy(pr->actor, "key:bootstrap", sizeof pr->actor);
            authorize(p);
            return;
        }
        char hash[AT_SHA256_HEX + 1];
        at_sha256_hex(key, strlen(key), hash);
        snprintf(p->cache_key, sizeof p->cache_key, "k:%s", hash);
        at_strlcpy(pr->cred_key, p->cache_key, sizeof pr->cred_key);
        lookup(p);
        return;
    }
    if (authz && *authz) {
        if (strncasecmp(authz, "Bearer ", 7) != 0) {
            unauthorized(req, "Authorization must be 'Bearer <token>'");
            free(p);
            return;
        }
        json_t *claims = NULL;
        at_err_t e = at_jwt_verify(gw->jwt_key, authz + 7, at_wall_ms() / 1000, &claims);
        const char *jti = json_string_value(json_object_get(claims, "jti"));
        const char *sub = json_string_value(json_object_get(claims, "sub"));
        if (e != AT_OK || !jti || !sub) {
            json_decref(claims);
            unauthorized(req, e == AT_ETIMEOUT ? "Token expired" : "Invalid token");
            free(p);
            return;
        }
        char hash[AT_SHA256_HEX + 1];
        at_sha256_hex(jti, strlen(jti), hash);
        p->sub = strtoll(sub, NULL, 10);
        json_decref(claims);
        snprintf(p->cache_key, sizeof p->cache_key, "t:%s", hash);
        at_strlcpy(pr->token_hash, hash, sizeof pr->token_hash);
        at_strlcpy(pr->cred_key, p->cache_key, sizeof pr->cred_key);
        lookup(p);
        return;
    }
    /* compat: the seeds' old frontend named its user in ?user_id= on the
     * session and file routes only; never for keys, users or admin routes */
    const char *uid = req_query(req, "user_id");
    const char *path = req_path(req);
    if (!strcmp(gw->cfg.auth_mode, "compat") && uid && *uid &&
        (!strncmp(path, "/api/sessions", 13) || !strncmp(path, "/api/workspace/", 15))) {
        char *end;
        long long id = strtoll(uid, &end, 10);
        if (*end == '\0' && id > 0) {
            pr->kind = P_COMPAT;
            pr->user_id = id;
            snprintf(pr->actor, sizeof pr->actor, "compat:%lld", id);
        }
    }
    authorize(p);
}

int64_t auth_scope(at_req_t *req, const char *named)
{
    const principal_t *pr = req_principal(req);
    long long id = 0;
    if (named && *named) {
        char *end;
        id = strtoll(named, &end, 10);
        if (*end != '\0' || id <= 0) {
            req_error(req, 422, "user_id must be a positive integer");
            return -1;
        }
    }
    if (pr->service)
        return id;
    if (id && id != pr->user_id) {
        req_error(req, 403, "user_id does not match the authenticated user");
        return -1;
    }
    return pr->user_id;
}
