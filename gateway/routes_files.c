/*
 * The workspace file API, both families (routes.c):
 *   workspace-api.md   GET /api/workspace/{id}/files, GET|PUT|DELETE .../files/{path},
 *                      GET .../status, POST .../ensure-defaults
 *   fastapi-backend.md GET|POST|DELETE /api/workspace/{id}/file/{path}, POST .../ensure-default
 *   beyond the seeds   POST .../folders {path}, POST .../move {from, to, overwrite}
 * {id} is a session uuid or a workspace id (workspace_ref); a workspace the
 * caller does not own answers 404 like one that does not exist.
 *
 * Storage: one workspace_items row per file or folder, unique per
 * (workspace_id, path). path is what at_path_confine made of the client's
 * path (relative, '/'-separated, no "." or ".."); name is its last segment;
 * parent_id links to the row of the folder above (NULL at the root); folders
 * are rows of type 'folder', made by ws_ensure_folders when a write names a
 * missing one. A file's bytes are in `content` (TEXT) when they are valid
 * UTF-8 without NUL, else in `content_bin` (BYTEA), whatever encoding the
 * request used: storage follows the bytes, and a read answers "encoding":
 * "utf-8" or "base64" to match. sha256 is the hex SHA-256 of the raw bytes
 * (also the ETag), size their length in bytes, version counts writes from 1.
 *
 * Each change is ONE statement: the change, its audit_log row and, when the
 * workspace has live sessions (status loading_files or ready), one `push`
 * job row per such session commit together; the jobs then go on q:sync
 * (files_push_jobs). Writes go through ws_write_file (shared/sql/006: If-None-Match:
 * *, create only) and ws_put_file (shared/sql/002_files.sql),
 * whose AT409/AT412/AT507 errors become 409/412/507 (req_db_fail).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "atelier/util.h"
#include "files_common.h"
#include "routes.h"

#define DEFAULT_MAIN_PY "print('Hello World')\n"
#define DEFAULT_REQUIREMENTS "# Python packages for this workspace, one per line\nnumpy\npandas\n"

/* The statements. Reads take $1 session uuid, $2 workspace uuid, $3 scope;
 * changes take $1..$3 for the audit row (records.h) and $4..$6 for the
 * workspace. Each answers one row whose first column counts the workspace
 * (0: not found or not the caller's), except PUT, which answers no row then. */
/* clang-format off */
#define LIST_SQL                                                                                   \
    "WITH " WS_CTE("$1", "$2", "$3") ", "                                                          \
    "f AS (SELECT i.id FROM workspace_items i, w "                                                 \
    "      WHERE i.workspace_id = w.id AND i.path = $4::text AND i.type = 'folder') "              \
    "SELECT (SELECT count(*) FROM w), $4::text IS NULL OR EXISTS (SELECT 1 FROM f), "              \
    "       (SELECT coalesce(json_agg(" ITEM_JSON("i") " ORDER BY i.path COLLATE \"C\"), '[]') "   \
    "        FROM workspace_items i, w WHERE i.workspace_id = w.id "                               \
    "        AND ($4::text IS NULL OR i.parent_id = (SELECT id FROM f)))::text"

/* The hot read, in two forms: FAST_GET_SQL when ws_cache_get knows the
 * workspace ($1 workspace uuid, $2 path; no row when there is no item),
 * else GET_SQL, which always answers a row, with the workspace and its
 * owner for the cache. The columns are plain: building the JSON here is
 * cheaper than in PostgreSQL, whose json_build_object cost more than the
 * lookup. A folder's children take a second statement. */
#define FILE_COLUMNS                                                                               \
    "i.type, i.id, i.path, i.content, "                                                            \
    "translate(encode(i.content_bin, 'base64'), E'\\n', ''), i.size, "                             \
    SQL_ISO("i.updated_at") ", i.sha256, i.version, i.mode"
enum { C_FOUND, C_TYPE, C_ID, C_PATH, C_TEXT, C_B64, C_SIZE, C_MODIFIED, C_SHA, C_VERSION,
       C_MODE, C_WS, C_OWNER };

#define FAST_GET_SQL                                                                               \
    "SELECT 1, " FILE_COLUMNS " FROM workspace_items i "                                           \
    "WHERE i.workspace_id = $1::uuid AND i.path = $2::text"

