/*
 * The WebSocket protocol on libwebsockets: one ws_conn_t per connection,
 * made at the upgrade (ws_auth.c), freed when the socket is gone and no
 * answer is on its way. Messages are assembled up to ATELIER_WS_MAX_MESSAGE
 * and dispatched by "type". Sending never blocks: messages wait in a
 * bounded per-connection queue (control messages first, then terminal
 * output round-robin over the connection's terminals, coalesced up to
 * WS_SEG_MAX per frame). What a loop turn queued is written at its end
 * (a uv_check) while the socket takes it; the rest one frame per writable
 * callback.
 */
#include "ws.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "atelier/log.h"
#include "atelier/metrics.h"
#include "atelier/util.h"
#include "http.h"
#include "ws_internal.h"

/* What lws keeps per connection: http.c's state first (its pss_t is one
 * pointer at offset 0), then ours. */
typedef struct ws_pss {
    void *http;
    ws_conn_t *conn;
} ws_pss_t;

struct ws_early {
    ws_early_t *next;
    int binary;
    size_t len;
    char data[];
};

#define WS_FLUSH_FRAMES 16 /* frames one connection writes at the end of a loop turn */

static int g_connections;
static ws_conn_t *g_all;   /* authed connections, for ws_revoked */
static ws_conn_t *g_dirty; /* connections with output queued this loop turn */
static uv_check_t g_flush;
static int g_flush_on;
static unsigned g_conn_seq;
static at_metric_t *m_conns, *m_msgs, *m_dropped;

const lws_retry_bo_t ws_idle_policy = {
    .secs_since_valid_ping = 30,
    .secs_since_valid_hangup = 70,
};

/* ---- the protocol table ---------------------------------------------------- */

/* A client offering its credential as its only subprotocol must get that
 * name back (RFC 6455 4.2.2). lws answers with the name of the protocol
 * entry it bound, so this entry's name is set to the offered one during
 * the upgrade (ws_auth.c), which lws handles synchronously. */
static char g_echo_name[64] = "atelier.credential";

void ws_set_echo_protocol(const char *name)
{
    at_strlcpy(g_echo_name, name, sizeof g_echo_name);
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                    size_t len);

void ws_protocols(struct lws_protocols out[WS_PROTOCOLS])
{
    memset(out, 0, sizeof(struct lws_protocols) * WS_PROTOCOLS);
    out[0] = http_protocol;
    out[0].callback = callback;
    out[0].per_session_data_size = sizeof(ws_pss_t);
    out[1] = out[0];
    out[1].name = WS_SUBPROTOCOL;
    out[2] = out[0];
    out[2].name = g_echo_name;
}

int ws_connections(void)
{
    return g_connections;
}

void ws_revoked(const char *cred_key)
{
    int n = 0;
    for (ws_conn_t *c = g_all; c; c = c->all_next) {
        if (c->cred_key[0] && !strcmp(c->cred_key, cred_key) && ws_conn_live(c)) {
            ws_conn_close(c, WS_CLOSE_POLICY, "credential revoked: logged out or key deleted", 1);
            n++;
        }
    }
    if (n)
        at_info("event=ws_revoked connections=%d", n);
}

void ws_now_iso(char out[32])
{
    at_iso8601(at_wall_ms(), out);
}

/* ---- connections ----------------------------------------------------------- */

void ws_conn_ref(ws_conn_t *c)
{
    c->refs++;
}

static void conn_free(ws_conn_t *c)
{
    while (c->ctl_head) {
        ws_ctl_t *m = c->ctl_head;
        c->ctl_head = m->next;
        free(m);
    }
    while (c->early) {
        ws_early_t *e = c->early;
        c->early = e->next;
        free(e);
    }
    ws_cred_free(c->cred);
    free(c->rx);
    free(c);
}

void ws_conn_unref(ws_conn_t *c)
{
    if (--c->refs == 0)
        conn_free(c);
}

int ws_conn_live(const ws_conn_t *c)
{
    return c->wsi && !c->close_code;
}

