/* Route table and matcher. One line per endpoint: the handler's name says
 * which routes_*.c file holds it. */
#include "routes.h"

#include <string.h>

static const route_t routes[] = {
    {HTTP_GET, "/health", route_health},
    {HTTP_GET, "/api/health", route_health},
    {HTTP_GET, "/api/health/detailed", route_health_detailed},
    {HTTP_GET, "/api/health/probe/{role}", route_health_probe},
    {HTTP_GET, "/metrics", route_metrics},
    {HTTP_POST, "/api/jobs", route_job_create},
    {HTTP_GET, "/api/jobs/{id}", route_job_get},
};
#define N_ROUTES (sizeof routes / sizeof routes[0])

/* Match path against pattern; captures {name} segments (and a final
 * {name*} taking the rest). A single trailing slash is ignored on both. */
static int match(const char *pattern, const char *path, char caps[][1024], int *ncaps)
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
            if (n == 0 || n >= 1024 || *ncaps >= HTTP_MAX_PARAMS)
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

void routes_dispatch(at_req_t *req)
{
    char caps[HTTP_MAX_PARAMS][1024];
    int ncaps = 0, path_known = 0;
    int method = req_method(req);
    for (size_t i = 0; i < N_ROUTES; i++) {
        if (!match(routes[i].pattern, req_path(req), caps, &ncaps))
            continue;
        path_known = 1;
        int m = routes[i].method;
        if (m == method || (method == HTTP_HEAD && m == HTTP_GET)) {
            const char *ptrs[HTTP_MAX_PARAMS];
            for (int k = 0; k < ncaps; k++)
                ptrs[k] = caps[k];
            req_set_params(req, ptrs, ncaps);
            routes[i].fn(req);
            return;
        }
    }
    if (path_known)
        req_error(req, 405, "Method Not Allowed");
    else
        req_error(req, 404, "Not Found");
}
