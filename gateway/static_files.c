/* The web root's files in memory (static_files.h). Entries are found by
 * their path under the root in a small hash table; the table is bounded in
 * names (STATIC_CACHE_MAX_FILES) and bytes (STATIC_CACHE_MAX_BYTES).
 *
 * When full, a request is refused (503 from the routes) rather than
 * answered from an uncached read: the bundles are a few MB in a few
 * hundred files, so a full cache means a wrong web root or a client
 * probing names, and uncached reads would give each such request its own
 * copy of a file of up to 16 MiB. Names that were missing are forgotten
 * first to make room, so made-up names cannot crowd out the real ones. */
#include "static_files.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "atelier/crypto.h"
#include "atelier/log.h"
#include "atelier/util.h"

#ifndef ATELIER_SOURCE_WEB_ROOT
#define ATELIER_SOURCE_WEB_ROOT "gateway"
#endif

#define BUCKETS 256
#define ERROR_MAX (PATH_MAX + 160)
#define ETAG_MAX (AT_SHA256_HEX + 3) /* quoted, with the NUL */

/* UNREAD: just added, no read yet. */
typedef enum { FILE_UNREAD, FILE_READING, FILE_READY, FILE_MISSING } file_state_t;

/* A request waiting for a read; owned by its entry until answered. */
typedef struct waiter {
    at_req_t *req;
    static_file_cb *cb;
    void *arg;
    struct waiter *next;
} waiter_t;

/* Loop-owned. A READY or READING entry is never freed (requests borrow the
 * data; the read job points at the entry); an UNREAD or MISSING one may be. */
typedef struct entry {
    struct entry *next; /* in its bucket */
    char *rel;
    file_state_t state;
    int must_exist;      /* some caller needs it: log its absence as a warning */
    static_file_t file;  /* READY */
    char etag[ETAG_MAX]; /* file.etag */
    at_err_t err;        /* MISSING */
    int64_t failed_ms;
    waiter_t *waiters;
} entry_t;

/* One read on the thread pool: the pool thread touches only this. */
typedef struct read_job {
    uv_work_t work;
    entry_t *entry;
    size_t limit; /* bytes the cache could still take when the read began */
    char path[PATH_MAX];
    /* out */
    at_err_t err;
    char *data;
    size_t len;
    char etag[ETAG_MAX];
    char error[ERROR_MAX];
} read_job_t;

static entry_t *buckets[BUCKETS];
static size_t n_entries, cached_bytes;
static int64_t full_logged_ms = -STATIC_RETRY_MS;

static const char *web_root(const gateway_t *gw)
{
    return gw->cfg.web_root && gw->cfg.web_root[0] ? gw->cfg.web_root : ATELIER_SOURCE_WEB_ROOT;
}

static entry_t **bucket(const char *rel)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)rel; *p; p++)
        h = (h ^ *p) * 16777619u;
    return &buckets[h % BUCKETS];
}

static entry_t *find(const char *rel)
{
    for (entry_t *e = *bucket(rel); e; e = e->next)
        if (!strcmp(e->rel, rel))
            return e;
    return NULL;
}

/* Forget the missing name that failed longest ago (or one never read);
 * 0 if there is none. */
static int evict_missing(void)
{
    entry_t **victim = NULL;
    for (size_t b = 0; b < BUCKETS; b++)
        for (entry_t **pp = &buckets[b]; *pp; pp = &(*pp)->next)
            if (((*pp)->state == FILE_MISSING || (*pp)->state == FILE_UNREAD) &&
                (!victim || (*pp)->failed_ms < (*victim)->failed_ms))
                victim = pp;
    if (!victim)
        return 0;
    entry_t *e = *victim;
    *victim = e->next;
    free(e->rel);
    free(e);
    n_entries--;
    return 1;
}

static at_err_t add(const char *rel, entry_t **out)
{
    if (n_entries >= STATIC_CACHE_MAX_FILES && !evict_missing()) {
        int64_t now = at_mono_us() / 1000;
        if (now - full_logged_ms >= STATIC_RETRY_MS) {
            full_logged_ms = now;
            at_warn("event=static_cache_full files=%zu bytes=%zu refused=%s", n_entries,
                    cached_bytes, rel);
        }
        return AT_EBUSY;
    }
    entry_t *e = calloc(1, sizeof *e);
    if (!e || !(e->rel = strdup(rel))) {
        free(e);
        return AT_ENOMEM;
    }
    entry_t **b = bucket(rel);
    e->next = *b;
    *b = e;
    n_entries++;
    *out = e;
    return AT_OK;
}

