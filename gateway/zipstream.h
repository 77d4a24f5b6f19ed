/*
 * A workspace (or one folder of it) as a .zip answer, streamed: rows are
 * read from workspace_items in pages (keyset by path) only when the output
 * buffer has drained, fed to libarchive's zip writer a chunk at a time, and
 * handed to the connection through req_stream's pull callback. Memory per
 * download stays bounded whatever the workspace size: one page of rows
 * (ZIPSTREAM_PAGE_ROWS rows, about ZIPSTREAM_PAGE_BYTES of content, at least
 * one file) and the output buffer; the only part that grows with the
 * workspace is the zip central directory (one small record per entry, held
 * by libarchive and written at the end), bounded by ATELIER_MAX_FILES.
 */
#ifndef GATEWAY_ZIPSTREAM_H
#define GATEWAY_ZIPSTREAM_H

#include <libpq-fe.h>
#include <stddef.h>

#include "http.h"

#define ZIPSTREAM_PAGE_ROWS 64
#define ZIPSTREAM_PAGE_BYTES (4u << 20)

/*
 * Answer req with the zip of workspace ws_id: every item whose path is root
 * or under root/ (root "" for all). Entry names keep the last segment of
 * root (a zip of "src/lib" holds "lib/..."). content_disposition becomes the
 * header of the 200 answer. A database failure before the first byte
 * answers 503; after it, the stream ends early (logged) and the client sees
 * a truncated archive.
 */
void zipstream_start(at_req_t *req, const char *ws_id, const char *root,
                     const char *content_disposition);

/* Column (row, col) of res as a new malloc'd buffer of *len bytes (plus a
 * NUL): a bytea column's hex output is decoded, anything else is copied.
 * NULL on allocation failure or a malformed bytea. */
char *zipstream_column(const PGresult *res, int row, int col, int is_bytea, size_t *len);

#endif
