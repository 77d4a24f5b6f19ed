#include "atelier/job.h"

#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void pack_str(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

static int pack_json(msgpack_packer *pk, const json_t *v, int depth)
{
    if (depth > AT_JOB_MAX_DEPTH)
        return -1;
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        msgpack_pack_map(pk, json_object_size(v));
        const char *k;
        json_t *val;
        json_object_foreach((json_t *)v, k, val)
        {
            pack_str(pk, k);
            if (pack_json(pk, val, depth + 1) != 0)
                return -1;
        }
        return 0;
    }
    case JSON_ARRAY: {
        msgpack_pack_array(pk, json_array_size(v));
        size_t i;
        json_t *val;
        json_array_foreach(v, i, val)
        {
            if (pack_json(pk, val, depth + 1) != 0)
                return -1;
        }
        return 0;
    }
    case JSON_STRING:
        msgpack_pack_str(pk, json_string_length(v));
        msgpack_pack_str_body(pk, json_string_value(v), json_string_length(v));
        return 0;
    case JSON_INTEGER:
        msgpack_pack_int64(pk, json_integer_value(v));
        return 0;
    case JSON_REAL:
        msgpack_pack_double(pk, json_real_value(v));
        return 0;
    case JSON_TRUE:
        msgpack_pack_true(pk);
        return 0;
    case JSON_FALSE:
        msgpack_pack_false(pk);
        return 0;
    case JSON_NULL:
        msgpack_pack_nil(pk);
        return 0;
    }
    return -1;
}

at_err_t at_msgpack_from_json(const json_t *v, unsigned char **out, size_t *out_len)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    if (pack_json(&pk, v, 0) != 0) {
        msgpack_sbuffer_destroy(&sb);
        return AT_EINVAL;
    }
    if (sb.size > AT_JOB_MAX_ENCODED) {
        msgpack_sbuffer_destroy(&sb);
        return AT_ETOOBIG;
    }
    *out_len = sb.size;
    *out = (unsigned char *)msgpack_sbuffer_release(&sb);
    return AT_OK;
}

static json_t *obj_to_json(const msgpack_object *o, int depth)
{
    if (depth > AT_JOB_MAX_DEPTH)
        return NULL;
    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        return json_null();
    case MSGPACK_OBJECT_BOOLEAN:
        return json_boolean(o->via.boolean);
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        if (o->via.u64 > INT64_MAX)
            return NULL;
        return json_integer((json_int_t)o->via.u64);
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        return json_integer(o->via.i64);
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        return json_real(o->via.f64);
    /* msgpack-c may leave ptr NULL for a zero-length str/bin; jansson refuses NULL */
    case MSGPACK_OBJECT_STR:
        return json_stringn(o->via.str.size ? o->via.str.ptr : "", o->via.str.size);
    case MSGPACK_OBJECT_BIN:
        return json_stringn(o->via.bin.size ? o->via.bin.ptr : "", o->via.bin.size);
    case MSGPACK_OBJECT_ARRAY: {
        json_t *a = json_array();
        for (uint32_t i = 0; a && i < o->via.array.size; i++) {
            json_t *e = obj_to_json(&o->via.array.ptr[i], depth + 1);
            if (!e || json_array_append_new(a, e) != 0) {
                json_decref(a);
                return NULL;
            }
        }
        return a;
    }
    case MSGPACK_OBJECT_MAP: {
        json_t *m = json_object();
        for (uint32_t i = 0; m && i < o->via.map.size; i++) {
            const msgpack_object_kv *kv = &o->via.map.ptr[i];
            if (kv->key.type != MSGPACK_OBJECT_STR || kv->key.via.str.size > 1024) {
                json_decref(m);
                return NULL;
            }
            char key[1025];
            if (kv->key.via.str.size)
                memcpy(key, kv->key.via.str.ptr, kv->key.via.str.size);
            key[kv->key.via.str.size] = '\0';
            json_t *e = obj_to_json(&kv->val, depth + 1);
            if (!e || json_object_set_new(m, key, e) != 0) { /* set_new took e */
                json_decref(m);
                return NULL;
            }
        }
        return m;
    }
    default:
        return NULL;
    }
}

