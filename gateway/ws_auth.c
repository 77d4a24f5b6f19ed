/*
 * Who opens a WebSocket. At the upgrade, in order:
 *
 *   Authorization: Bearer <token> | X-API-Key: <key>
 *   Sec-WebSocket-Protocol: bearer.<token> | apikey.<key> | ticket.<ticket>
 *   ?ticket=<ticket>                 from POST /api/ws-ticket (30 s, single use)
 *   ?user_id= alone                  only with ATELIER_AUTH=compat
 *
 * What can be decided before the upgrade is answered with an HTTP error
 * (401, 403, 404, 429): missing or malformed credentials, a bad or expired
 * token signature, a credential the cache (credcache.c, shared with auth.c
 * and its revocations) knows, the per-user limit. What needs PostgreSQL or
 * Redis (a token or key not cached, a ticket) is checked right after the
 * upgrade, with reading paused: a refusal is then an error message and a
 * close with 1008.
 *
 * libwebsockets 4.1 reads at most 127 bytes of Sec-WebSocket-Protocol and
 * answers names of at most 63: API keys and tickets fit, a JWT does not
 * (it goes in Authorization, or is traded for a ticket).
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "atelier/crypto.h"
#include "atelier/log.h"
#include "credcache.h"
#include "ws_internal.h"

#define LWS_PROTOCOL_HEADER_MAX 127 /* lws_process_ws_upgrade's buffer, less the NUL */
#define LWS_PROTOCOL_NAME_MAX 63    /* its protocol name buffer, less the NUL */
#define TICKET_LEN 43               /* 32 random bytes, base64url */
#define USER_BUCKETS 1024

typedef enum { CRED_TOKEN = 1, CRED_KEY, CRED_TICKET } cred_kind_t;

struct ws_cred {
    cred_kind_t kind;
    char cache_key[CREDCACHE_KEY_MAX]; /* "t:<hash>" / "k:<hash>" */
    int64_t sub;                       /* the user a token names */
    char ticket[TICKET_LEN + 1];
    int64_t named; /* ?user_id= (0: none) */
};

/* The connection made at the upgrade, until lws establishes it (the same
 * call chain: nothing else runs between). */
static ws_conn_t *g_stash;
static struct lws *g_stash_wsi;

/* ---- connections per user --------------------------------------------------- */

typedef struct user_count {
    struct user_count *next;
    int64_t user;
    int n;
} user_count_t;

static user_count_t *g_users[USER_BUCKETS];

static user_count_t **user_slot(int64_t user)
{
    user_count_t **pp = &g_users[(uint64_t)user % USER_BUCKETS];
    while (*pp && (*pp)->user != user)
        pp = &(*pp)->next;
    return pp;
}

static int user_count(int64_t user)
{
    user_count_t *u = *user_slot(user);
    return u ? u->n : 0;
}

static int user_take(int64_t user)
{
    user_count_t **pp = user_slot(user);
    if (!*pp) {
        *pp = calloc(1, sizeof **pp);
        if (!*pp)
            return -1;
        (*pp)->user = user;
    }
    (*pp)->n++;
    return 0;
}

void ws_auth_release(ws_conn_t *c)
{
    if (!c->counted)
        return;
    c->counted = 0;
    user_count_t **pp = user_slot(c->who.scope), *u = *pp;
    if (u && --u->n == 0) {
        *pp = u->next;
        free(u);
    }
}

/* ---- HTTP answers before the upgrade ---------------------------------------- */

static int refuse(struct lws *wsi, int status, const char *detail)
{
    unsigned char buf[LWS_PRE + 2048], *start = buf + LWS_PRE, *p = start;
    unsigned char *end = buf + sizeof buf - 1;
    json_t *j = json_pack("{s:s}", "detail", detail);
    char *body = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    size_t bl = body ? strlen(body) : 0;
    int ok = body && bl < 1024 &&
             !lws_add_http_common_headers(wsi, (unsigned)status, "application/json", bl, &p, end);
    if (ok && status == 401)
        ok = !lws_add_http_header_by_name(wsi, (const unsigned char *)"www-authenticate:",
                                          (const unsigned char *)"Bearer", 6, &p, end);
    if (ok && status == 429)
        ok = !lws_add_http_header_by_name(
            wsi, (const unsigned char *)"retry-after:", (const unsigned char *)"5", 1, &p, end);
    if (ok)
        ok = !lws_finalize_http_header(wsi, &p, end);
    if (ok) {
        memcpy(p, body, bl);
        p += bl;
        ok = lws_write(wsi, start, (size_t)(p - start), LWS_WRITE_HTTP_HEADERS) == (int)(p - start);
    }
    free(body);
    at_info("event=ws_refused status=%d detail=\"%s\"", status, detail);
    return ok ? 1 : -1;
}

