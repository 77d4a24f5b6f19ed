/* atelier-gateway: start-up, config, loop, signals. The loop is libuv's,
 * shared by libwebsockets (HTTP, WebSocket), hiredis and libpq. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "atelier/log.h"
#include "atelier/metrics.h"
#include "atelier/util.h"
#include "auth.h"
#include "gateway.h"
#include "http.h"
#include "replies.h"
#include "ws.h"

static gateway_t g_gw;
static uv_signal_t g_sigterm, g_sigint;
static uv_timer_t g_stop_timer;

static void hb_fill(json_t *rec, void *arg)
{
    gateway_t *gw = arg;
    char url[64];
    snprintf(url, sizeof url, "http://%s:%lld", gw->cfg.http_host, (long long)gw->cfg.http_port);
    json_object_set_new(rec, "url", json_string(url));
    json_object_set_new(rec, "replies_waiting", json_integer(replies_waiting(gw->replies)));
    json_object_set_new(rec, "db_connections", json_integer(at_db_connected(gw->db)));
    json_object_set_new(rec, "ws_connections", json_integer(ws_connections()));
}

static char *render_metrics(void *arg)
{
    gateway_t *gw = arg;
    char labels[256];
    snprintf(labels, sizeof labels, "role=\"gateway\",instance=\"%s\"", gw->cfg.instance);
    return at_metrics_render(labels);
}

static void stop_now(uv_timer_t *t)
{
    (void)t;
    uv_stop(g_gw.loop);
}

static void on_signal(uv_signal_t *h, int sig)
{
    (void)h;
    if (g_gw.draining) {
        uv_stop(g_gw.loop);
        return;
    }
    g_gw.draining = 1;
    at_info("event=stopping signal=%d", sig);
    /* stop accepting; answers already queued get a moment to leave */
    lws_context_deprecate(g_gw.lws, NULL);
    uv_timer_start(&g_stop_timer, stop_now, 200, 0);
}

static void usage(void)
{
    fprintf(stderr, "usage: atelier-gateway [--version | --config-doc]\n"
                    "  configured by environment; see docs/configuration.md\n");
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--version")) {
            printf("atelier-gateway %s\n", ATELIER_VERSION);
            return 0;
        }
        if (!strcmp(argv[i], "--config-doc")) {
            at_config_write_doc(stdout);
            return 0;
        }
        usage();
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    gateway_t *gw = &g_gw;
    char err[512];
    at_log_init("gateway", AT_LOG_INFO);
    if (at_config_load(&gw->cfg, err, sizeof err) != AT_OK) {
        at_error("event=config_invalid error=\"%s\"", err);
        return 1;
    }
    at_log_level_t lvl = AT_LOG_INFO;
    at_log_parse_level(gw->cfg.log_level, &lvl);
    at_log_init("gateway", lvl);
    lws_set_log_level(lvl <= AT_LOG_DEBUG ? (LLL_ERR | LLL_WARN | LLL_NOTICE) : LLL_ERR, NULL);

    int applied = 0;
    if (at_db_migrate(gw->cfg.database_url, &applied, err, sizeof err) != AT_OK) {
        at_error("event=migrate_failed error=\"%s\"", err);
        return 1;
    }
    gw->started_ms = at_wall_ms();
    snprintf(gw->reply_channel, sizeof gw->reply_channel, "reply:%s", gw->cfg.instance);

    gw->loop = malloc(sizeof *gw->loop);
    uv_loop_init(gw->loop);
    gw->io = at_io_uv_new(gw->loop);
    gw->db = at_db_new(gw->io, gw->cfg.database_url, (int)gw->cfg.db_pool_size,
                       (int)gw->cfg.db_queue_max);
    gw->redis = at_redis_new(gw->io, gw->cfg.redis_url, "cmd");
    gw->sub = at_redis_new(gw->io, gw->cfg.redis_url, "sub");
    gw->ws_redis = at_redis_new(gw->io, gw->cfg.redis_url, "ws");
    if (!gw->io || !gw->db || !gw->redis || !gw->sub || !gw->ws_redis || ws_init(gw) != 0) {
        at_error("event=start_failed error=\"cannot set up database or redis clients\"");
        return 1;
    }
    gw->replies = replies_new(gw);
    if (auth_init(gw) != 0)
        return 1;

    /* HTTP, and WebSocket on /ws (ws.c wraps http.c's protocol entry) */
    struct lws_protocols protos[WS_PROTOCOLS];
    ws_protocols(protos);
    void *foreign_loops[1] = {gw->loop};
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.port = (int)gw->cfg.http_port;
    info.iface = gw->cfg.http_host;
    info.protocols = protos;
    info.options = LWS_SERVER_OPTION_LIBUV | LWS_SERVER_OPTION_VALIDATE_UTF8;
    info.foreign_loops = foreign_loops;
    info.user = gw;
    info.timeout_secs = 30;
    info.keepalive_timeout = 60;
    info.max_http_header_data = 16384;
    info.max_http_header_pool = 1024;
    info.options |= LWS_SERVER_OPTION_EXPLICIT_VHOSTS;
    info.retry_and_idle_policy = &ws_idle_policy; /* pings silent WebSockets, drops dead ones */
    gw->lws = lws_create_context(&info);
    if (!gw->lws || !lws_create_vhost(gw->lws, &info)) {
        at_error("event=listen_failed host=%s port=%lld error=\"lws_create_context failed (port "
                 "in use?)\"",
                 gw->cfg.http_host, (long long)gw->cfg.http_port);
        return 1;
    }
    gw->hb = at_heartbeat_start(gw->io, gw->redis, "gateway", gw->cfg.instance,
                                gw->cfg.heartbeat_ttl_ms, hb_fill, gw);
    char mkey[256];
    snprintf(mkey, sizeof mkey, "metrics:gateway:%s", gw->cfg.instance);
    at_heartbeat_attach(gw->hb, mkey, render_metrics, gw);

    uv_signal_init(gw->loop, &g_sigterm);
    uv_signal_init(gw->loop, &g_sigint);
    uv_signal_start(&g_sigterm, on_signal, SIGTERM);
    uv_signal_start(&g_sigint, on_signal, SIGINT);
    uv_timer_init(gw->loop, &g_stop_timer);

    at_info("event=started instance=%s url=http://%s:%lld migrations_applied=%d", gw->cfg.instance,
            gw->cfg.http_host, (long long)gw->cfg.http_port, applied);

    uv_run(gw->loop, UV_RUN_DEFAULT);

    /* shutdown: every client and handle closed before the loop is */
    at_heartbeat_stop(gw->hb);
    uv_run(gw->loop, UV_RUN_NOWAIT);
    lws_context_destroy(gw->lws);
    replies_cancel(gw->replies);
    auth_shutdown(gw);
    at_redis_free(gw->redis);
    at_redis_free(gw->sub);
    at_redis_free(gw->ws_redis);
    replies_free(gw->replies);
    at_db_free(gw->db);
    ws_shutdown(gw);
    uv_signal_stop(&g_sigterm);
    uv_signal_stop(&g_sigint);
    uv_close((uv_handle_t *)&g_sigterm, NULL);
    uv_close((uv_handle_t *)&g_sigint, NULL);
    uv_close((uv_handle_t *)&g_stop_timer, NULL);
    uv_run(gw->loop, UV_RUN_DEFAULT);
    at_io_free(gw->io);
    if (uv_loop_close(gw->loop) != 0)
        at_warn("event=loop_close_busy");
    free(gw->loop);
    at_config_free(&gw->cfg);
    at_metrics_reset();
    at_info("event=exit");
    return 0;
}
