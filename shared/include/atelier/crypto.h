/*
 * Auth primitives on OpenSSL's libcrypto and libxcrypt: hashes, HMAC,
 * base64url, random tokens, HS256 JWTs and bcrypt passwords.
 */
#ifndef ATELIER_CRYPTO_H
#define ATELIER_CRYPTO_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define AT_SHA256_HEX 64 /* without the NUL */
#define AT_TOKEN_MAX 2048

void at_sha256_hex(const void *data, size_t len, char out[AT_SHA256_HEX + 1]);
void at_hmac_sha256(const void *key, size_t klen, const void *data, size_t len,
                    unsigned char out[32]);
/* base64url without padding; returns the length written (cap must fit it). */
size_t at_b64url_encode(const void *data, size_t len, char *out, size_t cap);
/* Returns the decoded length, or -1 on a bad character or too small a buffer. */
long at_b64url_decode(const char *in, size_t len, unsigned char *out, size_t cap);
/* Random url-safe token of `bytes` random bytes, prefixed by prefix. */
void at_random_token(const char *prefix, size_t bytes, char *out, size_t cap);
/* Equal without leaking where the first difference is (lengths may differ). */
int at_const_eq(const char *a, const char *b);

/* HS256 JWT of the claims object. Returns a malloc'd token or NULL. */
char *at_jwt_sign(const char *secret, json_t *claims);
/* Verify signature, algorithm and "exp" against now_s. On success *claims
 * holds the payload (caller decrefs). AT_EINVAL: malformed or bad signature;
 * AT_ETIMEOUT: expired. */
at_err_t at_jwt_verify(const char *secret, const char *token, int64_t now_s, json_t **claims);

/* bcrypt ($2b$) of password at the given cost into out (cap >= 64).
 * Slow on purpose: call off the event loop. */
at_err_t at_password_hash(const char *password, int cost, char *out, size_t cap);
/* 1 if password matches hash, 0 otherwise (also for malformed hashes). */
int at_password_verify(const char *password, const char *hash);

#endif
