/* The web IDE (gateway/web, bundled by `node build.mjs` into web/dist/ under
 * the web root). GET /, /login, /register, /w/{id}: the app's one page,
 * dist/index.html, which routes on the client. GET /assets/{name}: a file of
 * dist/assets/, whose name carries its content hash, so browsers keep it
 * for a year; its gzipped copy <name>.gz when there is one and the client
 * takes gzip. Files are read and kept by static_files.c. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "routes.h"
#include "static_files.h"

#define INDEX_REL "web/dist/index.html"
#define ASSETS_REL "web/dist/assets/"
#define ASSET_NAME_MAX 252 /* NAME_MAX with room for ".gz" */
#define ALNUM "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

/* The app loads only its own files; Monaco styles inline and runs its
 * workers from blob: URLs, xterm.js and Monaco draw fonts and images from
 * data: URLs; the WebSocket is same-origin (connect-src 'self'). */
static const char web_csp[] =
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "font-src 'self' data:; img-src 'self' data: blob:; connect-src 'self'; "
    "worker-src 'self' blob:; manifest-src 'self'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'";

static const char not_built_csp[] =
    "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

static const char not_built_html[] =
    "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
    "<title>Atelier: web IDE not built</title></head><body>\n"
    "<h1>The web IDE is not built</h1>\n"
    "<p>The gateway cannot read <code>" INDEX_REL "</code> under its web root "
    "(its log names the path and the reason).</p>\n"
    "<p>Build it with <code>make deps</code> (or <code>cd gateway/web &amp;&amp; npm ci "
    "&amp;&amp; node build.mjs</code>), or set <code>ATELIER_WEB_ROOT</code> to a folder "
    "that holds <code>web/dist/</code>. The gateway looks again every few seconds: "
    "reload this page once it is there.</p>\n"
    "<p>The API works meanwhile: <a href=\"/docs\">/docs</a>.</p>\n"
    "</body></html>\n";

static const struct {
    const char *ext;
    const char *type;
} content_types[] = {
    {"js", "application/javascript; charset=utf-8"},
    {"css", "text/css; charset=utf-8"},
    {"ttf", "font/ttf"},
    {"woff2", "font/woff2"},
    {"svg", "image/svg+xml"},
    {"png", "image/png"},
    {"json", "application/json"},
    {"map", "application/json"},
    {"txt", "text/plain; charset=utf-8"},
};

static const char *content_type(const char *name)
{
    const char *dot = strrchr(name, '.');
    for (size_t i = 0; dot && i < sizeof content_types / sizeof content_types[0]; i++)
        if (!strcmp(dot + 1, content_types[i].ext))
            return content_types[i].type;
    return "application/octet-stream";
}

/* [A-Za-z0-9][A-Za-z0-9._-]*, no "..", not a .gz (those are sent only in
 * place of their original): a name in dist/assets/ and nothing else. */
static int asset_name_ok(const char *name)
{
    size_t n = strlen(name);
    return n > 0 && n <= ASSET_NAME_MAX && strspn(name, ALNUM) > 0 &&
           strspn(name, ALNUM "._-") == n && !strstr(name, "..") &&
           !(n >= 3 && !strcmp(name + n - 3, ".gz"));
}

/* A q-value of 0 ("0", "0.", "0.000"): the coding is refused. */
static int q_zero(const char *q)
{
    return q[0] == '0' && (q[1] != '.' || strspn(q + 2, "0") == strcspn(q + 2, " \t,;"));
}

/* The request's Accept-Encoding takes gzip: listed (or "*" when gzip is
 * not) without q=0. No header: identity only. */
static int accepts_gzip(const char *ae)
{
    int gzip = -1, star = -1; /* -1: not listed */
    for (const char *p = ae; p && *p;) {
        p += strspn(p, " \t,");
        size_t n = strcspn(p, " \t;,"), item = strcspn(p, ",");
        int *which = (n == 4 && !strncasecmp(p, "gzip", 4)) ? &gzip
                     : (n == 1 && *p == '*')                ? &star
                                                            : NULL;
        int ok = 1;
        for (const char *s = memchr(p, ';', item); s;
             s = memchr(s + 1, ';', item - (size_t)(s + 1 - p))) {
            const char *q = s + 1 + strspn(s + 1, " \t");
            if ((q[0] == 'q' || q[0] == 'Q') && q[1] == '=')
                ok = !q_zero(q + 2);
        }
        if (which)
            *which = ok;
        p += item;
    }
    return gzip == 1 || (gzip == -1 && star == 1);
}

static void page_ready(at_req_t *req, at_err_t err, const static_file_t *f, void *arg)
{
    (void)arg;
    if (err != AT_OK) {
        req_add_header(req, "cache-control", "no-store");
        req_add_header(req, "content-security-policy", not_built_csp);
        req_add_header(req, "x-content-type-options", "nosniff");
        req_send_static(req, 503, "text/html; charset=utf-8", not_built_html,
                        sizeof not_built_html - 1);
        return;
    }
    /* the page names the hashed assets of the current build: revalidated */
    req_add_header(req, "cache-control", "no-cache");
    req_add_header(req, "content-security-policy", web_csp);
    req_add_header(req, "referrer-policy", "no-referrer");
    static_file_send(req, f, "text/html; charset=utf-8");
}

void route_web_page(at_req_t *req)
{
    static_file_get(req, INDEX_REL, STATIC_MUST_EXIST, page_ready, NULL);
}

/* ---- /assets/{name} -------------------------------------------------------- */

static char has_gz; /* an arg that says: the asset has a .gz copy */

static void send_asset(at_req_t *req, const static_file_t *f, int gzipped, int vary)
{
    req_add_header(req, "cache-control", "public, max-age=31536000, immutable");
    if (vary)
        req_add_header(req, "vary", "accept-encoding");
    if (gzipped)
        req_add_header(req, "content-encoding", "gzip");
    static_file_send(req, f, content_type(req_param(req, 0)));
}

static void asset_ready(at_req_t *req, at_err_t err, const static_file_t *f, void *arg)
{
    const char *name = req_param(req, 0);
    if (err == AT_OK)
        send_asset(req, f, 0, arg == &has_gz);
    else if (err == AT_ENOTFOUND)
        req_error(req, 404, "Not Found");
    else
        req_error(req, 503, "/assets/%s cannot be served now: %s", name,
                  err == AT_ETOOBIG ? "larger than the gateway serves"
                  : err == AT_EBUSY ? "the gateway's file cache is full"
                                    : "it could not be read");
}

/* The .gz copy first: sent when the client takes gzip, and either way its
 * presence means the answer varies with Accept-Encoding. */
static void gz_ready(at_req_t *req, at_err_t err, const static_file_t *f, void *arg)
{
    (void)arg;
    if (err == AT_OK && accepts_gzip(req_header(req, "accept-encoding"))) {
        send_asset(req, f, 1, 1);
        return;
    }
    char rel[STATIC_REL_MAX];
    snprintf(rel, sizeof rel, ASSETS_REL "%s", req_param(req, 0));
    static_file_get(req, rel, STATIC_MAY_BE_MISSING, asset_ready, err == AT_OK ? &has_gz : NULL);
}

void route_web_asset(at_req_t *req)
{
    const char *name = req_param(req, 0);
    if (!asset_name_ok(name)) {
        req_error(req, 404, "Not Found");
        return;
    }
    char rel[STATIC_REL_MAX];
    snprintf(rel, sizeof rel, ASSETS_REL "%s.gz", name);
    static_file_get(req, rel, STATIC_MAY_BE_MISSING, gz_ready, NULL);
}
