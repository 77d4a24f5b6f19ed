/*
 * What the file API handlers (routes_files.c) share: the request context of
 * one file operation, the SQL fragments that resolve the workspace and queue
 * push jobs, and the decoding of client input (paths, If-Match, base64).
 */
#ifndef GATEWAY_FILES_COMMON_H
#define GATEWAY_FILES_COMMON_H

#include <jansson.h>
#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>

#include "atelier/crypto.h"
#include "atelier/path.h"
#include "atelier/util.h"
#include "http.h"
#include "records.h"

/* The workspace an {id} names, as a CTE of zero or one row (column id),
 * from the parameters session uuid, workspace uuid and scope. */
/* clang-format off */
#define WS_CTE(sess, ws, scope)                                                                    \
    "w AS (SELECT x.id FROM (SELECT " SQL_WORKSPACE(sess, ws, scope) " AS id) x "                  \
    "      WHERE x.id IS NOT NULL)"
/* clang-format on */

/* One push job (role sync) per live session of the workspace, per row of
 * `from`; `args` is a jsonb expression over `from`. Used as a CTE named j. */
#define PUSH_JOBS(from, ws, args)                                                                  \
    "j AS (INSERT INTO jobs (id, kind, role, session, state, args) SELECT gen_random_uuid(), "     \
    "'push', 'sync', s.uuid, 'queued', " args " FROM " from " JOIN code_sessions s ON "            \
    "s.workspace_id = " ws " AND s.status IN ('loading_files', 'ready') "                          \
    "RETURNING id, session, args)"
/* The jobs inserted by PUSH_JOBS as a JSON array (NULL when none), for
 * files_push_jobs. */
#define JOBS_JSON                                                                                  \
    "(SELECT json_agg(json_build_object('id', j.id, 'session', j.session, 'args', j.args)) "       \
    "FROM j)::text"

/* An item as listed: {"name","path","type","size","modified"}. */
#define ITEM_JSON(t)                                                                               \
    "json_build_object('name', " t ".name, 'path', " t ".path, 'type', " t ".type, 'size', " t     \
    ".size, 'modified', " SQL_ISO(t ".updated_at") ")"

#define FOP_MAX_PARAMS 16

/*
 * One file operation in flight, owned by its handler until the statement's
 * callback answers and frees it. p[] are the statement's parameters; for a
 * change p[0..2] are the audit parameters and p[3..5] the workspace ones
 * (session uuid, workspace uuid, scope); for a read p[0..2] are the
 * workspace ones.
 */
typedef struct fop {
    at_req_t *req;
    const char *p[FOP_MAX_PARAMS];
    int np;
    char uid[24], scope[24], num[4][24];
    int64_t scope_id;         /* auth_scope: 0 = any user */
    char ws[AT_UUID_LEN + 1]; /* the workspace, when known from ws_cache_get */
    char path[AT_PATH_MAX + 1];
    char to[AT_PATH_MAX + 1];
    char sha[AT_SHA256_HEX + 1];
    char if_match[AT_SHA256_HEX + 2]; /* "*", a sha256, or "" for none */
    int64_t size;
    int recursive;       /* DELETE ?recursive=true */
    unsigned char *data; /* decoded content (owned), when not borrowed */
    json_t *json;        /* the parsed body (owned): parameters may point into it */
    /* the statement, kept so that a lost race can run it once more */
    const char *sql;
    at_db_cb *cb;
    int binary;                  /* lengths/formats apply */
    int lengths[FOP_MAX_PARAMS]; /* of binary parameters */
    int formats[FOP_MAX_PARAMS]; /* 1: binary */
    int retried;
} fop_t;

/* Resolve {id} (route parameter 0) and the caller's scope into a new fop_t
 * with the workspace parameters filled (after the audit ones when `change`).
 * Answers 422 (malformed id) or 403 (scope) itself and returns NULL. */