/* Header of one msgpack value: how many values it contains (containers) and
 * how many payload bytes follow the header. -1 for a byte msgpack never uses. */
static int mp_header(const unsigned char *p, size_t avail, size_t *hdr, uint64_t *children,
                     uint64_t *payload)
{
    unsigned b = p[0];
    size_t width = 0; /* bytes of the big-endian length after the type byte */
    uint64_t fixed = 0;
    int container = 0; /* 1 array, 2 map */
    *children = 0;
    if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3)
        fixed = 0;
    else if ((b & 0xf0) == 0x80)
        *children = 2 * (uint64_t)(b & 0x0f);
    else if ((b & 0xf0) == 0x90)
        *children = b & 0x0f;
    else if ((b & 0xe0) == 0xa0)
        fixed = b & 0x1f;
    else if (b == 0xcc || b == 0xd0)
        fixed = 1;
    else if (b == 0xcd || b == 0xd1 || b == 0xd4)
        fixed = 2;
    else if (b == 0xd5)
        fixed = 3;
    else if (b == 0xca || b == 0xce || b == 0xd2)
        fixed = 4;
    else if (b == 0xd6)
        fixed = 5;
    else if (b == 0xcb || b == 0xcf || b == 0xd3)
        fixed = 8;
    else if (b == 0xd7)
        fixed = 9;
    else if (b == 0xd8)
        fixed = 17;
    else if (b == 0xc4 || b == 0xd9 || b == 0xc7)
        width = 1, fixed = b == 0xc7;
    else if (b == 0xc5 || b == 0xda || b == 0xc8)
        width = 2, fixed = b == 0xc8;
    else if (b == 0xc6 || b == 0xdb || b == 0xc9)
        width = 4, fixed = b == 0xc9;
    else if (b == 0xdc || b == 0xdd)
        width = b == 0xdc ? 2 : 4, container = 1;
    else if (b == 0xde || b == 0xdf)
        width = b == 0xde ? 2 : 4, container = 2;
    else
        return -1;
    if (avail < 1 + width)
        return -1;
    uint64_t n = 0;
    for (size_t i = 0; i < width; i++)
        n = n << 8 | p[1 + i];
    *hdr = 1 + width;
    *payload = fixed + (container ? 0 : n);
    if (container)
        *children = container == 2 ? 2 * n : n;
    return 0;
}

/* Walk the encoding without allocating. Every value a container promises
 * takes at least one byte, so a count larger than the bytes left is a lie;
 * msgpack_unpack_next would first allocate count * sizeof(msgpack_object). */
static int counts_plausible(const unsigned char *p, size_t len)
{
    size_t pos = 0;
    uint64_t need = 1; /* values still to read */
    while (need > 0) {
        size_t hdr;
        uint64_t children, payload;
        if (pos >= len || mp_header(p + pos, len - pos, &hdr, &children, &payload) != 0)
            return 0;
        pos += hdr;
        if (payload > len - pos)
            return 0;
        pos += (size_t)payload;
        need = need - 1 + children;
        if (need > len - pos)
            return 0;
    }
    return 1;
}

json_t *at_msgpack_to_json(const unsigned char *buf, size_t len)
{
    if (!counts_plausible(buf, len))
        return NULL;
    if (len > AT_JOB_MAX_ENCODED)
        return NULL;
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    size_t off = 0;
    json_t *out = NULL;
    if (msgpack_unpack_next(&up, (const char *)buf, len, &off) == MSGPACK_UNPACK_SUCCESS &&
        off == len)
        out = obj_to_json(&up.data, 0);
    msgpack_unpacked_destroy(&up);
    return out;
}

static int copy_field(char *dst, size_t cap, const char *src)
{
    if (!src)
        src = "";
    return at_strlcpy(dst, src, cap) ? -1 : 0;
}