/* Output was queued: written at the end of this loop turn (flush_conns). */
void ws_conn_wake(ws_conn_t *c)
{
    if (!c->wsi || c->dirty)
        return;
    c->dirty = 1;
    c->dirty_next = g_dirty;
    g_dirty = c;
    ws_conn_ref(c);
}

/* The socket is gone: let go of everything it held. */
static void conn_gone(ws_conn_t *c)
{
    c->wsi = NULL;
    ws_terms_conn_closed(c);
    ws_events_conn_closed(c);
    ws_auth_release(c);
    if (c->authed) {
        if (c->all_prev)
            c->all_prev->all_next = c->all_next;
        else
            g_all = c->all_next;
        if (c->all_next)
            c->all_next->all_prev = c->all_prev;
        c->all_prev = c->all_next = NULL;
        g_connections--;
        at_metric_set(m_conns, g_connections);
        at_info("event=ws_closed conn=%s actor=%s code=%d", c->id, c->who.actor, c->close_code);
    }
    while (c->ctl_head) {
        ws_ctl_t *m = c->ctl_head;
        c->ctl_head = m->next;
        free(m);
    }
    c->ctl_tail = NULL;
    c->queued = 0;
    ws_conn_unref(c);
}

void ws_audit_params(const ws_conn_t *c, const char *p[3], char uid_buf[24])
{
    uid_buf[0] = '\0';
    if (c->who.user_id)
        snprintf(uid_buf, 24, "%lld", (long long)c->who.user_id);
    p[0] = c->who.actor;
    p[1] = uid_buf;
    p[2] = c->ip;
}

/* ---- sending --------------------------------------------------------------- */

int ws_conn_queued(ws_conn_t *c, long long n)
{
    if (n < 0 || c->queued == 0)
        c->progress_ms = at_mono_us() / 1000; /* written, or waiting starts now */
    c->queued = (size_t)((long long)c->queued + n);
    if (n > 0 && c->queued > (size_t)c->gw->cfg.ws_send_queue_max && !c->close_code) {
        at_metric_add(m_dropped, 1);
        at_warn("event=ws_slow_client conn=%s actor=%s queued=%zu limit=%lld", c->id, c->who.actor,
                c->queued, (long long)c->gw->cfg.ws_send_queue_max);
        ws_conn_close(c, WS_CLOSE_AGAIN, "too slow: reconnect with lastSeq", 1);
        return -1;
    }
    return 0;
}

static void ctl_push(ws_conn_t *c, const char *data, size_t len, int binary)
{
    if (!c->wsi)
        return;
    ws_ctl_t *m = malloc(sizeof *m + len);
    if (!m) {
        ws_conn_close(c, WS_CLOSE_ERROR, "out of memory", 1);
        return;
    }
    m->next = NULL;
    m->len = len;
    m->binary = binary;
    memcpy(m->data, data, len);
    if (c->ctl_tail)
        c->ctl_tail->next = m;
    else
        c->ctl_head = m;
    c->ctl_tail = m;
    ws_conn_wake(c);
    ws_conn_queued(c, (long long)len);
}

void ws_send_text(ws_conn_t *c, const char *text, size_t len)
{
    if (c->close_code) /* only what ws_conn_close queued itself */
        return;
    ctl_push(c, text, len, 0);
}

void ws_send_json(ws_conn_t *c, json_t *msg)
{
    char *s = msg ? json_dumps(msg, JSON_COMPACT) : NULL;
    json_decref(msg);
    if (!s)
        return;
    ws_send_text(c, s, strlen(s));
    free(s);
}

static json_t *error_msg(const char *id, const char *code, const char *text)
{
    json_t *m = json_pack("{s:s, s:s, s:s}", "type", "error", "code", code, "message", text);
    if (m && id)
        json_object_set_new(m, "id", json_string(id));
    return m;
}

void ws_send_error(ws_conn_t *c, const char *id, const char *code, const char *fmt, ...)
{
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    ws_send_json(c, error_msg(id, code, text));
}

