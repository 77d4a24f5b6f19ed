#include "atelier/path.h"

#include <string.h>

int at_utf8_valid(const char *buf, size_t len)
{
    const unsigned char *s = (const unsigned char *)buf, *end = s + len;
    while (s < end) {
        unsigned c = *s;
        if (c < 0x80) {
            s++;
            continue;
        }
        size_t n;
        unsigned cp, min;
        if ((c & 0xe0) == 0xc0) {
            n = 2, cp = c & 0x1f, min = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            n = 3, cp = c & 0x0f, min = 0x800;
        } else if ((c & 0xf8) == 0xf0) {
            n = 4, cp = c & 0x07, min = 0x10000;
        } else {
            return 0;
        }
        if ((size_t)(end - s) < n)
            return 0;
        for (size_t i = 1; i < n; i++) {
            if ((s[i] & 0xc0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        s += n;
    }
    return 1;
}

at_err_t at_path_confine(const char *in, size_t len, char *out, size_t cap, const char **why)
{
    static const char *unused;
    if (!why)
        why = &unused;
    *why = NULL;
    if (cap < 2) {
        *why = "no room";
        return AT_EINVAL;
    }
    if (len == 0) {
        *why = "path is empty";
        return AT_EINVAL;
    }
    if (len > AT_PATH_MAX) {
        *why = "path is longer than 4096 bytes";
        return AT_EINVAL;
    }
    if (in[0] == '/') {
        *why = "path must be relative to the workspace";
        return AT_EINVAL;
    }
    if (!at_utf8_valid(in, len)) {
        *why = "path is not valid UTF-8";
        return AT_EINVAL;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c == '\\') {
            *why = "path contains a backslash";
            return AT_EINVAL;
        }
        if (c < 0x20 || c == 0x7f) {
            *why = c == 0 ? "path contains a NUL byte" : "path contains a control character";
            return AT_EINVAL;
        }
    }
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        size_t j = i;
        while (j < len && in[j] != '/')
            j++;
        size_t n = j - i;
        const char *seg = in + i;
        i = j + 1;
        if (n == 0 || (n == 1 && seg[0] == '.'))
            continue;
        if (n == 2 && seg[0] == '.' && seg[1] == '.') {
            *why = "path contains '..'";
            return AT_EINVAL;
        }
        if (n > AT_NAME_MAX) {
            *why = "a path segment is longer than 255 bytes";
            return AT_EINVAL;
        }
        if (o + (o ? 1 : 0) + n + 1 > cap) {
            *why = "path is too long";
            return AT_EINVAL;
        }
        if (o)
            out[o++] = '/';
        memcpy(out + o, seg, n);
        o += n;
    }
    if (o == 0) {
        *why = "path names the workspace root";
        return AT_EINVAL;
    }
    out[o] = '\0';
    return AT_OK;
}

const char *at_path_base(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}
