/*
 * Users (fastapi-backend.md, "User Management"): POST /api/users/register,
 * POST /api/users/login, POST /api/users/logout, GET /api/users (admin),
 * GET /api/users/me.
 *
 * Passwords are bcrypt $2b$ (libxcrypt). One hash at the default cost takes
 * ~80 ms of CPU, which on the loop would stall every other client, so hashing
 * and verifying run on libuv's thread pool; the work function touches only
 * its own account_t and the after-work callback continues on the loop.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "atelier/crypto.h"
#include "atelier/log.h"
#include "atelier/util.h"
#include "auth.h"
#include "ratelimit.h"
#include "records.h"
#include "routes.h"

#define EMAIL_MAX 254    /* RFC 5321 path limit */
#define USERNAME_MAX 254 /* the username defaults to the email */
#define PASSWORD_MIN 8
#define PASSWORD_MAX 72    /* bcrypt ignores every byte past the 72nd */
#define PASSWORD_READ 1024 /* longer login passwords are refused unread */
#define HASH_MAX 128
#define LIST_LIMIT_DEFAULT 100
#define LIST_LIMIT_MAX 1000

/* A users row as the API's user object (json). */
#define SQL_USER_OBJ(u)                                                                            \
    "json_build_object('id', " u ".id, 'username', " u ".username, 'email', " u ".email, "         \
    "'is_admin', " u ".is_admin, 'is_active', " u ".is_active, 'created_at', " SQL_ISO(            \
        u ".created_at") ", 'updated_at', " SQL_ISO(u ".updated_at") ")"

/* Verified when the e-mail is unknown so that a wrong address costs as much
 * time as a wrong password (the cost field is filled from the config): a
 * well-formed bcrypt salt and digest that no password produces. */
static const char dummy_tail[] = "6TMjf63gTYBumB9/owqdnOReythW/ftKbRWFpH.mR49pNRYnIn6mK";

/* One register or login in flight. Owned by the handler chain; freed by
 * account_free after the request is answered. */
typedef struct account {
    at_req_t *req;
    uv_work_t work;
    void (*next)(struct account *a); /* after the per-email rate limit */
    char email[EMAIL_MAX + 1];       /* register: the email; login: email or username */
    char username[USERNAME_MAX + 1];
    char password[PASSWORD_MAX + 1]; /* wiped by the work function */
    char hash[HASH_MAX];             /* register: the new hash; login: the stored one */
    int cost;                        /* bcrypt work factor, copied for the worker thread */
    int by_username;                 /* login names the account by username */
    int too_long;                    /* login password over PASSWORD_MAX: never matches */
    int is_admin;
    int found, active, ok;
    int64_t user_id;
    char *user_json; /* login: the user object, malloc'd */
} account_t;

static void account_free(account_t *a)
{
    explicit_bzero(a->password, sizeof a->password);
    free(a->user_json);
    free(a);
}

/* ---- shared checks -------------------------------------------------------- */

/* 1 (after answering 422) if body has a member not in allowed. */
static int has_unknown_field(at_req_t *req, json_t *body, const char *const *allowed)
{
    const char *key;
    json_t *v;
    json_object_foreach(body, key, v)
    {
        int known = 0;
        for (const char *const *k = allowed; *k && !known; k++)
            known = !strcmp(key, *k);
        if (!known) {
            req_error(req, 422, "Unknown field '%.64s'", key);
            return 1;
        }
    }
    return 0;
}

static int has_control_or_space(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c == 0x7f)
            return 1;
    }
    return 0;
}

/* NULL if e is an address we accept, else why not. */
static const char *email_problem(const char *e, size_t len)
{
    if (len == 0 || len > EMAIL_MAX)
        return "must be 1..254 bytes";
    if (has_control_or_space(e, len))
        return "must not contain spaces or control characters";
    const char *at = strchr(e, '@');
    if (!at || strchr(at + 1, '@'))
        return "must contain exactly one '@'";
    if (at == e)
        return "needs a local part before '@'";
    const char *dom = at + 1;
    if (!strchr(dom, '.') || dom[0] == '.' || e[len - 1] == '.' || strstr(dom, ".."))
        return "needs a domain with a dot after '@' (name@example.com)";
    return NULL;
}