#define GET_SQL                                                                                    \
    "SELECT (x.id IS NOT NULL)::int, " FILE_COLUMNS ", o.id, o.user_id "                           \
    "FROM (SELECT " SQL_WORKSPACE("$1", "$2", "$3") " AS id) x "                                   \
    "LEFT JOIN workspaces o ON o.id = x.id "                                                       \
    "LEFT JOIN workspace_items i ON i.workspace_id = x.id AND i.path = $4::text"

/* $1 folder id, $2 its path. */
#define CHILDREN_SQL                                                                               \
    "SELECT json_build_object('path', $2::text, 'type', 'folder', 'children', "                    \
    "  (SELECT coalesce(json_agg(" ITEM_JSON("c") " ORDER BY c.path COLLATE \"C\"), '[]') "        \
    "   FROM workspace_items c WHERE c.parent_id = $1::bigint))::text"

/* $7 path, $8 text, $9 bytes (binary), $10 sha256, $11 size, $12 mode,
 * $13 If-Match, $14 item limit. */
#define PUT_SQL                                                                                    \
    "WITH " WS_CTE("$4", "$5", "$6") ", "                                                          \
    "p AS (SELECT w.id AS ws, f.* FROM w, LATERAL ws_write_file(w.id, $7::text, $8::text, "          \
    "      $9::bytea, $10::text, $11::bigint, $12::int, $13::text, $14::int) f), "                 \
    "a AS (" AUDIT_FROM("file.write", "p.ws::text || ':' || $7::text",                             \
        "json_build_object('size', $11::bigint, 'sha256', $10::text, "                             \
        "'version', p.item_version, 'created', p.created)", "p") "), "                             \
    PUSH_JOBS("p", "p.ws", "jsonb_build_object('workspace_id', p.ws, 'op', 'write', "              \
        "'path', $7::text, 'type', 'file', 'version', p.item_version, 'sha256', $10::text)") " "   \
    "SELECT 1, p.item_version, p.created, " SQL_ISO("p.modified") ", " JOBS_JSON " FROM p"

/* $7 path, $8 If-Match, $9 recursive. The If-Match test sits on the deleted
 * row itself so a concurrent write is re-checked. */
#define DELETE_SQL                                                                                 \
    "WITH " WS_CTE("$4", "$5", "$6") ", "                                                          \
    "t AS (SELECT i.type, "                                                                        \
    "        EXISTS (SELECT 1 FROM workspace_items c WHERE c.parent_id = i.id) AS nonempty, "      \
    "        (SELECT count(*) FROM workspace_items c WHERE c.workspace_id = w.id "                 \
    "         AND starts_with(c.path, $7::text || '/')) AS below "                                 \
    "      FROM workspace_items i, w WHERE i.workspace_id = w.id AND i.path = $7::text), "         \
    "d AS (DELETE FROM workspace_items i USING w "                                                 \
    "      WHERE i.workspace_id = w.id AND i.path = $7::text "                                     \
    "      AND ($8::text IS NULL OR $8::text = '*' OR i.sha256 = $8::text) "                       \
    "      AND ($9::boolean OR NOT EXISTS "                                                        \
    "           (SELECT 1 FROM workspace_items c WHERE c.parent_id = i.id)) "                      \
    "      RETURNING i.workspace_id AS ws, i.path, i.type, i.size, i.sha256, i.version), "         \
    "a AS (" AUDIT_FROM("file.delete", "d.ws::text || ':' || d.path",                              \
        "json_build_object('type', d.type, 'size', d.size, 'sha256', d.sha256, "                   \
        "'version', d.version, 'items', 1 + coalesce((SELECT below FROM t), 0))", "d") "), "       \
    PUSH_JOBS("d", "d.ws", "jsonb_build_object('workspace_id', d.ws, 'op', 'delete', "             \
        "'path', d.path, 'type', d.type, 'version', d.version, 'sha256', d.sha256)") " "           \
    "SELECT (SELECT count(*) FROM w), (SELECT count(*) FROM d), (SELECT type FROM t), "            \
    "       (SELECT nonempty FROM t), " JOBS_JSON

/* The session the id names, else the workspace's newest one. */
#define STATUS_SQL                                                                                 \
    "WITH " WS_CTE("$1", "$2", "$3") ", "                                                          \
    "s AS (SELECT s.status, s.status_message FROM code_sessions s, w "                             \
    "      WHERE s.workspace_id = w.id "                                                           \
    "      ORDER BY (s.uuid = $1::text) DESC, s.created_at DESC, s.id DESC LIMIT 1) "              \
    "SELECT (SELECT count(*) FROM w), coalesce((SELECT status FROM s), 'terminated'), "            \
    "       (SELECT status_message FROM s), "                                                      \
    "       (SELECT count(*) FROM workspace_items i, w "                                           \
    "        WHERE i.workspace_id = w.id AND i.type = 'file')"

