/* Route table and matcher. One line per endpoint: the handler's name says
 * which routes_*.c file holds it (routes.h). */
#include "routes.h"

#include <stdio.h>
#include <string.h>

#define GET HTTP_GET
#define POST HTTP_POST
#define PUT HTTP_PUT
#define DEL HTTP_DELETE

static const route_t routes[] = {
    /* health, metrics, jobs */
    {GET, "/health", route_health, AUTH_PUBLIC, BODY_SMALL},
    {GET, "/api/health", route_health, AUTH_PUBLIC, BODY_SMALL},
    {GET, "/api/health/detailed", route_health_detailed, AUTH_PUBLIC, BODY_SMALL},
    {GET, "/api/health/probe/{role}", route_health_probe, AUTH_PUBLIC, BODY_SMALL},
    {GET, "/metrics", route_metrics, AUTH_PUBLIC, BODY_SMALL},
    {POST, "/api/jobs", route_job_create, AUTH_ADMIN, BODY_SMALL},
    {GET, "/api/jobs/{id}", route_job_get, AUTH_USER, BODY_SMALL},
    /* users and keys */
    {POST, "/api/users/register", route_user_register, AUTH_LOGIN, BODY_SMALL},
    {POST, "/api/users/login", route_user_login, AUTH_LOGIN, BODY_SMALL},
    {POST, "/api/users/logout", route_user_logout, AUTH_USER, BODY_SMALL},
    {GET, "/api/users", route_user_list, AUTH_ADMIN, BODY_SMALL},
    {GET, "/api/users/me", route_user_me, AUTH_USER, BODY_SMALL},
    {POST, "/api/keys", route_key_create, AUTH_USER, BODY_SMALL},
    {GET, "/api/keys", route_key_list, AUTH_USER, BODY_SMALL},
    {DEL, "/api/keys/{id}", route_key_delete, AUTH_USER, BODY_SMALL},
    /* WebSocket tickets (WS /ws itself is ws.c's, before routing) */
    {POST, "/api/ws-ticket", route_ws_ticket, AUTH_USER, BODY_SMALL},
    /* sessions: FastAPI family */
    {GET, "/api/sessions", route_session_list, AUTH_USER, BODY_SMALL},
    {GET, "/api/tiers", route_tiers, AUTH_USER, BODY_SMALL},
    {POST, "/api/sessions", route_session_create, AUTH_USER, BODY_SMALL},
    {GET, "/api/sessions/{uuid}", route_session_get, AUTH_USER, BODY_SMALL},
    {DEL, "/api/sessions/{uuid}", route_session_delete, AUTH_USER, BODY_SMALL},
    {POST, "/api/sessions/{uuid}/exec", route_session_exec, AUTH_USER, BODY_SMALL},
    {GET, "/api/sessions/{uuid}/terminals", route_session_terminals, AUTH_USER, BODY_SMALL},
    /* sessions: Client API v3.1 family */
    {POST, "/session/create", route_client_create, AUTH_USER, BODY_SMALL},
    {GET, "/session/{uuid}/status", route_client_status, AUTH_USER, BODY_SMALL},
    {GET, "/sessions", route_client_list, AUTH_USER, BODY_SMALL},
    {DEL, "/session/{uuid}", route_client_delete, AUTH_USER, BODY_SMALL},
    {POST, "/session/{uuid}/sleep", route_client_sleep, AUTH_USER, BODY_SMALL},
    {POST, "/session/{uuid}/wake", route_client_wake, AUTH_USER, BODY_SMALL},
    {POST, "/session/{uuid}/scale", route_client_scale, AUTH_USER, BODY_SMALL},
    {POST, "/session/{uuid}/chat", route_client_chat, AUTH_USER, BODY_SMALL},
    {POST, "/workspace/{id}/shutdown", route_workspace_shutdown, AUTH_USER, BODY_SMALL},
    /* files: workspace-api.md family */
    {GET, "/api/workspace/{id}/files", route_files_list, AUTH_USER, BODY_SMALL},
    {GET, "/api/workspace/{id}/files/{path*}", route_file_get, AUTH_USER, BODY_SMALL},
    {PUT, "/api/workspace/{id}/files/{path*}", route_file_put, AUTH_USER, BODY_FILE},
    {DEL, "/api/workspace/{id}/files/{path*}", route_file_delete, AUTH_USER, BODY_SMALL},
    {GET, "/api/workspace/{id}/status", route_workspace_status, AUTH_USER, BODY_SMALL},
    {POST, "/api/workspace/{id}/ensure-defaults", route_workspace_defaults, AUTH_USER, BODY_SMALL},
    /* files: fastapi-backend.md family */
    {GET, "/api/workspace/{id}/file/{path*}", route_file_get, AUTH_USER, BODY_SMALL},
    {POST, "/api/workspace/{id}/file/{path*}", route_file_put, AUTH_USER, BODY_FILE},
    {DEL, "/api/workspace/{id}/file/{path*}", route_file_delete, AUTH_USER, BODY_SMALL},
    {POST, "/api/workspace/{id}/ensure-default", route_workspace_defaults, AUTH_USER, BODY_SMALL},
    /* files: beyond the seeds */
    {POST, "/api/workspace/{id}/folders", route_folder_create, AUTH_USER, BODY_SMALL},
    {POST, "/api/workspace/{id}/move", route_file_move, AUTH_USER, BODY_SMALL},
    {POST, "/api/workspace/{id}/upload", route_upload, AUTH_USER, BODY_UPLOAD},
    {GET, "/api/workspace/{id}/download", route_download_zip, AUTH_USER, BODY_SMALL},
    {GET, "/api/workspace/{id}/download/{path*}", route_download_file, AUTH_USER, BODY_SMALL},
    /* API documentation */
    {GET, "/openapi.json", route_openapi, AUTH_PUBLIC, BODY_SMALL},
    {GET, "/docs", route_docs, AUTH_PUBLIC, BODY_SMALL},
    {GET, "/docs/{asset*}", route_docs_asset, AUTH_PUBLIC, BODY_SMALL},
    /* the web IDE: one page for the client's routes, and its bundle */
    {GET, "/", route_web_page, AUTH_PUBLIC, BODY_SMALL},
    {GET, "/login", route_web_page, AUTH_PUBLIC, BODY_SMALL},
    {GET, "/register", route_web_page, AUTH_PUBLIC, BODY_SMALL},
    {GET, "/w/{id}", route_web_page, AUTH_PUBLIC, BODY_SMALL},
    {GET, "/assets/{name}", route_web_asset, AUTH_PUBLIC, BODY_SMALL},
};
#define N_ROUTES (sizeof routes / sizeof routes[0])

