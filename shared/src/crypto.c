#include "atelier/crypto.h"

#include <crypt.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "atelier/util.h"

void at_sha256_hex(const void *data, size_t len, char out[AT_SHA256_HEX + 1])
{
    unsigned char md[32];
    unsigned int n = 0;
    EVP_Digest(data, len, md, &n, EVP_sha256(), NULL);
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[AT_SHA256_HEX] = '\0';
}

void at_hmac_sha256(const void *key, size_t klen, const void *data, size_t len,
                    unsigned char out[32])
{
    unsigned int n = 32;
    HMAC(EVP_sha256(), key, (int)klen, data, len, out, &n);
}

static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

size_t at_b64url_encode(const void *data, size_t len, char *out, size_t cap)
{
    const unsigned char *s = data;
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)s[i] << 16;
        size_t left = len - i;
        if (left > 1)
            v |= (uint32_t)s[i + 1] << 8;
        if (left > 2)
            v |= s[i + 2];
        size_t nout = left >= 3 ? 4 : left + 1;
        for (size_t k = 0; k < nout; k++) {
            if (o + 1 >= cap)
                goto done;
            out[o++] = b64url[(v >> (18 - 6 * k)) & 63];
        }
    }
done:
    if (cap)
        out[o] = '\0';
    return o;
}

long at_b64url_decode(const char *in, size_t len, unsigned char *out, size_t cap)
{
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        const char *p = in[i] ? strchr(b64url, in[i]) : NULL;
        if (!p)
            return -1;
        acc = (acc << 6) | (uint32_t)(p - b64url);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o >= cap)
                return -1;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    return (long)o;
}

void at_random_token(const char *prefix, size_t bytes, char *out, size_t cap)
{
    unsigned char raw[64];
    if (bytes > sizeof raw)
        bytes = sizeof raw;
    at_random_bytes(raw, bytes);
    size_t p = strlen(prefix);
    if (p >= cap) {
        out[0] = '\0';
        return;
    }
    memcpy(out, prefix, p);
    at_b64url_encode(raw, bytes, out + p, cap - p);
}

int at_const_eq(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    unsigned char diff = (unsigned char)(la != lb);
    for (size_t i = 0; i < la; i++)
        diff |= (unsigned char)(a[i] ^ b[lb ? i % lb : 0]);
    return diff == 0;
}

char *at_jwt_sign(const char *secret, json_t *claims)
{
    static const char header[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
    char *payload = json_dumps(claims, JSON_COMPACT | JSON_SORT_KEYS);
    if (!payload)
        return NULL;
    size_t plen = strlen(payload);
    size_t cap = 64 + (plen * 4) / 3 + 4 + 64;
    char *tok = malloc(cap);
    if (!tok) {
        free(payload);
        return NULL;
    }
    size_t o = at_b64url_encode(header, sizeof header - 1, tok, cap);
    tok[o++] = '.';
    o += at_b64url_encode(payload, plen, tok + o, cap - o);
    free(payload);
    unsigned char mac[32];
    at_hmac_sha256(secret, strlen(secret), tok, o, mac);
    tok[o++] = '.';
    at_b64url_encode(mac, sizeof mac, tok + o, cap - o);
    return tok;
}

at_err_t at_jwt_verify(const char *secret, const char *token, int64_t now_s, json_t **claims)
{
    *claims = NULL;
    size_t len = strnlen(token, AT_TOKEN_MAX + 1);
    if (len > AT_TOKEN_MAX)
        return AT_EINVAL;
    const char *d1 = strchr(token, '.');
    const char *d2 = d1 ? strchr(d1 + 1, '.') : NULL;
    if (!d1 || !d2 || strchr(d2 + 1, '.'))
        return AT_EINVAL;
    unsigned char mac[32], got[40];
    at_hmac_sha256(secret, strlen(secret), token, (size_t)(d2 - token), mac);
    long n = at_b64url_decode(d2 + 1, len - (size_t)(d2 + 1 - token), got, sizeof got);
    if (n != 32 || CRYPTO_memcmp(mac, got, 32) != 0)
        return AT_EINVAL;
    unsigned char buf[AT_TOKEN_MAX];
    long hl = at_b64url_decode(token, (size_t)(d1 - token), buf, sizeof buf);
    if (hl <= 0)
        return AT_EINVAL;
    json_t *hdr = json_loadb((const char *)buf, (size_t)hl, 0, NULL);
    const char *alg = json_string_value(json_object_get(hdr, "alg"));
    int alg_ok = alg && !strcmp(alg, "HS256");
    json_decref(hdr);
    if (!alg_ok)
        return AT_EINVAL;
    long pl = at_b64url_decode(d1 + 1, (size_t)(d2 - d1 - 1), buf, sizeof buf);
    if (pl <= 0)
        return AT_EINVAL;
    json_t *c = json_loadb((const char *)buf, (size_t)pl, 0, NULL);
    if (!json_is_object(c)) {
        json_decref(c);
        return AT_EINVAL;
    }
    json_t *exp = json_object_get(c, "exp");
    if (!json_is_integer(exp)) {
        json_decref(c);
        return AT_EINVAL;
    }
    if (json_integer_value(exp) <= now_s) {
        json_decref(c);
        return AT_ETIMEOUT;
    }
    *claims = c;
    return AT_OK;
}

at_err_t at_password_hash(const char *password, int cost, char *out, size_t cap)
{
    char salt[CRYPT_GENSALT_OUTPUT_SIZE];
    if (!crypt_gensalt_rn("$2b$", (unsigned long)cost, NULL, 0, salt, sizeof salt))
        return AT_EIO;
    struct crypt_data *cd = calloc(1, sizeof *cd);
    if (!cd)
        return AT_ENOMEM;
    const char *h = crypt_r(password, salt, cd);
    at_err_t err = AT_OK;
    if (!h || h[0] == '*' || strncmp(h, "$2b$", 4) != 0)
        err = AT_EIO;
    else if (at_strlcpy(out, h, cap))
        err = AT_ETOOBIG;
    free(cd);
    return err;
}

int at_password_verify(const char *password, const char *hash)
{
    if (!hash || strncmp(hash, "$2", 2) != 0)
        return 0;
    struct crypt_data *cd = calloc(1, sizeof *cd);
    if (!cd)
        return 0;
    const char *h = crypt_r(password, hash, cd);
    int ok = h && h[0] != '*' && at_const_eq(h, hash);
    free(cd);
    return ok;
}
