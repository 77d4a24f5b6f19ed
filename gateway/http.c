#include "http.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "atelier/log.h"
#include "atelier/metrics.h"
#include "atelier/util.h"
#include "routes.h"

#define MAX_PATH (AT_REQ_PARAM_MAX + 256) /* longer URIs get 414 */
#define SMALL_BODY 65536
#define MAX_QUERY_ARGS 32
#define MAX_EXTRA_HEADERS 12
#define WRITE_CHUNK 65536

/* The request headers kept, with the token of those lws parses itself
 * (lws_hdr_custom_copy finds only the ones it has no token for). */
static const struct {
    const char *name;
    int token; /* -1: none */
} kept_headers[] = {
    {"authorization", WSI_TOKEN_HTTP_AUTHORIZATION},
    {"x-api-key", -1},
    {"content-type", WSI_TOKEN_HTTP_CONTENT_TYPE},
    {"if-match", WSI_TOKEN_HTTP_IF_MATCH},
    {"if-none-match", WSI_TOKEN_HTTP_IF_NONE_MATCH},
    {"accept-encoding", WSI_TOKEN_HTTP_ACCEPT_ENCODING},
    {"origin", WSI_TOKEN_ORIGIN},
    {"cookie", WSI_TOKEN_HTTP_COOKIE},
    {"accept", WSI_TOKEN_HTTP_ACCEPT},
    {"x-request-id", -1},
};
#define N_KEPT (sizeof kept_headers / sizeof kept_headers[0])

struct at_req {
    struct lws *wsi; /* NULL once the client has gone (orphan) */
    gateway_t *gw;
    int method;
    char *path;
    char id[20];
    int64_t start_us;
    char ip[64];
    const route_t *route;
    int route_status; /* 404/405 when no route matched */
    size_t body_limit;
    principal_t principal;
    char *query[MAX_QUERY_ARGS]; /* "name=value", decoded */
    int nquery;
    char *headers[N_KEPT];
    char *params[HTTP_MAX_PARAMS];
    int nparams;
    char *body;
    size_t body_len, body_cap;
    int body_too_big;
    int dispatched;
    /* response */
    int answered;
    int status;
    char content_type[96];
    char *resp;
    int resp_borrowed; /* resp outlives the request (req_send_static) */
    size_t resp_len, resp_off;
    int headers_sent;
    char *extra_name[MAX_EXTRA_HEADERS], *extra_value[MAX_EXTRA_HEADERS];
    int nextra;
    int close_after;
    req_pull_fn *pull; /* streamed answer */
    void *pull_arg;
    int pull_done;
};

typedef struct pss {
    at_req_t *req;
} pss_t;

static at_metric_t *m_requests_hist;

const char *http_method_name(int m)
{
    switch (m) {
    case HTTP_GET:
        return "GET";
    case HTTP_POST:
        return "POST";
    case HTTP_OPTIONS:
        return "OPTIONS";
    case HTTP_PUT:
        return "PUT";
    case HTTP_PATCH:
        return "PATCH";
    case HTTP_DELETE:
        return "DELETE";
    case HTTP_HEAD:
        return "HEAD";
    default:
        return "OTHER";
    }
}

static void req_free(at_req_t *r)
{
    if (r->pull && !r->pull_done) /* the producer frees itself */
        r->pull(r->pull_arg, NULL, 0, &r->pull_done);
    for (int i = 0; i < r->nquery; i++)
        free(r->query[i]);
    for (size_t i = 0; i < N_KEPT; i++)
        free(r->headers[i]);
    for (int i = 0; i < r->nparams; i++)
        free(r->params[i]);
    for (int i = 0; i < r->nextra; i++) {
        free(r->extra_name[i]);
        free(r->extra_value[i]);
    }
    free(r->body);
    if (!r->resp_borrowed)
        free(r->resp);
    free(r->path);
    free(r);
}

gateway_t *req_gw(const at_req_t *r)
{
    return r->gw;
}

int req_method(const at_req_t *r)
{
    return r->method;
}