/* ---- per-email rate limit ------------------------------------------------- */

static void email_limited(int allowed, int64_t retry_ms, void *arg)
{
    account_t *a = arg;
    if (allowed) {
        a->next(a);
        return;
    }
    req_too_many(a->req, retry_ms, "Too many attempts for this account");
    account_free(a);
}

/* The per-IP login limit is applied by the pipeline; this one stops a
 * spread-out guesser aiming at one account. The bucket is named by a hash
 * so addresses do not sit in Redis in clear. */
static void rate_then(account_t *a, void (*next)(account_t *a))
{
    gateway_t *gw = req_gw(a->req);
    a->next = next;
    int64_t per_min = gw->cfg.login_rate_per_min;
    if (per_min == 0) {
        next(a);
        return;
    }
    char lower[EMAIL_MAX + 1], hash[AT_SHA256_HEX + 1], key[96];
    size_t n = strlen(a->email);
    for (size_t i = 0; i <= n; i++)
        lower[i] =
            (a->email[i] >= 'A' && a->email[i] <= 'Z') ? (char)(a->email[i] + 32) : a->email[i];
    at_sha256_hex(lower, n, hash);
    snprintf(key, sizeof key, "rl:login:email:%s", hash);
    ratelimit_take(gw, key, (double)per_min / 60.0, per_min, email_limited, a);
}

/* Queue fn on the thread pool; answers 503 and frees a if it cannot. */
static void run_off_loop(account_t *a, uv_work_cb fn, uv_after_work_cb after)
{
    a->work.data = a;
    int rc = uv_queue_work(req_gw(a->req)->loop, &a->work, fn, after);
    if (rc != 0) {
        at_error("event=bcrypt_queue_failed req=%s error=\"%s\"", req_id(a->req), uv_strerror(rc));
        req_error(a->req, 503, "Password hashing unavailable");
        account_free(a);
    }
}

/* After-work callbacks run on the loop, but possibly after SIGTERM began
 * tearing the gateway down (the database pool may be gone): answer there
 * without touching it. */
static int shutting_down(account_t *a, int status)
{
    if (status != UV_ECANCELED && !req_gw(a->req)->draining)
        return 0;
    req_error(a->req, 503, "Server is shutting down");
    account_free(a);
    return 1;
}

/* ---- POST /api/users/register --------------------------------------------- */

static void registered(PGresult *res, const char *err, void *arg)
{
    account_t *a = arg;
    if (err) {
        const char *constraint = res ? PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME) : NULL;
        if (!strcmp(db_sqlstate(res), "23505") && constraint &&
            !strcmp(constraint, "users_username_key"))
            req_error(a->req, 409, "Username already taken");
        else if (!strcmp(db_sqlstate(res), "23505"))
            req_error(a->req, 409, "Email already registered");
        else
            req_db_error(a->req, "user_register", err);
        account_free(a);
        return;
    }
    const char *text = PQgetvalue(res, 0, 0);
    req_send(a->req, 201, NULL, strdup(text), strlen(text));
    account_free(a);
}

static void hash_work(uv_work_t *w)
{
    account_t *a = w->data;
    a->ok = at_password_hash(a->password, a->cost, a->hash, sizeof a->hash) == AT_OK;
    explicit_bzero(a->password, sizeof a->password);
}

/* The audit row's user_id is the new user (the record it concerns); its
 * actor is the caller, or the new user for a self-registration. */
static const char register_sql[] =
    "WITH u AS (INSERT INTO users (username, email, password_hash, is_admin) "
    "VALUES ($4, $5, $6, $7::boolean) RETURNING *), "
    "a AS (INSERT INTO audit_log (actor, user_id, action, target, detail, ip) "
    "SELECT CASE WHEN $1 = 'anonymous' THEN 'user:' || u.id ELSE $1 END, u.id, "
    "'user.register', u.email, jsonb_build_object('is_admin', u.is_admin, 'by_user', "
    "NULLIF($2, '')::bigint), $3 FROM u) "
    "SELECT " SQL_USER_OBJ("u") "::text FROM u";

