/*
 * Configuration: environment first, then an optional KEY=VALUE file named by
 * ATELIER_CONFIG. Every setting is declared once in AT_CONFIG_SETTINGS below;
 * docs/configuration.md is generated from the same table (atelier-gateway
 * --config-doc) and a unit test keeps the two in step.
 */
#ifndef ATELIER_CONFIG_H
#define ATELIER_CONFIG_H

#include <stdint.h>
#include <stdio.h>

#include "err.h"

/* X(type, field, env name, alias, default, min, max, description)
 * type: STR, INT (int64, checked against [min, max]) or BOOL. */
#define AT_CONFIG_SETTINGS(X)                                                                      \
    X(STR, http_host, "ATELIER_HTTP_HOST", NULL, "127.0.0.1", 0, 0,                                \
      "Address the gateway listens on.")                                                           \
    X(INT, http_port, "ATELIER_HTTP_PORT", "PORT", "8080", 1, 65535,                               \
      "TCP port of the gateway (the only public listener). `PORT` is accepted as an alias.")       \
    X(STR, data_dir, "ATELIER_DATA_DIR", NULL, "./var", 0, 0,                                      \
      "Folder of the local stack: embedded Redis and PostgreSQL, sockets, logs, pid files, "       \
      "workspaces.")                                                                               \
    X(STR, database_url, "DATABASE_URL", NULL, "", 0, 0,                                           \
      "libpq connection URI. Empty: the embedded server, "                                         \
      "`postgresql:///atelier?host=$ATELIER_DATA_DIR/run&user=atelier`.")                          \
    X(STR, redis_url, "REDIS_URL", NULL, "", 0, 0,                                                 \
      "`redis://host:port[/db]` or `unix:///path/redis.sock`. Empty: the embedded server, "        \
      "`unix://$ATELIER_DATA_DIR/run/redis.sock`.")                                                \
    X(STR, cors_origins, "CORS_ORIGINS", NULL, "", 0, 0,                                           \
      "Comma-separated origins allowed by CORS; empty allows none but same-origin.")               \
    X(INT, session_timeout, "SESSION_TIMEOUT", NULL, "3600", 60, 31536000,                         \
      "Seconds a session may stay idle before it is culled.")                                      \
    X(INT, max_file_size, "MAX_FILE_SIZE", NULL, "1048576", 1, 1073741824,                         \
      "Largest file, in bytes, accepted through the file API and synced from a workspace.")        \
    X(STR, workspace_base_path, "WORKSPACE_BASE_PATH", NULL, "", 0, 0,                             \
      "Root of workspace volumes. Empty: `$ATELIER_DATA_DIR/workspaces`.")                         \
    X(STR, s3_workspace_bucket, "S3_WORKSPACE_BUCKET", NULL, "", 0, 0,                             \
      "S3 bucket for workspace init and sync; empty disables S3.")                                 \
    X(STR, s3_workspace_prefix, "S3_WORKSPACE_PREFIX", NULL, "user_data", 0, 0,                    \
      "Key prefix under the bucket: `{prefix}/{user_id}/{workspace_name}/`.")                      \
    X(STR, api_key, "API_KEY", NULL, "", 0, 0,                                                     \
      "Service API key accepted in `X-API-Key` (admin rights). Empty disables API-key auth.")      \
    X(STR, kubernetes_namespace, "KUBERNETES_NAMESPACE", NULL, "default", 0, 0,                    \
      "Namespace the kubernetes runtime driver works in.")                                         \
    X(BOOL, kubernetes_in_cluster, "KUBERNETES_IN_CLUSTER", NULL, "false", 0, 0,                   \
      "Use the in-cluster service account instead of a kubeconfig.")                               \
    X(STR, log_level, "ATELIER_LOG_LEVEL", NULL, "info", 0, 0,                                     \
      "Lowest level logged: debug, info, warn or error.")                                          \
    X(STR, instance, "ATELIER_INSTANCE", NULL, "", 0, 0,                                           \
      "Name of this process instance (Redis consumer name). Empty: `host-pid-random`.")            \
    X(INT, db_pool_size, "ATELIER_DB_POOL", NULL, "4", 1, 64,                                      \
      "PostgreSQL connections per process.")                                                       \
    X(INT, db_queue_max, "ATELIER_DB_QUEUE_MAX", NULL, "10000", 1, 1000000,                        \
      "Queries waiting for a free connection before new ones are refused.")                        \
    X(INT, job_max_attempts, "ATELIER_JOB_MAX_ATTEMPTS", NULL, "5", 1, 100,                        \
      "Attempts before a failing job moves to `q:dead`.")                                          \
    X(INT, job_claim_timeout_ms, "ATELIER_JOB_CLAIM_TIMEOUT_MS", NULL, "30000", 100, 86400000,     \
      "A delivered job not touched for this long (its worker died) is reclaimed by another.")      \
    X(INT, job_retry_backoff_ms, "ATELIER_JOB_RETRY_BACKOFF_MS", NULL, "200", 0, 600000,           \
      "First retry delay of a failed job; doubles per attempt.")                                   \
    X(INT, worker_concurrency, "ATELIER_WORKER_CONCURRENCY", NULL, "64", 1, 4096,                  \
      "Jobs one worker instance runs at once.")                                                    \
    X(INT, queue_maxlen, "ATELIER_QUEUE_MAXLEN", NULL, "1000000", 1000, 100000000,                 \
      "Approximate cap on each job stream (XADD MAXLEN ~).")                                       \
    X(INT, reply_timeout_ms, "ATELIER_REPLY_TIMEOUT_MS", NULL, "10000", 10, 600000,                \
      "How long the gateway waits for a job reply before answering 504.")                          \
    X(INT, heartbeat_ttl_ms, "ATELIER_HEARTBEAT_TTL_MS", NULL, "10000", 500, 600000,               \
      "Lifetime of an instance's heartbeat key; refreshed every third of it.")                     \
    X(INT, shutdown_timeout_ms, "ATELIER_SHUTDOWN_TIMEOUT_MS", NULL, "10000", 0, 600000,           \
      "On SIGTERM, time allowed for in-flight jobs to finish before exit.")                        \
    X(INT, http_max_body, "ATELIER_HTTP_MAX_BODY", NULL, "8388608", 1024, 1073741824,              \
      "Cap on the body of one file write (whose own limit is 2 x `MAX_FILE_SIZE` + 64 KiB for "    \
      "JSON escaping). JSON requests take 64 KiB; uploads `ATELIER_UPLOAD_MAX_BYTES`.")            \
    X(BOOL, access_log, "ATELIER_ACCESS_LOG", NULL, "true", 0, 0,                                  \
      "Log one line per HTTP request (method, path, status, ms).")                                 \
    X(STR, auth_mode, "ATELIER_AUTH", NULL, "strict", 0, 0,                                        \
      "`strict`: every user endpoint needs a bearer token or an API key. `compat`: also accept "   \
      "the seeds' bare `?user_id=` (the old frontend; anyone can act as anyone, so never on a "    \
      "shared network).")                                                                          \
    X(STR, jwt_secret, "JWT_SECRET", NULL, "", 0, 0,                                               \
      "HS256 key of bearer tokens (at least 32 bytes). Empty: a random key kept in "               \
      "`$ATELIER_DATA_DIR/secret/jwt` (made on first start), shared by gateways on one data dir.") \
    X(INT, token_ttl, "ATELIER_TOKEN_TTL", NULL, "86400", 60, 31536000,                            \
      "Lifetime of a bearer token from login, in seconds.")                                        \
    X(INT, bcrypt_cost, "ATELIER_BCRYPT_COST", NULL, "10", 4, 16,                                  \
      "bcrypt work factor of stored passwords (hashing runs on libuv's thread pool).")             \
    X(INT, rate_limit_rps, "ATELIER_RATE_LIMIT_RPS", NULL, "100", 0, 1000000,                      \
      "Requests per second refilled into each user's, key's or anonymous IP's bucket (0: off).")   \
    X(INT, rate_limit_burst, "ATELIER_RATE_LIMIT_BURST", NULL, "200", 1, 10000000,                 \
      "Size of each rate-limit bucket: requests allowed at once after an idle spell.")             \
    X(INT, login_rate_per_min, "ATELIER_LOGIN_RATE_PER_MIN", NULL, "10", 0, 100000,                \
      "Login and register attempts per minute per client IP and per e-mail (0: off).")             \
    X(INT, upload_max_bytes, "ATELIER_UPLOAD_MAX_BYTES", NULL, "33554432", 1024, 1073741824,       \
      "Largest multipart upload body (several files), in bytes; each file is still bound by "      \
      "`MAX_FILE_SIZE`.")                                                                          \
    X(INT, max_files_per_workspace, "ATELIER_MAX_FILES", NULL, "10000", 1, 10000000,               \
      "Files and folders one workspace may hold.")                                                 \
    X(STR, workspace_url_template, "ATELIER_WORKSPACE_URL", NULL,                                  \
      "http://127.0.0.1:8080/#/session/{uuid}", 0, 0,                                              \
      "The `workspace_url` answered for a session; `{uuid}` is replaced by the session uuid.")     \
    X(STR, web_root, "ATELIER_WEB_ROOT", NULL, "", 0, 0,                                           \
      "Folder the gateway serves static assets from (`/docs` reads "                               \
      "`docs/node_modules/redoc/bundles/` under it). Empty: the source tree's `gateway/` "         \
      "folder compiled in, where `make deps` installs them.")

typedef struct at_config {
#define AT_CFG_FIELD_STR(f) char *f;
#define AT_CFG_FIELD_INT(f) int64_t f;
#define AT_CFG_FIELD_BOOL(f) int f;
#define AT_CFG_FIELD(type, field, env, alias, def, min, max, doc) AT_CFG_FIELD_##type(field)
    AT_CONFIG_SETTINGS(AT_CFG_FIELD)
#undef AT_CFG_FIELD
} at_config_t;

/* Load defaults, then the ATELIER_CONFIG file if set, then the environment.
 * Derived defaults (URLs from data_dir, instance name) are filled in.
 * On a bad value returns AT_ECONFIG with a message naming the setting and the
 * value in errbuf. The caller frees with at_config_free. */
at_err_t at_config_load(at_config_t *cfg, char *errbuf, size_t errlen);
/* Same, from an explicit lookup function (tests use it instead of getenv). */
at_err_t at_config_load_from(at_config_t *cfg, const char *(*lookup)(const char *name, void *arg),
                             void *arg, char *errbuf, size_t errlen);
void at_config_free(at_config_t *cfg);
/* The settings table as Markdown (docs/configuration.md). */
void at_config_write_doc(FILE *out);

#endif
