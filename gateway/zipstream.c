/*
 * Streamed zip downloads (zipstream.h). One zipstream_t per download, owned
 * by itself: it frees itself when the last byte has been handed over, or
 * when the client goes away (pull with buf NULL); if a page query is in
 * flight at that moment, the query's callback frees it instead.
 *
 *   page query -> rows[] -> step(): header / 64 KiB of data -> libarchive
 *   -> write_cb -> buf -> pull() -> socket
 *
 * Each pull does a bounded amount of work (ZIPSTREAM_WORK bytes fed to the
 * compressor) so a large, very compressible file cannot stall the loop.
 */
#include "zipstream.h"

#include <archive.h>
#include <archive_entry.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "atelier/log.h"
#include "atelier/util.h"
#include "chars.h"

#define ZIPSTREAM_CHUNK (64u << 10)   /* bytes fed to libarchive at once */
#define ZIPSTREAM_WORK (1u << 20)     /* bytes fed per pull, at most */
#define ZIPSTREAM_BUF_MAX (64u << 20) /* output buffer hard cap (central directory) */

typedef struct zrow {
    char *path;
    char *data; /* file content, NULL for folders */
    size_t len;
    int folder, binary, mode;
    int64_t mtime;
} zrow_t;

typedef struct zipstream {
    at_req_t *req; /* NULL once the client has gone */
    struct archive *ar;
    char ws_id[AT_UUID_LEN + 1];
    char *root;   /* "" for the whole workspace */
    size_t strip; /* bytes dropped from each path: the parent of root */
    char *after;  /* keyset: the last path read */
    char *disposition;
    zrow_t rows[ZIPSTREAM_PAGE_ROWS];
    size_t nrows, cur, off; /* current row and offset in its data */
    int in_entry;           /* the current row's header is written */
    char *buf;              /* archive output not yet pulled: [pos, len) */
    size_t len, pos, cap;
    int fetching, started, gone, eof, finished, failed;
    int discard; /* being freed: write_cb drops what it gets */
    uint64_t entries, sent;
} zipstream_t;

static const char page_sql[] =
    "SELECT path, type = 'folder', content_bin IS NOT NULL, content, content_bin, mode, "
    "extract(epoch FROM updated_at)::bigint FROM ("
    "SELECT path, type, content, content_bin, mode, updated_at, "
    "sum(size) OVER (ORDER BY path) - size AS before FROM workspace_items "
    "WHERE workspace_id = $1::uuid AND path > $2 AND ($3 = '' OR path = $3 OR "
    "left(path, length($3) + 1) = $3 || '/') ORDER BY path LIMIT $4::int) p "
    "WHERE before < $5::bigint ORDER BY path";

static void rows_clear(zipstream_t *z)
{
    for (size_t i = z->cur; i < z->nrows; i++) {
        free(z->rows[i].path);
        free(z->rows[i].data);
    }
    z->nrows = z->cur = z->off = 0;
    z->in_entry = 0;
}

static void zs_free(zipstream_t *z)
{
    if (z->ar) {
        /* libarchive frees its block buffer only on close (3.6: not on a
         * plain free after archive_write_fail), so close with the output
         * discarded: the rest of the archive goes nowhere */
        z->discard = 1;
        archive_write_close(z->ar);
        archive_write_free(z->ar);
    }
    rows_clear(z);
    free(z->root);
    free(z->after);
    free(z->disposition);
    free(z->buf);
    free(z);
}

char *zipstream_column(const PGresult *res, int row, int col, int is_bytea, size_t *len)
{
    const char *v = PQgetvalue(res, row, col);
    size_t n = (size_t)PQgetlength(res, row, col);
    if (!is_bytea) {
        char *out = malloc(n + 1);
        if (out) {
            memcpy(out, v, n);
            out[n] = '\0';
            *len = n;
        }
        return out;
    }
    /* bytea_output = hex: "\x" then two digits per byte */
    if (n < 2 || v[0] != '\\' || v[1] != 'x' || (n - 2) % 2)
        return NULL;
    size_t m = (n - 2) / 2;
    unsigned char *out = malloc(m + 1);
    if (!out)
        return NULL;
    for (size_t i = 0; i < m; i++) {
        int hi = hex_digit(v[2 + 2 * i]), lo = hex_digit(v[3 + 2 * i]);
        if (hi < 0 || lo < 0) {
            free(out);
            return NULL;
        }
        out[i] = (unsigned char)(hi << 4 | lo);
    }
    out[m] = '\0';
    *len = m;
    return (char *)out;
}