/* $7 main.py, $8 requirements.txt, $9 item limit. ON CONFLICT DO NOTHING:
 * of concurrent calls, the one that inserts a file reports it. */
#define DEFAULTS_SQL                                                                               \
    "WITH " WS_CTE("$4", "$5", "$6") ", "                                                          \
    "d (path, content) AS (VALUES ('main.py', $7::text), ('requirements.txt', $8::text)), "        \
    "m AS (SELECT d.path, d.content FROM d, w WHERE NOT EXISTS (SELECT 1 FROM workspace_items i "  \
    "      WHERE i.workspace_id = w.id AND i.path = d.path)), "                                    \
    "room AS (SELECT (SELECT count(*) FROM workspace_items i, w WHERE i.workspace_id = w.id) "     \
    "         + (SELECT count(*) FROM m) <= $9::bigint AS ok), "                                   \
    "ins AS (INSERT INTO workspace_items (workspace_id, name, path, type, content, size, sha256) " \
    "        SELECT w.id, m.path, m.path, 'file', m.content, octet_length(m.content), "            \
    "               encode(sha256(convert_to(m.content, 'UTF8')), 'hex') "                         \
    "        FROM w, m, room WHERE room.ok "                                                       \
    "        ON CONFLICT (workspace_id, path) DO NOTHING "                                         \
    "        RETURNING workspace_id AS ws, path, size, sha256, version), "                         \
    "a AS (" AUDIT_FROM("workspace.defaults", "ins.ws::text || ':' || ins.path",                   \
        "json_build_object('size', ins.size, 'sha256', ins.sha256, 'version', ins.version)",       \
        "ins") "), "                                                                               \
    PUSH_JOBS("ins", "ins.ws", "jsonb_build_object('workspace_id', ins.ws, 'op', 'write', "        \
        "'path', ins.path, 'type', 'file', 'version', ins.version, 'sha256', ins.sha256)") " "     \
    "SELECT (SELECT count(*) FROM w), (SELECT ok FROM room), "                                     \
    "       (SELECT coalesce(json_agg(path ORDER BY path), '[]') FROM ins)::text, " JOBS_JSON

/* $7 path, $8 name, $9 item limit. ws_ensure_folders makes the folders
 * above (AT409 when one of them is a file). */
#define FOLDER_SQL                                                                                 \
    "WITH " WS_CTE("$4", "$5", "$6") ", "                                                          \
    "pre AS (SELECT i.type FROM workspace_items i, w "                                             \
    "        WHERE i.workspace_id = w.id AND i.path = $7::text), "                                 \
    "room AS (SELECT count(*) < $9::bigint AS ok FROM workspace_items i, w "                       \
    "         WHERE i.workspace_id = w.id), "                                                      \
    "par AS (SELECT w.id AS ws, ws_ensure_folders(w.id, $7::text) AS parent FROM w, room "         \
    "        WHERE room.ok AND NOT EXISTS (SELECT 1 FROM pre)), "                                  \
    "ins AS (INSERT INTO workspace_items (workspace_id, parent_id, name, path, type, size) "       \
    "        SELECT par.ws, par.parent, $8::text, $7::text, 'folder', 0 FROM par "                 \
    "        ON CONFLICT (workspace_id, path) DO NOTHING "                                         \
    "        RETURNING workspace_id AS ws, path, version), "                                       \
    "a AS (" AUDIT_FROM("folder.create", "ins.ws::text || ':' || ins.path",                        \
        "json_build_object('type', 'folder', 'version', ins.version)", "ins") "), "                \
    PUSH_JOBS("ins", "ins.ws", "jsonb_build_object('workspace_id', ins.ws, 'op', 'write', "        \
        "'path', ins.path, 'type', 'folder', 'version', ins.version)") " "                         \
    "SELECT (SELECT count(*) FROM w), (SELECT type FROM pre), (SELECT ok FROM room), "             \
    "       (SELECT count(*) FROM ins), " JOBS_JSON

/* $7 from, $8 to, $9 name of to, $10 overwrite. Source and target rows are
 * locked. A rename rewrites the paths of the source and every row below it
 * (name and parent_id change on the moved row only: the rows below keep
 * their parents). overwrite replaces a target FILE by giving it the source's
 * content and deleting the source, so no two rows ever share a path within
 * the statement. */
