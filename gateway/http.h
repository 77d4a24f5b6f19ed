/*
 * HTTP requests on libwebsockets: one at_req_t per request, owned by the
 * connection until a response is queued. A handler either answers before it
 * returns or keeps the request and answers later (after a database or Redis
 * callback); if the client goes away meanwhile the request is kept as an
 * orphan and freed by that late answer. Every request is answered exactly
 * once.
 */
#ifndef GATEWAY_HTTP_H
#define GATEWAY_HTTP_H

#include <jansson.h>
#include <libwebsockets.h>
#include <stddef.h>
#include <stdint.h>

#include "auth.h"
#include "gateway.h"

typedef enum {
    HTTP_GET = LWSHUMETH_GET,
    HTTP_POST = LWSHUMETH_POST,
    HTTP_OPTIONS = LWSHUMETH_OPTIONS,
    HTTP_PUT = LWSHUMETH_PUT,
    HTTP_PATCH = LWSHUMETH_PATCH,
    HTTP_DELETE = LWSHUMETH_DELETE,
    HTTP_HEAD = LWSHUMETH_HEAD,
    HTTP_OTHER = 100,
} http_method_t;

#define HTTP_MAX_PARAMS 8
#define AT_REQ_PARAM_MAX 8192 /* a captured path parameter, bytes */

typedef struct at_req at_req_t;

extern const struct lws_protocols http_protocol;

const char *http_method_name(int method);

gateway_t *req_gw(const at_req_t *req);
int req_method(const at_req_t *req);
const char *req_path(const at_req_t *req);
/* Decoded query parameter, or NULL. */
const char *req_query(const at_req_t *req, const char *name);
/* Request header by lower-case name (a fixed set is kept: authorization,
 * x-api-key, content-type, if-match, if-none-match, accept-encoding, origin,
 * cookie, accept, x-request-id). */
const char *req_header(const at_req_t *req, const char *name);
const char *req_body(const at_req_t *req, size_t *len);
/* Path parameter captured by the route ({name} segments, in order). */
const char *req_param(const at_req_t *req, int idx);
const char *req_id(const at_req_t *req);
/* The client's address ("127.0.0.1"; IPv4-mapped IPv6 shown as IPv4). */
const char *req_ip(const at_req_t *req);
/* The route matched at header time (NULL when none). */
const route_t *req_route(const at_req_t *req);
principal_t *req_principal_mut(at_req_t *req);
/* Parse the body as a JSON object; on failure answers 400/422 and returns NULL. */
json_t *req_json_body(at_req_t *req);
/* The same, but an empty body is an empty object. */
json_t *req_json_body_optional(at_req_t *req);

/* Answers. body is taken (malloc'd); content_type NULL means JSON. A 304
 * is given the body its 200 would have: it sends that Content-Length and
 * no body (as HEAD does). */
void req_send(at_req_t *req, int status, const char *content_type, char *body, size_t len);
/* body is not taken: it must outlive the request (static or cached). */
void req_send_static(at_req_t *req, int status, const char *content_type, const char *body,
                     size_t len);
void req_json(at_req_t *req, int status, json_t *body); /* body stolen */
void req_error(at_req_t *req, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Extra response header ("name", "value"); call before answering. */
void req_add_header(at_req_t *req, const char *name, const char *value);
/* Answer 429 "<what>; retry in N s" with Retry-After: N, the seconds until
 * retry_ms has passed, rounded up (a rate limit said no). */
void req_too_many(at_req_t *req, int64_t retry_ms, const char *what);

/* A streamed answer of unknown length (the connection closes after it).
 * pull is called each time the socket can take more: it copies up to cap
 * bytes into buf and returns how many, sets *done on the last piece, or
 * returns 0 without *done when it has nothing yet (it then calls
 * req_stream_wake when it has). On a client that went away, pull is called
 * once with buf NULL so the producer can free itself. */
typedef size_t req_pull_fn(void *arg, char *buf, size_t cap, int *done);
void req_stream(at_req_t *req, int status, const char *content_type, req_pull_fn *pull, void *arg);
void req_stream_wake(at_req_t *req);

/* Route parameters, set by the router. */
void req_set_params(at_req_t *req, const char *const *params, int n);

#endif
