/* Terminal bytes as WebSocket text: UTF-8 made valid across reads, and JSON
 * string escaping without an allocation per frame (the output path runs at
 * up to 100 MB/s). */
#include <string.h>

#include "ws_internal.h"

/* Length of the sequence a lead byte starts (0: not a lead byte), and the
 * range its second byte must fall in (overlongs, surrogates, > U+10FFFF). */
static int lead(unsigned char b, unsigned char *lo, unsigned char *hi)
{
    *lo = 0x80;
    *hi = 0xBF;
    if (b >= 0xC2 && b <= 0xDF)
        return 2;
    if (b >= 0xE0 && b <= 0xEF) {
        if (b == 0xE0)
            *lo = 0xA0;
        if (b == 0xED)
            *hi = 0x9F;
        return 3;
    }
    if (b >= 0xF0 && b <= 0xF4) {
        if (b == 0xF0)
            *lo = 0x90;
        if (b == 0xF4)
            *hi = 0x8F;
        return 4;
    }
    return 0;
}

/* How many bytes of s[0..n) form a valid sequence (1..4), 0 when s starts
 * an invalid one, -1 when it is a valid but incomplete prefix. */
static int seq_len(const unsigned char *s, size_t n)
{
    if (s[0] < 0x80)
        return 1;
    unsigned char lo, hi;
    int want = lead(s[0], &lo, &hi);
    if (!want)
        return 0;
    for (int i = 1; i < want; i++) {
        if ((size_t)i >= n)
            return -1;
        unsigned char a = i == 1 ? lo : 0x80, z = i == 1 ? hi : 0xBF;
        if (s[i] < a || s[i] > z)
            return 0;
    }
    return want;
}

static const unsigned char replacement[3] = {0xEF, 0xBF, 0xBD}; /* U+FFFD */

size_t ws_utf8_clean(unsigned char carry[4], int *ncarry, const unsigned char *in, size_t n,
                     unsigned char *out)
{
    unsigned char head[8];
    size_t o = 0, i = 0;
    /* finish the sequence held back from the last read first */
    if (*ncarry > 0) {
        size_t k = (size_t)*ncarry, take = n < 4 ? n : 4;
        memcpy(head, carry, k);
        memcpy(head + k, in, take);
        int len = seq_len(head, k + take);
        *ncarry = 0;
        if (len < 0 && take == n) { /* still incomplete: keep waiting */
            memcpy(carry, head, k + take);
            *ncarry = (int)(k + take);
            return 0;
        }
        if (len > 0) {
            memcpy(out, head, (size_t)len);
            o = (size_t)len;
            i = (size_t)len - k;
        } else { /* invalid: one replacement for the held lead byte */
            memcpy(out, replacement, 3);
            o = 3;
            /* the held continuation bytes, if any, are judged again below */
            if (k > 1) {
                size_t rest = k - 1;
                for (size_t r = 0; r < rest; r++) {
                    memcpy(out + o, replacement, 3);
                    o += 3;
                }
            }
        }
    }
    while (i < n) {
        if (in[i] < 0x80) { /* the common case, in bulk */
            size_t j = i;
            while (j < n && in[j] < 0x80)
                j++;
            memcpy(out + o, in + i, j - i);
            o += j - i;
            i = j;
            continue;
        }
        int len = seq_len(in + i, n - i);
        if (len < 0) { /* incomplete at the end of this read */
            memcpy(carry, in + i, n - i);
            *ncarry = (int)(n - i);
            break;
        }
        if (len == 0) {
            memcpy(out + o, replacement, 3);
            o += 3;
            i++;
            continue;
        }
        memcpy(out + o, in + i, (size_t)len);
        o += (size_t)len;
        i += (size_t)len;
    }
    return o;
}

size_t ws_utf8_tail(const unsigned char *in, size_t n, unsigned char carry[4])
{
    /* the last lead byte within 3 bytes of the end, if its sequence is
     * incomplete, is what a client that stopped at this entry never got */
    for (size_t back = 1; back <= 3 && back <= n; back++) {
        unsigned char b = in[n - back];
        if (b < 0x80)
            return 0;
        if (b >= 0xC0) {
            if (seq_len(in + n - back, back) < 0) {
                memcpy(carry, in + n - back, back);
                return back;
            }
            return 0;
        }
    }
    return 0;
}

size_t ws_json_escape(const unsigned char *in, size_t n, char *out)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = in[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
            out[o++] = (char)c;
            continue;
        }
        out[o++] = '\\';
        switch (c) {
        case '"':
            out[o++] = '"';
            break;
        case '\\':
            out[o++] = '\\';
            break;
        case '\n':
            out[o++] = 'n';
            break;
        case '\r':
            out[o++] = 'r';
            break;
        case '\t':
            out[o++] = 't';
            break;
        case '\b':
            out[o++] = 'b';
            break;
        case '\f':
            out[o++] = 'f';
            break;
        default:
            out[o++] = 'u';
            out[o++] = '0';
            out[o++] = '0';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        }
    }
    return o;
}