#define MOVE_SQL                                                                                   \
    "WITH " WS_CTE("$4", "$5", "$6") ", "                                                          \
    "src AS (SELECT i.id, i.workspace_id, i.type, i.content, i.content_bin, i.sha256, i.size, "    \
    "               i.mode FROM workspace_items i, w "                                             \
    "        WHERE i.workspace_id = w.id AND i.path = $7::text FOR UPDATE OF i), "                 \
    "dst AS (SELECT i.id, i.type FROM workspace_items i, w "                                       \
    "        WHERE i.workspace_id = w.id AND i.path = $8::text FOR UPDATE OF i), "                 \
    "plan AS (SELECT src.id AS src_id, dst.id AS dst_id, "                                         \
    "         CASE WHEN dst.id IS NULL THEN 'rename' "                                             \
    "              WHEN src.type = 'file' AND dst.type = 'file' AND $10::boolean THEN 'replace' "  \
    "              ELSE 'conflict' END AS action "                                                 \
    "         FROM src LEFT JOIN dst ON true), "                                                   \
    "par AS (SELECT ws_ensure_folders(src.workspace_id, $8::text) AS parent FROM src, plan "       \
    "        WHERE plan.action = 'rename'), "                                                      \
    "mv AS (UPDATE workspace_items i "                                                             \
    "       SET path = $8::text || substr(i.path, length($7::text) + 1), "                         \
    "           name = CASE WHEN i.id = src.id THEN $9::text ELSE i.name END, "                    \
    "           parent_id = CASE WHEN i.id = src.id THEN par.parent ELSE i.parent_id END, "        \
    "           version = CASE WHEN i.id = src.id THEN i.version + 1 ELSE i.version END, "         \
    "           updated_at = CASE WHEN i.id = src.id THEN now() ELSE i.updated_at END "            \
    "       FROM src, par WHERE i.workspace_id = src.workspace_id AND (i.id = src.id "             \
    "         OR (src.type = 'folder' AND starts_with(i.path, $7::text || '/'))) "                 \
    "       RETURNING i.id, i.version), "                                                          \
    "rep AS (UPDATE workspace_items i SET content = src.content, content_bin = src.content_bin, "  \
    "               sha256 = src.sha256, size = src.size, mode = src.mode, "                       \
    "               version = i.version + 1, updated_at = now() "                                  \
    "        FROM src, plan WHERE plan.action = 'replace' AND i.id = plan.dst_id "                 \
    "        RETURNING i.id, i.version), "                                                         \
    "del AS (DELETE FROM workspace_items i USING plan "                                            \
    "        WHERE plan.action = 'replace' AND i.id = plan.src_id RETURNING i.id), "               \
    "res AS (SELECT src.workspace_id AS ws, src.type, src.sha256, plan.action, "                   \
    "          coalesce((SELECT mv.version FROM mv WHERE mv.id = src.id), "                        \
    "                   (SELECT rep.version FROM rep)) AS version, "                               \
    "          (SELECT count(*) FROM mv) + (SELECT count(*) FROM rep) AS items "                   \
    "        FROM src, plan WHERE plan.action <> 'conflict'), "                                    \
    "a AS (" AUDIT_FROM("file.move", "res.ws::text || ':' || $7::text",                            \
        "json_build_object('from', $7::text, 'to', $8::text, 'type', res.type, "                   \
        "'items', res.items, 'overwrite', res.action = 'replace', 'version', res.version, "        \
        "'sha256', res.sha256)", "res") "), "                                                      \
    PUSH_JOBS("res", "res.ws", "jsonb_build_object('workspace_id', res.ws, 'op', 'move', "         \
        "'path', $7::text, 'to', $8::text, 'type', res.type, 'version', res.version, "             \
        "'sha256', res.sha256)") " "                                                               \
    "SELECT (SELECT count(*) FROM w), (SELECT action FROM plan), (SELECT type FROM src), "         \
    "       (SELECT version FROM res), " JOBS_JSON
/* clang-format on */

static int is_true(const char *v)
{
    return v && (!strcmp(v, "true") || !strcmp(v, "1") || !strcmp(v, "yes"));
}

static int col_true(PGresult *res, int col)
{
    return !PQgetisnull(res, 0, col) && !strcmp(PQgetvalue(res, 0, col), "t");
}