fop_t *fop_begin(at_req_t *req, int change);
void fop_free(fop_t *op);
/*
 * Hot reads skip resolving {id} in SQL (most of their planning time) with a
 * small cache: which workspace a session uuid names, and who owns a
 * workspace, never change, so an entry can only be stale for a workspace
 * deleted meanwhile, whose reads then find no items (404 either way). Entries
 * live a minute; the table is fixed-size, a colliding id replaces the old.
 * ws_cache_get: 1 with ws filled when scope may read it, -1 when it may not
 * (answer 404), 0 when unknown.
 */
int ws_cache_get(const char *id, int64_t scope, char ws[AT_UUID_LEN + 1]);
void ws_cache_put(const char *id, const char *ws, int64_t owner);

/* Append a statement parameter (borrowed: it must outlive the call). */
void fop_param(fop_t *op, const char *value);
/* Append an integer parameter (formatted into op). */
void fop_param_int(fop_t *op, int64_t value);

/* Confine a client path (len bytes) into out[AT_PATH_MAX + 1]; answers 422
 * with the reason and returns -1 when refused. `what` names the field. */
int fop_path(fop_t *op, const char *what, const char *in, size_t len, char *out);
/* Read If-Match into op->if_match ("", "*" or the tag without W/ and quotes). */
void fop_if_match(fop_t *op);
/* 1 when the request has If-None-Match: * (write only if nothing is there). */
int fop_if_none_match_any(fop_t *op);

/* Run the statement (sql is a literal: it is kept for fop_retry); on a busy
 * pool answers 503 and frees op. Parameters must live as long as op. */
void fop_run(fop_t *op, const char *sql, at_db_cb *cb);
/* Run the statement once more, for a callback that lost a race with a
 * concurrent request (a unique violation, an ON CONFLICT that skipped): the
 * second run sees the other's committed row. Returns 0 (and does nothing)
 * if it already ran twice, 1 when the callback will be called again. */
int fop_retry(fop_t *op);
/* Common failures of a statement's callback: answers (and frees op) when
 * the statement failed or named no workspace (column ws_col of row 0 is 0);
 * returns 1 if it did. */
int fop_failed(fop_t *op, PGresult *res, const char *err, const char *what, int ws_col);

/* Push onto the sync queue the jobs a statement inserted (JOBS_JSON text in
 * column col of row 0). Their rows are committed; a push that fails marks
 * its row dead (enqueue_push). */
void files_push_jobs(gateway_t *gw, PGresult *res, int col);

/* Parse a body as a JSON object, allowing "\u0000" inside strings so paths
 * and content can be refused with a precise reason. Answers 400/422 and
 * returns NULL on failure. */
json_t *files_json_body(at_req_t *req);
/* A string member of body (NULL when absent); *len its length in bytes.
 * Answers 422 and sets *bad when present but not a string. */
const char *files_json_str(at_req_t *req, json_t *body, const char *name, size_t *len, int *bad);

/* The bytes a write stores: text (valid UTF-8 without NUL, NUL-terminated)
 * or bin, never both; mode -1 keeps the file's mode. */
typedef struct fcontent {
    const char *text;
    const unsigned char *bin;
    size_t len;
    int64_t mode;
} fcontent_t;

/* The content of a PUT/POST file body: a JSON object {"content",
 * "encoding"?: "utf-8"|"base64", "mode"?: 0..0777} when Content-Type is
 * application/json, else the raw bytes. Bytes are stored as text when they
 * can be, whatever the encoding. c points into op->json, op->data (base64)
 * or the request body, all living as long as op. Answers 400/413/422 and
 * returns -1 when refused. */
int files_content(fop_t *op, fcontent_t *c);

/* s (n bytes of valid UTF-8) as the inside of a JSON string, into out;
 * returns the length, and only counts it when out is NULL. Answers with file
 * content use it rather than jansson, whose per-character encoder cost more
 * than the rest of a read. */
size_t files_json_escape(char *out, const char *s, size_t n);

/* Standard base64 (padding optional, whitespace ignored) of in into a new
 * buffer *out (caller frees, NUL-terminated); returns the decoded length or
 * -1 on a bad character. */
long files_b64_decode(const char *in, size_t len, unsigned char **out);

#endif