/* ---- reading on the thread pool ----------------------------------------- */

static void read_failed(read_job_t *j, at_err_t err, int sys_errno, const char *what)
{
    char buf[128];
    j->err = err;
    snprintf(j->error, sizeof j->error, "%s %s: %s", what, j->path,
             strerror_r(sys_errno, buf, sizeof buf));
}

/* Runs on a pool thread. O_NONBLOCK: a FIFO under the root must not hold
 * the thread forever (it changes nothing for a regular file). */
static void read_work(uv_work_t *w)
{
    read_job_t *j = w->data;
    int fd = open(j->path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        int sys = errno;
        read_failed(j, sys == ENOENT || sys == ENOTDIR ? AT_ENOTFOUND : AT_EIO, sys, "open");
        return;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        read_failed(j, AT_EIO, errno, "stat");
    } else if (!S_ISREG(st.st_mode)) {
        j->err = AT_ENOTFOUND;
        snprintf(j->error, sizeof j->error, "%s: not a regular file", j->path);
    } else if (st.st_size > STATIC_FILE_MAX_BYTES) {
        j->err = AT_ETOOBIG;
        snprintf(j->error, sizeof j->error, "%s: %lld bytes, over the %d-byte limit", j->path,
                 (long long)st.st_size, STATIC_FILE_MAX_BYTES);
    } else if ((size_t)st.st_size > j->limit) {
        j->err = AT_EBUSY;
        snprintf(j->error, sizeof j->error,
                 "%s: %lld bytes, more than the %zu left of the %d-byte cache", j->path,
                 (long long)st.st_size, j->limit, STATIC_CACHE_MAX_BYTES);
    } else {
        size_t want = (size_t)st.st_size, got = 0;
        char *buf = malloc(want ? want : 1);
        if (!buf) {
            j->err = AT_ENOMEM;
            snprintf(j->error, sizeof j->error, "read %s: out of memory", j->path);
        }
        while (buf && got < want) {
            ssize_t n = read(fd, buf + got, want - got);
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0) {
                read_failed(j, AT_EIO, errno, "read");
                break;
            }
            if (n == 0) {
                j->err = AT_EIO;
                snprintf(j->error, sizeof j->error, "read %s: file shrank to %zu bytes", j->path,
                         got);
                break;
            }
            got += (size_t)n;
        }
        if (j->err == AT_OK) {
            char hex[AT_SHA256_HEX + 1];
            at_sha256_hex(buf, got, hex);
            snprintf(j->etag, sizeof j->etag, "\"%s\"", hex);
            j->data = buf;
            j->len = got;
        } else {
            free(buf);
        }
    }
    close(fd);
}

static void mark_missing(entry_t *e, at_err_t err, const char *error)
{
    e->state = FILE_MISSING;
    e->err = err;
    e->failed_ms = at_mono_us() / 1000;
    if (err == AT_ENOTFOUND && !e->must_exist)
        at_debug("event=static_file_missing error=\"%s\"", error);
    else
        at_warn("event=static_file_unreadable error=\"%s\"%s", error,
                err == AT_ENOTFOUND
                    ? " hint=\"run make deps, or set ATELIER_WEB_ROOT to a folder that has it\""
                    : "");
}

/* Answer everyone who waited for e's read. A callback may look up other
 * files, which may forget e if it is missing: answer from copies. */
static void answer_waiters(entry_t *e)
{
    at_err_t err = e->state == FILE_READY ? AT_OK : e->err;
    const static_file_t *f = e->state == FILE_READY ? &e->file : NULL;
    waiter_t *list = e->waiters;
    e->waiters = NULL;
    while (list) {
        waiter_t *next = list->next;
        list->cb(list->req, err, f, list->arg);
        free(list);
        list = next;
    }
}

