/* GET /openapi.json: the API description, gateway/openapi.json compiled into
 * the binary. GET /docs: a Redoc page (gateway/docs/index.html, compiled in)
 * that loads Redoc's bundle from /docs/redoc.standalone.js. GET
 * /docs/{asset}: a fixed allow-list of files from the npm install under
 * ATELIER_WEB_ROOT (`make deps` runs npm ci in gateway/docs), read and kept
 * by static_files.c. */
#include <string.h>

#include "routes.h"
#include "static_files.h"

/* embedded by gateway/embed_file.cmake */
extern const char at_embed_openapi_json[];
extern const size_t at_embed_openapi_json_len;
extern const char at_embed_docs_index_html[];
extern const size_t at_embed_docs_index_html_len;

/* The docs page needs nothing but itself, its bundle and /openapi.json: the
 * policy makes the browser refuse anything else (no CDN can creep in).
 * Redoc styles inline (styled-components) and runs its search in a blob:
 * worker. */
static const char docs_csp[] =
    "default-src 'none'; script-src 'self'; worker-src blob:; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'";

typedef struct asset {
    const char *name;         /* the URL's name under /docs/ */
    const char *rel;          /* its file under the web root */
    const char *content_type; /* answered as */
} asset_t;

/* The only files /docs/{asset} serves; the first is the one /docs needs. */
static const asset_t assets[] = {
    {.name = "redoc.standalone.js",
     .rel = "docs/node_modules/redoc/bundles/redoc.standalone.js",
     .content_type = "application/javascript; charset=utf-8"},
    {.name = "redoc.standalone.js.LICENSE.txt",
     .rel = "docs/node_modules/redoc/bundles/redoc.standalone.js.LICENSE.txt",
     .content_type = "text/plain; charset=utf-8"},
};
#define N_ASSETS (sizeof assets / sizeof assets[0])
#define PAGE_ASSET (&assets[0])

/* data lives as long as the process (compiled in). */
static void send_static(at_req_t *req, const char *content_type, const char *data, size_t n)
{
    req_add_header(req, "x-content-type-options", "nosniff");
    req_send_static(req, 200, content_type, data, n);
}

void route_openapi(at_req_t *req)
{
    /* a new build may change it, so browsers revalidate */
    req_add_header(req, "cache-control", "no-cache");
    send_static(req, "application/json", at_embed_openapi_json, at_embed_openapi_json_len);
}

/* The detail names the file relative to the web root: the absolute path and
 * the system error are in the log, not told to anonymous clients. */
static void answer_missing(at_req_t *req, const asset_t *a)
{
    req_error(req, 503,
              "API docs unavailable: Redoc is not installed (%s is not readable under the web "
              "root). Run `make deps` (npm ci in gateway/docs), or set ATELIER_WEB_ROOT to a "
              "folder that has it",
              a->rel);
}

static void answer_page(at_req_t *req)
{
    req_add_header(req, "cache-control", "no-cache");
    req_add_header(req, "content-security-policy", docs_csp);
    req_add_header(req, "referrer-policy", "no-referrer");
    send_static(req, "text/html; charset=utf-8", at_embed_docs_index_html,
                at_embed_docs_index_html_len);
}

/* arg: the asset asked for, or NULL for the page (which needs the bundle). */
static void file_ready(at_req_t *req, at_err_t err, const static_file_t *f, void *arg)
{
    const asset_t *a = arg;
    if (err != AT_OK) {
        answer_missing(req, a ? a : PAGE_ASSET);
    } else if (!a) {
        answer_page(req);
    } else {
        /* the name carries no version: a day, so an upgrade shows within one */
        req_add_header(req, "cache-control", "public, max-age=86400");
        static_file_send(req, f, a->content_type);
    }
}

void route_docs(at_req_t *req)
{
    static_file_get(req, PAGE_ASSET->rel, STATIC_MUST_EXIST, file_ready, NULL);
}

void route_docs_asset(at_req_t *req)
{
    const char *name = req_param(req, 0);
    for (size_t i = 0; i < N_ASSETS; i++) {
        if (!strcmp(name, assets[i].name)) {
            static_file_get(req, assets[i].rel, STATIC_MUST_EXIST, file_ready, (void *)&assets[i]);
            return;
        }
    }
    req_error(req, 404, "Not Found");
}
