/* GET /openapi.json: the API description, gateway/openapi.json compiled into
 * the binary. GET /docs: a Redoc page (gateway/docs/index.html, compiled in)
 * that loads Redoc's bundle from /docs/redoc.standalone.js. GET
 * /docs/{asset}: a fixed allow-list of files from the npm install under
 * ATELIER_WEB_ROOT (`make deps` runs npm ci in gateway/docs). Those files are
 * read once on libuv's thread pool, so the loop never waits on the disk, and
 * kept in memory; requests that arrive during the read wait for it. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "atelier/log.h"
#include "atelier/util.h"
#include "routes.h"

#ifndef ATELIER_SOURCE_WEB_ROOT
#define ATELIER_SOURCE_WEB_ROOT "gateway"
#endif

#define ASSET_MAX_BYTES (8 * 1024 * 1024) /* Redoc's bundle is ~1.1 MB */
#define MISSING_RETRY_MS 2000             /* a missing file is looked for again after this */
#define ASSET_ERROR_MAX (PATH_MAX + 160)

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

typedef enum { ASSET_UNREAD, ASSET_READING, ASSET_READY, ASSET_MISSING } asset_state_t;

/* A request waiting for an asset's read: it gets the asset itself, or the
 * docs page when page is set. */
typedef struct waiter {
    at_req_t *req;
    int page;
    struct waiter *next;
} waiter_t;

typedef struct asset {
    const char *name;         /* the URL's name under /docs/ */
    const char *rel;          /* its file under the web root */
    const char *content_type; /* answered as */
    /* loop-owned */
    asset_state_t state;
    char *data; /* the file's bytes once READY (kept for the process' life) */
    size_t len;
    int64_t failed_ms;
    waiter_t *waiters; /* owned until answered */
    /* the read: the thread-pool job touches only these until it is done */
    uv_work_t work;
    char path[PATH_MAX];
    char *rd_data;
    size_t rd_len;
    char rd_error[ASSET_ERROR_MAX];
} asset_t;

/* The only files /docs/{asset} serves; the first is the one /docs needs. */
static asset_t assets[] = {
    {.name = "redoc.standalone.js",
     .rel = "docs/node_modules/redoc/bundles/redoc.standalone.js",
     .content_type = "application/javascript; charset=utf-8"},
    {.name = "redoc.standalone.js.LICENSE.txt",
     .rel = "docs/node_modules/redoc/bundles/redoc.standalone.js.LICENSE.txt",
     .content_type = "text/plain; charset=utf-8"},
};
#define N_ASSETS (sizeof assets / sizeof assets[0])
#define PAGE_ASSET (&assets[0])

/* data lives as long as the process (compiled in, or the cached bundle). */
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

/* ---- reading an asset on the thread pool --------------------------------- */

static void read_error(asset_t *a, int err, const char *what)
{
    char buf[128];
    snprintf(a->rd_error, sizeof a->rd_error, "%s %s: %s", what, a->path,
             strerror_r(err, buf, sizeof buf));
}

/* Runs on a pool thread: only a->path in, a->rd_* out. */
static void read_work(uv_work_t *w)
{
    asset_t *a = w->data;
    a->rd_data = NULL;
    a->rd_len = 0;
    a->rd_error[0] = '\0';
    int fd = open(a->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        read_error(a, errno, "open");
        return;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        read_error(a, errno, "stat");
    } else if (!S_ISREG(st.st_mode)) {
        snprintf(a->rd_error, sizeof a->rd_error, "%s: not a regular file", a->path);
    } else if (st.st_size > ASSET_MAX_BYTES) {
        snprintf(a->rd_error, sizeof a->rd_error, "%s: %lld bytes, over the %d-byte limit", a->path,
                 (long long)st.st_size, ASSET_MAX_BYTES);
    } else {
        size_t want = (size_t)st.st_size, got = 0;
        char *buf = malloc(want ? want : 1);
        while (buf && got < want) {
            ssize_t n = read(fd, buf + got, want - got);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                if (n < 0)
                    read_error(a, errno, "read");
                else
                    snprintf(a->rd_error, sizeof a->rd_error, "read %s: file shrank to %zu bytes",
                             a->path, got);
                break;
            }
            got += (size_t)n;
        }
        if (!buf)
            snprintf(a->rd_error, sizeof a->rd_error, "read %s: out of memory", a->path);
        if (a->rd_error[0]) {
            free(buf);
        } else {
            a->rd_data = buf;
            a->rd_len = got;
        }
    }
    close(fd);
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