/* libarchive's output: append to buf (compacted first), within the cap. */
static la_ssize_t write_cb(struct archive *a, void *arg, const void *data, size_t n)
{
    zipstream_t *z = arg;
    if (z->discard)
        return (la_ssize_t)n;
    if (z->pos > 0) {
        memmove(z->buf, z->buf + z->pos, z->len - z->pos);
        z->len -= z->pos;
        z->pos = 0;
    }
    if (z->len + n > z->cap) {
        size_t cap = z->cap ? z->cap : 2 * ZIPSTREAM_CHUNK;
        while (cap < z->len + n)
            cap *= 2;
        if (cap > ZIPSTREAM_BUF_MAX) {
            archive_set_error(a, ENOMEM, "zip output buffer over %u bytes", ZIPSTREAM_BUF_MAX);
            return -1;
        }
        char *b = realloc(z->buf, cap);
        if (!b) {
            archive_set_error(a, ENOMEM, "zip output buffer: out of memory");
            return -1;
        }
        z->buf = b;
        z->cap = cap;
    }
    memcpy(z->buf + z->len, data, n);
    z->len += n;
    return (la_ssize_t)n;
}

/* End the stream early: what is buffered is still sent, then the close. */
static void fail(zipstream_t *z, const char *what, const char *error)
{
    at_error("event=zip_failed req=%s workspace=%s what=%s error=\"%s\"",
             z->req ? req_id(z->req) : "-", z->ws_id, what, error ? error : "");
    z->failed = z->finished = 1;
}

static void page_done(PGresult *res, const char *err, void *arg);

static void fetch_page(zipstream_t *z)
{
    char rows[16], bytes[24];
    snprintf(rows, sizeof rows, "%d", ZIPSTREAM_PAGE_ROWS);
    snprintf(bytes, sizeof bytes, "%u", ZIPSTREAM_PAGE_BYTES);
    const char *p[] = {z->ws_id, z->after ? z->after : "", z->root, rows, bytes};
    at_err_t e = at_db_query(req_gw(z->req)->db, page_sql, 5, p, page_done, z);
    if (e != AT_OK) {
        fail(z, "page_query", at_strerror(e));
        return;
    }
    z->fetching = 1;
}

/* Copy the page out of the result (it is only valid during the callback). */
static int take_rows(zipstream_t *z, const PGresult *res)
{
    int n = PQntuples(res);
    for (int i = 0; i < n && i < ZIPSTREAM_PAGE_ROWS; i++) {
        zrow_t *r = &z->rows[z->nrows];
        memset(r, 0, sizeof *r);
        r->folder = PQgetvalue(res, i, 1)[0] == 't';
        r->binary = PQgetvalue(res, i, 2)[0] == 't';
        r->mode = atoi(PQgetvalue(res, i, 5)) & 07777;
        r->mtime = strtoll(PQgetvalue(res, i, 6), NULL, 10);
        r->path = strdup(PQgetvalue(res, i, 0));
        if (!r->path)
            return -1;
        z->nrows++;
        int col = r->binary ? 4 : 3;
        if (!r->folder && !PQgetisnull(res, i, col)) {
            r->data = zipstream_column(res, i, col, r->binary, &r->len);
            if (!r->data)
                return -1;
        }
    }
    if (n > 0) {
        free(z->after);
        z->after = strdup(PQgetvalue(res, n - 1, 0));
        if (!z->after)
            return -1;
    }
    z->eof = n == 0;
    return 0;
}

static size_t pull(void *arg, char *out, size_t cap, int *done);

static void page_done(PGresult *res, const char *err, void *arg)
{
    zipstream_t *z = arg;
    z->fetching = 0;
    if (z->gone) {
        zs_free(z);
        return;
    }
    if (err || take_rows(z, res) != 0) {
        if (!z->started) {
            at_error("event=zip_failed req=%s workspace=%s what=first_page error=\"%s\"",
                     req_id(z->req), z->ws_id, err ? err : "out of memory");
            req_error(z->req, 503, "Database unavailable");
            zs_free(z);
            return;
        }
        fail(z, "page", err ? err : "out of memory");
    }
    if (!z->started) {
        z->started = 1;
        req_add_header(z->req, "content-disposition", z->disposition);
        req_add_header(z->req, "x-content-type-options", "nosniff");
        req_stream(z->req, 200, "application/zip", pull, z); /* may free z */
        return;
    }
    req_stream_wake(z->req);
}

static void end_entry(zipstream_t *z)
{
    zrow_t *r = &z->rows[z->cur];
    if (archive_write_finish_entry(z->ar) != ARCHIVE_OK)
        fail(z, "finish_entry", archive_error_string(z->ar));
    free(r->path);
    free(r->data);
    z->cur++;
    z->off = 0;
    z->in_entry = 0;
    z->entries++;
    if (z->cur == z->nrows)
        z->nrows = z->cur = 0;
}