/* Answer a JSON body the statement built (column col of row 0). */
static void send_json_col(at_req_t *req, PGresult *res, int col)
{
    size_t n = (size_t)PQgetlength(res, 0, col);
    char *body = malloc(n + 1);
    if (!body) {
        req_error(req, 503, "Out of memory");
        return;
    }
    memcpy(body, PQgetvalue(res, 0, col), n + 1);
    req_send(req, 200, NULL, body, n);
}

static void add_etag(at_req_t *req, const char *sha)
{
    char tag[AT_SHA256_HEX + 3];
    snprintf(tag, sizeof tag, "\"%s\"", sha);
    req_add_header(req, "etag", tag);
}

/* fop_begin for a route with the item's path in parameter 1, confined into
 * op->path; answers (and returns NULL) when either is refused. */
static fop_t *fop_begin_path(at_req_t *req, int change)
{
    fop_t *op = fop_begin(req, change);
    const char *path = req_param(req, 1);
    if (op && fop_path(op, "path", path, strlen(path), op->path) != 0) {
        fop_free(op);
        return NULL;
    }
    return op;
}

static void answer_full(fop_t *op)
{
    req_error(op->req, 507, "The workspace holds too many items (limit %lld)",
              (long long)req_gw(op->req)->cfg.max_files_per_workspace);
}

/* ---- GET /api/workspace/{id}/files[?path=folder] -------------------------- */

static void list_done(PGresult *res, const char *err, void *arg)
{
    fop_t *op = arg;
    if (fop_failed(op, res, err, "files_list", 0))
        return;
    if (!col_true(res, 1))
        req_error(op->req, 404, "Folder not found");
    else
        send_json_col(op->req, res, 2);
    fop_free(op);
}

void route_files_list(at_req_t *req)
{
    fop_t *op = fop_begin(req, 0);
    if (!op)
        return;
    const char *folder = req_query(req, "path");
    if (folder && *folder) {
        if (fop_path(op, "path", folder, strlen(folder), op->path) != 0) {
            fop_free(op);
            return;
        }
        fop_param(op, op->path);
    } else {
        fop_param(op, NULL); /* the whole tree */
    }
    fop_run(op, LIST_SQL, list_done);
}

/* ---- GET .../files/{path}, .../file/{path} ------------------------------- */

static void children_done(PGresult *res, const char *err, void *arg)
{
    fop_t *op = arg;
    if (err)
        req_db_fail(op->req, "folder_get", res, err);
    else
        send_json_col(op->req, res, 0);
    fop_free(op);
}

/* {"path","content","size","modified","sha256","version","encoding","mode"},
 * written directly: see files_json_escape. NULL when out of memory. */
static char *file_json(PGresult *res, size_t *len)
{
    int bin = PQgetisnull(res, 0, C_TEXT);
    int c = bin ? C_B64 : C_TEXT;
    const char *content = PQgetvalue(res, 0, c), *path = PQgetvalue(res, 0, C_PATH);
    size_t clen = (size_t)PQgetlength(res, 0, c), plen = strlen(path);
    char tail[384];
    int tn = snprintf(tail, sizeof tail,
                      "\",\"size\":%s,\"modified\":\"%s\",\"sha256\":\"%s\",\"version\":%s,"
                      "\"encoding\":\"%s\",\"mode\":%s}",
                      PQgetvalue(res, 0, C_SIZE), PQgetvalue(res, 0, C_MODIFIED),
                      PQgetvalue(res, 0, C_SHA), PQgetvalue(res, 0, C_VERSION),
                      bin ? "base64" : "utf-8", PQgetvalue(res, 0, C_MODE));
    if (tn < 0 || (size_t)tn >= sizeof tail)
        return NULL;
    static const char head[] = "{\"path\":\"", mid[] = "\",\"content\":\"";
    size_t n = sizeof head - 1 + files_json_escape(NULL, path, plen) + sizeof mid - 1 +
               files_json_escape(NULL, content, clen) + (size_t)tn;
    char *out = malloc(n + 1), *o = out;
    if (!out)
        return NULL;
    memcpy(o, head, sizeof head - 1);
    o += sizeof head - 1;
    o += files_json_escape(o, path, plen);
    memcpy(o, mid, sizeof mid - 1);
    o += sizeof mid - 1;
    o += files_json_escape(o, content, clen);
    memcpy(o, tail, (size_t)tn + 1);
    *len = n;
    return out;
}