/* Back on the loop: publish the read. */
static void read_done(uv_work_t *w, int status)
{
    read_job_t *j = w->data;
    entry_t *e = j->entry;
    if (status != 0 && j->err == AT_OK) {
        free(j->data);
        j->data = NULL;
        j->err = AT_EIO;
        snprintf(j->error, sizeof j->error, "read %s: %s", j->path, uv_strerror(status));
    }
    if (j->err == AT_OK && cached_bytes + j->len > STATIC_CACHE_MAX_BYTES) {
        free(j->data); /* other reads filled the cache meanwhile */
        j->data = NULL;
        j->err = AT_EBUSY;
        snprintf(j->error, sizeof j->error, "%s: %zu bytes, more than the %d-byte cache has left",
                 j->path, j->len, STATIC_CACHE_MAX_BYTES);
    }
    if (j->err == AT_OK) {
        memcpy(e->etag, j->etag, sizeof e->etag);
        e->file = (static_file_t){.data = j->data, .len = j->len, .etag = e->etag};
        e->state = FILE_READY;
        cached_bytes += j->len;
        at_info("event=static_file_loaded path=%s bytes=%zu cached_bytes=%zu", j->path, j->len,
                cached_bytes);
    } else {
        mark_missing(e, j->err, j->error);
    }
    free(j);
    answer_waiters(e);
}

static void start_read(gateway_t *gw, entry_t *e)
{
    char error[ERROR_MAX];
    at_err_t err = AT_ENOMEM;
    e->state = FILE_READING;
    read_job_t *j = calloc(1, sizeof *j);
    if (!j) {
        snprintf(error, sizeof error, "read %s: out of memory", e->rel);
    } else {
        j->work.data = j;
        j->entry = e;
        j->limit = STATIC_CACHE_MAX_BYTES - cached_bytes;
        int n = snprintf(j->path, sizeof j->path, "%s/%s", web_root(gw), e->rel);
        int rc = UV_ENAMETOOLONG;
        if (n > 0 && (size_t)n < sizeof j->path)
            rc = uv_queue_work(gw->loop, &j->work, read_work, read_done);
        if (rc == 0)
            return;
        err = rc == UV_ENAMETOOLONG ? AT_ENOTFOUND : AT_EIO;
        snprintf(error, sizeof error, "read %s/%s: %s", web_root(gw), e->rel, uv_strerror(rc));
        free(j);
    }
    mark_missing(e, err, error);
    answer_waiters(e);
}

void static_file_get(at_req_t *req, const char *rel, static_need_t need, static_file_cb *cb,
                     void *arg)
{
    if (strlen(rel) >= STATIC_REL_MAX) {
        cb(req, AT_ENOTFOUND, NULL, arg); /* no file of the bundles has such a name */
        return;
    }
    entry_t *e = find(rel);
    if (e && e->state == FILE_READY) {
        cb(req, AT_OK, &e->file, arg);
        return;
    }
    /* missing less than STATIC_RETRY_MS ago: still missing; later, read
     * again (`make deps` may have run since) */
    if (e && e->state == FILE_MISSING && at_mono_us() / 1000 - e->failed_ms < STATIC_RETRY_MS) {
        cb(req, e->err, NULL, arg);
        return;
    }
    at_err_t err = e ? AT_OK : add(rel, &e);
    waiter_t *wt = err == AT_OK ? malloc(sizeof *wt) : NULL;
    if (!wt) {
        cb(req, err == AT_OK ? AT_ENOMEM : err, NULL, arg);
        return;
    }
    if (need == STATIC_MUST_EXIST)
        e->must_exist = 1;
    *wt = (waiter_t){.req = req, .cb = cb, .arg = arg, .next = e->waiters};
    e->waiters = wt;
    if (e->state != FILE_READING)
        start_read(req_gw(req), e);
}

/* A list of entity tags (If-None-Match) names etag: "*", or the same
 * opaque tag, weak or not (RFC 9110's weak comparison). */
static int etag_listed(const char *list, const char *etag)
{
    size_t n = strlen(etag);
    for (const char *p = list;;) {
        p += strspn(p, " \t,");
        if (*p == '*')
            return 1;
        if (!strncmp(p, "W/", 2))
            p += 2;
        const char *end = *p == '"' ? strchr(p + 1, '"') : NULL;
        if (!end)
            return 0; /* the end, or not a tag */
        if ((size_t)(end + 1 - p) == n && !memcmp(p, etag, n))
            return 1;
        p = end + 1;
    }
}

void static_file_send(at_req_t *req, const static_file_t *f, const char *content_type)
{
    const char *inm = req_header(req, "if-none-match");
    req_add_header(req, "etag", f->etag);
    req_add_header(req, "x-content-type-options", "nosniff");
    req_send_static(req, inm && etag_listed(inm, f->etag) ? 304 : 200, content_type, f->data,
                    f->len);
}
