#include "credcache.h"

#include <stdlib.h>
#include <string.h>

#include "atelier/util.h"

#define NBUCKETS 4096

typedef struct entry {
    struct entry *next;
    char key[CREDCACHE_KEY_MAX];
    cred_t cred;
    int64_t until_ms;
} entry_t;

static entry_t *buckets[NBUCKETS];
static int count;

static unsigned hash(const char *s)
{
    unsigned h = 2166136261u;
    while (*s)
        h = (h ^ (unsigned char)*s++) * 16777619u;
    return h % NBUCKETS;
}

static void sweep(int64_t now_ms, int all)
{
    for (int i = 0; i < NBUCKETS; i++) {
        entry_t **pp = &buckets[i];
        while (*pp) {
            if (all || (*pp)->until_ms <= now_ms) {
                entry_t *e = *pp;
                *pp = e->next;
                free(e);
                count--;
            } else {
                pp = &(*pp)->next;
            }
        }
    }
}

int credcache_get(const char *key, int64_t now_ms, cred_t *out)
{
    for (entry_t *e = buckets[hash(key)]; e; e = e->next) {
        if (!strcmp(e->key, key)) {
            if (e->until_ms <= now_ms)
                return 0;
            *out = e->cred;
            return 1;
        }
    }
    return 0;
}

void credcache_put(const char *key, const cred_t *c, int64_t now_ms)
{
    credcache_drop(key);
    if (count >= CREDCACHE_MAX) {
        sweep(now_ms, 0);
        if (count >= CREDCACHE_MAX)
            sweep(now_ms, 1);
    }
    entry_t *e = calloc(1, sizeof *e);
    if (!e)
        return;
    at_strlcpy(e->key, key, sizeof e->key);
    e->cred = *c;
    e->until_ms = now_ms + (c->valid ? CREDCACHE_TTL_MS : CREDCACHE_NEG_TTL_MS);
    if (c->expires_ms > 0 && c->expires_ms < e->until_ms)
        e->until_ms = c->expires_ms;
    unsigned h = hash(key);
    e->next = buckets[h];
    buckets[h] = e;
    count++;
}

void credcache_drop(const char *key)
{
    for (entry_t **pp = &buckets[hash(key)]; *pp; pp = &(*pp)->next) {
        if (!strcmp((*pp)->key, key)) {
            entry_t *e = *pp;
            *pp = e->next;
            free(e);
            count--;
            return;
        }
    }
}

void credcache_clear(void)
{
    sweep(0, 1);
}

/* ---- the rows behind the cache -------------------------------------------- */

static const char token_sql[] =
    "SELECT u.id, u.is_admin, 0, (extract(epoch FROM t.expires_at) * 1000)::bigint "
    "FROM auth_tokens t JOIN users u ON u.id = t.user_id "
    "WHERE t.token_hash = $1 AND t.kind = 'bearer' AND t.revoked_at IS NULL "
    "AND t.expires_at > now() AND u.is_active";
static const char key_sql[] =
    "SELECT k.user_id, k.is_admin OR coalesce(u.is_admin, false), k.id, "
    "(extract(epoch FROM k.expires_at) * 1000)::bigint FROM api_keys k "
    "LEFT JOIN users u ON u.id = k.user_id WHERE k.key_hash = $1 AND k.revoked_at IS NULL "
    "AND (k.expires_at IS NULL OR k.expires_at > now()) AND (u.id IS NULL OR u.is_active)";

typedef struct fetch {
    char key[CREDCACHE_KEY_MAX];
    credcache_cb *cb;
    void *arg;
} fetch_t;

static void fetched(PGresult *res, const char *err, void *arg)
{
    fetch_t *f = arg;
    cred_t c = {0};
    if (!err && PQntuples(res) == 1) {
        c.valid = 1;
        c.user_id = PQgetisnull(res, 0, 0) ? 0 : strtoll(PQgetvalue(res, 0, 0), NULL, 10);
        c.is_admin = PQgetvalue(res, 0, 1)[0] == 't';
        c.key_id = strtoll(PQgetvalue(res, 0, 2), NULL, 10);
        c.expires_ms = PQgetisnull(res, 0, 3) ? 0 : strtoll(PQgetvalue(res, 0, 3), NULL, 10);
    }
    if (!err)
        credcache_put(f->key, &c, at_wall_ms());
    f->cb(&c, err, f->arg);
    free(f);
}

at_err_t credcache_fetch(at_db_t *db, const char *key, credcache_cb *cb, void *arg)
{
    cred_t c;
    if (credcache_get(key, at_wall_ms(), &c)) {
        cb(&c, NULL, arg);
        return AT_OK;
    }
    if (strlen(key) < 3 || key[1] != ':' || (key[0] != 't' && key[0] != 'k'))
        return AT_EINVAL;
    fetch_t *f = calloc(1, sizeof *f);
    if (!f)
        return AT_ENOMEM;
    at_strlcpy(f->key, key, sizeof f->key);
    f->cb = cb;
    f->arg = arg;
    const char *params[] = {key + 2};
    at_err_t e = at_db_query(db, key[0] == 'k' ? key_sql : token_sql, 1, params, fetched, f);
    if (e != AT_OK)
        free(f);
    return e;
}