static void get_done(PGresult *res, const char *err, void *arg)
{
    fop_t *op = arg;
    if (!err && PQntuples(res) == 0) { /* FAST_GET_SQL: no such item */
        req_error(op->req, 404, "File not found");
        fop_free(op);
        return;
    }
    if (fop_failed(op, res, err, "file_get", C_FOUND))
        return;
    if (PQnfields(res) > C_OWNER && !PQgetisnull(res, 0, C_WS))
        ws_cache_put(req_param(op->req, 0), PQgetvalue(res, 0, C_WS),
                     strtoll(PQgetvalue(res, 0, C_OWNER), NULL, 10));
    if (PQgetisnull(res, 0, C_TYPE)) {
        req_error(op->req, 404, "File not found");
    } else if (!strcmp(PQgetvalue(res, 0, C_TYPE), "folder")) {
        op->np = 0;
        at_strlcpy(op->num[0], PQgetvalue(res, 0, C_ID), sizeof op->num[0]);
        fop_param(op, op->num[0]);
        fop_param(op, op->path);
        fop_run(op, CHILDREN_SQL, children_done);
        return;
    } else {
        size_t n = 0;
        char *body = file_json(res, &n);
        if (body) {
            add_etag(op->req, PQgetvalue(res, 0, C_SHA));
            req_send(op->req, 200, NULL, body, n);
        } else {
            req_error(op->req, 503, "Out of memory");
        }
    }
    fop_free(op);
}

void route_file_get(at_req_t *req)
{
    fop_t *op = fop_begin_path(req, 0);
    if (!op)
        return;
    switch (ws_cache_get(req_param(req, 0), op->scope_id, op->ws)) {
    case 1:
        op->np = 0;
        fop_param(op, op->ws);
        fop_param(op, op->path);
        fop_run(op, FAST_GET_SQL, get_done);
        break;
    case -1:
        req_error(req, 404, "Workspace not found");
        fop_free(op);
        break;
    default:
        fop_param(op, op->path);
        fop_run(op, GET_SQL, get_done);
    }
}

/* ---- PUT .../files/{path}, POST .../file/{path} -------------------------- */

static void put_done(PGresult *res, const char *err, void *arg)
{
    fop_t *op = arg;
    /* two creators of one new file: ws_put_file's INSERT lost to the other's;
     * run again, it now finds the row (and applies If-Match to it) */
    if (err && !strcmp(db_sqlstate(res), "23505") && fop_retry(op))
        return;
    if (fop_failed(op, res, err, "file_put", 0))
        return;
    files_push_jobs(req_gw(op->req), res, 4);
    add_etag(op->req, op->sha);
    req_json(op->req, 200,
             json_pack("{s:b, s:s, s:s, s:I, s:s, s:I, s:b, s:s}", "success", 1, "message",
                       "File updated successfully", "path", op->path, "size", (json_int_t)op->size,
                       "sha256", op->sha, "version",
                       (json_int_t)strtoll(PQgetvalue(res, 0, 1), NULL, 10), "created",
                       col_true(res, 2), "modified", PQgetvalue(res, 0, 3)));
    fop_free(op);
}

void route_file_put(at_req_t *req)
{
    fop_t *op = fop_begin_path(req, 1);
    fcontent_t c;
    if (!op)
        return;
    if (files_content(op, &c) != 0) {
        fop_free(op);
        return;
    }
    fop_if_match(op);
    if (fop_if_none_match_any(op)) {
        if (op->if_match[0]) {
            req_error(req, 412, "If-Match and If-None-Match: * cannot both hold for %s", op->path);
            fop_free(op);
            return;
        }
        strcpy(op->if_match, "!"); /* create only: ws_write_file */
    }
    at_sha256_hex(c.text ? (const void *)c.text : (const void *)c.bin, c.len, op->sha);
    op->size = (int64_t)c.len;
    fop_param(op, op->path); /* $7 */
    fop_param(op, c.text);   /* $8 */
    op->binary = 1;          /* $9: the bytes as they are */
    op->lengths[op->np] = (int)c.len;
    op->formats[op->np] = 1;
    fop_param(op, c.bin ? (const char *)c.bin : NULL);
    fop_param(op, op->sha);      /* $10 */
    fop_param_int(op, op->size); /* $11 */
    if (c.mode >= 0)
        fop_param_int(op, c.mode); /* $12 */
    else
        fop_param(op, NULL);
    fop_param(op, op->if_match[0] ? op->if_match : NULL);        /* $13 */
    fop_param_int(op, req_gw(req)->cfg.max_files_per_workspace); /* $14 */
    fop_run(op, PUT_SQL, put_done);
}