static void answer_asset(at_req_t *req, const asset_t *a)
{
    /* the name carries no version: a day, so an upgrade shows within one */
    req_add_header(req, "cache-control", "public, max-age=86400");
    send_static(req, a->content_type, a->data, a->len);
}

/* Answer a request once its asset is READY or MISSING. */
static void answer(at_req_t *req, int page, const asset_t *a)
{
    if (a->state != ASSET_READY)
        answer_missing(req, a);
    else if (page)
        answer_page(req);
    else
        answer_asset(req, a);
}

/* Back on the loop: publish the read and answer everyone who waited. */
static void read_done(uv_work_t *w, int status)
{
    asset_t *a = w->data;
    if (status == 0 && a->rd_data) {
        a->data = a->rd_data;
        a->len = a->rd_len;
        a->state = ASSET_READY;
        at_info("event=docs_asset_loaded path=%s bytes=%zu", a->path, a->len);
    } else {
        a->state = ASSET_MISSING;
        a->failed_ms = at_mono_us() / 1000;
        at_warn("event=docs_asset_missing error=\"%s\" hint=\"run make deps\"",
                status == 0 ? a->rd_error : uv_strerror(status));
    }
    a->rd_data = NULL;
    waiter_t *list = a->waiters;
    a->waiters = NULL;
    while (list) {
        waiter_t *next = list->next;
        answer(list->req, list->page, a);
        free(list);
        list = next;
    }
}

static const char *web_root(const gateway_t *gw)
{
    return gw->cfg.web_root && gw->cfg.web_root[0] ? gw->cfg.web_root : ATELIER_SOURCE_WEB_ROOT;
}

/* Answer req from asset a, reading the file first if it is not in memory
 * (or was missing a while ago: `make deps` may have run since). */
static void serve(at_req_t *req, asset_t *a, int page)
{
    if (a->state == ASSET_MISSING && at_mono_us() / 1000 - a->failed_ms >= MISSING_RETRY_MS)
        a->state = ASSET_UNREAD;
    if (a->state == ASSET_READY || a->state == ASSET_MISSING) {
        answer(req, page, a);
        return;
    }
    waiter_t *wt = malloc(sizeof *wt);
    if (!wt) {
        req_error(req, 503, "Out of memory");
        return;
    }
    wt->req = req;
    wt->page = page;
    wt->next = a->waiters;
    a->waiters = wt;
    if (a->state == ASSET_READING)
        return;

    gateway_t *gw = req_gw(req);
    int n = snprintf(a->path, sizeof a->path, "%s/%s", web_root(gw), a->rel);
    int rc = n > 0 && (size_t)n < sizeof a->path ? 0 : UV_ENAMETOOLONG;
    a->state = ASSET_READING;
    a->work.data = a;
    if (rc == 0)
        rc = uv_queue_work(gw->loop, &a->work, read_work, read_done);
    if (rc != 0) {
        a->rd_data = NULL;
        read_done(&a->work, rc);
    }
}

void route_docs(at_req_t *req)
{
    serve(req, PAGE_ASSET, 1);
}

void route_docs_asset(at_req_t *req)
{
    const char *name = req_param(req, 0);
    for (size_t i = 0; i < N_ASSETS; i++) {
        if (!strcmp(name, assets[i].name)) {
            serve(req, &assets[i], 0);
            return;
        }
    }
    req_error(req, 404, "Not Found");
}
