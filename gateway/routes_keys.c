/*
 * API keys: POST /api/keys, GET /api/keys, DELETE /api/keys/{id}.
 *
 * A key is "atk_" + 32 random bytes (base64url). Only its sha256 (key_hash)
 * and its first 12 characters (prefix, to recognise it in a list) are kept;
 * the key itself is answered once, by POST, and never stored, logged or sent
 * to the database. A key bound to a user acts only as that user; a service
 * key (no user, admins only) acts for any user it names.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "atelier/crypto.h"
#include "atelier/log.h"
#include "auth.h"
#include "records.h"
#include "routes.h"

#define KEY_PREFIX "atk_"
#define KEY_RANDOM_BYTES 32
#define KEY_PREFIX_LEN 12        /* shown in lists: "atk_" + 8 characters */
#define KEY_NAME_MAX 100         /* characters */
#define KEY_TTL_MAX 3153600000LL /* expires_in: at most 100 years, in seconds */

/* An api_keys row as the API's key object (json), without any secret. */
#define SQL_KEY_OBJ(k)                                                                             \
    "json_build_object('id', " k ".id, 'name', " k ".name, 'prefix', " k ".prefix, 'user_id', " k  \
    ".user_id, 'is_admin', " k ".is_admin, 'created_at', " SQL_ISO(                                \
        k ".created_at") ", "                                                                      \
                         "'expires_at', " SQL_ISO(k ".expires_at") ", 'last_used_at', " SQL_ISO(   \
                             k ".last_used_at") ", 'revoked_at', " SQL_ISO(k ".revoked_at") ")"

/* Compat callers (a bare ?user_id=, anyone can claim it) must not mint or
 * drop real credentials. Answers 403 and returns 1 for them. */
static int refuse_compat(at_req_t *req)
{
    if (req_principal(req)->kind != P_COMPAT)
        return 0;
    req_error(req, 403, "API keys are managed with a bearer token or an API key");
    return 1;
}

/* ---- POST /api/keys ------------------------------------------------------- */

typedef struct key_create {
    at_req_t *req;
    char key[96]; /* the secret, wiped once answered */
} key_create_t;

static void key_create_free(key_create_t *c)
{
    explicit_bzero(c->key, sizeof c->key);
    free(c);
}

static void key_created(PGresult *res, const char *err, void *arg)
{
    key_create_t *c = arg;
    if (err && !strcmp(db_sqlstate(res), "23503")) {
        req_error(c->req, 404, "User not found");
    } else if (err) {
        req_db_error(c->req, "key_create", err);
    } else {
        json_t *obj = json_loads(PQgetvalue(res, 0, 0), 0, NULL);
        if (!obj) {
            req_error(c->req, 500, "Could not read the new key's record");
        } else {
            json_object_set_new(obj, "key", json_string(c->key));
            req_json(c->req, 201, obj);
        }
    }
    key_create_free(c);
}

/* Characters (code points) of UTF-8 text s, or -1 if it holds a control
 * character. jansson has already checked that s is valid UTF-8. */
static long name_chars(const char *s, size_t len)
{
    long n = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char b = (unsigned char)s[i];
        if (b < 0x20 || b == 0x7f)
            return -1;
        n += (b & 0xC0) != 0x80;
    }
    return n;
}

/* A create request, checked. */
typedef struct key_spec {
    const char *name;
    int64_t user_id; /* 0: a service key */
    int is_admin;
    int64_t expires_in; /* seconds; 0: never */
} key_spec_t;