const char *req_path(const at_req_t *r)
{
    return r->path;
}

const char *req_id(const at_req_t *r)
{
    return r->id;
}

const char *req_ip(const at_req_t *r)
{
    return r->ip;
}

const route_t *req_route(const at_req_t *r)
{
    return r->route;
}

principal_t *req_principal_mut(at_req_t *r)
{
    return &r->principal;
}

const principal_t *req_principal(const at_req_t *r)
{
    return &r->principal;
}

const char *req_query(const at_req_t *r, const char *name)
{
    size_t n = strlen(name);
    for (int i = 0; i < r->nquery; i++)
        if (!strncmp(r->query[i], name, n) && (r->query[i][n] == '=' || r->query[i][n] == '\0'))
            return r->query[i][n] == '=' ? r->query[i] + n + 1 : "";
    return NULL;
}

const char *req_header(const at_req_t *r, const char *name)
{
    for (size_t i = 0; i < N_KEPT; i++)
        if (!strcmp(kept_headers[i].name, name))
            return r->headers[i];
    return NULL;
}

const char *req_body(const at_req_t *r, size_t *len)
{
    if (len)
        *len = r->body_len;
    return r->body ? r->body : "";
}

const char *req_param(const at_req_t *r, int idx)
{
    return idx < r->nparams ? r->params[idx] : NULL;
}

void req_set_params(at_req_t *r, const char *const *params, int n)
{
    for (int i = 0; i < n && i < HTTP_MAX_PARAMS; i++)
        r->params[r->nparams++] = strdup(params[i]);
}

json_t *req_json_body(at_req_t *r)
{
    if (r->body_len == 0) {
        req_error(r, 422, "Request body must be a JSON object");
        return NULL;
    }
    json_error_t err;
    json_t *j = json_loadb(r->body, r->body_len, JSON_REJECT_DUPLICATES, &err);
    if (!j) {
        req_error(r, 400, "Invalid JSON at line %d column %d: %s", err.line, err.column, err.text);
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        req_error(r, 422, "Request body must be a JSON object");
        return NULL;
    }
    return j;
}

json_t *req_json_body_optional(at_req_t *r)
{
    return r->body_len == 0 ? json_object() : req_json_body(r);
}

void req_add_header(at_req_t *r, const char *name, const char *value)
{
    if (r->nextra >= MAX_EXTRA_HEADERS)
        return;
    r->extra_name[r->nextra] = strdup(name);
    r->extra_value[r->nextra] = strdup(value);
    r->nextra++;
}

/* Counter per (method, status), found once and cached: the registry lookup
 * formats labels and walks a list, too slow for every request. */
static at_metric_t *requests_counter(int method, int status)
{
    static at_metric_t *cache[HTTP_HEAD + 2][600];
    int m = method >= 0 && method <= HTTP_HEAD ? method : HTTP_HEAD + 1;
    if (status < 100 || status >= 600)
        status = 599;
    if (!cache[m][status]) {
        char labels[64];
        snprintf(labels, sizeof labels, "method=\"%s\",status=\"%d\"", http_method_name(method),
                 status);
        cache[m][status] =
            at_metrics_counter("atelier_http_requests_total", "HTTP requests answered", labels);
    }
    return cache[m][status];
}

static void access_log(at_req_t *r)
{
    double ms = (double)(at_mono_us() - r->start_us) / 1000.0;
    at_metric_observe(m_requests_hist, ms);
    at_metric_add(requests_counter(r->method, r->status), 1);
    if (r->gw->cfg.access_log)
        at_info("req=%s method=%s path=%s status=%d ms=%.2f", r->id, http_method_name(r->method),
                r->path, r->status, ms);
}

/* Origin allowed by CORS_ORIGINS (exact match in the comma list, or "*"). */
static int origin_allowed(const gateway_t *gw, const char *origin)
{
    const char *list = gw->cfg.cors_origins;
    size_t n = strlen(origin);
    while (list && *list) {
        while (*list == ' ' || *list == ',')
            list++;
        size_t k = strcspn(list, ",");
        size_t t = k;
        while (t > 0 && list[t - 1] == ' ')
            t--;
        if ((t == 1 && list[0] == '*') || (t == n && t && !strncmp(list, origin, n)))
            return 1;
        list += k;
    }
    return 0;
}