/* ---- DELETE .../files/{path}, .../file/{path} ---------------------------- */

static void delete_done(PGresult *res, const char *err, void *arg)
{
    fop_t *op = arg;
    if (fop_failed(op, res, err, "file_delete", 0))
        return;
    if (strcmp(PQgetvalue(res, 0, 1), "0") != 0) {
        files_push_jobs(req_gw(op->req), res, 4);
        req_json(op->req, 200,
                 json_pack("{s:b, s:s}", "success", 1, "message", "File deleted successfully"));
    } else if (PQgetisnull(res, 0, 2)) {
        req_error(op->req, 404, "File not found");
    } else if (col_true(res, 3) && !op->recursive) {
        req_error(op->req, 409, "Folder %s is not empty; delete it with ?recursive=true", op->path);
    } else {
        req_error(op->req, 412, "%s has changed (If-Match does not match its ETag)", op->path);
    }
    fop_free(op);
}

void route_file_delete(at_req_t *req)
{
    fop_t *op = fop_begin_path(req, 1);
    if (!op)
        return;
    fop_if_match(op);
    op->recursive = is_true(req_query(req, "recursive"));
    fop_param(op, op->path);
    fop_param(op, op->if_match[0] ? op->if_match : NULL);
    fop_param(op, op->recursive ? "true" : "false");
    fop_run(op, DELETE_SQL, delete_done);
}

/* ---- GET /api/workspace/{id}/status -------------------------------------- */