/* Check the body's fields; answers 422 and returns -1 when one is bad. */
static int key_parse(at_req_t *req, json_t *body, key_spec_t *s)
{
    const char *field;
    json_t *v;
    json_object_foreach(body, field, v)
    {
        if (strcmp(field, "name") && strcmp(field, "user_id") && strcmp(field, "is_admin") &&
            strcmp(field, "expires_in")) {
            req_error(req, 422, "Unknown field '%.64s'", field);
            return -1;
        }
    }
    json_t *name = json_object_get(body, "name");
    json_t *user_id = json_object_get(body, "user_id");
    json_t *is_admin = json_object_get(body, "is_admin");
    json_t *expires_in = json_object_get(body, "expires_in");
    long chars =
        json_is_string(name) ? name_chars(json_string_value(name), json_string_length(name)) : -1;
    if (chars < 1 || chars > KEY_NAME_MAX) {
        req_error(req, 422, "name is required: 1..%d characters, no control characters",
                  KEY_NAME_MAX);
        return -1;
    }
    if (user_id && !json_is_null(user_id) &&
        (!json_is_integer(user_id) || json_integer_value(user_id) < 1)) {
        req_error(req, 422, "user_id must be a positive integer");
        return -1;
    }
    if (is_admin && !json_is_null(is_admin) && !json_is_boolean(is_admin)) {
        req_error(req, 422, "is_admin must be a boolean");
        return -1;
    }
    if (expires_in && !json_is_null(expires_in) &&
        (!json_is_integer(expires_in) || json_integer_value(expires_in) < 1 ||
         json_integer_value(expires_in) > KEY_TTL_MAX)) {
        req_error(req, 422, "expires_in must be an integer number of seconds in [1, %lld]",
                  KEY_TTL_MAX);
        return -1;
    }
    s->name = json_string_value(name);
    s->user_id = json_is_integer(user_id) ? json_integer_value(user_id) : 0;
    s->is_admin = json_is_true(is_admin);
    s->expires_in = json_is_integer(expires_in) ? json_integer_value(expires_in) : 0;
    return 0;
}

/* Whom the key acts for: an admin chooses (0 = a service key); anyone else
 * gets a key for themself, or, for a non-admin service key, for a user it
 * names. Answers 403 and returns -1 when the caller may not make this key. */
static int64_t key_owner(at_req_t *req, const key_spec_t *s)
{
    const principal_t *pr = req_principal(req);
    if (pr->is_admin)
        return s->user_id;
    if (s->is_admin) {
        req_error(req, 403, "Only an admin may create an admin key");
        return -1;
    }
    if (pr->service && s->user_id == 0) {
        req_error(req, 403, "Only an admin may create a service key; name a user_id");
        return -1;
    }
    if (!pr->service && s->user_id && s->user_id != pr->user_id) {
        req_error(req, 403, "You may only create keys bound to yourself");
        return -1;
    }
    return pr->service ? s->user_id : pr->user_id;
}

static const char key_insert_sql[] =
    "WITH k AS (INSERT INTO api_keys (user_id, name, key_hash, prefix, is_admin, expires_at) "
    "VALUES (NULLIF($4, '')::bigint, $5, $6, $7, $8::boolean, "
    "now() + make_interval(secs => NULLIF($9, '')::double precision)) RETURNING *), "
    "a AS (" AUDIT_FROM(
        "key.create", "'key:' || k.id",
        "jsonb_build_object('name', k.name, 'prefix', k.prefix, 'key_user_id', "
        "k.user_id, 'is_admin', k.is_admin)",
        "k") ") "
             "SELECT json_build_object('id', k.id, 'name', k.name, 'prefix', k.prefix, 'user_id', "
             "k.user_id, 'is_admin', k.is_admin, 'created_at', " SQL_ISO(
                 "k.created_at") ", 'expires_at', " SQL_ISO("k.expires_at") ")::text FROM k";

void route_key_create(at_req_t *req)
{
    if (refuse_compat(req))
        return;
    json_t *body = req_json_body(req);
    if (!body)
        return;
    key_spec_t s;
    int64_t owner;
    if (key_parse(req, body, &s) != 0 || (owner = key_owner(req, &s)) < 0) {
        json_decref(body);
        return;
    }
    key_create_t *c = calloc(1, sizeof *c);
    if (!c) {
        json_decref(body);
        req_error(req, 503, "Out of memory");
        return;
    }
    c->req = req;
    at_random_token(KEY_PREFIX, KEY_RANDOM_BYTES, c->key, sizeof c->key);
    char hash[AT_SHA256_HEX + 1], prefix[KEY_PREFIX_LEN + 1], uid[24], user[24], ttl[24];
    at_sha256_hex(c->key, strlen(c->key), hash);
    memcpy(prefix, c->key, KEY_PREFIX_LEN);
    prefix[KEY_PREFIX_LEN] = '\0';
    snprintf(user, sizeof user, "%lld", (long long)owner);
    snprintf(ttl, sizeof ttl, "%lld", (long long)s.expires_in);
    const char *p[9];
    audit_params(req, p, uid);
    p[3] = owner ? user : "";
    p[4] = s.name;
    p[5] = hash;
    p[6] = prefix;
    p[7] = s.is_admin ? "true" : "false";
    p[8] = s.expires_in ? ttl : "";
    if (at_db_query(req_gw(req)->db, key_insert_sql, 9, p, key_created, c) != AT_OK) {
        req_error(req, 503, "Database busy");
        key_create_free(c);
    }
    json_decref(body); /* s.name pointed into it; the query copied it */
}