/* Match path against pattern; captures {name} segments (and a final
 * {name*} taking the rest). A single trailing slash is ignored on both. */
static int match(const char *pattern, const char *path, char caps[][AT_REQ_PARAM_MAX], int *ncaps)
{
    *ncaps = 0;
    const char *p = pattern, *s = path;
    while (*p && *s) {
        if (*p == '{') {
            const char *close = strchr(p, '}');
            int rest = close && close > p && close[-1] == '*';
            size_t n = rest ? strlen(s) : strcspn(s, "/");
            if (rest) {
                while (n > 0 && s[n - 1] == '/')
                    n--;
            }
            if (n == 0 || n >= AT_REQ_PARAM_MAX || *ncaps >= HTTP_MAX_PARAMS)
                return 0;
            memcpy(caps[*ncaps], s, n);
            caps[*ncaps][n] = '\0';
            (*ncaps)++;
            s += rest ? strlen(s) : n;
            p = close + 1;
            continue;
        }
        if (*p != *s)
            return 0;
        p++;
        s++;
    }
    if (*s == '/' && s[1] == '\0')
        s++;
    if (*p == '/' && p[1] == '\0')
        p++;
    return *p == '\0' && *s == '\0';
}

static char caps_buf[HTTP_MAX_PARAMS][AT_REQ_PARAM_MAX];

const route_t *routes_match(at_req_t *req, int *status)
{
    int ncaps = 0, path_known = 0;
    int method = req_method(req);
    for (size_t i = 0; i < N_ROUTES; i++) {
        if (!match(routes[i].pattern, req_path(req), caps_buf, &ncaps))
            continue;
        path_known = 1;
        int m = routes[i].method;
        if (m == method || (method == HTTP_HEAD && m == HTTP_GET)) {
            const char *ptrs[HTTP_MAX_PARAMS];
            for (int k = 0; k < ncaps; k++)
                ptrs[k] = caps_buf[k];
            req_set_params(req, ptrs, ncaps);
            return &routes[i];
        }
    }
    *status = path_known ? 405 : 404;
    return NULL;
}

void routes_allowed(const char *path, char *out, size_t cap)
{
    int ncaps;
    size_t o = 0;
    out[0] = '\0';
    for (size_t i = 0; i < N_ROUTES; i++) {
        if (!match(routes[i].pattern, path, caps_buf, &ncaps))
            continue;
        const char *name = http_method_name(routes[i].method);
        if (strstr(out, name))
            continue;
        int n = snprintf(out + o, cap - o, "%s%s", o ? ", " : "", name);
        if (n < 0 || (size_t)n >= cap - o)
            break;
        o += (size_t)n;
    }
}
