#include "auth.h"

#include <string.h>

/* Compare without leaking the position of the first difference. */
static int const_time_eq(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    unsigned char diff = (unsigned char)(la != lb);
    for (size_t i = 0; i < la; i++)
        diff |= (unsigned char)(a[i] ^ b[lb ? i % lb : 0]);
    return diff == 0;
}

int auth_is_admin(const at_req_t *req)
{
    const char *want = req_gw(req)->cfg.api_key;
    const char *got = req_header(req, "x-api-key");
    return want && *want && got && const_time_eq(got, want);
}

int auth_require_admin(at_req_t *req)
{
    if (auth_is_admin(req))
        return 1;
    if (!req_gw(req)->cfg.api_key[0])
        req_error(req, 403, "API key authentication is disabled (set API_KEY)");
    else if (!req_header(req, "x-api-key"))
        req_error(req, 401, "Missing X-API-Key header");
    else
        req_error(req, 403, "Invalid API key");
    return 0;
}
