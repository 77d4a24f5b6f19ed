#include "atelier/config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "atelier/log.h"
#include "atelier/util.h"

enum { T_STR, T_INT, T_BOOL };

typedef struct setting {
    int type;
    size_t offset;
    const char *env;
    const char *alias;
    const char *def;
    int64_t min, max;
    const char *doc;
} setting_t;

static const setting_t g_settings[] = {
#define AT_CFG_ROW(type, field, env, alias, def, min, max, doc)                                    \
    {T_##type, offsetof(at_config_t, field), env, alias, def, min, max, doc},
    AT_CONFIG_SETTINGS(AT_CFG_ROW)
#undef AT_CFG_ROW
};
#define N_SETTINGS (sizeof g_settings / sizeof g_settings[0])

/* Values read from the ATELIER_CONFIG file; consulted after the environment. */
typedef struct file_kv {
    char *key;
    char *val;
} file_kv_t;

typedef struct file_vals {
    file_kv_t *kv;
    size_t n;
} file_vals_t;

static void seterr(char *errbuf, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errbuf, errlen, fmt, ap);
    va_end(ap);
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
    return s;
}

static const setting_t *find_setting(const char *name)
{
    for (size_t i = 0; i < N_SETTINGS; i++) {
        if (strcmp(g_settings[i].env, name) == 0 ||
            (g_settings[i].alias && strcmp(g_settings[i].alias, name) == 0))
            return &g_settings[i];
    }
    return NULL;
}

static at_err_t read_file(const char *path, file_vals_t *fv, char *errbuf, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        seterr(errbuf, errlen, "ATELIER_CONFIG=\"%s\": %s", path, strerror(errno));
        return AT_ECONFIG;
    }
    char line[4096];
    int lineno = 0;
    at_err_t err = AT_OK;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        if (!strchr(line, '\n') && !feof(f)) {
            seterr(errbuf, errlen, "%s:%d: line longer than %zu bytes", path, lineno,
                   sizeof line - 2);
            err = AT_ECONFIG;
            break;
        }
        char *s = trim(line);
        if (*s == '\0' || *s == '#')
            continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            seterr(errbuf, errlen, "%s:%d: expected KEY=VALUE, got \"%s\"", path, lineno, s);
            err = AT_ECONFIG;
            break;
        }
        *eq = '\0';
        char *key = trim(s), *val = trim(eq + 1);
        size_t vn = strlen(val);
        if (vn >= 2 &&
            ((val[0] == '"' && val[vn - 1] == '"') || (val[0] == '\'' && val[vn - 1] == '\''))) {
            val[vn - 1] = '\0';
            val++;
        }
        if (!find_setting(key)) {
            seterr(errbuf, errlen, "%s:%d: unknown setting \"%s\"", path, lineno, key);
            err = AT_ECONFIG;
            break;
        }
        file_kv_t *grown = realloc(fv->kv, (fv->n + 1) * sizeof *grown);
        if (!grown) {
            err = AT_ENOMEM;
            break;
        }
        fv->kv = grown;
        fv->kv[fv->n].key = strdup(key);
        fv->kv[fv->n].val = strdup(val);
        fv->n++;
    }
    fclose(f);
    return err;
}

static const char *file_lookup(const file_vals_t *fv, const char *name)
{
    const char *found = NULL;
    for (size_t i = 0; i < fv->n; i++)
        if (strcmp(fv->kv[i].key, name) == 0)
            found = fv->kv[i].val; /* last one wins */
    return found;
}

static at_err_t parse_value(const setting_t *s, const char *name, const char *val, at_config_t *cfg,
                            char *errbuf, size_t errlen)
{
    char *base = (char *)cfg + s->offset;
    switch (s->type) {
    case T_STR: {
        char *copy = strdup(val);
        if (!copy)
            return AT_ENOMEM;
        free(*(char **)base);
        *(char **)base = copy;
        return AT_OK;
    }
    case T_INT: {
        errno = 0;
        char *end = NULL;
        long long v = strtoll(val, &end, 10);
        if (*val == '\0' || errno != 0 || *end != '\0') {
            seterr(errbuf, errlen, "%s=\"%s\": not an integer", name, val);
            return AT_ECONFIG;
        }
        if (v < s->min || v > s->max) {
            seterr(errbuf, errlen, "%s=\"%s\": out of range [%lld, %lld]", name, val,
                   (long long)s->min, (long long)s->max);
            return AT_ECONFIG;
        }
        *(int64_t *)base = v;
        return AT_OK;
    }
    case T_BOOL: {
        int v;
        if (!strcmp(val, "true") || !strcmp(val, "1") || !strcmp(val, "yes") || !strcmp(val, "on"))
            v = 1;
        else if (!strcmp(val, "false") || !strcmp(val, "0") || !strcmp(val, "no") ||
                 !strcmp(val, "off"))
            v = 0;
        else {
            seterr(errbuf, errlen, "%s=\"%s\": expected true or false", name, val);
            return AT_ECONFIG;
        }
        *(int *)base = v;
        return AT_OK;
    }
    }
    return AT_EINVAL;
}