/* ---- GET /api/keys -------------------------------------------------------- */

static void keys_listed(PGresult *res, const char *err, void *arg)
{
    at_req_t *req = arg;
    if (err) {
        req_db_error(req, "key_list", err);
        return;
    }
    const char *text = PQgetvalue(res, 0, 0);
    req_send(req, 200, NULL, strdup(text), strlen(text));
}

/* Which keys a caller may see or revoke, as three SQL parameters (all,
 * user, key: "all OR user_id = user OR id = key"): an admin every key; a
 * user the keys bound to them; a non-admin service key only itself. */
typedef struct key_scope {
    char all[8], user[24], key[24];
} key_scope_t;

static void key_scope(const principal_t *pr, int64_t user, key_scope_t *s)
{
    snprintf(s->all, sizeof s->all, "%s", pr->is_admin ? "true" : "false");
    snprintf(s->user, sizeof s->user, "%lld", (long long)user);
    snprintf(s->key, sizeof s->key, "%lld", (long long)pr->key_id);
}

void route_key_list(at_req_t *req)
{
    if (refuse_compat(req))
        return;
    const principal_t *pr = req_principal(req);
    const char *named = req_query(req, "user_id");
    int64_t user, filter = 0;
    if (pr->is_admin) {
        char *end;
        filter = named ? strtoll(named, &end, 10) : 0;
        if (named && (!*named || *end || filter < 1)) {
            req_error(req, 422, "user_id must be a positive integer");
            return;
        }
        user = 0;
    } else if ((user = auth_scope(req, named)) < 0) {
        return; /* answered: another user's keys */
    }
    key_scope_t s = {0};
    key_scope(pr, user, &s);
    char f[24];
    snprintf(f, sizeof f, "%lld", (long long)filter);
    const char *p[] = {s.all, s.user, s.key, f};
    if (at_db_query(req_gw(req)->db,
                    "SELECT coalesce(json_agg(" SQL_KEY_OBJ(
                        "k") " ORDER BY k.id), '[]')::text FROM api_keys k WHERE ($1::boolean OR "
                             "k.user_id = $2::bigint OR k.id = $3::bigint) AND ($4::bigint = 0 "
                             "OR k.user_id = $4::bigint)",
                    4, p, keys_listed, req) != AT_OK)
        req_error(req, 503, "Database busy");
}

/* ---- DELETE /api/keys/{id} ------------------------------------------------ */

static void key_deleted(PGresult *res, const char *err, void *arg)
{
    at_req_t *req = arg;
    if (err) {
        req_db_error(req, "key_delete", err);
        return;
    }
    if (PQntuples(res) == 0) {
        req_error(req, 404, "API key not found");
        return;
    }
    char cache_key[2 + AT_SHA256_HEX + 1];
    snprintf(cache_key, sizeof cache_key, "k:%s", PQgetvalue(res, 0, 0));
    /* every gateway forgets the cached key before the client hears back */
    auth_revoke(req_gw(req), cache_key);
    req_json(req, 200, json_pack("{s:b, s:s}", "success", 1, "message", "API key revoked"));
}

void route_key_delete(at_req_t *req)
{
    if (refuse_compat(req))
        return;
    const char *id = req_param(req, 0);
    size_t n = strlen(id);
    if (n == 0 || n > 18 || strspn(id, "0123456789") != n) {
        req_error(req, 404, "API key not found");
        return;
    }
    const principal_t *pr = req_principal(req);
    key_scope_t s = {0};
    key_scope(pr, pr->user_id, &s);
    const char *p[7];
    char uid[24];
    audit_params(req, p, uid);
    p[3] = id;
    p[4] = s.all;
    p[5] = s.user;
    p[6] = s.key;
    if (at_db_query(req_gw(req)->db,
                    "WITH k AS (UPDATE api_keys SET revoked_at = now() WHERE id = $4::bigint AND "
                    "revoked_at IS NULL AND ($5::boolean OR user_id = $6::bigint OR id = "
                    "$7::bigint) RETURNING id, key_hash), "
                    "a AS (" AUDIT_FROM("key.delete", "'key:' || k.id", "NULL",
                                        "k") ") SELECT key_hash FROM k",
                    7, p, key_deleted, req) != AT_OK)
        req_error(req, 503, "Database busy");
}