void ws_conn_close(ws_conn_t *c, int code, const char *reason, int drop_output)
{
    if (!c->wsi || c->close_code)
        return;
    if (drop_output) {
        ws_terms_drop_output(c);
        while (c->ctl_head) {
            ws_ctl_t *m = c->ctl_head;
            c->ctl_head = m->next;
            c->queued -= m->len;
            free(m);
        }
        c->ctl_tail = NULL;
        const char *ecode = code == WS_CLOSE_AGAIN    ? "too_slow"
                            : code == WS_CLOSE_POLICY ? "unauthorized"
                                                      : "closing";
        json_t *m = error_msg(NULL, ecode, reason);
        char *s = m ? json_dumps(m, JSON_COMPACT) : NULL;
        json_decref(m);
        if (s)
            ctl_push(c, s, strlen(s), 0);
        free(s);
    }
    c->close_code = code;
    at_strlcpy(c->close_reason, reason, sizeof c->close_reason);
    /* a peer that reads nothing more is closed anyway */
    lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, WS_CLOSE_GRACE_S);
    ws_conn_wake(c);
}

/* The next frame into p (LWS_PRE before it free): control messages
 * first, then terminal output. 0 when there is none. */
static size_t next_frame(ws_conn_t *c, unsigned char *p, int *binary)
{
    *binary = 0;
    if (c->ctl_head) {
        ws_ctl_t *m = c->ctl_head;
        c->ctl_head = m->next;
        if (!c->ctl_head)
            c->ctl_tail = NULL;
        memcpy(p, m->data, m->len);
        size_t n = m->len;
        *binary = m->binary;
        c->queued -= m->len;
        free(m);
        return n;
    }
    if (!c->close_code && ws_terms_pending(c))
        return ws_terms_next_frame(c, p, binary);
    return 0;
}

static unsigned char g_frame[LWS_PRE + WS_FRAME_MAX];

/* One frame per writable callback; the close frame once all is out. */
static int on_writable(ws_conn_t *c)
{
    unsigned char *p = g_frame + LWS_PRE;
    int binary;
    size_t n = next_frame(c, p, &binary);
    if (!n && c->close_code) {
        /* a -1 from here would drop the socket without the close frame:
         * lws sends it when a timer callback asks for the close */
        lws_close_reason(c->wsi, (enum lws_close_status)c->close_code,
                         (unsigned char *)c->close_reason, strlen(c->close_reason));
        lws_set_timer_usecs(c->wsi, 1);
        return 0;
    }
    if (n && lws_write(c->wsi, p, n, binary ? LWS_WRITE_BINARY : LWS_WRITE_TEXT) < (int)n)
        return -1;
    if (c->ctl_head || (c->close_code && n) || ws_terms_pending(c))
        lws_callback_on_writable(c->wsi);
    if (!c->close_code)
        ws_terms_drained(c);
    return 0;
}

/* Write what c queued during this loop turn now, while the socket takes it
 * (lws keeps a partial write and finishes it before anything else):
 * waiting for the writable callback instead costs a loop turn and, with
 * libuv, an EPOLL_CTL_DEL and an EPOLL_CTL_ADD each way, per frame. A
 * closing connection, and what is left, go through the callback. */
static void flush_conn(ws_conn_t *c)
{
    unsigned char *p = g_frame + LWS_PRE;
    for (int i = 0; i < WS_FLUSH_FRAMES && !c->close_code; i++) {
        if (!c->ctl_head && !ws_terms_pending(c))
            break;
        if (lws_send_pipe_choked(c->wsi))
            break;
        int binary;
        size_t n = next_frame(c, p, &binary);
        if (n && lws_write(c->wsi, p, n, binary ? LWS_WRITE_BINARY : LWS_WRITE_TEXT) < (int)n) {
            c->close_code = WS_CLOSE_ERROR; /* the socket failed: nothing more to say */
            lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
            return;
        }
        ws_terms_drained(c);
    }
    if (c->ctl_head || c->close_code || ws_terms_pending(c))
        lws_callback_on_writable(c->wsi);
}

static void flush_conns(uv_check_t *h)
{
    (void)h;
    while (g_dirty) {
        ws_conn_t *c = g_dirty;
        g_dirty = c->dirty_next;
        c->dirty = 0;
        if (c->wsi)
            flush_conn(c);
        ws_conn_unref(c);
    }
}