at_err_t at_job_init(at_job_t *job, const char *kind, const char *session, const char *reply_to,
                     const json_t *args)
{
    memset(job, 0, sizeof *job);
    if (!kind || !*kind || copy_field(job->kind, sizeof job->kind, kind) != 0 ||
        copy_field(job->session, sizeof job->session, session) != 0 ||
        copy_field(job->reply_to, sizeof job->reply_to, reply_to) != 0)
        return AT_EINVAL;
    at_uuid4(job->id);
    job->attempt = 1;
    job->enqueued_at = at_wall_ms();
    if (args) {
        if (!json_is_object(args))
            return AT_EINVAL;
        at_err_t err = at_msgpack_from_json(args, &job->args, &job->args_len);
        if (err != AT_OK)
            return err;
    }
    return AT_OK;
}

void at_job_clear(at_job_t *job)
{
    free(job->args);
    memset(job, 0, sizeof *job);
}

at_err_t at_job_encode(const at_job_t *job, unsigned char **out, size_t *out_len)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 7);
    pack_str(&pk, "id");
    pack_str(&pk, job->id);
    pack_str(&pk, "kind");
    pack_str(&pk, job->kind);
    pack_str(&pk, "session");
    if (job->session[0])
        pack_str(&pk, job->session);
    else
        msgpack_pack_nil(&pk);
    pack_str(&pk, "attempt");
    msgpack_pack_uint32(&pk, job->attempt);
    pack_str(&pk, "enqueued_at");
    msgpack_pack_int64(&pk, job->enqueued_at);
    pack_str(&pk, "reply_to");
    if (job->reply_to[0])
        pack_str(&pk, job->reply_to);
    else
        msgpack_pack_nil(&pk);
    pack_str(&pk, "args");
    if (job->args && job->args_len > 0)
        msgpack_sbuffer_write(&sb, (const char *)job->args, job->args_len);
    else
        msgpack_pack_map(&pk, 0);
    if (sb.size > AT_JOB_MAX_ENCODED) {
        msgpack_sbuffer_destroy(&sb);
        return AT_ETOOBIG;
    }
    *out_len = sb.size;
    *out = (unsigned char *)msgpack_sbuffer_release(&sb);
    return AT_OK;
}

static int key_is(const msgpack_object *k, const char *name)
{
    size_t n = strlen(name);
    return k->type == MSGPACK_OBJECT_STR && k->via.str.size == n &&
           memcmp(k->via.str.ptr, name, n) == 0;
}

/* Copy a str (or nil when allowed) into a fixed field; -1 on wrong type or
 * overflow. */
static int take_str(const msgpack_object *v, char *dst, size_t cap, int nil_ok)
{
    if (v->type == MSGPACK_OBJECT_NIL && nil_ok) {
        dst[0] = '\0';
        return 0;
    }
    if (v->type != MSGPACK_OBJECT_STR || v->via.str.size >= cap)
        return -1;
    if (memchr(v->via.str.ptr, '\0', v->via.str.size))
        return -1;
    memcpy(dst, v->via.str.ptr, v->via.str.size);
    dst[v->via.str.size] = '\0';
    return 0;
}

/* Re-encode one msgpack object (the args map) into its own buffer. */
static at_err_t repack(const msgpack_object *o, unsigned char **out, size_t *out_len)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    if (msgpack_pack_object(&pk, *o) != 0) {
        msgpack_sbuffer_destroy(&sb);
        return AT_ENOMEM;
    }
    *out_len = sb.size;
    *out = (unsigned char *)msgpack_sbuffer_release(&sb);
    return AT_OK;
}

static int depth_ok(const msgpack_object *o, int depth)
{
    if (depth > AT_JOB_MAX_DEPTH)
        return 0;
    if (o->type == MSGPACK_OBJECT_ARRAY) {
        for (uint32_t i = 0; i < o->via.array.size; i++)
            if (!depth_ok(&o->via.array.ptr[i], depth + 1))
                return 0;
    } else if (o->type == MSGPACK_OBJECT_MAP) {
        for (uint32_t i = 0; i < o->via.map.size; i++)
            if (!depth_ok(&o->via.map.ptr[i].val, depth + 1))
                return 0;
    }
    return 1;
}

