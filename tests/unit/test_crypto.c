/*
 * Auth primitives: sha256 and HMAC against published vectors, base64url
 * round trips, HS256 JWTs (valid, expired, tampered, alg "none", wrong key)
 * and bcrypt $2b$ hashes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "atelier/crypto.h"

#define KEY "0123456789abcdef0123456789abcdef"

static void test_sha256(void **state)
{
    (void)state;
    char hex[AT_SHA256_HEX + 1];
    at_sha256_hex("", 0, hex);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    at_sha256_hex("abc", 3, hex);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

static void test_hmac(void **state)
{
    (void)state;
    /* RFC 4231 test case 2 */
    unsigned char mac[32];
    at_hmac_sha256("Jefe", 4, "what do ya want for nothing?", 28, mac);
    static const unsigned char want[32] = {0x5b, 0xdc, 0xc1, 0x46, 0xbf, 0x60, 0x75, 0x4e,
                                           0x6a, 0x04, 0x24, 0x26, 0x08, 0x95, 0x75, 0xc7,
                                           0x5a, 0x00, 0x3f, 0x08, 0x9d, 0x27, 0x39, 0x83,
                                           0x9d, 0xec, 0x58, 0xb9, 0x64, 0xec, 0x38, 0x43};
    assert_memory_equal(mac, want, 32);
}

static void test_b64url(void **state)
{
    (void)state;
    unsigned char raw[256], back[256];
    for (int i = 0; i < 256; i++)
        raw[i] = (unsigned char)i;
    char enc[400];
    for (size_t n = 0; n <= 256; n += 1 + n / 3) {
        size_t el = at_b64url_encode(raw, n, enc, sizeof enc);
        assert_int_equal(el, strlen(enc));
        assert_null(strpbrk(enc, "+/="));
        assert_int_equal(at_b64url_decode(enc, el, back, sizeof back), (long)n);
        assert_memory_equal(raw, back, n);
    }
    assert_int_equal(at_b64url_decode("ab+c", 4, back, sizeof back), -1);
    assert_int_equal(at_b64url_decode("abcd", 4, back, 1), -1);
}

static char *sign(int64_t exp)
{
    json_t *c = json_pack("{s:s, s:s, s:I}", "sub", "7", "jti", "j1", "exp", (json_int_t)exp);
    char *t = at_jwt_sign(KEY, c);
    json_decref(c);
    assert_non_null(t);
    return t;
}

static void test_jwt(void **state)
{
    (void)state;
    json_t *claims;
    char *t = sign(2000);
    assert_int_equal(at_jwt_verify(KEY, t, 1000, &claims), AT_OK);
    assert_string_equal(json_string_value(json_object_get(claims, "sub")), "7");
    json_decref(claims);
    /* expired: exp is the first second no longer valid */
    assert_int_equal(at_jwt_verify(KEY, t, 2000, &claims), AT_ETIMEOUT);
    assert_null(claims);
    /* another key */
    assert_int_equal(at_jwt_verify("another-key-another-key-another!!", t, 1000, &claims),
                     AT_EINVAL);
    /* one byte of the payload changed */
    char *dot = strchr(t, '.');
    dot[3] = dot[3] == 'A' ? 'B' : 'A';
    assert_int_equal(at_jwt_verify(KEY, t, 1000, &claims), AT_EINVAL);
    free(t);
    /* alg none, empty signature */
    char none[512], hdr[128], body[256];
    at_b64url_encode("{\"alg\":\"none\",\"typ\":\"JWT\"}", 27, hdr, sizeof hdr);
    at_b64url_encode("{\"sub\":\"7\",\"jti\":\"j\",\"exp\":9999999999}", 38, body, sizeof body);
    snprintf(none, sizeof none, "%s.%s.", hdr, body);
    assert_int_equal(at_jwt_verify(KEY, none, 1000, &claims), AT_EINVAL);
    /* garbage */
    assert_int_equal(at_jwt_verify(KEY, "", 1000, &claims), AT_EINVAL);
    assert_int_equal(at_jwt_verify(KEY, "a.b", 1000, &claims), AT_EINVAL);
    assert_int_equal(at_jwt_verify(KEY, "a.b.c.d", 1000, &claims), AT_EINVAL);
    assert_int_equal(at_jwt_verify(KEY, "...", 1000, &claims), AT_EINVAL);
}

static void test_bcrypt(void **state)
{
    (void)state;
    char h[128];
    assert_int_equal(at_password_hash("correct horse", 4, h, sizeof h), AT_OK);
    assert_memory_equal(h, "$2b$04$", 7);
    assert_int_equal(strlen(h), 60);
    assert_true(at_password_verify("correct horse", h));
    assert_false(at_password_verify("correct horsf", h));
    assert_false(at_password_verify("correct horse", "not-a-hash"));
    assert_false(at_password_verify("correct horse", NULL));
    char h2[128];
    assert_int_equal(at_password_hash("correct horse", 4, h2, sizeof h2), AT_OK);
    assert_string_not_equal(h, h2); /* salted */
}

static void test_tokens(void **state)
{
    (void)state;
    char a[80], b[80];
    at_random_token("atk_", 32, a, sizeof a);
    at_random_token("atk_", 32, b, sizeof b);
    assert_memory_equal(a, "atk_", 4);
    assert_int_equal(strlen(a), 4 + 43);
    assert_string_not_equal(a, b);
    assert_true(at_const_eq("abc", "abc"));
    assert_false(at_const_eq("abc", "abd"));
    assert_false(at_const_eq("abc", "abcd"));
    assert_false(at_const_eq("", "a"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sha256), cmocka_unit_test(test_hmac),   cmocka_unit_test(test_b64url),
        cmocka_unit_test(test_jwt),    cmocka_unit_test(test_bcrypt), cmocka_unit_test(test_tokens),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
