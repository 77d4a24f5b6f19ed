/*
 * Upload and download (beyond the seeds):
 *
 *   POST /api/workspace/{id}/upload            multipart/form-data, parts "files"
 *                                              (or "file") with a filename, an
 *                                              optional text part "path" (folder)
 *   GET  /api/workspace/{id}/download/{path}   one file, raw bytes
 *   GET  /api/workspace/{id}/download[?path=]  the workspace (or a folder) as .zip
 *
 * Storage is the file API's: UTF-8 text in workspace_items.content, anything
 * else (invalid UTF-8 or a NUL byte) as bytes in content_bin (bytea), both
 * written through ws_put_file. An upload is one SQL statement: every file,
 * the audit row and the sync jobs commit together or not at all.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "atelier/crypto.h"
#include "atelier/log.h"
#include "atelier/path.h"
#include "atelier/util.h"
#include "chars.h"
#include "multipart.h"
#include "records.h"
#include "routes.h"
#include "zipstream.h"

#define UPLOAD_MAX_FILES 1000
#define UPLOAD_MAX_PARTS (UPLOAD_MAX_FILES + 16)
#define UPLOAD_PATHS_MAX (512u << 10) /* bytes of target paths: one sync job's args */
#define UPLOAD_FIXED_PARAMS 9
#define UPLOAD_FILE_PARAMS 4
#define DISPOSITION_MAX 2048

/* ---- shared helpers ------------------------------------------------------ */

/* {id} and the caller's scope; answers 422/403 itself and returns 0. */
static int workspace_args(at_req_t *req, const char **sess, const char **ws, char scope[24])
{
    int64_t s = workspace_scope(req, sess, ws);
    if (s < 0)
        return 0;
    snprintf(scope, 24, "%lld", (long long)s);
    return 1;
}

typedef struct mime {
    const char *ext;
    const char *type;
    int text; /* gets "; charset=utf-8" */
} mime_t;

static const mime_t mimes[] = {
    {"py", "text/x-python", 1},
    {"txt", "text/plain", 1},
    {"md", "text/plain", 1},
    {"rst", "text/plain", 1},
    {"log", "text/plain", 1},
    {"ini", "text/plain", 1},
    {"cfg", "text/plain", 1},
    {"toml", "text/plain", 1},
    {"json", "application/json", 1},
    {"ipynb", "application/json", 1},
    {"js", "text/javascript", 1},
    {"mjs", "text/javascript", 1},
    {"ts", "text/plain", 1},
    {"html", "text/html", 1},
    {"htm", "text/html", 1},
    {"css", "text/css", 1},
    {"csv", "text/csv", 1},
    {"tsv", "text/tab-separated-values", 1},
    {"xml", "application/xml", 1},
    {"yaml", "application/yaml", 1},
    {"yml", "application/yaml", 1},
    {"sh", "text/x-shellscript", 1},
    {"c", "text/x-c", 1},
    {"h", "text/x-c", 1},
    {"svg", "image/svg+xml", 1},
    {"png", "image/png", 0},
    {"jpg", "image/jpeg", 0},
    {"jpeg", "image/jpeg", 0},
    {"gif", "image/gif", 0},
    {"webp", "image/webp", 0},
    {"ico", "image/vnd.microsoft.icon", 0},
    {"pdf", "application/pdf", 0},
    {"zip", "application/zip", 0},
    {"gz", "application/gzip", 0},
    {"tar", "application/x-tar", 0},
    {"wasm", "application/wasm", 0},
    {"mp3", "audio/mpeg", 0},
    {"mp4", "video/mp4", 0},
};

/* Content-Type of a file from its extension (application/octet-stream
 * when unknown or when there is none). */
static void content_type(const char *path, char *out, size_t cap)
{
    const char *base = at_path_base(path);
    const char *dot = strrchr(base, '.');
    if (dot && dot != base) {
        for (size_t i = 0; i < sizeof mimes / sizeof mimes[0]; i++) {
            if (!strcasecmp(dot + 1, mimes[i].ext)) {
                snprintf(out, cap, "%s%s", mimes[i].type, mimes[i].text ? "; charset=utf-8" : "");
                return;
            }
        }
    }
    snprintf(out, cap, "application/octet-stream");
}