/* ---- receiving ------------------------------------------------------------- */

static void handle_message(ws_conn_t *c, const char *data, size_t len, int binary)
{
    at_metric_add(m_msgs, 1);
    if (binary) {
        ws_term_input_binary(c, data, len);
        return;
    }
    json_error_t err;
    json_t *msg = json_loadb(data, len, JSON_REJECT_DUPLICATES, &err);
    if (!json_is_object(msg)) {
        ws_send_error(c, NULL, "bad_message", "Expected a JSON object with \"type\"%s%s",
                      msg ? "" : ": ", msg ? "" : err.text);
        json_decref(msg);
        return;
    }
    const char *type = json_string_value(json_object_get(msg, "type"));
    const char *id = json_string_value(json_object_get(msg, "id"));
    if (!type)
        ws_send_error(c, id, "bad_message", "Message without a \"type\"");
    else if (!strcmp(type, "ping"))
        ws_send_json(c, id ? json_pack("{s:s, s:s}", "type", "pong", "id", id)
                           : json_pack("{s:s}", "type", "pong"));
    else if (!strcmp(type, "terminal_input"))
        ws_term_input(c, msg, id);
    else if (!strcmp(type, "terminal_open"))
        ws_term_open(c, msg, id);
    else if (!strcmp(type, "terminal_resize"))
        ws_term_resize(c, msg, id);
    else if (!strcmp(type, "terminal_attach"))
        ws_term_attach(c, msg, id);
    else if (!strcmp(type, "terminal_close"))
        ws_term_close(c, msg, id);
    else if (!strcmp(type, "subscribe"))
        ws_events_subscribe(c, msg, id);
    else
        ws_send_error(c, id, "unknown_type",
                      "Unknown message type %.64s (expected ping, subscribe, terminal_open, "
                      "terminal_input, terminal_resize, terminal_attach, terminal_close)",
                      type);
    json_decref(msg);
}

/* A whole message came before the credentials were checked: keep a few. */
static void hold_early(ws_conn_t *c, const char *data, size_t len, int binary)
{
    if (c->nearly >= WS_EARLY_MAX) {
        ws_conn_close(c, WS_CLOSE_POLICY, "too many messages before authentication", 0);
        return;
    }
    ws_early_t *e = malloc(sizeof *e + len);
    if (!e)
        return;
    e->next = NULL;
    e->binary = binary;
    e->len = len;
    memcpy(e->data, data, len);
    ws_early_t **pp = &c->early;
    while (*pp)
        pp = &(*pp)->next;
    *pp = e;
    c->nearly++;
}

static void on_receive(ws_conn_t *c, struct lws *wsi, const char *in, size_t len)
{
    if (c->close_code)
        return;
    size_t max = (size_t)c->gw->cfg.ws_max_message;
    if (lws_is_first_fragment(wsi)) {
        c->rx_len = 0;
        c->rx_binary = lws_frame_is_binary(wsi);
    }
    if (c->rx_len == (size_t)-1) /* the rest of a message already refused */
        return;
    if (c->rx_len + len > max) {
        ws_send_error(c, NULL, "message_too_large",
                      "Message larger than %zu bytes (ATELIER_WS_MAX_MESSAGE)", max);
        ws_conn_close(c, WS_CLOSE_TOO_BIG, "message too large", 0);
        c->rx_len = (size_t)-1;
        return;
    }
    if (c->rx_len + len > c->rx_cap) {
        size_t cap = c->rx_cap ? c->rx_cap : 1024;
        while (cap < c->rx_len + len)
            cap *= 2;
        char *b = realloc(c->rx, cap);
        if (!b) {
            ws_conn_close(c, WS_CLOSE_ERROR, "out of memory", 1);
            return;
        }
        c->rx = b;
        c->rx_cap = cap;
    }
    memcpy(c->rx + c->rx_len, in, len);
    c->rx_len += len;
    if (!lws_is_final_fragment(wsi) || lws_remaining_packet_payload(wsi))
        return;
    size_t n = c->rx_len;
    c->rx_len = 0;
    if (!c->authed)
        hold_early(c, c->rx, n, c->rx_binary);
    else
        handle_message(c, c->rx, n, c->rx_binary);
    if (c->rx_cap > 65536) { /* an idle connection keeps no big buffer */
        free(c->rx);
        c->rx = NULL;
        c->rx_cap = 0;
    }
}