static void hash_done(uv_work_t *w, int status)
{
    account_t *a = w->data;
    if (shutting_down(a, status))
        return;
    if (!a->ok) {
        at_error("event=bcrypt_failed req=%s", req_id(a->req));
        req_error(a->req, 500, "Password hashing failed");
        account_free(a);
        return;
    }
    const char *p[7];
    char uid[24];
    audit_params(a->req, p, uid);
    p[3] = a->username;
    p[4] = a->email;
    p[5] = a->hash;
    p[6] = a->is_admin ? "true" : "false";
    if (at_db_query(req_gw(a->req)->db, register_sql, 7, p, registered, a) != AT_OK) {
        req_error(a->req, 503, "Database busy");
        account_free(a);
    }
}

static void register_hash(account_t *a)
{
    a->cost = (int)req_gw(a->req)->cfg.bcrypt_cost;
    run_off_loop(a, hash_work, hash_done);
}

/* Fill a from a register body; answers 4xx and returns -1 when it is bad. */
static int register_parse(at_req_t *req, json_t *body, account_t *a)
{
    static const char *const allowed[] = {"email", "password", "username", "is_admin", NULL};
    if (has_unknown_field(req, body, allowed))
        return -1;
    json_t *email = json_object_get(body, "email");
    json_t *password = json_object_get(body, "password");
    json_t *username = json_object_get(body, "username");
    json_t *is_admin = json_object_get(body, "is_admin");
    if (!json_is_string(email)) {
        req_error(req, 422, "email is required and must be a string");
        return -1;
    }
    const char *why = email_problem(json_string_value(email), json_string_length(email));
    if (why) {
        req_error(req, 422, "Invalid email address: %s", why);
        return -1;
    }
    if (!json_is_string(password) || json_string_length(password) < PASSWORD_MIN ||
        json_string_length(password) > PASSWORD_MAX) {
        req_error(req, 422,
                  "password must be a string of %d..%d bytes (bcrypt uses at most %d bytes)",
                  PASSWORD_MIN, PASSWORD_MAX, PASSWORD_MAX);
        return -1;
    }
    if (username && !json_is_null(username) &&
        (!json_is_string(username) || json_string_length(username) == 0 ||
         json_string_length(username) > USERNAME_MAX ||
         has_control_or_space(json_string_value(username), json_string_length(username)))) {
        req_error(req, 422, "username must be 1..%d bytes without spaces or control characters",
                  USERNAME_MAX);
        return -1;
    }
    if (is_admin && !json_is_null(is_admin) && !json_is_boolean(is_admin)) {
        req_error(req, 422, "is_admin must be a boolean");
        return -1;
    }
    if (json_is_true(is_admin) && !req_principal(req)->is_admin) {
        req_error(req, 403, "Only an admin may create an admin user");
        return -1;
    }
    at_strlcpy(a->email, json_string_value(email), sizeof a->email);
    at_strlcpy(a->username,
               json_is_string(username) ? json_string_value(username) : json_string_value(email),
               sizeof a->username);
    at_strlcpy(a->password, json_string_value(password), sizeof a->password);
    a->is_admin = json_is_true(is_admin);
    return 0;
}

typedef int account_parse_fn(at_req_t *req, json_t *body, account_t *a);

/* Both account routes: parse the body into an account_t, then run `next`
 * once the per-e-mail rate limit lets it through. */
static void account_begin(at_req_t *req, account_parse_fn *parse, void (*next)(account_t *))
{
    json_t *body = req_json_body(req);
    if (!body)
        return;
    account_t *a = calloc(1, sizeof *a);
    if (!a) {
        json_decref(body);
        req_error(req, 503, "Out of memory");
        return;
    }
    a->req = req;
    int bad = parse(req, body, a);
    json_decref(body);
    if (bad) {
        account_free(a);
        return;
    }
    rate_then(a, next);
}

