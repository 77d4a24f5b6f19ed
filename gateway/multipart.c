/*
 * multipart/form-data parser (RFC 7578, RFC 2046 section 5.1.1).
 *
 *   [preamble CRLF] --boundary [padding] CRLF headers CRLF CRLF data
 *   CRLF --boundary ... CRLF --boundary-- [epilogue]
 *
 * File names: browsers send them raw in a quoted string, with only '"', CR
 * and LF percent-encoded (the HTML form-data rules), so exactly those three
 * escapes are decoded. A backslash is kept as it is (never treated as an
 * escape) so it cannot hide anything from path confinement. A filename*
 * parameter (RFC 5987, UTF-8 only) wins over filename when both are given.
 */
#include "multipart.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "chars.h"

#define WHY(...) snprintf(why, whylen, __VA_ARGS__)

static int is_ows(char c)
{
    return c == ' ' || c == '\t';
}

static int ieq(const char *s, size_t n, const char *lit)
{
    return strlen(lit) == n && !strncasecmp(s, lit, n);
}

/* A slice of a header value. */
typedef struct {
    const char *p;
    size_t n;
} slice_t;

static slice_t trim(const char *p, size_t n)
{
    while (n && is_ows(*p))
        p++, n--;
    while (n && is_ows(p[n - 1]))
        n--;
    return (slice_t){p, n};
}

at_err_t mp_boundary(const char *ct, char *out, size_t cap, const char **why)
{
    static const char type[] = "multipart/form-data";
    if (!ct)
        return AT_ENOTFOUND;
    const char *semi = strchr(ct, ';');
    slice_t t = trim(ct, semi ? (size_t)(semi - ct) : strlen(ct));
    if (!ieq(t.p, t.n, type))
        return AT_ENOTFOUND;
    for (const char *s = semi; s && *s;) {
        s++; /* past ';' */
        const char *eq = strchr(s, '=');
        if (!eq)
            break;
        slice_t name = trim(s, (size_t)(eq - s));
        const char *v = eq + 1, *end;
        while (is_ows(*v))
            v++;
        slice_t val;
        if (*v == '"') {
            end = strchr(v + 1, '"');
            if (!end) {
                *why = "unterminated quoted boundary in Content-Type";
                return AT_EINVAL;
            }
            val = (slice_t){v + 1, (size_t)(end - v - 1)};
            end++;
        } else {
            end = v + strcspn(v, ";");
            val = trim(v, (size_t)(end - v));
        }
        if (ieq(name.p, name.n, "boundary")) {
            if (val.n == 0 || val.n > MP_BOUNDARY_MAX || val.n >= cap) {
                *why = "multipart boundary must be 1 to 70 characters";
                return AT_EINVAL;
            }
            for (size_t i = 0; i < val.n; i++) {
                unsigned char c = (unsigned char)val.p[i];
                if (c < 0x20 || c > 0x7e || c == '"' || c == '\\') {
                    *why = "multipart boundary has a character outside RFC 2046 bchars";
                    return AT_EINVAL;
                }
            }
            memcpy(out, val.p, val.n);
            out[val.n] = '\0';
            return AT_OK;
        }
        s = strchr(end, ';');
    }
    *why = "multipart/form-data without a boundary parameter";
    return AT_EINVAL;
}

/* filename="..." as browsers encode it: only %22, %0D and %0A are escapes. */
static char *decode_html5(slice_t v, size_t *outlen)
{
    char *o = malloc(v.n + 1);
    if (!o)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < v.n; i++) {
        if (v.p[i] == '%' && i + 2 < v.n) {
            int hi = hex_digit(v.p[i + 1]), lo = hex_digit(v.p[i + 2]);
            int c = hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
            if (c == 0x22 || c == 0x0d || c == 0x0a) {
                o[k++] = (char)c;
                i += 2;
                continue;
            }
        }
        o[k++] = v.p[i];
    }
    o[k] = '\0';
    *outlen = k;
    return o;
}

/* filename*=UTF-8'lang'percent-encoded; NULL with *bad set if malformed. */
static char *decode_ext(slice_t v, size_t *outlen, int *bad)
{
    const char *q1 = memchr(v.p, '\'', v.n);
    const char *q2 = q1 ? memchr(q1 + 1, '\'', v.n - (size_t)(q1 + 1 - v.p)) : NULL;
    if (!q2 || !ieq(v.p, (size_t)(q1 - v.p), "UTF-8")) {
        *bad = 1;
        return NULL;
    }
    const char *s = q2 + 1, *end = v.p + v.n;
    char *o = malloc((size_t)(end - s) + 1);
    if (!o)
        return NULL;
    size_t k = 0;
    while (s < end) {
        if (*s == '%' && end - s >= 3 && hex_digit(s[1]) >= 0 && hex_digit(s[2]) >= 0) {
            o[k++] = (char)(hex_digit(s[1]) * 16 + hex_digit(s[2]));
            s += 3;
        } else if (attr_char((unsigned char)*s)) {
            o[k++] = *s++;
        } else {
            free(o);
            *bad = 1;
            return NULL;
        }
    }
    o[k] = '\0';
    *outlen = k;
    return o;
}

