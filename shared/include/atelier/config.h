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
    X(INT, idle_sleep_s, "ATELIER_IDLE_SLEEP_S", "SESSION_TIMEOUT", "900", 0, 31536000,            \
      "Seconds without activity (API writes, exec, terminal input, CPU use in the sandbox) "       \
      "after which a ready session is put to sleep (0: never). `SESSION_TIMEOUT` is accepted "     \
      "as an alias.")                                                                              \
    X(INT, sleep_delete_s, "ATELIER_SLEEP_DELETE_S", NULL, "604800", 0, 315360000,                 \
      "Seconds a session may sleep before it is deleted (0: never; its files stay in the "         \
      "database).")                                                                                \
    X(INT, idle_delete_s, "ATELIER_IDLE_DELETE_S", NULL, "0", 0, 315360000,                        \
      "Seconds without activity after which a session is deleted outright, asleep or not "         \
      "(0: never; platform-features.md's 30-minute cleanup is 1800).")                             \
    X(INT, max_lifetime_s, "ATELIER_MAX_LIFETIME_S", NULL, "0", 0, 315360000,                      \
      "Seconds after creation at which a session is deleted whatever it does (0: never; "          \
      "platform-features.md's limit is 7200).")                                                    \
    X(INT, cull_interval_ms, "ATELIER_CULL_INTERVAL_MS", NULL, "60000", 100, 3600000,              \
      "How often a session-manager looks at its sessions: activity, idle culling, usage, "         \
      "sandboxes that vanished, orphans.")                                                         \
    X(INT, idle_cpu_millis, "ATELIER_IDLE_CPU_MILLIS", NULL, "10", 0, 100000,                      \
      "CPU use, in thousandths of a CPU averaged between two looks, above which a sandbox "        \
      "counts as active (a long background job is activity).")                                     \
    X(INT, lease_ttl_ms, "ATELIER_LEASE_TTL_MS", NULL, "15000", 1000, 3600000,                     \
      "Lease of a session-manager on its sessions, renewed every third of it; when an "            \
      "instance dies, another adopts its sessions once the lease has expired.")                    \
    X(BOOL, restart_lost, "ATELIER_RESTART_LOST", NULL, "true", 0, 0,                              \
      "A running session whose sandbox vanished (host reboot, killed init) is started again; "     \
      "false: it is marked `error`.")                                                              \
    X(INT, load_timeout_s, "ATELIER_LOAD_TIMEOUT_S", NULL, "300", 5, 86400,                        \
      "A session still `loading_files` after this long is marked `error`.")                        \
    X(STR, sandbox_network, "ATELIER_SANDBOX_NETWORK", NULL, "none", 0, 0,                         \
      "`none`: each sandbox has its own network namespace with only loopback (no egress). "        \
      "`host`: sandboxes share the host's network (egress to anything the host reaches, and "      \
      "the host's loopback services too): only for trusted users on a dedicated machine.")         \
    X(INT, disk_quota_mb, "ATELIER_DISK_QUOTA_MB", NULL, "5120", 16, 16777216,                     \
      "Size of each workspace volume in MiB (client-api-v3.1: 5 GiB); writes past it fail with "   \
      "ENOSPC inside the sandbox and 507 through the API.")                                        \
    X(INT, exec_output_max, "ATELIER_EXEC_OUTPUT_MAX", NULL, "1048576", 1024, 67108864,            \
      "Bytes of stdout and of stderr an exec answer keeps; the rest is dropped and marked "        \
      "truncated.")                                                                                \
    X(INT, terminals_per_session, "ATELIER_TERMINALS_PER_SESSION", NULL, "8", 1, 256,              \
      "Terminals open at once in one session.")                                                    \
    X(INT, term_replay_entries, "ATELIER_TERM_REPLAY_ENTRIES", NULL, "4096", 16, 1000000,          \
      "Output entries (each at most 16 KiB) kept per terminal for a client that reconnects "       \
      "with `lastSeq` (Redis stream `term:{id}:out`, capped).")                                    \
    X(INT, ws_max_per_user, "ATELIER_WS_MAX_PER_USER", NULL, "32", 1, 100000,                      \
      "WebSocket connections one user may hold at once on one gateway.")                           \
    X(INT, ws_max_message, "ATELIER_WS_MAX_MESSAGE", NULL, "65536", 1024, 16777216,                \
      "Largest WebSocket message a client may send, in bytes.")                                    \
    X(INT, ws_send_queue_max, "ATELIER_WS_SEND_QUEUE_MAX", NULL, "1048576", 65536, 268435456,      \
      "Bytes queued for one slow WebSocket client before it is dropped (it can reconnect "         \
      "and replay from `lastSeq`).")                                                               \
    X(STR, command_policy, "ATELIER_COMMAND_POLICY", NULL,                                         \
      "sudo,chmod,chown,reboot,shutdown,ssh,nc,telnet,wget,curl,nohup,crontab,screen,tmux,"        \
      "rm -rf /,dd,mount,mkfs",                                                                    \
      0, 0,                                                                                        \
      "Commands refused when a terminal line or an exec starts with them (comma-separated; "       \
      "empty: none). A courtesy, not a boundary: the sandbox is what protects the host.")          \
    X(STR, tiers, "ATELIER_TIERS", NULL, "small=500:512,standard=1000:1024,large=2000:2048", 0, 0, \
      "Resource tiers, `name=cpu_millis:memory_mb` separated by commas. `small`: sessions from "   \
      "`POST /api/sessions/`; `standard`: `POST /session/create` and scale down; `large`: scale "  \
      "up. All three must be present.")                                                            \
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
      "http://127.0.0.1:8080/w/{uuid}", 0, 0,                                                      \
      "The `workspace_url` answered for a session (its page in the web IDE); `{uuid}` is "         \
      "replaced by the session uuid.")                                                             \
    X(STR, web_root, "ATELIER_WEB_ROOT", NULL, "", 0, 0,                                           \
      "Folder the gateway serves static files from: the web IDE's bundle `web/dist/` (`/`, "       \
      "`/login`, `/register`, `/w/{id}`, `/assets/`) and Redoc's "                                 \
      "`docs/node_modules/redoc/bundles/` (`/docs`). Each file is read once and kept in memory "   \
      "(at most 1024 files, 64 MiB, 16 MiB each): a rebuilt bundle is served after a restart of "  \
      "the gateway; a missing file is looked for again every 2 s. Empty: the source tree's "       \
      "`gateway/` folder compiled in, where `make deps` installs and builds them.")

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
/* The resources of tier `name` in ATELIER_TIERS: 1 and both set, 0 when
 * there is no such tier (the list itself was checked at load). */
int at_config_tier(const at_config_t *cfg, const char *name, int *cpu_millis, int *memory_mb);
/* The settings table as Markdown (docs/configuration.md). */
void at_config_write_doc(FILE *out);

#endif
