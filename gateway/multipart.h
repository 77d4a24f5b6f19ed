/*
 * multipart/form-data (RFC 7578) over a body already held in memory: the
 * parts are slices of the caller's buffer, nothing is copied but the
 * decoded file names. Bounded: a part's header block, the number of parts
 * and the boundary length all have limits, and any input that does not
 * follow the grammar is refused with a reason for the client.
 */
#ifndef GATEWAY_MULTIPART_H
#define GATEWAY_MULTIPART_H

#include <stddef.h>

#include "atelier/err.h"

#define MP_BOUNDARY_MAX 70     /* RFC 2046 */
#define MP_HEADERS_MAX 16384   /* bytes of one part's header block */
#define MP_HEADER_LINES_MAX 16 /* header lines in one part */

typedef struct mp_part {
    const char *name; /* form field name, a slice of the body (not NUL-terminated) */
    size_t name_len;
    char *filename; /* decoded file name (may hold NUL bytes), owned by the form; NULL if none */
    size_t filename_len;
    const char *data; /* the part's content, a slice of the body */
    size_t len;
} mp_part_t;

typedef struct mp_form {
    mp_part_t *parts; /* owned */
    size_t n, cap;
} mp_form_t;

/* The boundary of a "multipart/form-data; boundary=..." Content-Type into
 * out (cap > MP_BOUNDARY_MAX). AT_ENOTFOUND: not multipart/form-data at all
 * (the caller answers 415); AT_EINVAL: no usable boundary (400). */
at_err_t mp_boundary(const char *content_type, char *out, size_t cap, const char **why);

/* Split body into its parts. At most max_parts parts (AT_ETOOBIG beyond);
 * AT_EINVAL with a reason in why (cap whylen) for a malformed body: no
 * opening or closing delimiter, a bad header line, a part without
 * Content-Disposition: form-data and a name. On success the caller frees
 * with mp_form_free; on failure nothing is left to free. */
at_err_t mp_parse(const char *body, size_t len, const char *boundary, size_t max_parts,
                  mp_form_t *form, char *why, size_t whylen);

void mp_form_free(mp_form_t *form);

/* True if the part's field name is exactly name. */
int mp_name_is(const mp_part_t *part, const char *name);

#endif