/* Content-Disposition: form-data; name="..."; filename="..." into part. */
static at_err_t parse_disposition(const char *v, size_t n, mp_part_t *part, char *why,
                                  size_t whylen)
{
    const char *s = v, *end = v + n;
    const char *semi = memchr(s, ';', n);
    slice_t type = trim(s, (size_t)((semi ? semi : end) - s));
    if (!ieq(type.p, type.n, "form-data")) {
        WHY("Content-Disposition must be form-data");
        return AT_EINVAL;
    }
    slice_t name = {0}, fname = {0}, fext = {0};
    int has_name = 0, has_fname = 0, has_fext = 0;
    s = semi ? semi : end;
    while (s < end) {
        s++; /* past ';' */
        while (s < end && is_ows(*s))
            s++;
        if (s == end)
            break;
        const char *k = s;
        while (s < end && *s != '=' && *s != ';' && !is_ows(*s))
            s++;
        slice_t key = {k, (size_t)(s - k)};
        while (s < end && is_ows(*s))
            s++;
        if (s == end || *s != '=' || key.n == 0) {
            WHY("bad Content-Disposition parameter");
            return AT_EINVAL;
        }
        s++;
        while (s < end && is_ows(*s))
            s++;
        slice_t val;
        if (s < end && *s == '"') {
            const char *close = memchr(s + 1, '"', (size_t)(end - s - 1));
            if (!close) {
                WHY("unterminated quoted string in Content-Disposition");
                return AT_EINVAL;
            }
            val = (slice_t){s + 1, (size_t)(close - s - 1)};
            s = close + 1;
        } else {
            const char *t = s;
            while (s < end && *s != ';' && !is_ows(*s))
                s++;
            val = (slice_t){t, (size_t)(s - t)};
        }
        while (s < end && is_ows(*s))
            s++;
        if (s < end && *s != ';') {
            WHY("bad Content-Disposition parameter");
            return AT_EINVAL;
        }
        slice_t *dst = NULL;
        int *seen = NULL;
        if (ieq(key.p, key.n, "name"))
            dst = &name, seen = &has_name;
        else if (ieq(key.p, key.n, "filename"))
            dst = &fname, seen = &has_fname;
        else if (ieq(key.p, key.n, "filename*"))
            dst = &fext, seen = &has_fext;
        if (!dst)
            continue; /* unknown parameters are ignored */
        if (*seen) {
            WHY("duplicate Content-Disposition parameter %.*s", (int)key.n, key.p);
            return AT_EINVAL;
        }
        *seen = 1;
        *dst = val;
    }
    if (!has_name) {
        WHY("a part has no name in its Content-Disposition");
        return AT_EINVAL;
    }
    part->name = name.p;
    part->name_len = name.n;
    if (has_fext) {
        int bad = 0;
        part->filename = decode_ext(fext, &part->filename_len, &bad);
        if (bad) {
            WHY("filename* must be UTF-8''percent-encoded (RFC 5987)");
            return AT_EINVAL;
        }
    } else if (has_fname) {
        part->filename = decode_html5(fname, &part->filename_len);
    } else {
        return AT_OK;
    }
    return part->filename ? AT_OK : AT_ENOMEM;
}

/* The header block [p, p + n) of one part, lines separated by CRLF. */
static at_err_t parse_headers(const char *p, size_t n, mp_part_t *part, char *why, size_t whylen)
{
    const char *end = p + n;
    int lines = 0, disposition = 0;
    while (p < end) {
        const char *eol = memchr(p, '\r', (size_t)(end - p));
        if (!eol)
            eol = end;
        size_t ln = (size_t)(eol - p);
        if (++lines > MP_HEADER_LINES_MAX) {
            WHY("more than %d header lines in a part", MP_HEADER_LINES_MAX);
            return AT_EINVAL;
        }
        if (memchr(p, '\n', ln) || (eol < end && (end - eol < 2 || eol[1] != '\n'))) {
            WHY("bare CR or LF in a part's headers");
            return AT_EINVAL;
        }
        if (ln == 0 || is_ows(p[0])) {
            WHY("empty or folded header line in a part");
            return AT_EINVAL;
        }
        const char *colon = memchr(p, ':', ln);
        if (!colon || colon == p) {
            WHY("header line without a name in a part");
            return AT_EINVAL;
        }
        for (const char *c = p; c < colon; c++) {
            if ((unsigned char)*c <= 0x20 || (unsigned char)*c >= 0x7f) {
                WHY("bad character in a part's header name");
                return AT_EINVAL;
            }
        }
        slice_t name = {p, (size_t)(colon - p)};
        slice_t val = trim(colon + 1, (size_t)(eol - colon - 1));
        if (ieq(name.p, name.n, "content-disposition")) {
            if (disposition++) {
                WHY("two Content-Disposition headers in a part");
                return AT_EINVAL;
            }
            at_err_t e = parse_disposition(val.p, val.n, part, why, whylen);
            if (e != AT_OK)
                return e;
        } else if (ieq(name.p, name.n, "content-transfer-encoding")) {
            if (!ieq(val.p, val.n, "binary") && !ieq(val.p, val.n, "8bit") &&
                !ieq(val.p, val.n, "7bit")) {
                WHY("Content-Transfer-Encoding %.*s is not supported", (int)val.n, val.p);
                return AT_EINVAL;
            }
        }
        p = eol + 2;
    }
    if (!disposition) {
        WHY("a part has no Content-Disposition header");
        return AT_EINVAL;
    }
    return AT_OK;
}