static void add_cors(at_req_t *r)
{
    const char *origin = req_header(r, "origin");
    if (!origin || !origin_allowed(r->gw, origin))
        return;
    req_add_header(r, "access-control-allow-origin", origin);
    req_add_header(r, "vary", "Origin");
    req_add_header(r, "access-control-allow-credentials", "true");
    req_add_header(r, "access-control-expose-headers", "ETag, Retry-After, X-Request-Id");
}

static int begin_answer(at_req_t *r)
{
    if (r->answered) { /* a second answer is a bug in the handler */
        at_error("event=double_answer req=%s path=%s", r->id, r->path);
        return -1;
    }
    r->answered = 1;
    add_cors(r);
    return 0;
}

void req_stream(at_req_t *r, int status, const char *content_type, req_pull_fn *pull, void *arg)
{
    if (begin_answer(r) != 0) {
        int done = 0;
        pull(arg, NULL, 0, &done);
        return;
    }
    r->status = status;
    snprintf(r->content_type, sizeof r->content_type, "%s", content_type);
    r->pull = pull;
    r->pull_arg = arg;
    r->close_after = 1; /* no Content-Length: the end of the body is the close */
    access_log(r);
    if (!r->wsi) {
        req_free(r);
        return;
    }
    lws_callback_on_writable(r->wsi);
}

void req_stream_wake(at_req_t *r)
{
    if (r->wsi)
        lws_callback_on_writable(r->wsi);
}

/* The one way an answer with a body in memory is queued; borrowed bodies
 * are never freed here. */
static void send_body(at_req_t *r, int status, const char *content_type, char *body, size_t len,
                      int borrowed)
{
    if (begin_answer(r) != 0) {
        if (!borrowed)
            free(body);
        return;
    }
    r->status = status;
    snprintf(r->content_type, sizeof r->content_type, "%s",
             content_type ? content_type : "application/json");
    r->resp = body;
    r->resp_borrowed = borrowed;
    r->resp_len = body ? len : 0;
    access_log(r);
    if (!r->wsi) {
        req_free(r); /* orphan: the client left before the answer */
        return;
    }
    lws_callback_on_writable(r->wsi);
}

void req_send(at_req_t *r, int status, const char *content_type, char *body, size_t len)
{
    send_body(r, status, content_type, body, len, 0);
}

void req_send_static(at_req_t *r, int status, const char *content_type, const char *body,
                     size_t len)
{
    send_body(r, status, content_type, (char *)body, len, 1);
}

void req_json(at_req_t *r, int status, json_t *body)
{
    char *s = json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(6));
    json_decref(body);
    if (!s) {
        s = strdup("{\"detail\":\"Internal Server Error\"}");
        status = 500;
    }
    req_send(r, status, NULL, s, strlen(s));
}

void req_error(at_req_t *r, int status, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    req_json(r, status, json_pack("{s:s}", "detail", msg));
}

void req_too_many(at_req_t *r, int64_t retry_ms, const char *what)
{
    char ra[24];
    snprintf(ra, sizeof ra, "%lld", (long long)((retry_ms + 999) / 1000));
    req_add_header(r, "retry-after", ra);
    req_error(r, 429, "%s; retry in %s s", what, ra);
}

/* Copy the request line, query and the headers we keep, while lws still
 * holds them (they are gone once the transaction ends). */