/* Content-Disposition: attachment for a file name (RFC 6266): a quoted
 * ASCII filename, and for any other name an ASCII fallback plus filename*
 * (UTF-8, percent-encoded). name is at most AT_NAME_MAX + 4 bytes. */
static void disposition(const char *name, char *out, size_t cap)
{
    char ascii[AT_NAME_MAX + 8], ext[3 * (AT_NAME_MAX + 8)];
    size_t a = 0, e = 0;
    int plain = 1;
    for (const unsigned char *s = (const unsigned char *)name; *s && a + 1 < sizeof ascii; s++) {
        unsigned char c = *s;
        if (c >= 0x80 || c < 0x20 || c == '"' || c == '\\' || c == 0x7f) {
            plain = 0;
            if (c < 0x80 || (c & 0xc0) == 0xc0) /* one '_' per character */
                ascii[a++] = '_';
        } else {
            ascii[a++] = (char)c;
        }
        if (e + 4 < sizeof ext) {
            if (attr_char(c))
                ext[e++] = (char)c;
            else
                e += (size_t)snprintf(ext + e, sizeof ext - e, "%%%02X", c);
        }
    }
    ascii[a] = '\0';
    ext[e] = '\0';
    if (plain)
        snprintf(out, cap, "attachment; filename=\"%s\"", ascii);
    else
        snprintf(out, cap, "attachment; filename=\"%s\"; filename*=UTF-8''%s", ascii, ext);
}

/* ---- POST /api/workspace/{id}/upload ------------------------------------- */

typedef struct ufile {
    char *path; /* normalised target path */
    const char *data;
    size_t len;
    int binary;
    char sha[AT_SHA256_HEX + 1];
    char size[24];
    long long version;
    int created;
} ufile_t;

typedef struct upload {
    at_req_t *req;
    ufile_t *files;
    size_t n;
} upload_t;

static void upload_free(upload_t *u)
{
    if (!u)
        return;
    for (size_t i = 0; i < u->n; i++)
        free(u->files[i].path);
    free(u->files);
    free(u);
}

static void upload_enqueue(upload_t *u, const char *job_id, const char *session, const char *args)
{
    json_t *a = json_loads(args, 0, NULL);
    enqueue_row(req_gw(u->req), "sync", job_id, "push", session, a, NULL, NULL);
    json_decref(a);
}

static void upload_done(PGresult *res, const char *err, void *arg)
{
    upload_t *u = arg;
    at_req_t *req = u->req;
    if (err) {
        req_db_fail(req, "upload", res, err);
        upload_free(u);
        return;
    }
    size_t written = 0;
    int rows = PQntuples(res);
    for (int r = 0; r < rows; r++) {
        if (PQgetvalue(res, r, 0)[0] == 'f') {
            long i = strtol(PQgetvalue(res, r, 1), NULL, 10);
            if (i >= 0 && (size_t)i < u->n) {
                u->files[i].version = strtoll(PQgetvalue(res, r, 2), NULL, 10);
                u->files[i].created = PQgetvalue(res, r, 3)[0] == 't';
                written++;
            }
        } else {
            upload_enqueue(u, PQgetvalue(res, r, 4), PQgetvalue(res, r, 5), PQgetvalue(res, r, 6));
        }
    }
    if (written == 0) { /* the workspace row was not there (or not the caller's) */
        req_error(req, 404, "Workspace not found");
        upload_free(u);
        return;
    }
    json_t *files = json_array();
    for (size_t i = 0; i < u->n; i++) {
        ufile_t *f = &u->files[i];
        json_array_append_new(files, json_pack("{s:s, s:I, s:s, s:I, s:b}", "path", f->path, "size",
                                               (json_int_t)f->len, "sha256", f->sha, "version",
                                               (json_int_t)f->version, "created", f->created));
    }
    char msg[64];
    snprintf(msg, sizeof msg, "%zu file%s uploaded", u->n, u->n == 1 ? "" : "s");
    req_json(req, 201, json_pack("{s:b, s:s, s:o}", "success", 1, "message", msg, "files", files));
    upload_free(u);
}

/* The statement: resolve the workspace, write every file, record the audit
 * row and one sync job per live session of the workspace. $1..$3 audit,
 * $4/$5/$6 workspace ref and scope, $7 item limit, $8 audit detail, $9 the
 * paths, then path, content, sha256, size per file. */
