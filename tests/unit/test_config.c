/*
 * at_config_load_from: defaults, environment, the ATELIER_CONFIG file, derived
 * values and the rejection of bad values; and docs/configuration.md against
 * the settings table it is generated from.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "atelier/config.h"

/* A fake environment: NULL-terminated name, value, name, value, ... */
static const char *lookup(const char *name, void *arg)
{
    const char *const *kv = arg;
    for (size_t i = 0; kv && kv[i]; i += 2)
        if (strcmp(kv[i], name) == 0)
            return kv[i + 1];
    return NULL;
}

static char g_err[512];

static at_err_t load(at_config_t *cfg, const char *const *env)
{
    g_err[0] = '\0';
    return at_config_load_from(cfg, lookup, (void *)env, g_err, sizeof g_err);
}

/* Write text to a fresh temporary file; returns its path (static buffer). */
static const char *write_file(const char *text)
{
    static char path[64];
    strcpy(path, "/tmp/atelier-cfg-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    size_t n = strlen(text);
    assert_int_equal(write(fd, text, n), (ssize_t)n);
    close(fd);
    return path;
}

static char *cwd_join(const char *rest)
{
    char cwd[4096];
    assert_non_null(getcwd(cwd, sizeof cwd));
    char *s = NULL;
    assert_true(asprintf(&s, "%s%s", cwd, rest) > 0);
    return s;
}

static void test_defaults(void **state)
{
    (void)state;
    at_config_t cfg;
    assert_int_equal(load(&cfg, NULL), AT_OK);
    assert_int_equal(cfg.http_port, 8080);
    assert_int_equal(cfg.max_file_size, 1048576);
    assert_string_equal(cfg.s3_workspace_prefix, "user_data");
    assert_string_equal(cfg.http_host, "127.0.0.1");
    assert_string_equal(cfg.log_level, "info");
    assert_int_equal(cfg.idle_sleep_s, 900);
    assert_int_equal(cfg.kubernetes_in_cluster, 0);
    assert_int_equal(cfg.access_log, 1);
    assert_string_equal(cfg.s3_workspace_bucket, "");
    /* the instance name is generated when not given */
    assert_true(strlen(cfg.instance) > 0);
    /* "./var" is made absolute against the current directory */
    char *dd = cwd_join("/var");
    assert_string_equal(cfg.data_dir, dd);
    free(dd);
    at_config_free(&cfg);
    assert_null(cfg.http_host);
}

static void test_env_override(void **state)
{
    (void)state;
    const char *env[] = {"ATELIER_HTTP_PORT",
                         "9090",
                         "MAX_FILE_SIZE",
                         "2048",
                         "S3_WORKSPACE_PREFIX",
                         "ws",
                         "KUBERNETES_IN_CLUSTER",
                         "yes",
                         "ATELIER_ACCESS_LOG",
                         "off",
                         "ATELIER_INSTANCE",
                         "worker-1.a_b",
                         "ATELIER_LOG_LEVEL",
                         "debug",
                         NULL};
    at_config_t cfg;
    assert_int_equal(load(&cfg, env), AT_OK);
    assert_int_equal(cfg.http_port, 9090);
    assert_int_equal(cfg.max_file_size, 2048);
    assert_string_equal(cfg.s3_workspace_prefix, "ws");
    assert_int_equal(cfg.kubernetes_in_cluster, 1);
    assert_int_equal(cfg.access_log, 0);
    assert_string_equal(cfg.instance, "worker-1.a_b");
    assert_string_equal(cfg.log_level, "debug");
    at_config_free(&cfg);
}

static void test_port_alias(void **state)
{
    (void)state;
    at_config_t cfg;
    const char *alias[] = {"PORT", "7000", NULL};
    assert_int_equal(load(&cfg, alias), AT_OK);
    assert_int_equal(cfg.http_port, 7000);
    at_config_free(&cfg);

    /* the canonical name wins over the alias */
    const char *both[] = {"PORT", "7000", "ATELIER_HTTP_PORT", "7001", NULL};
    assert_int_equal(load(&cfg, both), AT_OK);
    assert_int_equal(cfg.http_port, 7001);
    at_config_free(&cfg);

    /* a bad alias value is reported under the name the user wrote */
    const char *bad[] = {"PORT", "http", NULL};
    assert_int_equal(load(&cfg, bad), AT_ECONFIG);
    assert_non_null(strstr(g_err, "PORT"));
    assert_non_null(strstr(g_err, "http"));
}

static void test_file(void **state)
{
    (void)state;
    const char *path = write_file("# local settings\n"
                                  "\n"
                                  "ATELIER_HTTP_PORT=8181\n"
                                  "  S3_WORKSPACE_BUCKET = \"my bucket\"  \n"
                                  "API_KEY='k=v#x'\n"
                                  "   # indented comment\n"
                                  "MAX_FILE_SIZE=4096\n"
                                  "SESSION_TIMEOUT=120\n"
                                  "CORS_ORIGINS=\"\"\n"
                                  "KUBERNETES_NAMESPACE=last-wins-not\n"
                                  "KUBERNETES_NAMESPACE=atelier\n");
    /* the environment takes precedence over the file */
    const char *env[] = {"ATELIER_CONFIG", path, "MAX_FILE_SIZE", "8192", NULL};
    at_config_t cfg;
    at_err_t err = load(&cfg, env);
    unlink(path);
    assert_int_equal(err, AT_OK);
    assert_int_equal(cfg.http_port, 8181);
    assert_string_equal(cfg.s3_workspace_bucket, "my bucket");
    assert_string_equal(cfg.api_key, "k=v#x");
    assert_int_equal(cfg.max_file_size, 8192);
    assert_int_equal(cfg.idle_sleep_s, 120); /* SESSION_TIMEOUT, the alias */
    assert_string_equal(cfg.cors_origins, "");
    assert_string_equal(cfg.kubernetes_namespace, "atelier");
    at_config_free(&cfg);
}

static void test_file_alias(void **state)
{
    (void)state;
    const char *path = write_file("PORT=6000\n");
    const char *env[] = {"ATELIER_CONFIG", path, NULL};
    at_config_t cfg;
    at_err_t err = load(&cfg, env);
    unlink(path);
    assert_int_equal(err, AT_OK);
    assert_int_equal(cfg.http_port, 6000);
    at_config_free(&cfg);
}

static void test_derived(void **state)
{
    (void)state;
    at_config_t cfg;
    const char *abs[] = {"ATELIER_DATA_DIR", "/srv/atelier", NULL};
    assert_int_equal(load(&cfg, abs), AT_OK);
    assert_string_equal(cfg.data_dir, "/srv/atelier");
    assert_string_equal(cfg.database_url,
                        "postgresql:///atelier?host=/srv/atelier/run&user=atelier");
    assert_string_equal(cfg.redis_url, "unix:///srv/atelier/run/redis.sock");
    assert_string_equal(cfg.workspace_base_path, "/srv/atelier/workspaces");
    at_config_free(&cfg);

    const char *rel[] = {"ATELIER_DATA_DIR", "data", NULL};
    assert_int_equal(load(&cfg, rel), AT_OK);
    char *want = cwd_join("/data/workspaces");
    assert_string_equal(cfg.workspace_base_path, want);
    free(want);
    at_config_free(&cfg);

    /* explicit values are not replaced by derived ones */
    const char *given[] = {"ATELIER_DATA_DIR",         "/srv/atelier", "REDIS_URL",
                           "redis://127.0.0.1:6390/2", "DATABASE_URL", "postgresql://db/x",
                           "WORKSPACE_BASE_PATH",      "/vol/ws",      NULL};
    assert_int_equal(load(&cfg, given), AT_OK);
    assert_string_equal(cfg.redis_url, "redis://127.0.0.1:6390/2");
    assert_string_equal(cfg.database_url, "postgresql://db/x");
    assert_string_equal(cfg.workspace_base_path, "/vol/ws");
    at_config_free(&cfg);
}

static void test_bad_values(void **state)
{
    (void)state;
    static const struct {
        const char *name, *value;
    } cases[] = {
        {"ATELIER_HTTP_PORT", "80a"},
        {"ATELIER_HTTP_PORT", "8080 "},
        {"ATELIER_HTTP_PORT", "0"},
        {"ATELIER_HTTP_PORT", "65536"},
        {"MAX_FILE_SIZE", "99999999999999999999"},
        {"MAX_FILE_SIZE", "1073741825"},
        {"SESSION_TIMEOUT", "-1"},
        {"ATELIER_SANDBOX_NETWORK", "bridge"},
        {"ATELIER_TIERS", "small=500:512,standard=1000:1024"},
        {"ATELIER_TIERS", "small=500:512,standard=1000,large=2000:2048"},
        {"ATELIER_TIERS", "small=0:512,standard=1000:1024,large=2000:2048"},
        {"ATELIER_TIERS", "=1:512,small=500:512,standard=1000:1024,large=2000:2048"},
        {"ATELIER_DB_POOL", "-1"},
        {"KUBERNETES_IN_CLUSTER", "maybe"},
        {"ATELIER_ACCESS_LOG", "2"},
        {"REDIS_URL", "http://localhost:6379"},
        {"REDIS_URL", "localhost:6379"},
        {"ATELIER_LOG_LEVEL", "verbose"},
        {"ATELIER_INSTANCE", "bad name"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *env[] = {cases[i].name, cases[i].value, NULL};
        at_config_t cfg;
        at_err_t err = load(&cfg, env);
        if (err != AT_ECONFIG)
            fail_msg("%s=\"%s\": got %d, want AT_ECONFIG", cases[i].name, cases[i].value, err);
        if (!strstr(g_err, cases[i].name) || !strstr(g_err, cases[i].value))
            fail_msg("%s=\"%s\": message \"%s\" does not name both", cases[i].name, cases[i].value,
                     g_err);
        /* a failed load leaves nothing to free */
        assert_null(cfg.http_host);
    }
}

/* ATELIER_TIERS: every tier of the list is found, in any order. */
static void test_tiers(void **state)
{
    (void)state;
    const char *env[] = {"ATELIER_TIERS", "large=4000:8192,tiny=100:64,small=250:256,standard=1:16",
                         NULL};
    at_config_t cfg;
    assert_int_equal(load(&cfg, env), AT_OK);
    int cpu = 0, mem = 0;
    assert_true(at_config_tier(&cfg, "large", &cpu, &mem));
    assert_int_equal(cpu, 4000);
    assert_int_equal(mem, 8192);
    assert_true(at_config_tier(&cfg, "standard", &cpu, &mem));
    assert_int_equal(cpu, 1);
    assert_int_equal(mem, 16);
    assert_true(at_config_tier(&cfg, "tiny", &cpu, &mem));
    assert_false(at_config_tier(&cfg, "smal", &cpu, &mem));
    assert_false(at_config_tier(&cfg, "huge", &cpu, &mem));
    at_config_free(&cfg);
    assert_int_equal(load(&cfg, NULL), AT_OK);
    assert_true(at_config_tier(&cfg, "small", &cpu, &mem));
    assert_int_equal(cpu, 500);
    assert_int_equal(mem, 512);
    at_config_free(&cfg);
}

static void test_bad_value_in_file(void **state)
{
    (void)state;
    const char *path = write_file("SESSION_TIMEOUT=soon\n");
    const char *env[] = {"ATELIER_CONFIG", path, NULL};
    at_config_t cfg;
    at_err_t err = load(&cfg, env);
    unlink(path);
    assert_int_equal(err, AT_ECONFIG);
    assert_non_null(strstr(g_err, "SESSION_TIMEOUT"));
    assert_non_null(strstr(g_err, "soon"));
}

static void test_unknown_key_in_file(void **state)
{
    (void)state;
    const char *path = write_file("# ok\nATELIER_HTTP_PORT=8081\nATELIER_HTTP_PROT=8082\n");
    const char *env[] = {"ATELIER_CONFIG", path, NULL};
    at_config_t cfg;
    at_err_t err = load(&cfg, env);
    char where[128];
    snprintf(where, sizeof where, "%s:3", path);
    unlink(path);
    assert_int_equal(err, AT_ECONFIG);
    assert_non_null(strstr(g_err, "ATELIER_HTTP_PROT"));
    assert_non_null(strstr(g_err, where));
}

static void test_file_errors(void **state)
{
    (void)state;
    at_config_t cfg;
    const char *missing[] = {"ATELIER_CONFIG", "/nonexistent/atelier.conf", NULL};
    assert_int_equal(load(&cfg, missing), AT_ECONFIG);
    assert_non_null(strstr(g_err, "/nonexistent/atelier.conf"));

    const char *path = write_file("ATELIER_HTTP_PORT 8080\n");
    const char *env[] = {"ATELIER_CONFIG", path, NULL};
    at_err_t err = load(&cfg, env);
    unlink(path);
    assert_int_equal(err, AT_ECONFIG);
    assert_non_null(strstr(g_err, "ATELIER_HTTP_PORT 8080"));
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("open %s: %s (generate it: atelier-gateway --config-doc > %s)", path,
                 strerror(errno), path);
    char *buf = NULL;
    size_t cap = 0;
    FILE *out = open_memstream(&buf, &cap);
    assert_non_null(out);
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        fwrite(chunk, 1, n, out);
    fclose(f);
    fclose(out);
    *len = cap;
    return buf;
}

static void test_doc_in_step(void **state)
{
    (void)state;
    size_t have_len = 0, want_len = 0;
    char *have = slurp(ATELIER_SOURCE_DIR "/docs/configuration.md", &have_len);
    char *want = NULL;
    FILE *out = open_memstream(&want, &want_len);
    assert_non_null(out);
    at_config_write_doc(out);
    fclose(out);
    /* every setting appears in the generated text */
    assert_non_null(strstr(want, "`ATELIER_HTTP_PORT` (`PORT`) | `8080` | 1..65535"));
    if (have_len != want_len || memcmp(have, want, want_len) != 0)
        fail_msg("docs/configuration.md is stale: regenerate it with "
                 "`atelier-gateway --config-doc > docs/configuration.md`");
    free(have);
    free(want);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),          cmocka_unit_test(test_env_override),
        cmocka_unit_test(test_port_alias),        cmocka_unit_test(test_file),
        cmocka_unit_test(test_file_alias),        cmocka_unit_test(test_derived),
        cmocka_unit_test(test_bad_values),        cmocka_unit_test(test_tiers),
        cmocka_unit_test(test_bad_value_in_file), cmocka_unit_test(test_unknown_key_in_file),
        cmocka_unit_test(test_file_errors),       cmocka_unit_test(test_doc_in_step),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
