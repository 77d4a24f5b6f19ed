/* The route table: method + path pattern -> handler, with what the route
 * needs (credentials, body size). routes.c holds the table; each handler's
 * comment names the routes_*.c file that holds it. */
#ifndef GATEWAY_ROUTES_H
#define GATEWAY_ROUTES_H

#include "auth.h"
#include "http.h"

typedef void route_fn(at_req_t *req);

typedef enum {
    BODY_SMALL = 0, /* JSON requests: 64 KiB */
    BODY_FILE,      /* one file's content: 2 x MAX_FILE_SIZE + 64 KiB (JSON escaping) */
    BODY_UPLOAD,    /* multipart upload: ATELIER_UPLOAD_MAX_BYTES */
} body_kind_t;

struct route {
    int method;
    const char *pattern; /* "/api/jobs/{id}"; "{path*}" captures the rest */
    route_fn *fn;
    auth_level_t auth;
    body_kind_t body;
};

/* Find the route for the request's method and path and capture its
 * parameters; NULL with *status 404 or 405 when there is none. */
const route_t *routes_match(at_req_t *req, int *status);
/* The methods a path answers to ("GET, PUT, DELETE"), for 405 and CORS. */
void routes_allowed(const char *path, char *out, size_t cap);

/* routes_health.c */
void route_health(at_req_t *req);
void route_health_detailed(at_req_t *req);
void route_health_probe(at_req_t *req);
/* routes_metrics.c */
void route_metrics(at_req_t *req);
/* routes_jobs.c */
void route_job_get(at_req_t *req);
void route_job_create(at_req_t *req);
/* routes_users.c */
void route_user_register(at_req_t *req);
void route_user_login(at_req_t *req);
void route_user_logout(at_req_t *req);
void route_user_list(at_req_t *req);
void route_user_me(at_req_t *req);
/* routes_keys.c */
void route_key_create(at_req_t *req);
void route_key_list(at_req_t *req);
void route_key_delete(at_req_t *req);
/* routes_sessions.c: FastAPI family (/api/sessions) */
void route_session_list(at_req_t *req);
void route_tiers(at_req_t *req);
void route_session_terminals(at_req_t *req);
void route_session_create(at_req_t *req);
void route_session_get(at_req_t *req);
void route_session_delete(at_req_t *req);
void route_session_exec(at_req_t *req);
/* routes_client.c: Client API v3.1 family (/session, /sessions) */
void route_client_create(at_req_t *req);
void route_client_status(at_req_t *req);
void route_client_list(at_req_t *req);
void route_client_delete(at_req_t *req);
void route_client_sleep(at_req_t *req);
void route_client_wake(at_req_t *req);
void route_client_scale(at_req_t *req);
void route_client_chat(at_req_t *req);
void route_workspace_shutdown(at_req_t *req);
/* routes_files.c: both file families */
void route_files_list(at_req_t *req);
void route_file_get(at_req_t *req);
void route_file_put(at_req_t *req);
void route_file_delete(at_req_t *req);
void route_workspace_status(at_req_t *req);
void route_workspace_defaults(at_req_t *req);
void route_folder_create(at_req_t *req);
void route_file_move(at_req_t *req);
/* routes_transfer.c: upload and download */
void route_upload(at_req_t *req);
void route_download_file(at_req_t *req);
void route_download_zip(at_req_t *req);
/* routes_ws_ticket.c: single-use credentials for WS /ws */
void route_ws_ticket(at_req_t *req);
/* routes_docs.c */
void route_openapi(at_req_t *req);
void route_docs(at_req_t *req);
void route_docs_asset(at_req_t *req);
/* routes_web.c: the web IDE */
void route_web_page(at_req_t *req);
void route_web_asset(at_req_t *req);

#endif
