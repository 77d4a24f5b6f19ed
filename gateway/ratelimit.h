/* Token buckets in Redis, shared by every gateway instance: one hash per
 * bucket ("rl:{what}:{who}") refilled by the script from Redis' own clock. */
#ifndef GATEWAY_RATELIMIT_H
#define GATEWAY_RATELIMIT_H

#include <stdint.h>

#include "gateway.h"

/* allowed: 1 if a token was taken; else retry_ms says when one will be
 * there. If Redis cannot answer, the request is allowed (fail open) and the
 * failure counted in atelier_ratelimit_errors_total. */
typedef void ratelimit_cb(int allowed, int64_t retry_ms, void *arg);

/* Take one token from bucket key (rate tokens per second, burst capacity). */
void ratelimit_take(gateway_t *gw, const char *key, double rate, int64_t burst, ratelimit_cb *cb,
                    void *arg);

#endif