/* Turn a relative data dir into an absolute one: sockets and URLs derived
 * from it must not depend on the current directory of whoever reads them. */
static at_err_t absolutise(char **path)
{
    if ((*path)[0] == '/')
        return AT_OK;
    char cwd[PATH_MAX];
    if (!getcwd(cwd, sizeof cwd))
        return AT_EIO;
    const char *rel = *path;
    if (rel[0] == '.' && rel[1] == '/')
        rel += 2;
    else if (rel[0] == '.' && rel[1] == '\0')
        rel += 1;
    char *abs = NULL;
    if (asprintf(&abs, "%s%s%s", cwd, *rel ? "/" : "", rel) < 0)
        return AT_ENOMEM;
    free(*path);
    *path = abs;
    return AT_OK;
}

/* One tier of a `name=cpu_millis:memory_mb,...` list: 1 when name is in it
 * (*cpu, *mem set), 0 when not, -1 when the list is malformed. */
static int tier_find(const char *list, const char *name, int *cpu, int *mem)
{
    size_t want = strlen(name);
    for (const char *p = list; *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        char num[48];
        size_t nl = eq ? len - (size_t)(eq + 1 - p) : 0;
        if (!eq || eq == p || nl == 0 || nl >= sizeof num)
            return -1;
        memcpy(num, eq + 1, nl);
        num[nl] = '\0';
        int c, m, used = 0;
        if (sscanf(num, "%d:%d%n", &c, &m, &used) != 2 || num[used] || c < 1 || c > 1000000 ||
            m < 16 || m > 16777216)
            return -1;
        if ((size_t)(eq - p) == want && !strncmp(p, name, want)) {
            *cpu = c;
            *mem = m;
            return 1;
        }
        p = end ? end + 1 : p + len;
    }
    return 0;
}

int at_config_tier(const at_config_t *cfg, const char *name, int *cpu_millis, int *memory_mb)
{
    return tier_find(cfg->tiers, name, cpu_millis, memory_mb) == 1;
}

static at_err_t check_tiers(const at_config_t *cfg, char *errbuf, size_t errlen)
{
    static const char *const needed[] = {"small", "standard", "large"};
    for (size_t i = 0; i < sizeof needed / sizeof needed[0]; i++) {
        int c, m, r = tier_find(cfg->tiers, needed[i], &c, &m);
        if (r < 0)
            seterr(errbuf, errlen,
                   "ATELIER_TIERS=\"%s\": expected name=cpu_millis:memory_mb,... (cpu_millis "
                   ">= 1, memory_mb >= 16)",
                   cfg->tiers);
        else if (r == 0)
            seterr(errbuf, errlen,
                   "ATELIER_TIERS=\"%s\": tier %s is missing (small, standard and large are "
                   "needed)",
                   cfg->tiers, needed[i]);
        if (r != 1) {
            return AT_ECONFIG;
        }
    }
    return AT_OK;
}

static at_err_t derive(at_config_t *cfg, char *errbuf, size_t errlen)
{
    if (check_tiers(cfg, errbuf, errlen) != AT_OK)
        return AT_ECONFIG;
    if (absolutise(&cfg->data_dir) != AT_OK) {
        seterr(errbuf, errlen, "ATELIER_DATA_DIR=\"%s\": cannot make absolute", cfg->data_dir);
        return AT_ECONFIG;
    }
    if (cfg->database_url[0] == '\0') {
        free(cfg->database_url);
        if (asprintf(&cfg->database_url, "postgresql:///atelier?host=%s/run&user=atelier",
                     cfg->data_dir) < 0)
            return AT_ENOMEM;
    }
    if (cfg->redis_url[0] == '\0') {
        free(cfg->redis_url);
        if (asprintf(&cfg->redis_url, "unix://%s/run/redis.sock", cfg->data_dir) < 0)
            return AT_ENOMEM;
    } else if (strncmp(cfg->redis_url, "redis://", 8) != 0 &&
               strncmp(cfg->redis_url, "unix://", 7) != 0) {
        seterr(errbuf, errlen, "REDIS_URL=\"%s\": expected redis://host:port or unix:///path",
               cfg->redis_url);
        return AT_ECONFIG;
    }
    if (cfg->workspace_base_path[0] == '\0') {
        free(cfg->workspace_base_path);
        if (asprintf(&cfg->workspace_base_path, "%s/workspaces", cfg->data_dir) < 0)
            return AT_ENOMEM;
    }
    at_log_level_t lvl;
    if (at_log_parse_level(cfg->log_level, &lvl) != 0) {
        seterr(errbuf, errlen, "ATELIER_LOG_LEVEL=\"%s\": expected debug, info, warn or error",
               cfg->log_level);
        return AT_ECONFIG;
    }
    if (strcmp(cfg->sandbox_network, "none") != 0 && strcmp(cfg->sandbox_network, "host") != 0) {
        seterr(errbuf, errlen, "ATELIER_SANDBOX_NETWORK=\"%s\": expected none or host",
               cfg->sandbox_network);
        return AT_ECONFIG;
    }
    if (strcmp(cfg->auth_mode, "strict") != 0 && strcmp(cfg->auth_mode, "compat") != 0) {
        seterr(errbuf, errlen, "ATELIER_AUTH=\"%s\": expected strict or compat", cfg->auth_mode);
        return AT_ECONFIG;
    }
    if (cfg->jwt_secret[0] != '\0' && strlen(cfg->jwt_secret) < 32) {
        seterr(errbuf, errlen, "JWT_SECRET: %zu bytes; at least 32 are needed",
               strlen(cfg->jwt_secret));
        return AT_ECONFIG;
    }
    if (cfg->instance[0] == '\0') {
        char host[64] = "host";
        gethostname(host, sizeof host - 1);
        host[sizeof host - 1] = '\0';
        unsigned char r[3];
        at_random_bytes(r, sizeof r);
        free(cfg->instance);
        if (asprintf(&cfg->instance, "%s-%d-%02x%02x%02x", host, (int)getpid(), r[0], r[1], r[2]) <
            0)
            return AT_ENOMEM;
    } else {
        for (const char *p = cfg->instance; *p; p++) {
            if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_' && *p != '.') {
                seterr(errbuf, errlen, "ATELIER_INSTANCE=\"%s\": only letters, digits, - _ .",
                       cfg->instance);
                return AT_ECONFIG;
            }
        }
    }
    return AT_OK;
}