void route_user_register(at_req_t *req)
{
    account_begin(req, register_parse, register_hash);
}

/* ---- POST /api/users/login ------------------------------------------------ */

static void login_answer(account_t *a, int status, const char *detail)
{
    req_error(a->req, status, "%s", detail);
    account_free(a);
}

static void failure_logged(PGresult *res, const char *err, void *arg)
{
    (void)res;
    account_t *a = arg;
    if (err) /* the answer does not depend on the audit row; say it was lost */
        at_error("event=audit_failed action=user.login_failed req=%s error=\"%s\"", req_id(a->req),
                 err);
    if (a->ok) /* right password, disabled account */
        login_answer(a, 403, "User account is disabled");
    else
        login_answer(a, 401, "Incorrect email or password");
}

/* user.login_failed: target is the name tried; user_id stays empty (nobody
 * acted as that user). Answered once the row is written. */
static void login_failed(account_t *a, const char *reason)
{
    const char *p[] = {req_ip(a->req), a->email, reason};
    if (at_db_query(req_gw(a->req)->db,
                    "INSERT INTO audit_log (actor, action, target, detail, ip) VALUES "
                    "('anonymous', 'user.login_failed', $2, jsonb_build_object('reason', "
                    "$3::text), $1)",
                    3, p, failure_logged, a) != AT_OK)
        failure_logged(NULL, "database busy", a);
}

typedef struct login_ok {
    account_t *a;
    char *token;
    char expires_at[32];
} login_ok_t;

static void token_stored(PGresult *res, const char *err, void *arg)
{
    login_ok_t *l = arg;
    account_t *a = l->a;
    if (err && !strcmp(db_sqlstate(res), "23503")) {
        req_error(a->req, 401, "Incorrect email or password"); /* deleted meanwhile */
    } else if (err) {
        req_db_error(a->req, "login_token", err);
    } else {
        json_t *user = json_loads(a->user_json, 0, NULL);
        req_json(a->req, 200,
                 json_pack("{s:o, s:s, s:s, s:s}", "user", user ? user : json_null(),
                           "access_token", l->token, "token_type", "bearer", "expires_at",
                           l->expires_at));
    }
    explicit_bzero(l->token, strlen(l->token));
    free(l->token);
    free(l);
    account_free(a);
}

/* The token's row and the audit row commit together. */
static void login_succeeded(account_t *a)
{
    gateway_t *gw = req_gw(a->req);
    login_ok_t *l = calloc(1, sizeof *l);
    int64_t exp_s = at_wall_ms() / 1000 + gw->cfg.token_ttl;
    char jti_hash[AT_SHA256_HEX + 1];
    char *token = l ? auth_issue_token(gw, a->user_id, a->is_admin, exp_s, jti_hash) : NULL;
    if (!token) {
        free(l);
        login_answer(a, 503, "Could not issue a token");
        return;
    }
    l->a = a;
    l->token = token;
    at_iso8601(exp_s * 1000, l->expires_at);
    char uid[24], exp[24];
    snprintf(uid, sizeof uid, "%lld", (long long)a->user_id);
    snprintf(exp, sizeof exp, "%lld", (long long)exp_s);
    const char *p[] = {uid, jti_hash, exp, a->email, req_ip(a->req)};
    if (at_db_query(gw->db,
                    "WITH t AS (INSERT INTO auth_tokens (user_id, token_hash, kind, expires_at) "
                    "VALUES ($1::bigint, $2, 'bearer', to_timestamp($3::bigint)) RETURNING "
                    "user_id), "
                    "a AS (INSERT INTO audit_log (actor, user_id, action, target, ip) "
                    "SELECT 'user:' || t.user_id, t.user_id, 'user.login', $4, $5 FROM t) "
                    "SELECT 1 FROM t",
                    5, p, token_stored, l) != AT_OK) {
        explicit_bzero(l->token, strlen(l->token));
        free(l->token);
        free(l);
        login_answer(a, 503, "Database busy");
    }
}