static void capture(at_req_t *r, struct lws *wsi, const char *uri)
{
    r->path = strndup(uri ? uri : "/", MAX_PATH);
    lws_get_peer_simple(wsi, r->ip, sizeof r->ip);
    if (!strncmp(r->ip, "::ffff:", 7)) /* IPv4 on a dual-stack socket */
        memmove(r->ip, r->ip + 7, strlen(r->ip + 7) + 1);
    char buf[8192];
    for (int i = 0; i < MAX_QUERY_ARGS; i++) {
        int n = lws_hdr_copy_fragment(wsi, buf, sizeof buf, WSI_TOKEN_HTTP_URI_ARGS, i);
        if (n < 0)
            break;
        r->query[r->nquery++] = strdup(buf);
    }
    for (size_t i = 0; i < N_KEPT; i++) {
        int n;
        if (kept_headers[i].token >= 0) {
            n = lws_hdr_copy(wsi, buf, sizeof buf, (enum lws_token_indexes)kept_headers[i].token);
        } else {
            char name[40];
            int nl = snprintf(name, sizeof name, "%s:", kept_headers[i].name);
            n = lws_hdr_custom_copy(wsi, buf, sizeof buf, name, nl);
        }
        if (n > 0)
            r->headers[i] = strdup(buf);
    }
    const char *rid = req_header(r, "x-request-id");
    if (rid && strlen(rid) < sizeof r->id && strspn(rid, "0123456789abcdefABCDEF-") == strlen(rid))
        at_strlcpy(r->id, rid, sizeof r->id);
    else {
        unsigned char b[4];
        at_random_bytes(b, sizeof b);
        snprintf(r->id, sizeof r->id, "%02x%02x%02x%02x", b[0], b[1], b[2], b[3]);
    }
}

/* CORS preflight: OPTIONS with Origin and Access-Control-Request-Method. */
static void preflight(at_req_t *r)
{
    char allow[128];
    routes_allowed(r->path, allow, sizeof allow);
    const char *origin = req_header(r, "origin");
    if (!allow[0]) {
        req_error(r, 404, "Not Found");
        return;
    }
    if (!origin) {
        req_add_header(r, "allow", allow);
        req_send(r, 204, "text/plain", NULL, 0);
        return;
    }
    if (!origin_allowed(r->gw, origin)) {
        req_error(r, 403, "Origin not allowed (CORS_ORIGINS)");
        return;
    }
    req_add_header(r, "access-control-allow-methods", allow);
    req_add_header(r, "access-control-allow-headers",
                   "Authorization, Content-Type, X-API-Key, If-Match, If-None-Match, X-Request-Id");
    req_add_header(r, "access-control-max-age", "600");
    req_send(r, 204, "text/plain", NULL, 0);
}

static void dispatch(at_req_t *r)
{
    r->dispatched = 1;
    if (r->body_too_big) {
        r->close_after = 1;
        req_error(r, 413, "Request body larger than %zu bytes", r->body_limit);
        return;
    }
    if (r->method == HTTP_OPTIONS) {
        preflight(r);
        return;
    }
    if (!r->route) {
        if (r->route_status == 405) {
            char allow[128];
            routes_allowed(r->path, allow, sizeof allow);
            req_add_header(r, "allow", allow);
            req_error(r, 405, "Method Not Allowed");
        } else {
            req_error(r, 404, "Not Found");
        }
        return;
    }
    auth_begin(r, r->route);
}

static size_t body_limit(const at_req_t *r)
{
    const at_config_t *c = &r->gw->cfg;
    size_t lim = SMALL_BODY;
    if (r->route && r->route->body == BODY_FILE)
        lim = 2 * (size_t)c->max_file_size + SMALL_BODY;
    else if (r->route && r->route->body == BODY_UPLOAD)
        lim = (size_t)c->upload_max_bytes;
    if (r->route && r->route->body == BODY_FILE && lim > (size_t)c->http_max_body)
        lim = (size_t)c->http_max_body > SMALL_BODY ? (size_t)c->http_max_body : SMALL_BODY;
    return lim;
}

/* The answer is out: free the request, keep the connection for the next
 * one unless it must close. */
static int finish_response(struct lws *wsi, pss_t *pss)
{
    int close_after = pss->req->close_after;
    req_free(pss->req);
    pss->req = NULL;
    if (close_after)
        return -1;
    return lws_http_transaction_completed(wsi) ? -1 : 0;
}

