/* Helpers of the file API: see files_common.h. */
#include "files_common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "atelier/log.h"
#include "atelier/util.h"

fop_t *fop_begin(at_req_t *req, int change)
{
    const char *sess, *ws;
    int64_t scope = workspace_scope(req, &sess, &ws);
    if (scope < 0)
        return NULL; /* answered */
    fop_t *op = calloc(1, sizeof *op);
    if (!op) {
        req_error(req, 503, "Out of memory");
        return NULL;
    }
    op->req = req;
    op->scope_id = scope;
    snprintf(op->scope, sizeof op->scope, "%lld", (long long)scope);
    if (change) {
        audit_params(req, op->p, op->uid);
        op->np = 3;
    }
    /* sess and ws point into the route parameter, which lives as long as req */
    fop_param(op, sess);
    fop_param(op, ws);
    fop_param(op, op->scope);
    return op;
}

#define WS_CACHE_SLOTS 4096 /* a power of two */
#define WS_CACHE_TTL_US (60 * 1000000LL)

typedef struct ws_slot {
    char id[AT_UUID_LEN + 1];
    char ws[AT_UUID_LEN + 1];
    int64_t owner;
    int64_t until_us;
} ws_slot_t;

/* Loop state: the gateway has one loop, and only it calls these. */
static ws_slot_t ws_cache[WS_CACHE_SLOTS];

static ws_slot_t *ws_slot(const char *id)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (const unsigned char *c = (const unsigned char *)id; *c; c++)
        h = (h ^ *c) * 16777619u;
    return &ws_cache[h & (WS_CACHE_SLOTS - 1)];
}

int ws_cache_get(const char *id, int64_t scope, char ws[AT_UUID_LEN + 1])
{
    ws_slot_t *s = ws_slot(id);
    if (strcmp(s->id, id) != 0 || s->until_us < at_mono_us())
        return 0;
    if (scope != 0 && scope != s->owner)
        return -1;
    memcpy(ws, s->ws, AT_UUID_LEN + 1);
    return 1;
}

void ws_cache_put(const char *id, const char *ws, int64_t owner)
{
    if (strlen(id) > AT_UUID_LEN || strlen(ws) != AT_UUID_LEN)
        return;
    ws_slot_t *s = ws_slot(id);
    strcpy(s->id, id);
    strcpy(s->ws, ws);
    s->owner = owner;
    s->until_us = at_mono_us() + WS_CACHE_TTL_US;
}

void fop_free(fop_t *op)
{
    if (!op)
        return;
    free(op->data);
    json_decref(op->json);
    free(op);
}

void fop_param(fop_t *op, const char *value)
{
    if (op->np >= FOP_MAX_PARAMS)
        abort(); /* a handler passing more parameters than declared is a bug */
    op->p[op->np++] = value;
}

void fop_param_int(fop_t *op, int64_t value)
{
    const size_t slots = sizeof op->num / sizeof op->num[0];
    size_t k = 0;
    while (k < slots && op->num[k][0])
        k++;
    if (k == slots)
        abort();
    snprintf(op->num[k], sizeof op->num[k], "%lld", (long long)value);
    fop_param(op, op->num[k]);
}

int fop_path(fop_t *op, const char *what, const char *in, size_t len, char *out)
{
    const char *why = NULL;
    if (at_path_confine(in, len, out, AT_PATH_MAX + 1, &why) != AT_OK) {
        req_error(op->req, 422, "Invalid %s: %s", what, why ? why : "refused");
        return -1;
    }
    return 0;
}

int fop_if_none_match_any(fop_t *op)
{
    const char *h = req_header(op->req, "if-none-match");
    if (!h)
        return 0;
    h += strspn(h, " \t");
    return h[0] == '*' && h[1 + strspn(h + 1, " \t")] == '\0';
}

void fop_if_match(fop_t *op)
{
    const char *h = req_header(op->req, "if-match");
    op->if_match[0] = '\0';
    if (!h)
        return;
    while (*h == ' ' || *h == '\t')
        h++;
    size_t n = strlen(h);
    while (n > 0 && (h[n - 1] == ' ' || h[n - 1] == '\t'))
        n--;
    if (n == 1 && h[0] == '*') {
        strcpy(op->if_match, "*");
        return;
    }
    if (n >= 2 && (h[0] == 'W' || h[0] == 'w') && h[1] == '/') {
        h += 2;
        n -= 2;
    }
    if (n >= 2 && h[0] == '"' && h[n - 1] == '"') {
        h++;
        n -= 2;
    }
    /* A tag that is not a sha256 can never match: keep a value that says so
     * rather than silently dropping the precondition. */
    if (n == 0 || n > AT_SHA256_HEX) {
        strcpy(op->if_match, "-");
        return;
    }
    memcpy(op->if_match, h, n);
    op->if_match[n] = '\0';
}