void ws_conn_authed(ws_conn_t *c)
{
    if (!c->wsi)
        return;
    c->authed = 1;
    c->all_next = g_all;
    if (g_all)
        g_all->all_prev = c;
    g_all = c;
    g_connections++;
    at_metric_set(m_conns, g_connections);
    at_info("event=ws_connected conn=%s actor=%s ip=%s scope=%lld", c->id, c->who.actor, c->ip,
            (long long)c->who.scope);
    lws_rx_flow_control(c->wsi, 1);
    ws_events_connect(c);
    ws_conn_ref(c);
    while (c->early && c->wsi && !c->close_code) {
        ws_early_t *e = c->early;
        c->early = e->next;
        c->nearly--;
        handle_message(c, e->data, e->len, e->binary);
        free(e);
    }
    ws_conn_unref(c);
}

/* ---- the lws callback -------------------------------------------------------- */

static void set_nodelay(struct lws *wsi)
{
    int fd = (int)lws_get_socket_fd(wsi), one = 1;
    /* lws sets it on accepted sockets already; made certain here because
     * Nagle would add tens of ms to every keystroke */
    if (fd >= 0 && setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0)
        at_debug("event=ws_nodelay_failed fd=%d", fd);
}

static int on_established(struct lws *wsi, ws_pss_t *pss)
{
    ws_conn_t *c = ws_auth_take(wsi);
    if (!c)
        return -1;
    ws_set_echo_protocol("atelier.credential"); /* no credential lingers in the table */
    pss->conn = c;
    c->wsi = wsi;
    snprintf(c->id, sizeof c->id, "w%u", ++g_conn_seq);
    set_nodelay(wsi);
    ws_auth_start(c);
    return 0;
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                    size_t len)
{
    ws_pss_t *pss = user;
    switch (reason) {
    case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
        return ws_auth_upgrade(lws_context_user(lws_get_context(wsi)), wsi);
    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
        return 0;
    case LWS_CALLBACK_ESTABLISHED:
        return on_established(wsi, pss);
    case LWS_CALLBACK_RECEIVE:
        if (pss && pss->conn)
            on_receive(pss->conn, wsi, in, len);
        return 0;
    case LWS_CALLBACK_SERVER_WRITEABLE:
        return pss && pss->conn ? on_writable(pss->conn) : 0;
    case LWS_CALLBACK_TIMER: /* armed by on_writable to close */
        return pss && pss->conn && pss->conn->close_code ? -1 : 0;
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        return 0;
    case LWS_CALLBACK_CLOSED:
        if (pss && pss->conn) {
            ws_conn_t *c = pss->conn;
            pss->conn = NULL;
            conn_gone(c);
        }
        return 0;
    default:
        return http_protocol.callback(wsi, reason, user, in, len);
    }
}

/* ---- start and stop ------------------------------------------------------------ */

int ws_init(gateway_t *gw)
{
    m_conns = at_metrics_gauge("atelier_ws_connections", "WebSocket connections open", NULL);
    m_msgs = at_metrics_counter("atelier_ws_messages_total", "WebSocket messages received", NULL);
    m_dropped = at_metrics_counter("atelier_ws_slow_dropped_total",
                                   "WebSocket clients dropped for reading too slowly", NULL);
    if (uv_check_init(gw->loop, &g_flush) != 0)
        return -1;
    g_flush_on = 1;
    uv_check_start(&g_flush, flush_conns);
    uv_unref((uv_handle_t *)&g_flush);
    return ws_pubsub_init(gw);
}

void ws_shutdown(gateway_t *gw)
{
    (void)gw;
    ws_terms_shutdown();
    ws_events_shutdown();
    ws_auth_shutdown();
    ws_pubsub_free();
    if (g_flush_on) {
        uv_check_stop(&g_flush);
        uv_close((uv_handle_t *)&g_flush, NULL);
        g_flush_on = 0;
    }
}