static at_err_t add_part(mp_form_t *f, const mp_part_t *part, size_t max_parts)
{
    if (f->n >= max_parts)
        return AT_ETOOBIG;
    if (f->n == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 16;
        if (cap > max_parts)
            cap = max_parts;
        mp_part_t *p = realloc(f->parts, cap * sizeof *p);
        if (!p)
            return AT_ENOMEM;
        f->parts = p;
        f->cap = cap;
    }
    f->parts[f->n++] = *part;
    return AT_OK;
}

void mp_form_free(mp_form_t *f)
{
    for (size_t i = 0; i < f->n; i++)
        free(f->parts[i].filename);
    free(f->parts);
    memset(f, 0, sizeof *f);
}

int mp_name_is(const mp_part_t *part, const char *name)
{
    return strlen(name) == part->name_len && !memcmp(part->name, name, part->name_len);
}

/* Parse the parts after the first delimiter, which ends at body + p; delim
 * is CRLF "--" boundary. */
static at_err_t parse_parts(const char *body, size_t len, size_t p, const char *delim, size_t dl,
                            size_t max_parts, mp_form_t *f, char *why, size_t whylen)
{
    for (;;) {
        if (len - p >= 2 && body[p] == '-' && body[p + 1] == '-')
            return AT_OK; /* close delimiter; the epilogue is ignored */
        while (p < len && is_ows(body[p]))
            p++;
        if (len - p < 2 || body[p] != '\r' || body[p + 1] != '\n') {
            WHY(p >= len ? "body truncated after a boundary" : "boundary not followed by CRLF");
            return AT_EINVAL;
        }
        p += 2;
        size_t hdr_len, data;
        if (len - p >= 2 && body[p] == '\r' && body[p + 1] == '\n') {
            hdr_len = 0;
            data = p + 2;
        } else {
            size_t window = len - p < MP_HEADERS_MAX ? len - p : MP_HEADERS_MAX;
            const char *e = memmem(body + p, window, "\r\n\r\n", 4);
            if (!e) {
                WHY(window == MP_HEADERS_MAX ? "a part's headers exceed %d bytes"
                                             : "body truncated inside a part's headers",
                    MP_HEADERS_MAX);
                return AT_EINVAL;
            }
            hdr_len = (size_t)(e - (body + p));
            data = p + hdr_len + 4;
        }
        mp_part_t part = {0};
        at_err_t err = parse_headers(body + p, hdr_len, &part, why, whylen);
        if (err != AT_OK) {
            free(part.filename);
            return err;
        }
        /* the data ends at CRLF + delimiter (delim starts with that CRLF) */
        const char *stop = memmem(body + data, len - data, delim, dl);
        if (!stop) {
            free(part.filename);
            WHY("body truncated: no closing boundary after a part");
            return AT_EINVAL;
        }
        part.data = body + data;
        part.len = (size_t)(stop - (body + data));
        if ((err = add_part(f, &part, max_parts)) != AT_OK) {
            free(part.filename);
            if (err == AT_ETOOBIG)
                WHY("more than %zu parts", max_parts);
            return err;
        }
        p = (size_t)(stop - body) + dl;
    }
}

at_err_t mp_parse(const char *body, size_t len, const char *boundary, size_t max_parts,
                  mp_form_t *f, char *why, size_t whylen)
{
    memset(f, 0, sizeof *f);
    char delim[MP_BOUNDARY_MAX + 5]; /* CRLF "--" boundary */
    size_t bl = strlen(boundary);
    if (bl == 0 || bl > MP_BOUNDARY_MAX) {
        WHY("bad multipart boundary");
        return AT_EINVAL;
    }
    size_t dl = (size_t)snprintf(delim, sizeof delim, "\r\n--%s", boundary);
    size_t p;
    if (len >= dl - 2 && !memcmp(body, delim + 2, dl - 2)) {
        p = dl - 2; /* no preamble */
    } else {
        const char *found = memmem(body, len, delim, dl);
        if (!found) {
            WHY("no multipart boundary in the body");
            return AT_EINVAL;
        }
        p = (size_t)(found - body) + dl;
    }
    at_err_t err = parse_parts(body, len, p, delim, dl, max_parts, f, why, whylen);
    if (err != AT_OK)
        mp_form_free(f);
    return err;
}
