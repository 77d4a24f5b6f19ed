/*
 * Files served from the web root (ATELIER_WEB_ROOT, else the source tree's
 * gateway/ folder): the web IDE's bundle (routes_web.c) and Redoc's
 * (routes_docs.c). Each file is read once on libuv's thread pool, so the
 * loop never waits on the disk, and kept in memory for the process' life (a
 * rebuilt bundle needs a restart); requests that arrive during the read
 * wait for it. A file that could not be read is looked for again after
 * STATIC_RETRY_MS, so `make deps` run meanwhile is picked up.
 */
#ifndef GATEWAY_STATIC_FILES_H
#define GATEWAY_STATIC_FILES_H

#include <stddef.h>

#include "atelier/err.h"
#include "http.h"

#define STATIC_FILE_MAX_BYTES (16 * 1024 * 1024) /* Monaco's largest chunk is ~5 MB */
#define STATIC_CACHE_MAX_FILES 1024              /* known names, read or missing */
#define STATIC_CACHE_MAX_BYTES (64 * 1024 * 1024)
#define STATIC_RETRY_MS 2000 /* an unreadable file is looked for again after this */
#define STATIC_REL_MAX 512   /* a path under the web root, bytes */

typedef struct static_file {
    const char *data; /* kept for the process' life: send it with req_send_static */
    size_t len;
    const char *etag; /* "\"<sha256 of data>\"" */
} static_file_t;

/* How a file that is not there is logged: a warning with a hint (the page
 * needs it), or quietly (a name a client made up, a .gz that may not be). */
typedef enum { STATIC_MUST_EXIST, STATIC_MAY_BE_MISSING } static_need_t;

/* f is the file, or NULL with err: AT_ENOTFOUND (no such regular file),
 * AT_ETOOBIG (over STATIC_FILE_MAX_BYTES), AT_EBUSY (the cache is full),
 * AT_EIO or AT_ENOMEM. */
typedef void static_file_cb(at_req_t *req, at_err_t err, const static_file_t *f, void *arg);

/* Find rel (a path under the web root that the caller built from its own
 * names or checked ones: never raw client input) and call cb once, from
 * within this call when the file is known, else when its read is done. */
void static_file_get(at_req_t *req, const char *rel, static_need_t need, static_file_cb *cb,
                     void *arg);

/* Answer 200 with f, its ETag and x-content-type-options: nosniff, or 304
 * when the request's If-None-Match names that ETag. The route's own
 * headers (cache-control, ...) are added before. */
void static_file_send(at_req_t *req, const static_file_t *f, const char *content_type);

#endif