at_err_t at_config_load_from(at_config_t *cfg, const char *(*lookup)(const char *, void *),
                             void *arg, char *errbuf, size_t errlen)
{
    memset(cfg, 0, sizeof *cfg);
    file_vals_t fv = {0};
    at_err_t err = AT_OK;

    for (size_t i = 0; i < N_SETTINGS && err == AT_OK; i++)
        err =
            parse_value(&g_settings[i], g_settings[i].env, g_settings[i].def, cfg, errbuf, errlen);

    const char *file = lookup("ATELIER_CONFIG", arg);
    if (err == AT_OK && file && *file)
        err = read_file(file, &fv, errbuf, errlen);

    /* Environment (and its alias) first, then the file. */
    for (size_t i = 0; i < N_SETTINGS && err == AT_OK; i++) {
        const setting_t *s = &g_settings[i];
        const char *name = s->env;
        const char *val = lookup(s->env, arg);
        if (!val && s->alias) {
            val = lookup(s->alias, arg);
            name = s->alias;
        }
        if (!val) {
            name = s->env;
            val = file_lookup(&fv, s->env);
            if (!val && s->alias) {
                val = file_lookup(&fv, s->alias);
                name = s->alias;
            }
        }
        if (val)
            err = parse_value(s, name, val, cfg, errbuf, errlen);
    }
    for (size_t i = 0; i < fv.n; i++) {
        free(fv.kv[i].key);
        free(fv.kv[i].val);
    }
    free(fv.kv);
    if (err == AT_OK)
        err = derive(cfg, errbuf, errlen);
    if (err == AT_ENOMEM)
        seterr(errbuf, errlen, "config: out of memory");
    if (err != AT_OK)
        at_config_free(cfg);
    return err;
}

static const char *env_lookup(const char *name, void *arg)
{
    (void)arg;
    return getenv(name);
}

at_err_t at_config_load(at_config_t *cfg, char *errbuf, size_t errlen)
{
    return at_config_load_from(cfg, env_lookup, NULL, errbuf, errlen);
}

void at_config_free(at_config_t *cfg)
{
    for (size_t i = 0; i < N_SETTINGS; i++) {
        if (g_settings[i].type == T_STR) {
            char **p = (char **)((char *)cfg + g_settings[i].offset);
            free(*p);
            *p = NULL;
        }
    }
}

void at_config_write_doc(FILE *out)
{
    fputs("# Configuration\n\n"
          "Every process reads the same settings: the environment first, then the optional\n"
          "file named by `ATELIER_CONFIG` (`KEY=VALUE` lines, `#` comments). A bad value stops\n"
          "the process at start with a message naming the setting and the value.\n\n"
          "This table is generated by `atelier-gateway --config-doc`; a unit test checks that\n"
          "it matches the code.\n\n"
          "| setting | default | range | description |\n"
          "|---|---|---|---|\n",
          out);
    for (size_t i = 0; i < N_SETTINGS; i++) {
        const setting_t *s = &g_settings[i];
        char range[64] = "";
        if (s->type == T_INT)
            snprintf(range, sizeof range, "%lld..%lld", (long long)s->min, (long long)s->max);
        else if (s->type == T_BOOL)
            snprintf(range, sizeof range, "true/false");
        fprintf(out, "| `%s`%s%s%s | `%s` | %s | %s |\n", s->env, s->alias ? " (`" : "",
                s->alias ? s->alias : "", s->alias ? "`)" : "", s->def, range, s->doc);
    }
    fputs("| `ATELIER_CONFIG` | `` |  | Optional settings file read after the environment. |\n",
          out);
}
