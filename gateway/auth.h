/* Authentication primitives of the gateway (users and tokens come with the
 * accounts issue; this file holds the service API key check). */
#ifndef GATEWAY_AUTH_H
#define GATEWAY_AUTH_H

#include "http.h"

/* True if the request carries the configured API_KEY in X-API-Key. */
int auth_is_admin(const at_req_t *req);
/* Answer 401/403 unless admin; returns 1 if the caller may go on. */
int auth_require_admin(at_req_t *req);

#endif