static void write_header(zipstream_t *z, zrow_t *r)
{
    struct archive_entry *e = archive_entry_new();
    if (!e) {
        fail(z, "entry", "out of memory");
        return;
    }
    const char *name = r->path + z->strip;
    archive_entry_set_pathname_utf8(e, name);
    archive_entry_set_filetype(e, r->folder ? AE_IFDIR : AE_IFREG);
    archive_entry_set_perm(e, r->folder ? 0755 : (mode_t)(r->mode ? r->mode : 0644));
    archive_entry_set_size(e, r->folder ? 0 : (la_int64_t)r->len);
    archive_entry_set_mtime(e, (time_t)r->mtime, 0);
    /* binary files are usually compressed already (images, archives) */
    if (r->binary)
        archive_write_zip_set_compression_store(z->ar);
    else
        archive_write_zip_set_compression_deflate(z->ar);
    if (archive_write_header(z->ar, e) != ARCHIVE_OK)
        fail(z, "header", archive_error_string(z->ar));
    archive_entry_free(e);
    z->in_entry = 1;
}

/* One unit of work on the current row; returns the bytes it fed. */
static size_t step(zipstream_t *z)
{
    zrow_t *r = &z->rows[z->cur];
    if (!z->in_entry) {
        write_header(z, r);
        if (z->failed)
            return 0;
        if (r->folder || r->len == 0)
            end_entry(z);
        return 512;
    }
    size_t n = r->len - z->off < ZIPSTREAM_CHUNK ? r->len - z->off : ZIPSTREAM_CHUNK;
    la_ssize_t w = archive_write_data(z->ar, r->data + z->off, n);
    if (w < 0 || (size_t)w != n) {
        fail(z, "data", archive_error_string(z->ar));
        return 0;
    }
    z->off += n;
    if (z->off == r->len)
        end_entry(z);
    return n;
}

/* Fill the buffer up to want bytes. Returns 1 if it stopped only because
 * this pull's work budget is spent (the caller re-arms the writer). */
static int produce(zipstream_t *z, size_t want)
{
    size_t work = 0;
    while (z->len - z->pos < want && !z->finished) {
        if (work >= ZIPSTREAM_WORK)
            return 1;
        if (z->cur < z->nrows) {
            work += step(z);
            continue;
        }
        if (!z->eof) {
            if (!z->fetching)
                fetch_page(z); /* page_done wakes the writer */
            return 0;
        }
        if (archive_write_close(z->ar) != ARCHIVE_OK) /* the central directory */
            fail(z, "close", archive_error_string(z->ar));
        z->finished = 1;
    }
    return 0;
}

static size_t pull(void *arg, char *out, size_t cap, int *done)
{
    zipstream_t *z = arg;
    if (!out) { /* the client went away */
        at_info("event=zip_abandoned workspace=%s entries=%llu bytes=%llu", z->ws_id,
                (unsigned long long)z->entries, (unsigned long long)z->sent);
        z->req = NULL;
        if (z->fetching)
            z->gone = 1; /* page_done frees it */
        else
            zs_free(z);
        return 0;
    }
    int yielded = produce(z, cap);
    size_t n = z->len - z->pos < cap ? z->len - z->pos : cap;
    if (n)
        memcpy(out, z->buf + z->pos, n);
    z->pos += n;
    z->sent += n;
    if (z->pos == z->len)
        z->pos = z->len = 0;
    if (z->finished && z->len == 0) {
        *done = 1;
        if (!z->failed)
            at_info("event=zip_streamed req=%s workspace=%s entries=%llu bytes=%llu",
                    req_id(z->req), z->ws_id, (unsigned long long)z->entries,
                    (unsigned long long)z->sent);
        zs_free(z);
        return n;
    }
    if (n == 0 && yielded)
        req_stream_wake(z->req);
    return n;
}

void zipstream_start(at_req_t *req, const char *ws_id, const char *root,
                     const char *content_disposition)
{
    zipstream_t *z = calloc(1, sizeof *z);
    if (!z) {
        req_error(req, 503, "Out of memory");
        return;
    }
    z->req = req;
    at_strlcpy(z->ws_id, ws_id, sizeof z->ws_id);
    z->root = strdup(root);
    z->disposition = strdup(content_disposition);
    const char *slash = strrchr(root, '/');
    z->strip = slash ? (size_t)(slash - root) + 1 : 0;
    z->ar = archive_write_new();
    if (!z->root || !z->disposition || !z->ar) {
        req_error(req, 503, "Out of memory");
        zs_free(z);
        return;
    }
    /* UTF-8 names with the zip "language encoding" flag, whatever the locale */
    if (archive_write_set_format_zip(z->ar) != ARCHIVE_OK ||
        archive_write_set_options(z->ar, "zip:hdrcharset=UTF-8") != ARCHIVE_OK ||
        archive_write_set_bytes_in_last_block(z->ar, 1) != ARCHIVE_OK ||
        archive_write_open2(z->ar, z, NULL, write_cb, NULL, NULL) != ARCHIVE_OK) {
        at_error("event=zip_failed req=%s what=open error=\"%s\"", req_id(req),
                 archive_error_string(z->ar));
        req_error(req, 503, "Cannot create the archive");
        zs_free(z);
        return;
    }
    fetch_page(z);
    if (z->failed) {
        req_error(req, 503, "Database busy");
        zs_free(z);
    }
}