static void verify_work(uv_work_t *w)
{
    account_t *a = w->data;
    a->ok = at_password_verify(a->password, a->hash) && a->found && !a->too_long;
    explicit_bzero(a->password, sizeof a->password);
}

static void verify_done(uv_work_t *w, int status)
{
    account_t *a = w->data;
    if (shutting_down(a, status))
        return;
    if (!a->ok)
        login_failed(a, a->found ? "bad_password" : "unknown_user");
    else if (!a->active) /* only told to whoever knows the password */
        login_failed(a, "disabled");
    else
        login_succeeded(a);
}

static void login_found(PGresult *res, const char *err, void *arg)
{
    account_t *a = arg;
    if (err) {
        req_db_error(a->req, "login_lookup", err);
        account_free(a);
        return;
    }
    a->found = PQntuples(res) == 1 && !PQgetisnull(res, 0, 1);
    if (a->found) {
        a->user_id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
        at_strlcpy(a->hash, PQgetvalue(res, 0, 1), sizeof a->hash);
        a->active = PQgetvalue(res, 0, 2)[0] == 't';
        a->is_admin = PQgetvalue(res, 0, 3)[0] == 't';
        a->user_json = strdup(PQgetvalue(res, 0, 4));
        if (!a->user_json) {
            login_answer(a, 503, "Out of memory");
            return;
        }
    } else {
        snprintf(a->hash, sizeof a->hash, "$2b$%02d$%s", (int)req_gw(a->req)->cfg.bcrypt_cost,
                 dummy_tail);
    }
    run_off_loop(a, verify_work, verify_done);
}

static void login_lookup(account_t *a)
{
    const char *p[] = {a->email};
    const char *sql = a->by_username
                          ? "SELECT id, password_hash, is_active, is_admin, " SQL_USER_OBJ(
                                "u") "::text FROM users u WHERE lower(username) = lower($1)"
                          : "SELECT id, password_hash, is_active, is_admin, " SQL_USER_OBJ(
                                "u") "::text FROM users u WHERE lower(email) = lower($1)";
    if (at_db_query(req_gw(a->req)->db, sql, 1, p, login_found, a) != AT_OK)
        login_answer(a, 503, "Database busy");
}

static int login_parse(at_req_t *req, json_t *body, account_t *a)
{
    static const char *const allowed[] = {"email", "username", "password", NULL};
    if (has_unknown_field(req, body, allowed))
        return -1;
    json_t *email = json_object_get(body, "email");
    json_t *username = json_object_get(body, "username");
    json_t *password = json_object_get(body, "password");
    json_t *name = json_is_string(email) ? email : username;
    a->by_username = name == username;
    if (!json_is_string(name) || json_string_length(name) == 0 ||
        json_string_length(name) > EMAIL_MAX) {
        req_error(req, 422, "email (or username) is required: a string of 1..%d bytes", EMAIL_MAX);
        return -1;
    }
    if (!json_is_string(password) || json_string_length(password) > PASSWORD_READ) {
        req_error(req, 422, "password is required: a string of at most %d bytes", PASSWORD_READ);
        return -1;
    }
    at_strlcpy(a->email, json_string_value(name), sizeof a->email);
    a->too_long = at_strlcpy(a->password, json_string_value(password), sizeof a->password);
    return 0;
}

void route_user_login(at_req_t *req)
{
    account_begin(req, login_parse, login_lookup);
}

/* ---- POST /api/users/logout ----------------------------------------------- */

typedef struct logout {
    at_req_t *req;
    char cache_key[2 + AT_SHA256_HEX + 1];
} logout_t;

