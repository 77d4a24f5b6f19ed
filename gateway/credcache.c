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