at_err_t at_job_decode(const unsigned char *buf, size_t len, at_job_t *job, char *errbuf,
                       size_t errlen)
{
    memset(job, 0, sizeof *job);
    if (len > AT_JOB_MAX_ENCODED) {
        snprintf(errbuf, errlen, "job of %zu bytes exceeds limit %u", len, AT_JOB_MAX_ENCODED);
        return AT_ETOOBIG;
    }
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    size_t off = 0;
    at_err_t err = AT_EINVAL;
    const char *why = NULL;
    if (!counts_plausible(buf, len)) {
        why = "truncated or malformed msgpack";
        goto out;
    }
    int ret = msgpack_unpack_next(&up, (const char *)buf, len, &off);
    if (ret != MSGPACK_UNPACK_SUCCESS) {
        why = ret == MSGPACK_UNPACK_CONTINUE ? "truncated msgpack" : "malformed msgpack";
        goto out;
    }
    if (off != len) {
        why = "trailing bytes after job";
        goto out;
    }
    const msgpack_object *root = &up.data;
    if (root->type != MSGPACK_OBJECT_MAP) {
        why = "job is not a map";
        goto out;
    }
    int have_id = 0, have_kind = 0;
    job->attempt = 1;
    for (uint32_t i = 0; i < root->via.map.size; i++) {
        const msgpack_object *k = &root->via.map.ptr[i].key;
        const msgpack_object *v = &root->via.map.ptr[i].val;
        if (key_is(k, "id")) {
            if (take_str(v, job->id, sizeof job->id, 0) != 0 || !at_is_uuid(job->id)) {
                why = "id is not a uuid string";
                goto out;
            }
            have_id = 1;
        } else if (key_is(k, "kind")) {
            if (take_str(v, job->kind, sizeof job->kind, 0) != 0 || job->kind[0] == '\0') {
                why = "kind is not a string of 1..32 bytes";
                goto out;
            }
            have_kind = 1;
        } else if (key_is(k, "session")) {
            if (take_str(v, job->session, sizeof job->session, 1) != 0) {
                why = "session is not a string of at most 64 bytes";
                goto out;
            }
        } else if (key_is(k, "reply_to")) {
            if (take_str(v, job->reply_to, sizeof job->reply_to, 1) != 0) {
                why = "reply_to is not a string of at most 128 bytes";
                goto out;
            }
        } else if (key_is(k, "attempt")) {
            if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER || v->via.u64 == 0 ||
                v->via.u64 > 1000000) {
                why = "attempt is not a positive integer";
                goto out;
            }
            job->attempt = (uint32_t)v->via.u64;
        } else if (key_is(k, "enqueued_at")) {
            if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER || v->via.u64 > INT64_MAX) {
                why = "enqueued_at is not a timestamp";
                goto out;
            }
            job->enqueued_at = (int64_t)v->via.u64;
        } else if (key_is(k, "args")) {
            if (v->type == MSGPACK_OBJECT_NIL)
                continue;
            if (v->type != MSGPACK_OBJECT_MAP || !depth_ok(v, 0)) {
                why = "args is not a map (or nests too deep)";
                goto out;
            }
            free(job->args);
            if (repack(v, &job->args, &job->args_len) != AT_OK) {
                err = AT_ENOMEM;
                why = "out of memory";
                goto out;
            }
        }
        /* unknown keys are ignored: newer producers may add fields */
    }
    if (!have_id || !have_kind) {
        why = have_id ? "missing kind" : "missing id";
        goto out;
    }
    err = AT_OK;
out:
    msgpack_unpacked_destroy(&up);
    if (err != AT_OK) {
        snprintf(errbuf, errlen, "decode job: %s", why ? why : "invalid");
        at_job_clear(job);
    }
    return err;
}

json_t *at_job_args_json(const at_job_t *job)
{
    if (!job->args || job->args_len == 0)
        return json_object();
    json_t *j = at_msgpack_to_json(job->args, job->args_len);
    if (j && !json_is_object(j)) {
        json_decref(j);
        return NULL;
    }
    return j;
}