static void logged_out(PGresult *res, const char *err, void *arg)
{
    (void)res;
    logout_t *l = arg;
    if (err) {
        req_db_error(l->req, "logout", err);
    } else {
        /* every gateway forgets the cached token before the client hears back */
        auth_revoke(req_gw(l->req), l->cache_key);
        req_json(l->req, 200, json_pack("{s:b, s:s}", "success", 1, "message", "Logged out"));
    }
    free(l);
}

void route_user_logout(at_req_t *req)
{
    const principal_t *pr = req_principal(req);
    if (pr->kind != P_USER || !pr->token_hash[0]) {
        req_error(req, 400,
                  "Logout revokes the bearer token it is called with; revoke an API key with "
                  "DELETE /api/keys/{id}");
        return;
    }
    logout_t *l = calloc(1, sizeof *l);
    if (!l) {
        req_error(req, 503, "Out of memory");
        return;
    }
    l->req = req;
    snprintf(l->cache_key, sizeof l->cache_key, "t:%s", pr->token_hash);
    const char *p[4];
    char uid[24];
    audit_params(req, p, uid);
    p[3] = pr->token_hash;
    if (at_db_query(req_gw(req)->db,
                    "WITH t AS (UPDATE auth_tokens SET revoked_at = now() WHERE token_hash = $4 "
                    "AND revoked_at IS NULL RETURNING id), "
                    "a AS (" AUDIT_FROM("user.logout", "'token:' || t.id", "NULL",
                                        "t") ") SELECT count(*) FROM t",
                    4, p, logged_out, l) != AT_OK) {
        req_error(req, 503, "Database busy");
        free(l);
    }
}

/* ---- GET /api/users, GET /api/users/me ------------------------------------ */

static void text_answer(PGresult *res, const char *err, void *arg)
{
    at_req_t *req = arg;
    if (err) {
        req_db_error(req, "user_read", err);
        return;
    }
    if (PQntuples(res) == 0) {
        req_error(req, 404, "User not found");
        return;
    }
    const char *text = PQgetvalue(res, 0, 0);
    req_send(req, 200, NULL, strdup(text), strlen(text));
}

/* Query parameter name as an integer in [min, max] (def when absent);
 * answers 422 and returns -1 when it is not. */
static int64_t query_int(at_req_t *req, const char *name, int64_t def, int64_t min, int64_t max)
{
    const char *s = req_query(req, name);
    if (!s)
        return def;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || v < min || v > max) {
        req_error(req, 422, "%s must be an integer in [%lld, %lld]", name, (long long)min,
                  (long long)max);
        return -1;
    }
    return v;
}

void route_user_list(at_req_t *req)
{
    int64_t limit = query_int(req, "limit", LIST_LIMIT_DEFAULT, 1, LIST_LIMIT_MAX);
    if (limit < 0)
        return;
    int64_t offset = query_int(req, "offset", 0, 0, INT32_MAX);
    if (offset < 0)
        return;
    char l[24], o[24];
    snprintf(l, sizeof l, "%lld", (long long)limit);
    snprintf(o, sizeof o, "%lld", (long long)offset);
    const char *p[] = {l, o};
    if (at_db_query(
            req_gw(req)->db,
            "SELECT coalesce(json_agg(s.j ORDER BY s.id), '[]')::text FROM (SELECT "
            "u.id, " SQL_USER_OBJ("u") " AS j FROM users u ORDER BY u.id LIMIT $1::bigint OFFSET "
                                       "$2::bigint) s",
            2, p, text_answer, req) != AT_OK)
        req_error(req, 503, "Database busy");
}

void route_user_me(at_req_t *req)
{
    const principal_t *pr = req_principal(req);
    if (pr->user_id == 0) {
        req_error(req, 404, "This API key is not bound to a user");
        return;
    }
    char uid[24];
    snprintf(uid, sizeof uid, "%lld", (long long)pr->user_id);
    const char *p[] = {uid};
    if (at_db_query(req_gw(req)->db,
                    "SELECT " SQL_USER_OBJ("u") "::text FROM users u WHERE u.id = $1::bigint", 1, p,
                    text_answer, req) != AT_OK)
        req_error(req, 503, "Database busy");
}