static char *upload_sql(const upload_t *u)
{
    size_t cap = 2048 + u->n * 192, o;
    char *sql = malloc(cap);
    if (!sql)
        return NULL;
    o = (size_t)snprintf(sql, cap,
                         "WITH w AS (SELECT x.id FROM (SELECT " SQL_WORKSPACE(
                             "$4", "$5", "$6") " AS id) x WHERE x.id IS NOT NULL), f AS (");
    for (size_t i = 0; i < u->n && o < cap; i++) {
        int p = UPLOAD_FIXED_PARAMS + 1 + (int)(i * UPLOAD_FILE_PARAMS);
        char content[40];
        if (u->files[i].binary)
            snprintf(content, sizeof content, "NULL, $%d::bytea", p + 1);
        else
            snprintf(content, sizeof content, "$%d::text, NULL", p + 1);
        o += (size_t)snprintf(sql + o, cap - o,
                              "%sSELECT %zu AS i, r.item_version, r.created FROM w, "
                              "ws_put_file(w.id, $%d, %s, $%d, $%d::bigint, NULL, NULL, $7::int) r",
                              i ? " UNION ALL " : "", i, p, content, p + 2, p + 3);
    }
    if (o < cap)
        o += (size_t)snprintf(
            sql + o, cap - o,
            "), j AS (INSERT INTO jobs (id, kind, role, session, state, args) "
            "SELECT gen_random_uuid(), 'push', 'sync', s.uuid, 'queued', "
            "jsonb_build_object('workspace_id', w.id, 'op', 'write', 'paths', $9::jsonb) "
            "FROM w JOIN code_sessions s ON s.workspace_id = w.id "
            "WHERE s.status IN ('loading_files', 'ready') RETURNING id::text, session, "
            "args::text), "
            "a AS (" AUDIT_FROM(
                "file.upload", "w.id::text", "$8::jsonb",
                "w") ") "
                     "SELECT 'f', f.i, f.item_version, f.created, NULL, NULL, NULL FROM f "
                     "UNION ALL SELECT 'j', NULL, NULL, NULL, j.id, j.session, j.args FROM j");
    if (o >= cap) { /* the size estimate is wrong: a bug, never a truncated statement */
        at_error("event=upload_sql_overflow files=%zu cap=%zu", u->n, cap);
        free(sql);
        return NULL;
    }
    return sql;
}

/* Submit the statement for u (files validated and hashed). u belongs to
 * the statement's callback from here on; on failure it is answered (503)
 * and freed here. */
static void upload_submit(at_req_t *req, upload_t *u, const char *sess, const char *ws,
                          const char *scope)
{
    gateway_t *gw = req_gw(req);
    int np = UPLOAD_FIXED_PARAMS + (int)(u->n * UPLOAD_FILE_PARAMS);
    const char **p = calloc((size_t)np, sizeof *p);
    int *lens = calloc((size_t)np, sizeof *lens);
    int *fmts = calloc((size_t)np, sizeof *fmts);
    json_t *list = json_array(), *paths = json_array();
    char *sql = upload_sql(u), *detail_s = NULL, *paths_s = NULL;
    at_err_t e = AT_ENOMEM;
    if (p && lens && fmts && sql && list && paths) {
        for (size_t i = 0; i < u->n; i++) {
            ufile_t *f = &u->files[i];
            json_array_append_new(
                list, json_pack("{s:s, s:I}", "path", f->path, "size", (json_int_t)f->len));
            json_array_append_new(paths, json_string(f->path));
            int k = UPLOAD_FIXED_PARAMS + (int)(i * UPLOAD_FILE_PARAMS);
            p[k] = f->path;
            /* content as a binary parameter: the bytes as they are, with no
             * copy to NUL-terminate (text's binary form is its UTF-8) */
            p[k + 1] = f->len ? f->data : "";
            lens[k + 1] = (int)f->len;
            fmts[k + 1] = 1;
            p[k + 2] = f->sha;
            p[k + 3] = f->size;
        }
        json_t *detail = json_pack("{s:I, s:O}", "count", (json_int_t)u->n, "files", list);
        detail_s = detail ? json_dumps(detail, JSON_COMPACT) : NULL;
        json_decref(detail);
        paths_s = json_dumps(paths, JSON_COMPACT);
    }
    if (detail_s && paths_s) {
        char uid[24], max_items[24]; /* in p until the query is queued */
        audit_params(req, p, uid);
        snprintf(max_items, sizeof max_items, "%lld", (long long)gw->cfg.max_files_per_workspace);
        p[3] = sess;
        p[4] = ws;
        p[5] = scope;
        p[6] = max_items;
        p[7] = detail_s;
        p[8] = paths_s;
        e = at_db_query_bin(gw->db, sql, np, p, lens, fmts, upload_done, u);
    }
    if (e != AT_OK) {
        req_error(req, 503, e == AT_ENOMEM ? "Out of memory" : "Database busy");
        upload_free(u);
    }
    free(p);
    free(lens);
    free(fmts);
    free(sql);
    free(detail_s);
    free(paths_s);
    json_decref(list);
    json_decref(paths);
}