static at_err_t send_statement(fop_t *op)
{
    return at_db_query_bin(req_gw(op->req)->db, op->sql, op->np, op->p,
                           op->binary ? op->lengths : NULL, op->binary ? op->formats : NULL, op->cb,
                           op);
}

void fop_run(fop_t *op, const char *sql, at_db_cb *cb)
{
    op->sql = sql;
    op->cb = cb;
    at_err_t err = send_statement(op);
    if (err != AT_OK) {
        req_error(op->req, 503, "Database busy: %s", at_strerror(err));
        fop_free(op);
    }
}

int fop_retry(fop_t *op)
{
    if (op->retried)
        return 0;
    op->retried = 1;
    at_err_t err = send_statement(op);
    if (err != AT_OK) {
        req_error(op->req, 503, "Database busy: %s", at_strerror(err));
        fop_free(op);
    }
    return 1;
}

int fop_failed(fop_t *op, PGresult *res, const char *err, const char *what, int ws_col)
{
    if (err) {
        req_db_fail(op->req, what, res, err);
    } else if (PQntuples(res) == 0 || !strcmp(PQgetvalue(res, 0, ws_col), "0")) {
        req_error(op->req, 404, "Workspace not found");
    } else {
        return 0;
    }
    fop_free(op);
    return 1;
}

void files_push_jobs(gateway_t *gw, PGresult *res, int col)
{
    if (PQntuples(res) == 0 || PQgetisnull(res, 0, col))
        return;
    json_error_t jerr;
    json_t *jobs = json_loads(PQgetvalue(res, 0, col), 0, &jerr);
    if (!json_is_array(jobs)) {
        at_error("event=push_jobs_unreadable error=\"%s\"", jerr.text);
        json_decref(jobs);
        return;
    }
    size_t i;
    json_t *it;
    json_array_foreach(jobs, i, it)
    {
        const char *id = json_string_value(json_object_get(it, "id"));
        const char *session = json_string_value(json_object_get(it, "session"));
        if (id)
            enqueue_row(gw, "sync", id, "push", session, json_object_get(it, "args"), NULL, NULL);
    }
    json_decref(jobs);
}

json_t *files_json_body(at_req_t *req)
{
    size_t len;
    const char *body = req_body(req, &len);
    if (len == 0) {
        req_error(req, 422, "Request body must be a JSON object");
        return NULL;
    }
    json_error_t err;
    json_t *j = json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &err);
    if (!j) {
        if (!at_utf8_valid(body, len))
            req_error(req, 422, "Request body is not valid UTF-8");
        else
            req_error(req, 400, "Invalid JSON at line %d column %d: %s", err.line, err.column,
                      err.text);
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        req_error(req, 422, "Request body must be a JSON object");
        return NULL;
    }
    return j;
}

const char *files_json_str(at_req_t *req, json_t *body, const char *name, size_t *len, int *bad)
{
    json_t *v = json_object_get(body, name);
    *len = 0;
    if (!v || json_is_null(v))
        return NULL;
    if (!json_is_string(v)) {
        req_error(req, 422, "%s must be a string", name);
        *bad = 1;
        return NULL;
    }
    *len = json_string_length(v);
    return json_string_value(v);
}

/* The escape each byte needs: 0 none, a letter for "\\x", 'u' for \\u00XX. */
static unsigned char escape_of[256];

static void escape_table(void)
{
    for (int c = 0; c < 0x20; c++)
        escape_of[c] = 'u';
    escape_of['"'] = '"';
    escape_of['\\'] = '\\';
    escape_of['\n'] = 'n';
    escape_of['\r'] = 'r';
    escape_of['\t'] = 't';
    escape_of['\b'] = 'b';
    escape_of['\f'] = 'f';
}

size_t files_json_escape(char *out, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    if (!escape_of[0])
        escape_table();
    size_t o = 0, i = 0;
    while (i < n) {
        size_t run = i; /* bytes copied as they are, UTF-8 sequences included */
        while (run < n && !escape_of[(unsigned char)s[run]])
            run++;
        if (out)
            memcpy(out + o, s + i, run - i);
        o += run - i;
        if (run == n)
            break;
        unsigned char c = (unsigned char)s[run], e = escape_of[c];
        if (e != 'u') {
            if (out) {
                out[o] = '\\';
                out[o + 1] = (char)e;
            }
            o += 2;
        } else {
            if (out) {
                memcpy(out + o, "\\u00", 4);
                out[o + 4] = hex[c >> 4];
                out[o + 5] = hex[c & 15];
            }
            o += 6;
        }
        i = run + 1;
    }
    return o;
}

static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