/* ---- who the credential names ------------------------------------------------ */

/* A user (or key) may name only itself in ?user_id=; a service key names
 * the user it acts for (none: any). 0 when allowed. */
static int apply_scope(ws_conn_t *c, int64_t named, int service)
{
    if (service) {
        c->who.scope = named;
        return 0;
    }
    if (named && named != c->who.user_id)
        return -1;
    c->who.scope = c->who.user_id;
    return 0;
}

static int fill_from_cred(ws_conn_t *c, const cred_t *cr, int is_key, int64_t named)
{
    c->who.user_id = cr->user_id;
    if (is_key)
        snprintf(c->who.actor, sizeof c->who.actor, "key:%lld", (long long)cr->key_id);
    else
        snprintf(c->who.actor, sizeof c->who.actor, "user:%lld", (long long)cr->user_id);
    return apply_scope(c, named, is_key && cr->user_id == 0);
}

/* ---- credentials at the upgrade ------------------------------------------------ */

static int is_ticket(const char *t)
{
    if (strlen(t) != TICKET_LEN)
        return 0;
    for (const char *p = t; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_')
            return 0;
    return 1;
}

/* What the client sent, copied while lws still holds the headers. */
typedef struct upgrade {
    char authz[AT_TOKEN_MAX + 16];
    char api_key[256];
    char proto_token[LWS_PROTOCOL_NAME_MAX + 1]; /* the credential entry offered */
    int proto_named;                             /* atelier.v1 offered */
    int proto_other;                             /* entries we do not know */
    char ticket[128];
    char user_id[32];
    char session[64];
} upgrade_t;

static void query_arg(struct lws *wsi, const char *name, char *out, size_t cap)
{
    char buf[512];
    size_t n = strlen(name);
    out[0] = '\0';
    for (int i = 0; i < 32; i++) {
        if (lws_hdr_copy_fragment(wsi, buf, sizeof buf, WSI_TOKEN_HTTP_URI_ARGS, i) < 0)
            break;
        if (!strncmp(buf, name, n) && buf[n] == '=') {
            at_strlcpy(out, buf + n + 1, cap);
            return;
        }
    }
}

/* Sec-WebSocket-Protocol: the entries we know; -1 when it is longer than
 * lws can handle. */
static int read_protocols(struct lws *wsi, upgrade_t *u)
{
    int total = lws_hdr_total_length(wsi, WSI_TOKEN_PROTOCOL);
    if (total <= 0)
        return 0;
    if (total > LWS_PROTOCOL_HEADER_MAX)
        return -1;
    char buf[LWS_PROTOCOL_HEADER_MAX + 2];
    if (lws_hdr_copy(wsi, buf, sizeof buf, WSI_TOKEN_PROTOCOL) < 0)
        return -1;
    char *save = NULL;
    for (char *e = strtok_r(buf, ",", &save); e; e = strtok_r(NULL, ",", &save)) {
        while (*e == ' ' || *e == '\t')
            e++;
        size_t n = strlen(e);
        while (n && (e[n - 1] == ' ' || e[n - 1] == '\t'))
            e[--n] = '\0';
        if (!strcmp(e, WS_SUBPROTOCOL))
            u->proto_named = 1;
        else if ((!strncmp(e, "bearer.", 7) || !strncmp(e, "apikey.", 7) ||
                  !strncmp(e, "ticket.", 7)) &&
                 !u->proto_token[0] && n <= LWS_PROTOCOL_NAME_MAX)
            at_strlcpy(u->proto_token, e, sizeof u->proto_token);
        else
            u->proto_other = 1;
    }
    return 0;
}

static int path_is_ws(struct lws *wsi)
{
    char path[64];
    if (lws_hdr_copy(wsi, path, sizeof path, WSI_TOKEN_GET_URI) <= 0)
        return 0;
    return !strcmp(path, "/ws") || !strcmp(path, "/ws/");
}

static int64_t parse_user_id(const char *s)
{
    char *end;
    long long v = strtoll(s, &end, 10);
    return *s && *end == '\0' && v > 0 ? v : -1;
}

/* A bearer token: the signature and expiry now, revocation from the cache
 * or (after the upgrade) PostgreSQL. */
static int token_cred(ws_conn_t *c, const char *token, int64_t named, const char **why)
{
    json_t *claims = NULL;
    at_err_t e = at_jwt_verify(c->gw->jwt_key, token, at_wall_ms() / 1000, &claims);
    const char *jti = json_string_value(json_object_get(claims, "jti"));
    const char *sub = json_string_value(json_object_get(claims, "sub"));
    if (e != AT_OK || !jti || !sub) {
        json_decref(claims);
        *why = e == AT_ETIMEOUT ? "Token expired" : "Invalid token";
        return 401;
    }
    ws_cred_t *cr = calloc(1, sizeof *cr);
    if (!cr) {
        json_decref(claims);
        *why = "Out of memory";
        return 503;
    }
    cr->kind = CRED_TOKEN;
    cr->named = named;
    char hash[AT_SHA256_HEX + 1];
    at_sha256_hex(jti, strlen(jti), hash);
    cr->sub = strtoll(sub, NULL, 10);
    json_decref(claims);
    snprintf(cr->cache_key, sizeof cr->cache_key, "t:%s", hash);
    at_strlcpy(c->cred_key, cr->cache_key, sizeof c->cred_key);
    cred_t cached;
    if (credcache_get(cr->cache_key, at_wall_ms(), &cached)) {
        int ok = cached.valid && cached.user_id == cr->sub;
        free(cr);
        if (!ok) {
            *why = "Token revoked or user disabled";
            return 401;
        }
        if (fill_from_cred(c, &cached, 0, named) != 0) {
            *why = "user_id does not match the authenticated user";
            return 403;
        }
        return 0;
    }
    c->cred = cr;
    return 0;
}

static int key_cred(ws_conn_t *c, const char *key, int64_t named, const char **why)
{
    if (c->gw->cfg.api_key[0] && at_const_eq(key, c->gw->cfg.api_key)) {
        at_strlcpy(c->who.actor, "key:bootstrap", sizeof c->who.actor);
        apply_scope(c, named, 1);
        return 0;
    }
    ws_cred_t *cr = calloc(1, sizeof *cr);
    if (!cr) {
        *why = "Out of memory";
        return 503;
    }
    cr->kind = CRED_KEY;
    cr->named = named;
    char hash[AT_SHA256_HEX + 1];
    at_sha256_hex(key, strlen(key), hash);
    snprintf(cr->cache_key, sizeof cr->cache_key, "k:%s", hash);
    at_strlcpy(c->cred_key, cr->cache_key, sizeof c->cred_key);
    cred_t cached;
    if (credcache_get(cr->cache_key, at_wall_ms(), &cached)) {
        free(cr);
        if (!cached.valid) {
            *why = "Invalid API key";
            return 401;
        }
        if (fill_from_cred(c, &cached, 1, named) != 0) {
            *why = "user_id does not match the authenticated user";
            return 403;
        }
        return 0;
    }
    c->cred = cr;
    return 0;
}

static int ticket_cred(ws_conn_t *c, const char *ticket, int64_t named, const char **why)
{
    if (!is_ticket(ticket)) {
        *why = "Invalid ticket";
        return 401;
    }
    ws_cred_t *cr = calloc(1, sizeof *cr);
    if (!cr) {
        *why = "Out of memory";
        return 503;
    }
    cr->kind = CRED_TICKET;
    cr->named = named;
    at_strlcpy(cr->ticket, ticket, sizeof cr->ticket);
    c->cred = cr;
    return 0;
}

/* The credential the upgrade carries; 0 when accepted or to be checked
 * after the upgrade, else the HTTP status with *why. */
static int credentials(ws_conn_t *c, const upgrade_t *u, const char **why)
{
    int64_t named = u->user_id[0] ? parse_user_id(u->user_id) : 0;
    if (named < 0) {
        *why = "user_id must be a positive integer";
        return 422;
    }
    if (u->authz[0]) {
        if (strncasecmp(u->authz, "Bearer ", 7) != 0) {
            *why = "Authorization must be 'Bearer <token>'";
            return 401;
        }
        return token_cred(c, u->authz + 7, named, why);
    }
    if (u->api_key[0])
        return key_cred(c, u->api_key, named, why);
    if (!strncmp(u->proto_token, "bearer.", 7))
        return token_cred(c, u->proto_token + 7, named, why);
    if (!strncmp(u->proto_token, "apikey.", 7))
        return key_cred(c, u->proto_token + 7, named, why);
    if (!strncmp(u->proto_token, "ticket.", 7))
        return ticket_cred(c, u->proto_token + 7, named, why);
    if (u->ticket[0])
        return ticket_cred(c, u->ticket, named, why);
    if (!strcmp(c->gw->cfg.auth_mode, "compat") && named > 0) {
        c->who.user_id = c->who.scope = named;
        snprintf(c->who.actor, sizeof c->who.actor, "compat:%lld", (long long)named);
        return 0;
    }
    *why = "Not authenticated: send Authorization: Bearer <token>, offer the subprotocol "
           "apikey.<key> or ticket.<ticket>, or connect with ?ticket= from POST /api/ws-ticket";
    return 401;
}

static int too_many(ws_conn_t *c, char *msg, size_t cap)
{
    int max = (int)c->gw->cfg.ws_max_per_user;
    if (user_count(c->who.scope) < max)
        return 0;
    snprintf(msg, cap,
             "Too many WebSocket connections for this user on this gateway (%d, "
             "ATELIER_WS_MAX_PER_USER)",
             max);
    return 1;
}

static void stash_drop(void)
{
    if (g_stash) {
        ws_conn_unref(g_stash);
        ws_set_echo_protocol("atelier.credential"); /* no credential lingers in the table */
    }
    g_stash = NULL;
    g_stash_wsi = NULL;
}

int ws_auth_upgrade(gateway_t *gw, struct lws *wsi)
{
    stash_drop(); /* an earlier upgrade that lws gave up on */
    if (!path_is_ws(wsi))
        return refuse(wsi, 404, "Not Found: WebSocket connections go to /ws");
    if (gw->draining)
        return refuse(wsi, 503, "Shutting down");
    upgrade_t *u = calloc(1, sizeof *u);
    ws_conn_t *c = calloc(1, sizeof *c);
    if (!u || !c) {
        free(u);
        free(c);
        return -1;
    }
    c->gw = gw;
    c->refs = 1;
    lws_get_peer_simple(wsi, c->ip, sizeof c->ip);
    if (!strncmp(c->ip, "::ffff:", 7))
        memmove(c->ip, c->ip + 7, strlen(c->ip + 7) + 1);
    if (lws_hdr_copy(wsi, u->authz, sizeof u->authz, WSI_TOKEN_HTTP_AUTHORIZATION) < 0)
        u->authz[0] = '\0';
    if (lws_hdr_custom_copy(wsi, u->api_key, sizeof u->api_key, "x-api-key:", 10) < 0)
        u->api_key[0] = '\0';
    query_arg(wsi, "ticket", u->ticket, sizeof u->ticket);
    query_arg(wsi, "user_id", u->user_id, sizeof u->user_id);
    query_arg(wsi, "sessionId", u->session, sizeof u->session);
    int status = 0;
    const char *why = NULL;
    char msg[256];
    if (read_protocols(wsi, u) != 0) {
        status = 400;
        why = "Sec-WebSocket-Protocol longer than this server reads (127 bytes; each name at "
              "most 63): offer ticket.<ticket> (POST /api/ws-ticket) or apikey.<key>, or send "
              "the token in Authorization";
    } else if (u->proto_other && !u->proto_named && !u->proto_token[0]) {
        status = 400;
        why = "Unsupported subprotocol: offer " WS_SUBPROTOCOL
              ", bearer.<token>, apikey.<key> or ticket.<ticket>";
    } else {
        for (char *s = u->session; *s; s++)
            *s = (char)tolower((unsigned char)*s);
        if (u->session[0] && strlen(u->session) <= AT_UUID_LEN)
            at_strlcpy(c->session_hint, u->session, sizeof c->session_hint);
        else if (u->session[0]) {
            status = 422;
            why = "sessionId must be a session uuid";
        }
    }
    if (!status)
        status = credentials(c, u, &why);
    if (!status && !c->cred && too_many(c, msg, sizeof msg)) {
        status = 429;
        why = msg;
    }
    if (!status && !u->proto_named && u->proto_token[0])
        ws_set_echo_protocol(u->proto_token); /* lws binds and answers this entry */
    free(u);
    if (status) {
        int r = refuse(wsi, status, why);
        ws_conn_unref(c);
        return r;
    }
    g_stash = c;
    g_stash_wsi = wsi;
    return 0;
}

ws_conn_t *ws_auth_take(struct lws *wsi)
{
    if (g_stash_wsi != wsi)
        return NULL;
    ws_conn_t *c = g_stash;
    g_stash = NULL;
    g_stash_wsi = NULL;
    return c;
}

/* ---- after the upgrade ------------------------------------------------------- */

static void accept_conn(ws_conn_t *c)
{
    char msg[256];
    if (too_many(c, msg, sizeof msg)) {
        ws_send_error(c, NULL, "too_many_connections", "%s", msg);
        ws_conn_close(c, WS_CLOSE_AGAIN, "too many connections", 0);
        return;
    }
    if (user_take(c->who.scope) != 0) {
        ws_conn_close(c, WS_CLOSE_ERROR, "out of memory", 0);
        return;
    }
    c->counted = 1;
    ws_conn_authed(c);
}

static void reject_conn(ws_conn_t *c, const char *code, const char *msg)
{
    at_info("event=ws_refused conn=%s ip=%s code=%s detail=\"%s\"", c->id, c->ip, code, msg);
    ws_send_error(c, NULL, code, "%s", msg);
    ws_conn_close(c, WS_CLOSE_POLICY, msg, 0);
}

static void credential_fetched(const cred_t *cc, const char *err, void *arg)
{
    ws_conn_t *c = arg;
    ws_cred_t *cr = c->cred;
    c->cred = NULL;
    if (!c->wsi || !cr) {
        ws_cred_free(cr);
        ws_conn_unref(c);
        return;
    }
    int is_key = cr->kind == CRED_KEY;
    if (err) {
        at_error("event=ws_credential_lookup_failed conn=%s error=\"%s\"", c->id, err);
        ws_send_error(c, NULL, "unavailable", "Database unavailable");
        ws_conn_close(c, WS_CLOSE_AGAIN, "database unavailable", 0);
    } else if (!cc->valid || (!is_key && cc->user_id != cr->sub)) {
        reject_conn(c, "unauthorized",
                    is_key ? "Invalid API key" : "Token revoked or user disabled");
    } else if (fill_from_cred(c, cc, is_key, cr->named) != 0) {
        reject_conn(c, "forbidden", "user_id does not match the authenticated user");
    } else {
        accept_conn(c);
    }
    ws_cred_free(cr);
    ws_conn_unref(c);
}

static void ticket_taken(at_redis_t *rc, redisReply *reply, void *arg)
{
    (void)rc;
    ws_conn_t *c = arg;
    ws_cred_t *cr = c->cred;
    c->cred = NULL;
    if (c->wsi && cr) {
        /* "<user id>[ <credential's cache key>]" (routes_ws_ticket.c) */
        char val[128] = "";
        if (reply && reply->type == REDIS_REPLY_STRING)
            at_strlcpy(val, reply->str, sizeof val);
        char *key = strchr(val, ' ');
        if (key) {
            *key++ = '\0';
            at_strlcpy(c->cred_key, key, sizeof c->cred_key);
        }
        int64_t uid = val[0] ? parse_user_id(val) : -1;
        if (!reply || reply->type == REDIS_REPLY_ERROR) {
            ws_send_error(c, NULL, "unavailable", "Redis unavailable: %s",
                          at_redis_reply_error(reply));
            ws_conn_close(c, WS_CLOSE_AGAIN, "redis unavailable", 0);
        } else if (uid <= 0) {
            reject_conn(c, "unauthorized", "Ticket invalid, expired or already used");
        } else {
            c->who.user_id = uid;
            snprintf(c->who.actor, sizeof c->who.actor, "user:%lld", (long long)uid);
            if (apply_scope(c, cr->named, 0) != 0)
                reject_conn(c, "forbidden", "user_id does not match the ticket's user");
            else
                accept_conn(c);
        }
    }
    ws_cred_free(cr);
    ws_conn_unref(c);
}

void ws_auth_start(ws_conn_t *c)
{
    ws_cred_t *cr = c->cred;
    if (!cr) {
        accept_conn(c);
        return;
    }
    lws_rx_flow_control(c->wsi, 0); /* messages wait in the socket meanwhile */
    ws_conn_ref(c);
    at_err_t e;
    if (cr->kind == CRED_TICKET) {
        char key[64];
        snprintf(key, sizeof key, "wsticket:%s", cr->ticket);
        const char *argv[] = {"GETDEL", key};
        e = at_redis_argv(c->gw->ws_redis, ticket_taken, c, 2, argv, NULL);
    } else {
        e = credcache_fetch(c->gw->db, cr->cache_key, credential_fetched, c);
    }
    if (e != AT_OK) {
        c->cred = NULL;
        ws_cred_free(cr);
        ws_send_error(c, NULL, "unavailable", "Cannot check credentials now: %s", at_strerror(e));
        ws_conn_close(c, WS_CLOSE_AGAIN, "cannot check credentials", 0);
        ws_conn_unref(c);
    }
}

void ws_cred_free(ws_cred_t *cred)
{
    free(cred);
}

void ws_auth_shutdown(void)
{
    stash_drop();
    for (int i = 0; i < USER_BUCKETS; i++) {
        while (g_users[i]) {
            user_count_t *u = g_users[i];
            g_users[i] = u->next;
            free(u);
        }
    }
}