/* HEAD, and a 304 (answered with the body of its 200, for the same
 * Content-Length, as RFC 9110 wants): the headers only. */
static int no_body(const at_req_t *r)
{
    return r->method == HTTP_HEAD || r->status == 304;
}

/* Write what is pending; returns -1 to close the connection. */
static int write_response(struct lws *wsi, pss_t *pss)
{
    at_req_t *r = pss->req;
    static unsigned char buf[LWS_PRE + WRITE_CHUNK];
    if (!r || !r->answered)
        return 0;
    if (!r->headers_sent) {
        unsigned char *start = buf + LWS_PRE, *p = start, *end = buf + sizeof buf - 1;
        if (lws_add_http_common_headers(
                wsi, (unsigned)r->status, r->content_type,
                r->pull ? LWS_ILLEGAL_HTTP_CONTENT_LEN : (lws_filepos_t)r->resp_len, &p, end))
            return -1;
        char rid[32];
        int rl = snprintf(rid, sizeof rid, "%s", r->id);
        if (lws_add_http_header_by_name(wsi, (const unsigned char *)"x-request-id:",
                                        (const unsigned char *)rid, rl, &p, end))
            return -1;
        for (int i = 0; i < r->nextra; i++) {
            char name[128];
            snprintf(name, sizeof name, "%s:", r->extra_name[i]);
            if (lws_add_http_header_by_name(wsi, (const unsigned char *)name,
                                            (const unsigned char *)r->extra_value[i],
                                            (int)strlen(r->extra_value[i]), &p, end))
                return -1;
        }
        if (r->close_after && !r->pull &&
            lws_add_http_header_by_token(wsi, WSI_TOKEN_CONNECTION, (const unsigned char *)"close",
                                         5, &p, end))
            return -1;
        /* A small answer leaves in one write with its headers (HTTP/1.1
         * only here: no TLS, so no h2): one send() and one TCP segment
         * instead of two. */
        if (!r->pull) {
            if (lws_finalize_http_header(wsi, &p, end))
                return -1;
            size_t hl = (size_t)(p - start);
            size_t body = no_body(r) ? 0 : r->resp_len;
            if ((size_t)(end - p) >= body) {
                if (body)
                    memcpy(p, r->resp, body);
                if (lws_write(wsi, start, hl + body, LWS_WRITE_HTTP_HEADERS) != (int)(hl + body))
                    return -1;
                return finish_response(wsi, pss);
            }
            if (lws_write(wsi, start, hl, LWS_WRITE_HTTP_HEADERS) != (int)hl)
                return -1;
        } else if (lws_finalize_write_http_header(wsi, start, &p, end)) {
            return -1;
        }
        r->headers_sent = 1;
        if (no_body(r))
            r->resp_off = r->resp_len;
        if (r->pull) {
            lws_callback_on_writable(wsi);
            return 0;
        }
    }
    if (r->pull) {
        if (r->method == HTTP_HEAD)
            return -1;
        size_t n = r->pull(r->pull_arg, (char *)buf + LWS_PRE, WRITE_CHUNK, &r->pull_done);
        if (n > 0 && lws_write(wsi, buf + LWS_PRE, n,
                               r->pull_done ? LWS_WRITE_HTTP_FINAL : LWS_WRITE_HTTP) != (int)n)
            return -1;
        if (!r->pull_done) {
            if (n > 0)
                lws_callback_on_writable(wsi);
            return 0;
        }
        if (n == 0 && lws_write(wsi, buf + LWS_PRE, 0, LWS_WRITE_HTTP_FINAL) < 0)
            return -1;
        req_free(r);
        pss->req = NULL;
        return -1; /* close-delimited body */
    }
    if (r->resp_off < r->resp_len) {
        size_t n = r->resp_len - r->resp_off;
        if (n > WRITE_CHUNK)
            n = WRITE_CHUNK;
        memcpy(buf + LWS_PRE, r->resp + r->resp_off, n);
        r->resp_off += n;
        int final = r->resp_off == r->resp_len;
        if (lws_write(wsi, buf + LWS_PRE, n, final ? LWS_WRITE_HTTP_FINAL : LWS_WRITE_HTTP) !=
            (int)n)
            return -1;
        if (!final) {
            lws_callback_on_writable(wsi);
            return 0;
        }
    }
    return finish_response(wsi, pss);
}