static int path_cmp(const void *a, const void *b)
{
    return strcmp(((const ufile_t *)a)->path, ((const ufile_t *)b)->path);
}

/* The "path" part: the folder files go into ("" for the root). Answers 422
 * and returns -1 when it is not a valid path. */
static int upload_prefix(at_req_t *req, const mp_form_t *form, char *out, size_t cap)
{
    out[0] = '\0';
    const mp_part_t *part = NULL;
    for (size_t i = 0; i < form->n; i++) {
        if (!mp_name_is(&form->parts[i], "path"))
            continue;
        if (part) {
            req_error(req, 422, "The \"path\" field is given twice");
            return -1;
        }
        part = &form->parts[i];
    }
    if (!part || part->len == 0)
        return 0;
    const char *why;
    if (at_path_confine(part->data, part->len, out, cap, &why) != AT_OK) {
        req_error(req, 422, "Invalid path: %s", why);
        return -1;
    }
    return 0;
}

/* Check every file part and fill u->files in form order. Answers the
 * client (400/413/422) and returns -1 on the first bad one. */
static int upload_collect(at_req_t *req, const mp_form_t *form, const char *prefix, upload_t *u)
{
    const at_config_t *cfg = &req_gw(req)->cfg;
    size_t nfiles = 0, path_bytes = 0;
    for (size_t i = 0; i < form->n; i++)
        nfiles += mp_name_is(&form->parts[i], "files") || mp_name_is(&form->parts[i], "file");
    if (nfiles == 0) {
        req_error(req, 422, "No files in the upload: send parts named \"files\" with a filename");
        return -1;
    }
    if (nfiles > UPLOAD_MAX_FILES) {
        req_error(req, 413, "At most %d files per upload", UPLOAD_MAX_FILES);
        return -1;
    }
    u->files = calloc(nfiles, sizeof *u->files);
    if (!u->files) {
        req_error(req, 503, "Out of memory");
        return -1;
    }
    for (size_t i = 0; i < form->n; i++) {
        const mp_part_t *part = &form->parts[i];
        if (!mp_name_is(part, "files") && !mp_name_is(part, "file"))
            continue;
        size_t idx = u->n + 1;
        if (!part->filename) {
            req_error(req, 400, "Malformed multipart body: file part %zu has no filename", idx);
            return -1;
        }
        char name[AT_PATH_MAX + 1], full[2 * AT_PATH_MAX + 2];
        const char *why;
        if (at_path_confine(part->filename, part->filename_len, name, sizeof name, &why) != AT_OK) {
            req_error(req, 422, "Invalid file name (file %zu): %s", idx, why);
            return -1;
        }
        int n = snprintf(full, sizeof full, "%s%s%s", prefix, *prefix ? "/" : "", name);
        if (n > AT_PATH_MAX) {
            req_error(req, 422, "Invalid file name (file %zu): path is longer than %d bytes", idx,
                      AT_PATH_MAX);
            return -1;
        }
        if ((long long)part->len > (long long)cfg->max_file_size) {
            req_error(req, 413, "%s is larger than MAX_FILE_SIZE (%lld bytes)", full,
                      (long long)cfg->max_file_size);
            return -1;
        }
        path_bytes += (size_t)n + 4;
        ufile_t *f = &u->files[u->n];
        f->path = strdup(full);
        if (!f->path) {
            req_error(req, 503, "Out of memory");
            return -1;
        }
        u->n++;
        f->data = part->data;
        f->len = part->len;
    }
    if (path_bytes > UPLOAD_PATHS_MAX) {
        req_error(req, 413, "File paths add up to more than %u bytes: split the upload",
                  UPLOAD_PATHS_MAX);
        return -1;
    }
    /* one file per path: the same path twice would be written twice */
    ufile_t *sorted = malloc(u->n * sizeof *sorted);
    if (!sorted) {
        req_error(req, 503, "Out of memory");
        return -1;
    }
    memcpy(sorted, u->files, u->n * sizeof *sorted);
    qsort(sorted, u->n, sizeof *sorted, path_cmp);
    for (size_t i = 1; i < u->n; i++) {
        if (!strcmp(sorted[i - 1].path, sorted[i].path)) {
            req_error(req, 422, "%s appears twice in the upload", sorted[i].path);
            free(sorted);
            return -1;
        }
    }
    free(sorted);
    return 0;
}