long files_b64_decode(const char *in, size_t len, unsigned char **out)
{
    *out = malloc(len / 4 * 3 + 4);
    if (!*out)
        return -1;
    size_t o = 0, pad = 0;
    unsigned acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c == ' ' || c == '\n' || c == '\r' || c == '\t')
            continue;
        if (c == '=') {
            pad++;
            continue;
        }
        int v = b64_value(c);
        if (v < 0 || pad) /* a bad character, or data after padding */
            goto bad;
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            (*out)[o++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    /* 6 leftover bits can hold no byte; leftover bits must be zero */
    if (bits == 6 || acc != 0 || pad > 2)
        goto bad;
    (*out)[o] = '\0';
    return (long)o;
bad:
    free(*out);
    *out = NULL;
    return -1;
}

/* ---- file content of a write --------------------------------------------- */

static int ct_is(const char *ct, const char *type)
{
    size_t n = strlen(type);
    return ct && !strncasecmp(ct, type, n) && (ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ');
}

/* Content-Type says charset=utf-8: a raw body must then be UTF-8 text. */
static int declares_utf8(const char *ct)
{
    char low[128];
    size_t i = 0;
    for (; ct && ct[i] && i < sizeof low - 1; i++)
        low[i] = (char)(ct[i] >= 'A' && ct[i] <= 'Z' ? ct[i] + 32 : ct[i]);
    low[i] = '\0';
    const char *cs = strstr(low, "charset=");
    if (!cs)
        return 0;
    cs += 8;
    if (*cs == '"')
        cs++;
    return !strncmp(cs, "utf-8", 5) || !strncmp(cs, "utf8", 4);
}

static int too_big(fop_t *op, size_t len)
{
    int64_t max = req_gw(op->req)->cfg.max_file_size;
    if ((int64_t)len <= max)
        return 0;
    req_error(op->req, 413, "File is %zu bytes; the limit (MAX_FILE_SIZE) is %lld bytes", len,
              (long long)max);
    return 1;
}

/* Bytes that may be stored as text: valid UTF-8 and no NUL (a TEXT column
 * cannot hold NUL, so such files are binary). */
static int text_ok(const void *buf, size_t len)
{
    return !memchr(buf, '\0', len) && at_utf8_valid(buf, len);
}

static int content_from_json(fop_t *op, fcontent_t *c)
{
    at_req_t *req = op->req;
    json_t **body = &op->json;
    if (!(*body = files_json_body(req)))
        return -1;
    int bad = 0;
    size_t len, elen;
    const char *s = files_json_str(req, *body, "content", &len, &bad);
    const char *enc = bad ? NULL : files_json_str(req, *body, "encoding", &elen, &bad);
    json_t *mode = json_object_get(*body, "mode");
    if (bad)
        return -1;
    if (!s) {
        req_error(req, 422, "content is required (a string)");
        return -1;
    }
    if (mode && !json_is_null(mode)) {
        if (!json_is_integer(mode) || json_integer_value(mode) < 0 ||
            json_integer_value(mode) > 0777) {
            req_error(req, 422, "mode must be an integer in [0, 511] (0..0777)");
            return -1;
        }
        c->mode = json_integer_value(mode);
    }
    int b64 = enc && !strcasecmp(enc, "base64");
    if (enc && !b64 && strcasecmp(enc, "utf-8") && strcasecmp(enc, "utf8")) {
        req_error(req, 422, "encoding must be \"utf-8\" or \"base64\"");
        return -1;
    }
    if (!b64) {
        /* jansson has checked the UTF-8; "\u0000" is the one thing left */
        if (memchr(s, '\0', len)) {
            req_error(req, 422, "content contains a NUL byte; send such files base64-encoded");
            return -1;
        }
        if (too_big(op, len))
            return -1;
        c->text = s;
        c->len = len;
        return 0;
    }
    long n = files_b64_decode(s, len, &op->data);
    if (n < 0) {
        req_error(req, 422, "content is not valid base64");
        return -1;
    }
    if (too_big(op, (size_t)n))
        return -1;
    c->len = (size_t)n;
    if (text_ok(op->data, c->len))
        c->text = (const char *)op->data; /* NUL-terminated by the decoder */
    else
        c->bin = op->data;
    return 0;
}

static int content_from_raw(fop_t *op, fcontent_t *c)
{
    size_t len;
    const char *body = req_body(op->req, &len);
    if (too_big(op, len))
        return -1;
    int text = text_ok(body, len);
    if (!text && declares_utf8(req_header(op->req, "content-type"))) {
        req_error(op->req, 422, "Body declared as UTF-8 text is not valid UTF-8 (or has NUL)");
        return -1;
    }
    c->len = len;
    if (text)
        c->text = body; /* req_body is NUL-terminated */
    else
        c->bin = (const unsigned char *)body;
    return 0;
}

int files_content(fop_t *op, fcontent_t *c)
{
    memset(c, 0, sizeof *c);
    c->mode = -1;
    if (ct_is(req_header(op->req, "content-type"), "application/json"))
        return content_from_json(op, c);
    return content_from_raw(op, c);
}