static int has_body(struct lws *wsi)
{
    return lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH) > 0 ||
           lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING) > 0;
}

static int callback_http(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                         size_t len)
{
    pss_t *pss = user;
    gateway_t *gw = lws_context_user(lws_get_context(wsi));

    switch (reason) {
    case LWS_CALLBACK_HTTP: {
        if (pss->req) { /* a new request while the last is unfinished: drop it */
            at_req_t *old = pss->req;
            pss->req = NULL;
            if (old->answered)
                req_free(old);
            else
                old->wsi = NULL;
        }
        at_req_t *r = calloc(1, sizeof *r);
        if (!r)
            return -1;
        r->wsi = wsi;
        r->gw = gw;
        r->start_us = at_mono_us();
        char *uri = NULL;
        int ulen = 0;
        r->method = lws_http_get_uri_and_method(wsi, &uri, &ulen);
        if (r->method < 0 || r->method > HTTP_HEAD)
            r->method = HTTP_OTHER;
        pss->req = r;
        capture(r, wsi, (const char *)in);
        if (uri && strlen(uri) >= MAX_PATH) {
            r->dispatched = 1;
            r->close_after = 1;
            req_error(r, 414, "URI longer than %d bytes", MAX_PATH - 1);
            return 0;
        }
        if (r->method != HTTP_OPTIONS)
            r->route = routes_match(r, &r->route_status);
        r->body_limit = body_limit(r);
        if (!m_requests_hist)
            m_requests_hist = at_metrics_histogram("atelier_http_request_duration_ms",
                                                   "Time to answer an HTTP request, ms", NULL);
        if (has_body(wsi)) {
            char cl[32] = "";
            if (lws_hdr_copy(wsi, cl, sizeof cl, WSI_TOKEN_HTTP_CONTENT_LENGTH) > 0 &&
                strtoll(cl, NULL, 10) > (long long)r->body_limit) {
                r->body_too_big = 1;
                dispatch(r);
                return 0;
            }
            if (lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH) > 0 &&
                strtoll(cl, NULL, 10) == 0) {
                dispatch(r);
                return 0;
            }
            return 0; /* wait for LWS_CALLBACK_HTTP_BODY_COMPLETION */
        }
        dispatch(r);
        return 0;
    }
    case LWS_CALLBACK_HTTP_BODY: {
        at_req_t *r = pss->req;
        if (!r || r->dispatched)
            return 0;
        if (r->body_len + len > r->body_limit) {
            r->body_too_big = 1; /* answer now, read no further */
            dispatch(r);
            return 0;
        }
        if (r->body_len + len + 1 > r->body_cap) {
            size_t cap = r->body_cap ? r->body_cap : 4096;
            while (cap < r->body_len + len + 1)
                cap *= 2;
            char *b = realloc(r->body, cap);
            if (!b)
                return -1;
            r->body = b;
            r->body_cap = cap;
        }
        memcpy(r->body + r->body_len, in, len);
        r->body_len += len;
        r->body[r->body_len] = '\0';
        return 0;
    }
    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        if (pss->req && !pss->req->dispatched)
            dispatch(pss->req);
        return 0;
    case LWS_CALLBACK_HTTP_WRITEABLE:
        return write_response(wsi, pss);
    case LWS_CALLBACK_CLOSED_HTTP:
        if (pss && pss->req) {
            at_req_t *r = pss->req;
            pss->req = NULL;
            if (r->answered)
                req_free(r);
            else
                r->wsi = NULL; /* the pending handler frees it when it answers */
        }
        return 0;
    default:
        break;
    }
    return lws_callback_http_dummy(wsi, reason, user, in, len);
}

const struct lws_protocols http_protocol = {
    "http", callback_http, sizeof(pss_t), 0, 0, NULL, 0,
};