void route_upload(at_req_t *req)
{
    const char *sess, *ws;
    char scope[24];
    if (!workspace_args(req, &sess, &ws, scope))
        return;
    char boundary[MP_BOUNDARY_MAX + 1];
    const char *why = NULL;
    at_err_t e = mp_boundary(req_header(req, "content-type"), boundary, sizeof boundary, &why);
    if (e == AT_ENOTFOUND) {
        req_error(req, 415, "Content-Type must be multipart/form-data");
        return;
    }
    if (e != AT_OK) {
        req_error(req, 400, "Malformed multipart body: %s", why);
        return;
    }
    size_t len;
    const char *body = req_body(req, &len);
    mp_form_t form;
    char reason[160];
    e = mp_parse(body, len, boundary, UPLOAD_MAX_PARTS, &form, reason, sizeof reason);
    if (e == AT_ETOOBIG) {
        req_error(req, 413, "At most %d files per upload", UPLOAD_MAX_FILES);
        return;
    }
    if (e != AT_OK) {
        if (e == AT_ENOMEM)
            req_error(req, 503, "Out of memory");
        else
            req_error(req, 400, "Malformed multipart body: %s", reason);
        return;
    }
    char prefix[AT_PATH_MAX + 1];
    upload_t *u = calloc(1, sizeof *u);
    if (!u) {
        req_error(req, 503, "Out of memory");
    } else if (upload_prefix(req, &form, prefix, sizeof prefix) == 0 &&
               upload_collect(req, &form, prefix, u) == 0) {
        u->req = req;
        for (size_t i = 0; i < u->n; i++) {
            ufile_t *f = &u->files[i];
            at_sha256_hex(f->data, f->len, f->sha);
            snprintf(f->size, sizeof f->size, "%zu", f->len);
            /* text is what a text column can hold: UTF-8 without NUL */
            f->binary = memchr(f->data, '\0', f->len) || !at_utf8_valid(f->data, f->len);
        }
        upload_submit(req, u, sess, ws, scope);
        u = NULL; /* owned by the statement's callback (or freed on failure) */
    }
    upload_free(u);
    mp_form_free(&form);
}

/* ---- GET /api/workspace/{id}/download/{path} ----------------------------- */

static void file_row(PGresult *res, const char *err, void *arg)
{
    at_req_t *req = arg;
    if (err) {
        req_db_fail(req, "download", res, err);
        return;
    }
    if (PQntuples(res) == 0 || PQgetisnull(res, 0, 0)) {
        req_error(req, 404, "Workspace not found");
        return;
    }
    const char *path = PQgetvalue(res, 0, 1);
    if (PQgetisnull(res, 0, 2)) {
        req_error(req, 404, "File not found: %s", path);
        return;
    }
    if (!strcmp(PQgetvalue(res, 0, 2), "folder")) {
        req_error(req, 409, "%s is a folder: use /download?path=%s for a zip", path, path);
        return;
    }
    size_t len = 0;
    char *body;
    if (!PQgetisnull(res, 0, 3))
        body = zipstream_column(res, 0, 3, 0, &len);
    else if (!PQgetisnull(res, 0, 4))
        body = zipstream_column(res, 0, 4, 1, &len);
    else
        body = calloc(1, 1);
    if (!body) {
        at_error("event=download_failed req=%s path=%s error=\"bad or unallocatable content\"",
                 req_id(req), path);
        req_error(req, 500, "Cannot read %s", path);
        return;
    }
    char ctype[96], disp[DISPOSITION_MAX];
    content_type(path, ctype, sizeof ctype);
    disposition(at_path_base(path), disp, sizeof disp);
    req_add_header(req, "content-disposition", disp);
    req_add_header(req, "x-content-type-options", "nosniff");
    if (!PQgetisnull(res, 0, 5)) {
        char etag[AT_SHA256_HEX + 3];
        snprintf(etag, sizeof etag, "\"%s\"", PQgetvalue(res, 0, 5));
        req_add_header(req, "etag", etag);
    }
    req_send(req, 200, ctype, body, len);
}