static const char *status_message(const char *status)
{
    static const char *const map[][2] = {
        {"initializing", "Pod is being created"},
        {"loading_files", "Files being loaded"},
        {"ready", "Workspace is ready"},
        {"sleeping", "Workspace is sleeping"},
        {"waking", "Workspace is waking up"},
        {"error", "Pod creation or file sync failed"},
        {"terminating", "Workspace is shutting down"},
        {"terminated", "Workspace is not running"},
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (!strcmp(map[i][0], status))
            return map[i][1];
    return status;
}

static void status_done(PGresult *res, const char *err, void *arg)
{
    fop_t *op = arg;
    if (fop_failed(op, res, err, "workspace_status", 0))
        return;
    const char *status = PQgetvalue(res, 0, 1);
    const char *msg = status_message(status);
    /* a failed session's own message says more than the generic one */
    if (!strcmp(status, "error") && !PQgetisnull(res, 0, 2) && *PQgetvalue(res, 0, 2))
        msg = PQgetvalue(res, 0, 2);
    req_json(op->req, 200,
             json_pack("{s:s, s:b, s:s, s:I}", "status", status, "initialized",
                       !strcmp(status, "ready"), "message", msg, "file_count",
                       (json_int_t)strtoll(PQgetvalue(res, 0, 3), NULL, 10)));
    fop_free(op);
}

void route_workspace_status(at_req_t *req)
{
    fop_t *op = fop_begin(req, 0);
    if (op)
        fop_run(op, STATUS_SQL, status_done);
}

/* ---- POST .../ensure-defaults, .../ensure-default ------------------------ */

static void defaults_done(PGresult *res, const char *err, void *arg)
{
    fop_t *op = arg;
    if (fop_failed(op, res, err, "workspace_defaults", 0))
        return;
    json_t *created = json_loads(PQgetvalue(res, 0, 2), 0, NULL);
    if (!col_true(res, 1)) {
        answer_full(op);
    } else {
        files_push_jobs(req_gw(op->req), res, 3);
        req_json(op->req, 200,
                 json_pack("{s:b, s:s, s:o}", "success", 1, "message", "Default files ensured",
                           "files_created", created ? json_incref(created) : json_array()));
    }
    json_decref(created);
    fop_free(op);
}

void route_workspace_defaults(at_req_t *req)
{
    fop_t *op = fop_begin(req, 1);
    if (!op)
        return;
    fop_param(op, DEFAULT_MAIN_PY);
    fop_param(op, DEFAULT_REQUIREMENTS);
    fop_param_int(op, req_gw(req)->cfg.max_files_per_workspace);
    fop_run(op, DEFAULTS_SQL, defaults_done);
}

/* ---- POST /api/workspace/{id}/folders {"path"} --------------------------- */

static void folder_done(PGresult *res, const char *err, void *arg)
{
    fop_t *op = arg;
    if (fop_failed(op, res, err, "folder_create", 0))
        return;
    const char *pre = PQgetisnull(res, 0, 1) ? NULL : PQgetvalue(res, 0, 1);
    const char *message = NULL;
    if (pre && !strcmp(pre, "folder"))
        message = "Folder already exists";
    else if (pre)
        req_error(op->req, 409, "A file exists at %s", op->path);
    else if (!col_true(res, 2))
        answer_full(op);
    else if (!strcmp(PQgetvalue(res, 0, 3), "0") && fop_retry(op))
        return; /* made meanwhile by another request: look again */
    else if (!strcmp(PQgetvalue(res, 0, 3), "0"))
        req_error(op->req, 409, "%s was created by another request meanwhile", op->path);
    else
        message = "Folder created";
    if (message) {
        files_push_jobs(req_gw(op->req), res, 4);
        req_json(op->req, pre ? 200 : 201,
                 json_pack("{s:b, s:s, s:s}", "success", 1, "message", message, "path", op->path));
    }
    fop_free(op);
}

void route_folder_create(at_req_t *req)
{
    fop_t *op = fop_begin(req, 1);
    if (!op)
        return;
    json_t *body = files_json_body(req);
    int bad = 0;
    size_t len;
    const char *path = body ? files_json_str(req, body, "path", &len, &bad) : NULL;
    if (!body || bad) {
        /* answered */
    } else if (!path) {
        req_error(req, 422, "path is required (a string)");
    } else if (fop_path(op, "path", path, len, op->path) == 0) {
        fop_param(op, op->path);
        fop_param(op, at_path_base(op->path));
        fop_param_int(op, req_gw(req)->cfg.max_files_per_workspace);
        fop_run(op, FOLDER_SQL, folder_done);
        op = NULL; /* the statement's now */
    }
    json_decref(body);
    fop_free(op);
}

/* ---- POST /api/workspace/{id}/move {"from", "to", "overwrite"?} ---------- */

static void move_done(PGresult *res, const char *err, void *arg)
{
    fop_t *op = arg;
    if (fop_failed(op, res, err, "file_move", 0))
        return;
    const char *action = PQgetisnull(res, 0, 1) ? NULL : PQgetvalue(res, 0, 1);
    if (!action) {
        req_error(op->req, 404, "File not found");
    } else if (!strcmp(action, "conflict")) {
        int file = !strcmp(PQgetvalue(res, 0, 2), "file");
        req_error(op->req, 409, "%s already exists%s", op->to,
                  file ? " (overwrite: true replaces a file with a file)" : "");
    } else {
        files_push_jobs(req_gw(op->req), res, 4);
        req_json(op->req, 200,
                 json_pack("{s:b, s:s, s:s, s:s, s:s}", "success", 1, "message", "Moved", "from",
                           op->path, "to", op->to, "type", PQgetvalue(res, 0, 2)));
    }
    fop_free(op);
}

/* 1 if path lies below folder ("a/b" below "a"). */
static int is_below(const char *path, const char *folder)
{
    size_t n = strlen(folder);
    return !strncmp(path, folder, n) && path[n] == '/';
}

void route_file_move(at_req_t *req)
{
    fop_t *op = fop_begin(req, 1);
    if (!op)
        return;
    json_t *body = files_json_body(req);
    int bad = 0;
    size_t flen = 0, tlen = 0;
    const char *from = body ? files_json_str(req, body, "from", &flen, &bad) : NULL;
    const char *to = body && !bad ? files_json_str(req, body, "to", &tlen, &bad) : NULL;
    json_t *overwrite = body ? json_object_get(body, "overwrite") : NULL;
    if (!body || bad) {
        /* answered */
    } else if (!from || !to) {
        req_error(req, 422, "from and to are required (strings)");
    } else if (overwrite && !json_is_boolean(overwrite) && !json_is_null(overwrite)) {
        req_error(req, 422, "overwrite must be a boolean");
    } else if (fop_path(op, "from", from, flen, op->path) != 0 ||
               fop_path(op, "to", to, tlen, op->to) != 0) {
        /* answered */
    } else if (!strcmp(op->path, op->to)) {
        req_error(req, 422, "from and to name the same path");
    } else if (is_below(op->to, op->path)) {
        req_error(req, 422, "Cannot move %s into itself", op->path);
    } else {
        fop_param(op, op->path);
        fop_param(op, op->to);
        fop_param(op, at_path_base(op->to));
        fop_param(op, json_is_true(overwrite) ? "true" : "false");
        fop_run(op, MOVE_SQL, move_done);
        op = NULL; /* the statement's now */
    }
    json_decref(body);
    fop_free(op);
}