void route_download_file(at_req_t *req)
{
    const char *sess, *ws;
    char scope[24], path[AT_PATH_MAX + 1];
    if (!workspace_args(req, &sess, &ws, scope))
        return;
    const char *raw = req_param(req, 1), *why;
    if (at_path_confine(raw, strlen(raw), path, sizeof path, &why) != AT_OK) {
        req_error(req, 422, "Invalid path: %s", why);
        return;
    }
    const char *p[] = {sess, ws, scope, path};
    if (at_db_query(
            req_gw(req)->db,
            "SELECT w.id, $4, i.type, i.content, i.content_bin, i.sha256 FROM "
            "(SELECT " SQL_WORKSPACE("$1", "$2", "$3") " AS id) w LEFT JOIN workspace_items i ON "
                                                       "i.workspace_id = w.id AND i.path = $4",
            4, p, file_row, req) != AT_OK)
        req_error(req, 503, "Database busy");
}

/* ---- GET /api/workspace/{id}/download[?path=folder] ---------------------- */

typedef struct zipreq {
    at_req_t *req;
    char root[AT_PATH_MAX + 1];
} zipreq_t;

static void zip_target(PGresult *res, const char *err, void *arg)
{
    zipreq_t *z = arg;
    at_req_t *req = z->req;
    if (err) {
        req_db_fail(req, "download_zip", res, err);
    } else if (PQntuples(res) == 0) {
        req_error(req, 404, "Workspace not found");
    } else if (z->root[0] && PQgetisnull(res, 0, 2)) {
        req_error(req, 404, "Folder not found: %s", z->root);
    } else if (z->root[0] && strcmp(PQgetvalue(res, 0, 2), "folder") != 0) {
        req_error(req, 409, "%s is a file: use /download/%s", z->root, z->root);
    } else {
        /* "<workspace name>.zip", or "<folder name>.zip" for a folder */
        char name[AT_NAME_MAX + 8], disp[DISPOSITION_MAX];
        const char *base = z->root[0] ? at_path_base(z->root) : PQgetvalue(res, 0, 1);
        snprintf(name, sizeof name, "%.*s.zip", AT_NAME_MAX, base);
        disposition(name, disp, sizeof disp);
        zipstream_start(req, PQgetvalue(res, 0, 0), z->root, disp);
    }
    free(z);
}

void route_download_zip(at_req_t *req)
{
    const char *sess, *ws;
    char scope[24];
    if (!workspace_args(req, &sess, &ws, scope))
        return;
    zipreq_t *z = calloc(1, sizeof *z);
    if (!z) {
        req_error(req, 503, "Out of memory");
        return;
    }
    z->req = req;
    const char *root = req_query(req, "path"), *why;
    if (root && *root &&
        at_path_confine(root, strlen(root), z->root, sizeof z->root, &why) != AT_OK) {
        req_error(req, 422, "Invalid path: %s", why);
        free(z);
        return;
    }
    const char *p[] = {sess, ws, scope, z->root};
    if (at_db_query(req_gw(req)->db,
                    "SELECT w.id, w.name, i.type FROM workspaces w LEFT JOIN workspace_items i "
                    "ON i.workspace_id = w.id AND i.path = $4 WHERE w.id = " SQL_WORKSPACE(
                        "$1", "$2", "$3"),
                    4, p, zip_target, z) != AT_OK) {
        req_error(req, 503, "Database busy");
        free(z);
    }
}
